//! The built-in `tiny` template: made on demand from the host's static
//! busybox, owned through the id map, idempotent under concurrent callers.

use std::os::unix::fs::MetadataExt;

use warren_template::{IdMap, TINY, TemplateError, TemplateStore};

fn store(dir: &std::path::Path) -> TemplateStore {
    TemplateStore::new(
        dir.join("templates"),
        IdMap::default(),
        "/bin/busybox".into(),
    )
}

#[test]
fn tiny_is_built_once_and_shaped_for_envd() {
    if !warren_testkit::need_root("chowning the template to the capsule id range") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path());
    assert!(matches!(store.get(TINY), Err(TemplateError::NotFound(_))));

    // Two concurrent first uses: both get the same finished template.
    let results: Vec<_> = std::thread::scope(|s| {
        let a = s.spawn(|| store.ensure(TINY));
        let b = s.spawn(|| store.ensure(TINY));
        vec![a.join().expect("thread"), b.join().expect("thread")]
    });
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    let t = store.get(TINY).expect("get");
    assert!(t.meta.builtin);
    let root = t.rootfs();

    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    assert!(passwd.contains("root:x:0:0:root:/root:/bin/sh"));
    assert!(passwd.contains("user:x:1000:1000:user:/home/user:/bin/sh"));
    let group = std::fs::read_to_string(root.join("etc/group")).expect("group");
    assert!(group.contains("user:x:1000:"));
    for f in [
        "etc/hosts",
        "etc/resolv.conf",
        "bin/busybox",
        "usr/local/bin/envd",
    ] {
        assert!(root.join(f).is_file(), "{f} missing");
    }
    for d in ["home/user", "tmp", "root", "proc", "sys", "dev", "run"] {
        assert!(root.join(d).is_dir(), "{d} missing");
    }
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).expect("sh"),
        std::path::Path::new("/bin/busybox")
    );

    let map = IdMap::default();
    let meta = |p: &str| std::fs::symlink_metadata(root.join(p)).expect(p);
    assert_eq!(meta("etc/passwd").uid(), map.host(0));
    assert_eq!(meta("bin/sh").uid(), map.host(0));
    assert_eq!(meta("home/user").uid(), map.host(1000));
    assert_eq!(meta("home/user").gid(), map.host(1000));
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(meta("root").mode() & 0o7777, 0o700);

    // Idempotent: a later ensure keeps the tree; no staging dirs are left.
    let inode = meta("etc/passwd").ino();
    store.ensure(TINY).expect("again");
    assert_eq!(meta("etc/passwd").ino(), inode);
    let names: Vec<String> = store
        .list()
        .into_iter()
        .map(|s| s.template.meta.name)
        .collect();
    assert_eq!(names, [TINY]);
    let staging = std::fs::read_dir(dir.path().join("templates/.staging"))
        .expect("list")
        .count();
    assert_eq!(staging, 0, "a build left its staging directory");

    // A store with another id map refuses the tree rather than mis-owning it.
    let other = TemplateStore::new(
        dir.path().join("templates"),
        IdMap {
            host_base: 2_000_000_000,
            count: 65_536,
        },
        "/bin/busybox".into(),
    );
    assert!(matches!(
        other.get(TINY),
        Err(TemplateError::IdMapMismatch { .. })
    ));
}

#[test]
fn a_dynamic_busybox_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // /bin/ls is dynamically linked on every Debian.
    let store = TemplateStore::new(
        dir.path().join("templates"),
        IdMap::default(),
        "/bin/ls".into(),
    );
    let err = store.ensure(TINY).expect_err("dynamic binary accepted");
    assert!(matches!(err, TemplateError::Build { .. }), "{err}");
    assert!(store.get(TINY).is_err());
}
