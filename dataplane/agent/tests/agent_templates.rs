//! Templates through the real agent: a template's defaults reach envd in
//! new and resumed capsules (request fields win, env merges); a capsule's
//! filesystem becomes a template (SnapshotCapsule) whose capsules have its
//! files with their owners, modes, links and xattrs; overwrite, name clashes
//! and DeleteTemplate while in use. Needs root, `busybox-static`, and envd
//! built beside `warren-agent` (`cargo build -p envd`).

#![allow(clippy::unwrap_used)] // a test: failing loudly is the point

mod agent_support;

use std::{collections::HashMap, ffi::CString, os::unix::ffi::OsStrExt, path::Path};

use agent_support::*;
use warren_proto::{agent::v1 as pb, connect::Code};
use warren_template::{IdMap, NewTemplate, TemplateError, TemplateStore};

fn store_of(agent: &Agent) -> TemplateStore {
    TemplateStore::new(
        agent.data_dir.path().join("templates"),
        IdMap::default(),
        "/bin/busybox".into(),
    )
}

async fn snapshot(
    agent: &Agent,
    capsule: &str,
    template: &str,
    overwrite: bool,
    defaults: Option<pb::TemplateDefaults>,
) -> Result<pb::TemplateInfo, warren_proto::connect::ConnectError> {
    agent
        .rpc()
        .snapshot_capsule(&pb::SnapshotCapsuleRequest {
            capsule_id: capsule.into(),
            template: template.into(),
            overwrite,
            defaults,
        })
        .await
        .map(|r| r.template.unwrap())
}

async fn destroy(agent: &Agent, id: &str) {
    agent
        .rpc()
        .destroy_capsule(&pb::DestroyCapsuleRequest {
            capsule_id: id.into(),
        })
        .await
        .unwrap();
}

async fn templates(agent: &Agent) -> HashMap<String, pb::TemplateInfo> {
    agent
        .rpc()
        .get_host_info(&pb::GetHostInfoRequest {})
        .await
        .unwrap()
        .templates
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and a value of the given length.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_templates_defaults_reach_envd_and_requests_win_field_by_field() {
    require_root!();
    let agent = Agent::start(&[]);
    agent.create("base", 64, |_| {}).await.unwrap();
    agent
        .sh(
            "base",
            "echo hi > /home/user/hello && chown user:user /home/user/hello",
        )
        .await;
    let info = snapshot(
        &agent,
        "base",
        "withdefaults",
        false,
        Some(pb::TemplateDefaults {
            user: "user".into(),
            workdir: "/home/user".into(),
            env: [
                ("GREETING".into(), "hello".into()),
                ("KEEP".into(), "t".into()),
            ]
            .into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let d = info.defaults.unwrap();
    assert_eq!(
        (d.user.as_str(), d.workdir.as_str()),
        ("user", "/home/user")
    );

    let probe = "whoami; pwd; echo \"$GREETING $KEEP $EXTRA\"; cat hello";
    agent
        .create("d1", 64, |r| r.template = "withdefaults".into())
        .await
        .unwrap();
    assert_eq!(
        agent.sh("d1", probe).await,
        ("user\n/home/user\nhello t \nhi\n".into(), 0)
    );

    // The request's user wins, its env merges over the template's.
    agent
        .create("d2", 64, |r| {
            r.template = "withdefaults".into();
            r.defaults = Some(pb::EnvdDefaults {
                user: "root".into(),
                env: [("EXTRA".into(), "x".into()), ("KEEP".into(), "r".into())].into(),
                workdir: String::new(),
            });
        })
        .await
        .unwrap();
    assert_eq!(
        agent.sh("d2", probe).await,
        ("root\n/home/user\nhello r x\nhi\n".into(), 0)
    );

    // Resumed: the defaults are still there; new ones merge over them.
    let pause = |id: &'static str| {
        let rpc = agent.rpc();
        async move {
            rpc.pause_capsule(&pb::PauseCapsuleRequest {
                capsule_id: id.into(),
            })
            .await
            .unwrap()
        }
    };
    pause("d1").await;
    agent
        .rpc()
        .resume_capsule(&pb::ResumeCapsuleRequest {
            capsule_id: "d1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        agent.sh("d1", probe).await,
        ("user\n/home/user\nhello t \nhi\n".into(), 0)
    );
    pause("d1").await;
    agent
        .rpc()
        .resume_capsule(&pb::ResumeCapsuleRequest {
            capsule_id: "d1".into(),
            defaults: Some(pb::EnvdDefaults {
                env: [("EXTRA".into(), "later".into())].into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        agent.sh("d1", probe).await,
        ("user\n/home/user\nhello t later\nhi\n".into(), 0)
    );

    // vcpus and memory come from the template when the request leaves them 0.
    let sized = store_of(&agent)
        .create(
            "sized",
            NewTemplate {
                defaults: warren_template::TemplateDefaults {
                    vcpus: Some(1),
                    memory_mb: Some(96),
                    start_cmd: Some("echo started > /tmp/start-ran; sleep 600".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
            |rootfs| copy_tree(&store_of(&agent).get("tiny")?.rootfs(), rootfs),
        )
        .unwrap();
    assert_eq!(sized.meta.defaults.memory_mb, Some(96));
    let c = agent
        .create("d3", 0, |r| {
            r.template = "sized".into();
            r.vcpus = 0;
        })
        .await
        .unwrap();
    assert_eq!((c.vcpus, c.memory_mb), (1, 96));
    // The template's start command runs in every new capsule.
    let (out, _) = agent
        .sh("d3", "cat /tmp/start-ran; ps | grep -c '[s]leep 600'")
        .await;
    assert_eq!(out, "started\n1\n");
}

/// `cp -a` of a directory tree (for tests that make templates by hand).
fn copy_tree(from: &Path, to: &Path) -> Result<(), TemplateError> {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| TemplateError::Io {
            context: "cp".into(),
            source: e,
        })?;
    assert!(status.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_keeps_files_owners_modes_links_and_xattrs() {
    require_root!();
    let agent = Agent::start(&[]);
    // A base template whose lower layer carries an extended attribute.
    let store = store_of(&agent);
    store.ensure("tiny").unwrap();
    store
        .create("xbase", NewTemplate::default(), |rootfs| {
            copy_tree(&store.get("tiny")?.rootfs(), rootfs)?;
            std::fs::write(rootfs.join("etc/tagged"), "tagged\n").unwrap();
            set_xattr(&rootfs.join("etc/tagged"), "user.warren", b"kept");
            Ok(())
        })
        .unwrap();
    agent
        .create("src", 64, |r| r.template = "xbase".into())
        .await
        .unwrap();
    let script = "set -e; mkdir -p /data/sub; echo content > /data/f; chmod 640 /data/f; \
                  chown 1000:1000 /data/f; ln /data/f /data/hard; ln -s f /data/link; \
                  mkfifo /data/fifo; echo s > /data/setuid; chmod 4755 /data/setuid; \
                  chmod 1777 /data/sub; rm /etc/hostname; echo kept > /tmp/in-tmp";
    assert_eq!(agent.sh("src", script).await.1, 0);
    let stat = "stat -c '%n %a %u:%g %h %F' /data/f /data/hard /data/fifo /data/setuid /data/sub; \
                readlink /data/link; cat /data/f; ls /etc/hostname 2>&1; ls /tmp; cat /etc/tagged";
    let (before, _) = agent.sh("src", stat).await;

    // Paused capsules stay paused; running ones are resumed after the copy.
    agent
        .rpc()
        .pause_capsule(&pb::PauseCapsuleRequest {
            capsule_id: "src".into(),
        })
        .await
        .unwrap();
    let info = snapshot(&agent, "src", "snap", false, None).await.unwrap();
    assert_eq!(agent.state("src").await, pb::CapsuleState::Paused);
    assert!(info.size_bytes > 0 && !info.builtin, "{info:?}");

    agent
        .create("dst", 64, |r| r.template = "snap".into())
        .await
        .unwrap();
    let (after, _) = agent.sh("dst", stat).await;
    assert!(before.contains("in-tmp\n"), "{before}");
    assert_eq!(after, before, "the new capsule sees the snapshot's files");
    assert!(
        after.contains("/data/f 640 1000:1000 2 regular file"),
        "{after}"
    );
    assert!(after.contains(" 0:0 1 fifo"), "{after}");
    assert!(after.contains("/data/setuid 4755 0:0"), "{after}");
    assert!(after.contains("/data/sub 1777"), "{after}");
    assert!(
        after.contains("No such file"),
        "a deletion (whiteout) is kept: {after}"
    );

    // On the host: capsule ids shifted into the store's range, the xattr
    // carried over from the lower layer, no trace of the kernel mounts or
    // of the bound envd (its mount point stays empty).
    let snap = store.get("snap").unwrap();
    let root = snap.rootfs();
    let map = IdMap::default();
    use std::os::unix::fs::MetadataExt;
    let f = std::fs::metadata(root.join("data/f")).unwrap();
    assert_eq!((f.uid(), f.gid()), (map.host(1000), map.host(1000)));
    assert_eq!(
        xattr(&root.join("etc/tagged"), "user.warren").as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(std::fs::read_dir(root.join("proc")).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_to_string(root.join("tmp/in-tmp")).unwrap(),
        "kept\n"
    );
    assert_eq!(
        std::fs::metadata(root.join("usr/local/bin/envd"))
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        snap.meta.origin.as_deref(),
        Some("snapshot of capsule src (template xbase)")
    );

    // A running source is paused for the copy and running again after.
    agent
        .rpc()
        .resume_capsule(&pb::ResumeCapsuleRequest {
            capsule_id: "src".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    snapshot(&agent, "src", "snap2", false, None).await.unwrap();
    assert_eq!(agent.state("src").await, pb::CapsuleState::Running);
    assert_eq!(agent.sh("src", "echo alive").await, ("alive\n".into(), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overwrite_clashes_and_deleting_templates_in_use() {
    require_root!();
    let agent = Agent::start(&[]);
    agent.create("maker", 64, |_| {}).await.unwrap();
    agent.sh("maker", "echo one > /version").await;
    snapshot(&agent, "maker", "app", false, None).await.unwrap();

    // A clash without overwrite changes nothing.
    agent.sh("maker", "echo two > /version").await;
    let err = snapshot(&agent, "maker", "app", false, None)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::AlreadyExists, "{err}");
    agent
        .create("old", 64, |r| r.template = "app".into())
        .await
        .unwrap();
    assert_eq!(agent.sh("old", "cat /version").await.0, "one\n");

    // Overwrite: new capsules get the new version; running ones keep theirs.
    snapshot(&agent, "maker", "app", true, None).await.unwrap();
    agent
        .create("new", 64, |r| r.template = "app".into())
        .await
        .unwrap();
    assert_eq!(agent.sh("new", "cat /version").await.0, "two\n");
    assert_eq!(
        agent.sh("old", "cat /version; ls /bin/sh").await.0,
        "one\n/bin/sh\n"
    );

    let listed = templates(&agent).await;
    let app = &listed["app"];
    assert!(app.size_bytes > 0);
    let mut users = app.capsules.clone();
    users.sort();
    assert_eq!(users, ["new", "old"]);
    assert!(listed["tiny"].builtin);

    // Deleting while capsules run on it is refused, with who uses it.
    let delete = |name: &'static str| {
        let rpc = agent.rpc();
        async move {
            rpc.delete_template(&pb::DeleteTemplateRequest {
                template: name.into(),
            })
            .await
        }
    };
    let err = delete("app").await.unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition, "{err}");
    assert!(
        err.message.contains("new") && err.message.contains("old"),
        "{err}"
    );
    let err = delete("tiny").await.unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition, "{err}");
    assert_eq!(delete("nope").await.unwrap_err().code, Code::NotFound);
    assert_eq!(
        delete("../etc").await.unwrap_err().code,
        Code::InvalidArgument
    );
    let err = snapshot(&agent, "maker", "Bad Name", false, None)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument, "{err}");
    let err = snapshot(&agent, "ghost", "x", false, None)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound, "{err}");

    destroy(&agent, "old").await;
    destroy(&agent, "new").await;
    delete("app").await.unwrap();
    assert!(!templates(&agent).await.contains_key("app"));
    let err = agent
        .create("late", 64, |r| r.template = "app".into())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    // Every version is gone from disk once nothing uses it.
    let versions: Vec<String> = std::fs::read_dir(agent.data_dir.path().join("templates/.v"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("app."))
        .collect();
    assert!(versions.is_empty(), "{versions:?}");

    // The built-in can go once unused, and comes back when asked for.
    destroy(&agent, "maker").await;
    delete("tiny").await.unwrap();
    agent.create("again", 64, |_| {}).await.unwrap();
    assert_eq!(agent.sh("again", "echo back").await, ("back\n".into(), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minimal_capsules_run_as_user_in_its_home_and_snapshot() {
    if std::env::var("WARREN_TEST_MINIMAL").as_deref() != Ok("1") {
        eprintln!(
            "skipping: set WARREN_TEST_MINIMAL=1 to build `minimal` (debootstrap from this host's apt mirror: network, a few minutes)"
        );
        return;
    }
    require_root!();
    let agent = Agent::start(&[]);
    let store = store_of(&agent);
    tokio::task::spawn_blocking(move || store.ensure("minimal"))
        .await
        .unwrap()
        .unwrap();
    agent
        .create("m1", 256, |r| r.template = "minimal".into())
        .await
        .unwrap();
    let probe = "whoami; pwd; echo $HOME; id -u; python3 -c 'print(6*7)'; \
                 bash -c 'echo bash $BASH_VERSINFO'; curl --version | cut -d' ' -f1 | head -1; \
                 test -r /etc/ssl/certs/ca-certificates.crt && echo certs; ps -e -o pid= | head -1 | tr -d ' '; \
                 sudo -n id -u; sudo -n unshare -U true 2>/dev/null || echo still-filtered";
    let (out, code) = agent.sh("m1", probe).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "user\n/home/user\n/home/user\n1000\n42\nbash 5\ncurl\ncerts\n1\n0\nstill-filtered\n"
    );
    agent.sh("m1", "echo mine > ~/note").await;
    snapshot(&agent, "m1", "mine", false, None).await.unwrap();
    agent
        .create("m2", 256, |r| r.template = "mine".into())
        .await
        .unwrap();
    assert_eq!(
        agent.sh("m2", "whoami; stat -c %U note; cat note").await,
        ("user\nuser\nmine\n".into(), 0)
    );
}
