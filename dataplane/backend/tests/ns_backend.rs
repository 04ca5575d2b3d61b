//! The namespace backend against the real kernel: namespaces, overlay, loop
//! disks, cgroups (v1 on this host), seccomp. Needs root; run with
//! `cargo test -p warren-backend --test ns_backend`.

mod common;

use std::time::Duration;

use common::*;
use warren_backend::{Backend, BackendError, CapsuleId, Resources, RunState};
use warren_template::TemplateError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_capsules_are_isolated() {
    if skip_unless_root() {
        return;
    }
    let fx = Fixture::new(idle_init());
    let nets: Vec<Netns> = (0..4).map(|_| Netns::new()).collect();
    let specs: Vec<_> = nets.iter().map(|n| fx.spec(n, resources())).collect();
    let guards: Vec<Guard> = specs
        .iter()
        .map(|s| Guard {
            backend: fx.backend.clone(),
            id: s.id.clone(),
        })
        .collect();
    let creates: Vec<_> = specs
        .iter()
        .map(|s| {
            let (backend, spec) = (fx.backend.clone(), s.clone());
            tokio::spawn(async move { backend.create(&spec).await })
        })
        .collect();
    for create in creates {
        let handle = create.await.expect("task").expect("create");
        assert_eq!(handle.status.state, RunState::Running);
    }

    for s in &specs {
        let (code, out, err) = sh(
            &fx.backend,
            &s.id,
            "hostname; id -u; cat /proc/1/cmdline | tr '\\0' ' '",
        );
        assert_eq!(code, 0, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], s.id.as_str(), "hostname");
        assert_eq!(lines[1], "0", "runs as capsule root");
        assert!(
            lines[2].starts_with("/bin/sh -c while"),
            "pid 1 is init: {}",
            lines[2]
        );
        // Own PID namespace: only init, its sleep, and this shell and its children.
        let (_, procs, _) = sh(&fx.backend, &s.id, "ls -d /proc/[0-9]* | wc -l");
        let count: u32 = procs.trim().parse().expect("count");
        assert!(count <= 6, "{count} processes visible in {}", s.id);
        let (code, _, err) = sh(&fx.backend, &s.id, &format!("echo secret > /root/{}", s.id));
        assert_eq!(code, 0, "{err}");
    }

    // A process in capsule 0 is invisible in capsule 1, and so are its files.
    let mut marker = fx
        .backend
        .command(&specs[0].id, "/bin/sleep")
        .expect("command")
        .arg("7777")
        .spawn()
        .expect("spawn");
    let (_, seen0, _) = sh(
        &fx.backend,
        &specs[0].id,
        "cat /proc/[0-9]*/cmdline | tr '\\0' ' '",
    );
    assert!(
        seen0.contains("7777"),
        "marker not visible in its own capsule: {seen0}"
    );
    let (_, seen1, _) = sh(
        &fx.backend,
        &specs[1].id,
        "cat /proc/[0-9]*/cmdline | tr '\\0' ' '",
    );
    assert!(
        !seen1.contains("7777"),
        "capsule 1 sees capsule 0's process: {seen1}"
    );
    let (_, files, _) = sh(&fx.backend, &specs[1].id, "ls /root");
    assert_eq!(
        files.trim(),
        specs[1].id.as_str(),
        "capsule 1 sees other files"
    );
    // The host's files are not there either (the test's data dir, for one).
    let (code, _, _) = sh(
        &fx.backend,
        &specs[1].id,
        &format!("test -e {}", fx.data.path().display()),
    );
    assert_ne!(code, 0);
    let _ = marker.kill();
    let _ = marker.wait();

    let pids: Vec<i32> = specs
        .iter()
        .map(|s| fx.backend.init_pid(&s.id).expect("pid"))
        .collect();
    for (s, pid) in specs.iter().zip(pids) {
        let dir = fx.backend.capsule_dir(&s.id);
        fx.backend.destroy(&s.id).await.expect("destroy");
        assert_no_leftovers(&dir, &s.id, Some(pid));
    }
    drop(guards);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_is_enforced_and_oom_reported() {
    if skip_unless_root() {
        return;
    }
    let fx = Fixture::new(idle_init());
    let net = Netns::new();
    let (spec, _guard) = fx
        .start(
            &net,
            Resources {
                memory_mb: 32,
                ..resources()
            },
        )
        .await;
    assert_eq!(
        fx.backend.status(&spec.id).await.expect("status").oom_kills,
        0
    );

    // dd fills a 96 MiB buffer: three times the limit.
    let (code, _, err) = sh(
        &fx.backend,
        &spec.id,
        "dd if=/dev/zero of=/dev/null bs=96M count=1",
    );
    assert_eq!(code, 128 + 9, "dd was not OOM-killed: {err}");
    let status = fx.backend.status(&spec.id).await.expect("status");
    assert!(status.oom_kills >= 1, "OOM not reported: {status:?}");
    assert_eq!(status.state, RunState::Running, "init survived");
    let m = fx.backend.metrics(&spec.id).await.expect("metrics");
    assert!(m.oom_kills >= 1);
    assert_eq!(m.memory_limit_bytes, 32 << 20);
    assert!(m.memory_bytes <= 32 << 20);
    // Something within the limit still works.
    let (code, _, err) = sh(
        &fx.backend,
        &spec.id,
        "dd if=/dev/zero of=/dev/null bs=4M count=1",
    );
    assert_eq!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_stops_at_the_pid_limit() {
    if skip_unless_root() {
        return;
    }
    let fx = Fixture::new(idle_init());
    let net = Netns::new();
    let max_pids = 48;
    let (spec, _guard) = fx
        .start(
            &net,
            Resources {
                max_pids,
                ..resources()
            },
        )
        .await;
    let dir = fx.backend.capsule_dir(&spec.id);
    let init = fx.backend.init_pid(&spec.id).expect("pid");

    let mut bomb = fx
        .backend
        .command(&spec.id, "/bin/sh")
        .expect("command")
        .args(["-c", "b() { while :; do b & done; }; b"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // Sample until the bomb has pressed on the limit for a while (slow
    // machines take longer to get there), checking the bound every time.
    let mut peak = 0;
    let mut at_limit = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while at_limit < 50 && std::time::Instant::now() < deadline {
        let m = fx.backend.metrics(&spec.id).await.expect("metrics");
        assert!(
            m.pids <= u64::from(max_pids),
            "{} tasks, limit {max_pids}",
            m.pids
        );
        peak = peak.max(m.pids);
        if peak >= u64::from(max_pids) - 8 {
            at_limit += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if peak < u64::from(max_pids) - 8 {
        let status = bomb.try_wait();
        let cgroup =
            std::fs::read_to_string(format!("/proc/{}/cgroup", bomb.id())).unwrap_or_default();
        panic!(
            "the bomb never reached the limit: peak {peak}; bomb status {status:?}; its cgroups:\n{cgroup}"
        );
    }
    // The host is unharmed: it still starts processes.
    assert!(
        std::process::Command::new("true")
            .status()
            .expect("host spawn")
            .success()
    );

    fx.backend.destroy(&spec.id).await.expect("destroy");
    let _ = bomb.wait();
    assert_no_leftovers(&dir, &spec.id, Some(init));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_progress_and_resume_continues() {
    if skip_unless_root() {
        return;
    }
    let fx = Fixture::new(shell_init(
        "i=0; while :; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/counter; done",
    ));
    let net = Netns::new();
    let (spec, _guard) = fx.start(&net, resources()).await;
    let pid = fx.backend.init_pid(&spec.id).expect("pid");
    let counter = || read_inside(pid, "/tmp/counter").and_then(|s| s.trim().parse::<u64>().ok());
    let first = wait_for(5, counter).expect("counter");
    wait_for(5, || counter().filter(|c| *c > first)).expect("counter advances");

    fx.backend.pause(&spec.id).await.expect("pause");
    assert_eq!(
        fx.backend.status(&spec.id).await.expect("status").state,
        RunState::Paused
    );
    let frozen = counter().expect("counter");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(counter(), Some(frozen), "counter moved while paused");
    assert!(matches!(
        fx.backend.pause(&spec.id).await,
        Err(BackendError::InvalidState {
            state: RunState::Paused,
            ..
        })
    ));

    fx.backend.resume(&spec.id).await.expect("resume");
    assert_eq!(
        fx.backend.status(&spec.id).await.expect("status").state,
        RunState::Running
    );
    wait_for(5, || counter().filter(|c| *c > frozen)).expect("counter advances after resume");
    assert!(matches!(
        fx.backend.resume(&spec.id).await,
        Err(BackendError::InvalidState {
            state: RunState::Running,
            ..
        })
    ));

    // Destroying a paused capsule works too.
    fx.backend.pause(&spec.id).await.expect("pause");
    let dir = fx.backend.capsule_dir(&spec.id);
    fx.backend.destroy(&spec.id).await.expect("destroy");
    assert_no_leftovers(&dir, &spec.id, Some(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_denies_without_no_new_privs() {
    if skip_unless_root() {
        return;
    }
    // Init itself tries to make a user namespace (allowed to unprivileged
    // processes by this kernel, so only the filter can refuse it).
    let fx = Fixture::new(shell_init(
        "unshare -U true 2>/run/unshare.err; echo $? > /run/unshare.rc; while :; do sleep 3600; done",
    ));
    let host = std::process::Command::new("unshare")
        .args(["-U", "true"])
        .status()
        .expect("unshare");
    assert!(
        host.success(),
        "control: unshare -U must work outside a capsule"
    );

    let net = Netns::new();
    let (spec, _guard) = fx.start(&net, resources()).await;
    let pid = fx.backend.init_pid(&spec.id).expect("pid");
    let rc = wait_for(5, || read_inside(pid, "/run/unshare.rc")).expect("rc");
    assert_ne!(rc.trim(), "0", "unshare -U succeeded inside the capsule");
    let err = read_inside(pid, "/run/unshare.err").unwrap_or_default();
    assert!(err.contains("Operation not permitted"), "{err}");

    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    // Filtered, but setuid programs (sudo) may still raise a capsule
    // process to the capsule's own root.
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t0"), "{status}");
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");

    // Other denied calls, from a process started inside.
    for script in [
        "mount -t tmpfs none /mnt",
        "unshare -n true",
        "nsenter -t 1 -m true",
        "chroot / true",
    ] {
        let (code, _, err) = sh(&fx.backend, &spec.id, script);
        assert_ne!(code, 0, "{script} succeeded");
        assert!(!err.is_empty(), "{script} failed silently");
    }
    // The process inside has no capability over the host's namespaces
    // either: it cannot change the hostname.
    let (code, _, _) = sh(&fx.backend, &spec.id, "hostname evil");
    assert_ne!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_quota_is_enforced() {
    if skip_unless_root() {
        return;
    }
    let fx = Fixture::new(idle_init());
    let net = Netns::new();
    let (spec, _guard) = fx
        .start(
            &net,
            Resources {
                disk_mb: 32,
                ..resources()
            },
        )
        .await;
    let before = fx.backend.metrics(&spec.id).await.expect("metrics");
    assert!(before.disk_total_bytes <= 32 << 20 && before.disk_total_bytes > 16 << 20);

    let (code, _, err) = sh(
        &fx.backend,
        &spec.id,
        "dd if=/dev/zero of=/root/big bs=1M count=64",
    );
    assert_ne!(code, 0, "wrote 64 MiB on a 32 MiB disk");
    assert!(err.contains("No space left on device"), "{err}");
    let full = fx.backend.metrics(&spec.id).await.expect("metrics");
    assert!(
        full.disk_used_bytes > before.disk_used_bytes + (20 << 20),
        "{full:?}"
    );

    // Space comes back when the file goes, and files survive in the layer.
    let (code, _, err) = sh(
        &fx.backend,
        &spec.id,
        "rm /root/big && echo kept > /root/small && cat /root/small",
    );
    assert_eq!(code, 0, "{err}");
    let after = fx.backend.metrics(&spec.id).await.expect("metrics");
    assert!(after.disk_used_bytes < full.disk_used_bytes - (20 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_typed_errors_and_leave_nothing() {
    if skip_unless_root() {
        return;
    }
    let fx = Fixture::new(idle_init());
    let net = Netns::new();

    let mut spec = fx.spec(&net, resources());
    spec.template = "no-such-template".into();
    assert!(matches!(
        fx.backend.create(&spec).await,
        Err(BackendError::Template(TemplateError::NotFound(_)))
    ));
    spec.template = "../../etc".into();
    assert!(matches!(
        fx.backend.create(&spec).await,
        Err(BackendError::Template(TemplateError::InvalidName(_)))
    ));

    let mut spec = fx.spec(
        &net,
        Resources {
            memory_mb: 0,
            ..resources()
        },
    );
    assert!(matches!(
        fx.backend.create(&spec).await,
        Err(BackendError::InvalidSpec(e)) if e.field == "memory_mb"
    ));
    spec.resources = resources();
    spec.netns = fx.data.path().join("not-a-netns");
    std::fs::write(&spec.netns, b"").expect("write");
    assert!(matches!(
        fx.backend.create(&spec).await,
        Err(BackendError::InvalidSpec(e)) if e.field == "netns"
    ));
    assert!(!fx.backend.capsule_dir(&spec.id).exists());

    spec.netns = net.path();
    let _guard = Guard {
        backend: fx.backend.clone(),
        id: spec.id.clone(),
    };
    fx.backend.create(&spec).await.expect("create");
    assert!(matches!(
        fx.backend.create(&spec).await,
        Err(BackendError::AlreadyExists(_))
    ));
    // The duplicate did not harm the original.
    assert_eq!(
        fx.backend.status(&spec.id).await.expect("status").state,
        RunState::Running
    );

    let unknown = CapsuleId::new("never-made").expect("id");
    assert!(matches!(
        fx.backend.pause(&unknown).await,
        Err(BackendError::NotFound(_))
    ));
    assert!(matches!(
        fx.backend.destroy(&unknown).await,
        Err(BackendError::NotFound(_))
    ));
    assert!(matches!(
        fx.backend.adopt(&unknown).await,
        Err(BackendError::NotFound(_))
    ));

    // An init that cannot start is a launch error, cleaned up completely.
    let broken = Fixture::new(shell_init("true"));
    let broken_backend = {
        let mut config = broken.config.clone();
        config.init =
            warren_backend::namespace::InitCommand::Template(vec!["/no/such/init".into()]);
        warren_backend::namespace::NamespaceBackend::new(config).expect("backend")
    };
    let spec = broken.spec(&net, resources());
    let err = broken_backend.create(&spec).await.expect_err("bad init");
    assert!(
        matches!(&err, BackendError::Launch { step, source, .. }
            if step == "exec" && source.raw_os_error() == Some(libc::ENOENT)),
        "{err}"
    );
    assert_no_leftovers(&broken_backend.capsule_dir(&spec.id), &spec.id, None);
}

/// The "agent" half of `capsules_survive_the_agent_process`: run in its own
/// process, creates a capsule and dies by SIGKILL.
#[test]
#[ignore = "helper run by capsules_survive_the_agent_process"]
fn helper_agent_process() {
    let Ok(args) = std::env::var("WARREN_TEST_AGENT") else {
        return;
    };
    let (data_dir, netns, id) = {
        let v: Vec<&str> = args.split('\n').collect();
        (v[0].to_owned(), v[1].to_owned(), v[2].to_owned())
    };
    let mut config = warren_backend::namespace::NamespaceConfig::new(data_dir.into(), idle_init());
    config.cgroup_parent = CGROUP_PARENT.into();
    let backend = warren_backend::namespace::NamespaceBackend::new(config).expect("backend");
    let spec = warren_backend::CapsuleSpec {
        id: CapsuleId::new(id).expect("id"),
        template: "tiny".into(),
        resources: resources(),
        netns: netns.into(),
        hostname: None,
        env: Default::default(),
        metadata: Default::default(),
        tx_limit: None,
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(backend.create(&spec)).expect("create");
    nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL).expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capsules_survive_the_agent_process() {
    if skip_unless_root() {
        return;
    }
    let fx = Fixture::new(idle_init());
    let net = Netns::new();
    let id = CapsuleId::new(unique("c")).expect("id");
    let _guard = Guard {
        backend: fx.backend.clone(),
        id: id.clone(),
    };
    let status = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "helper_agent_process",
            "--ignored",
            "--nocapture",
        ])
        .env(
            "WARREN_TEST_AGENT",
            format!(
                "{}\n{}\n{}",
                fx.data.path().display(),
                net.path().display(),
                id
            ),
        )
        .status()
        .expect("run the agent process");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "agent process: {status:?}"
    );

    // The "restarted agent" finds and adopts the capsule, which kept running.
    let backend = fx.reopen();
    assert_eq!(
        backend.persisted().await.expect("persisted"),
        vec![id.clone()]
    );
    let handle = backend.adopt(&id).await.expect("adopt");
    assert_eq!(handle.status.state, RunState::Running);
    let (code, out, err) = sh(&backend, &id, "hostname");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), id.as_str());
    backend.pause(&id).await.expect("pause");
    backend.resume(&id).await.expect("resume");

    // Adopted again by a third agent that never adopted: destroy still works.
    drop(backend);
    let pid = {
        let b = fx.reopen();
        b.adopt(&id).await.expect("adopt");
        b.init_pid(&id).expect("pid")
    };
    let third = fx.reopen();
    third.destroy(&id).await.expect("destroy without adopt");
    assert_no_leftovers(&third.capsule_dir(&id), &id, Some(pid));
    assert!(third.persisted().await.expect("persisted").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envd_is_init_and_answers_health() {
    if skip_unless_root() {
        return;
    }
    let envd = envd_binary();
    let fx = Fixture::new(warren_backend::namespace::InitCommand::Envd {
        binary: envd,
        port: warren_proto::addr::ENVD_PORT,
    });
    let net = Netns::new();
    let (spec, _guard) = fx.start(&net, resources()).await;
    let pid = fx.backend.init_pid(&spec.id).expect("pid");

    let (status, _) = http_get_in_netns(&net.path(), warren_proto::addr::ENVD_PORT, "/health", 10)
        .expect("envd /health answered");
    assert!(status.starts_with("HTTP/1.1 2"), "{status}");

    // envd is pid 1 of the capsule, confined like every capsule process.
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(cmdline.contains("/usr/local/bin/envd"), "{cmdline:?}");
    let (code, out, err) = sh(&fx.backend, &spec.id, "tr '\\0' ' ' < /proc/1/cmdline");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/usr/local/bin/envd"), "{out}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
    // envd's binary is read-only inside.
    let (code, _, _) = sh(&fx.backend, &spec.id, "echo x >> /usr/local/bin/envd");
    assert_ne!(code, 0, "envd writable inside the capsule");

    let dir = fx.backend.capsule_dir(&spec.id);
    fx.backend.destroy(&spec.id).await.expect("destroy");
    assert_no_leftovers(&dir, &spec.id, Some(pid));
}
