//! The template store on a real file system: ext4 images made from a
//! template directory (owned by capsule ids inside, shrunk, carrying envd
//! and the guest init), grown on a copy-on-write view's behalf, made once
//! under concurrent callers; a process killed while publishing leaves no
//! half template. Needs root (idmapped mounts, chown into the capsule id
//! range), `busybox-static` and e2fsprogs.
//!
//! `minimal_is_debian_with_a_sudo_user`, which runs debootstrap against this
//! host's apt mirror (network, a few minutes), runs only with
//! `WARREN_TEST_MINIMAL=1`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use warren_template::{IdMap, MINIMAL, NewTemplate, TINY, TemplateError, TemplateStore, image};

fn skip_unless_root() -> bool {
    !warren_testkit::need_root("templates are owned by the capsule id range")
}

/// envd as `make test` builds it.
fn envd() -> PathBuf {
    warren_testkit::built_bin("envd", None)
}

fn store(dir: &Path) -> TemplateStore {
    let store = TemplateStore::new(
        dir.join("templates"),
        IdMap::default(),
        "/bin/busybox".into(),
    );
    store.with_envd(envd())
}

/// `debugfs -R <request> <image>`'s output.
fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .output()
        .expect("debugfs (e2fsprogs)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(uid, gid, mode)` of a path inside an image.
fn stat_in(image: &Path, path: &str) -> (u32, u32, u32) {
    let out = debugfs(image, &format!("stat {path}"));
    let field = |name: &str| -> u32 {
        let at = out
            .find(name)
            .unwrap_or_else(|| panic!("{name} of {path} in {out}"));
        let rest = out[at + name.len()..].trim_start();
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if name == "Mode:" {
            u32::from_str_radix(&word, 8).expect("mode")
        } else {
            word.parse().expect("number")
        }
    };
    (field("User:"), field("Group:"), field("Mode:"))
}

fn fsck_clean(image: &Path) {
    let out = Command::new("e2fsck")
        .args(["-f", "-n"])
        .arg(image)
        .output()
        .expect("e2fsck");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Blocks `resize2fs -P` says the file system needs at least.
fn minimum_blocks(image: &Path) -> u64 {
    let out = Command::new("resize2fs")
        .arg("-P")
        .arg(image)
        .output()
        .expect("resize2fs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.rsplit(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("resize2fs -P: {text}"))
}

fn leftovers(dir: &Path) -> Vec<String> {
    let staging = dir.join("templates/.staging");
    std::fs::read_dir(staging)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn tiny_image_is_shrunk_owned_by_capsule_ids_and_grows() {
    if skip_unless_root() {
        return;
    }
    let envd = envd();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path());
    let tiny = store.ensure(TINY).expect("tiny");
    assert_eq!(
        tiny.image_bytes(),
        None,
        "images are made only when asked for"
    );

    // Two backends asking at once get one image.
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let a = s.spawn(|| store.image(&tiny));
        let b = s.spawn(|| store.image(&tiny));
        [a, b]
            .map(|h| h.join().expect("thread").expect("image"))
            .to_vec()
    });
    assert_eq!(paths[0], paths[1]);
    let img = &paths[0];
    let ino = std::fs::metadata(img).expect("image").ino();
    assert_eq!(store.image(&tiny).expect("again"), *img);
    assert_eq!(
        std::fs::metadata(img).expect("image").ino(),
        ino,
        "cached, not rebuilt"
    );
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
    let stray: Vec<_> = std::fs::read_dir(tiny.dir())
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    // Shrunk: the file ends where the file system does, at about its minimum.
    let bytes = std::fs::metadata(img).expect("image").len();
    assert_eq!(image::fs_size(img).expect("superblock"), bytes);
    let blocks = bytes / 4096;
    let minimum = minimum_blocks(img);
    assert!(
        blocks <= minimum + minimum / 20 + 64,
        "{blocks} blocks, minimum {minimum}"
    );
    fsck_clean(img);

    // The guest sees capsule ids, not the host's shifted ones.
    assert_eq!(stat_in(img, "/etc/passwd"), (0, 0, 0o644));
    assert_eq!(stat_in(img, "/home/user").0, 1000);
    assert_eq!(stat_in(img, "/home/user").1, 1000);
    assert_eq!(stat_in(img, "/tmp").2 & 0o7777, 0o1777);
    assert_eq!(
        debugfs(img, "cat /etc/passwd"),
        std::fs::read_to_string(tiny.rootfs().join("etc/passwd")).expect("passwd")
    );
    // The guest init and envd are in, runnable.
    assert_eq!(stat_in(img, "/sbin/warren-init").2, 0o755);
    assert_eq!(debugfs(img, "cat /sbin/warren-init"), image::GUEST_INIT);
    let envd_in_image = debugfs(img, "stat /usr/local/bin/envd");
    let host_envd = std::fs::metadata(&envd).expect("envd").len();
    if envd_in_image.contains(&format!("Size: {host_envd}")) {
        // a static envd, copied as is
    } else {
        let wrapper = debugfs(img, "cat /usr/local/bin/envd");
        assert!(
            wrapper.contains("--library-path /.warren/lib /.warren/envd"),
            "{wrapper}"
        );
        assert!(debugfs(img, "stat /.warren/envd").contains(&format!("Size: {host_envd}")));
        assert!(debugfs(img, "ls /.warren/lib").contains("libc.so"));
    }
    assert!(debugfs(img, "stat /usr/bin/envd").contains("Type: symlink"));
    // The template directory itself is untouched: envd is an empty mount point.
    assert_eq!(
        std::fs::metadata(tiny.rootfs().join("usr/local/bin/envd"))
            .expect("placeholder")
            .len(),
        0
    );

    // Grown on a copy (as a capsule's copy-on-write view would be).
    let copy = dir.path().join("capsule.ext4");
    std::fs::copy(img, &copy).expect("copy");
    image::grow(&copy, 256 << 20).expect("grow");
    assert_eq!(image::fs_size(&copy).expect("superblock"), 256 << 20);
    assert_eq!(std::fs::metadata(&copy).expect("copy").len(), 256 << 20);
    fsck_clean(&copy);
    assert_eq!(debugfs(&copy, "cat /etc/hostname"), "capsule\n");
    let err = image::grow(&copy, 1 << 20).expect_err("shrinking through grow");
    assert!(err.to_string().contains("cannot grow"), "{err}");
}

#[test]
fn a_stale_image_build_is_redone() {
    if skip_unless_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path());
    let tiny = store.ensure(TINY).expect("tiny");
    // What a build killed halfway leaves: a partial temporary file.
    std::fs::write(tiny.dir().join(".image.ext4.tmp"), b"half an image").expect("write");
    let img = store.image(&tiny).expect("image");
    fsck_clean(&img);
    assert!(!tiny.dir().join(".image.ext4.tmp").exists());
}

/// Run by `a_crash_while_publishing_leaves_no_half_template` in a child
/// process: starts a template, writes half of it, and dies by SIGKILL.
#[test]
fn crash_helper() {
    let Ok(dir) = std::env::var("WARREN_TEST_CRASH_DIR") else {
        return; // only meaningful inside the crash test
    };
    let store = TemplateStore::new(
        PathBuf::from(dir).join("templates"),
        IdMap::default(),
        "/bin/busybox".into(),
    );
    let _ = store.create("victim", NewTemplate::default(), |rootfs| {
        std::fs::create_dir(rootfs).expect("mkdir");
        std::fs::write(rootfs.join("first-half"), vec![7u8; 1 << 20]).expect("write");
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL).expect("kill");
        unreachable!("SIGKILL returned");
    });
}

#[test]
fn a_crash_while_publishing_leaves_no_half_template() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_helper", "--nocapture", "--test-threads=1"])
        .env("WARREN_TEST_CRASH_DIR", dir.path())
        .status()
        .expect("run the crash helper");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the helper was to die mid-write"
    );
    assert_eq!(
        leftovers(dir.path()).len(),
        1,
        "the dead process's half template"
    );
    let store = TemplateStore::new(
        dir.path().join("templates"),
        IdMap::default(),
        "/bin/busybox".into(),
    );
    assert!(matches!(
        store.get("victim"),
        Err(TemplateError::NotFound(_))
    ));
    let names = |store: &TemplateStore| -> Vec<String> {
        store
            .list()
            .iter()
            .map(|s| s.template.meta.name.clone())
            .collect()
    };
    // Only `tiny`, which is always on offer.
    assert_eq!(names(&store), ["tiny"]);
    // The next change to the store sweeps what the dead process left.
    store
        .create("next", NewTemplate::default(), |rootfs| {
            std::fs::create_dir(rootfs).map_err(|e| TemplateError::Io {
                context: "mkdir".into(),
                source: e,
            })
        })
        .expect("create");
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
    assert_eq!(names(&store), ["next", "tiny"]);
}

#[test]
fn minimal_is_debian_with_a_sudo_user() {
    if std::env::var("WARREN_TEST_MINIMAL").as_deref() != Ok("1") {
        eprintln!(
            "skipping: set WARREN_TEST_MINIMAL=1 to build `minimal` (debootstrap from this host's apt mirror: network, a few minutes)"
        );
        return;
    }
    if skip_unless_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path());
    let started = std::time::Instant::now();
    let t = store.ensure(MINIMAL).expect("minimal");
    eprintln!(
        "minimal built in {:.1} s: {} MiB",
        started.elapsed().as_secs_f64(),
        t.meta.rootfs_bytes >> 20
    );
    assert!(t.meta.builtin);
    assert_eq!(t.meta.defaults.user.as_deref(), Some("user"));
    assert_eq!(t.meta.defaults.workdir.as_deref(), Some("/home/user"));
    let root = t.rootfs();
    let map = IdMap::default();
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    assert!(
        passwd.contains("user:x:1000:1000::/home/user:/bin/bash"),
        "{passwd}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/sudoers.d/user")).expect("sudoers"),
        "user ALL=(ALL:ALL) NOPASSWD: ALL\n"
    );
    let sudo = std::fs::metadata(root.join("usr/bin/sudo")).expect("sudo");
    assert_eq!((sudo.uid(), sudo.mode() & 0o7777), (map.host(0), 0o4755));
    let home = std::fs::metadata(root.join("home/user")).expect("home");
    assert_eq!((home.uid(), home.gid()), (map.host(1000), map.host(1000)));
    for f in [
        "usr/bin/python3",
        "usr/bin/curl",
        "usr/bin/ps",
        "etc/ssl/certs/ca-certificates.crt",
    ] {
        assert!(root.join(f).exists(), "{f}");
    }
    assert!(
        !std::fs::read_dir(root.join("var/lib/apt/lists"))
            .expect("lists")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with("Packages")),
        "apt lists are cleaned"
    );
    // Cached: a second ensure does not rebuild.
    assert_eq!(store.ensure(MINIMAL).expect("again").dir(), t.dir());

    let started = std::time::Instant::now();
    let img = store.image(&t).expect("image");
    eprintln!(
        "minimal image made in {:.1} s: {} MiB",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&img).expect("image").len() >> 20
    );
    fsck_clean(&img);
    assert_eq!(stat_in(&img, "/usr/bin/sudo"), (0, 0, 0o4755));
    assert_eq!(stat_in(&img, "/home/user").0, 1000);
    assert!(debugfs(&img, "stat /usr/sbin/warren-init").contains("Type: regular"));
    assert!(
        debugfs(&img, "stat /sbin").contains("Type: symlink"),
        "sbin stays a link"
    );
}
