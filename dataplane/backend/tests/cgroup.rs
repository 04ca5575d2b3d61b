//! The cgroup API on both versions. This host mounts v1 controllers plus a
//! cgroup2 hierarchy without controllers (a "hybrid" host): v1 is tested
//! through the backend's tests; here v2's core (create, join, freeze, thaw,
//! kill, remove) runs on the real cgroup2 mount, and v2's controller files
//! (limits, stats), which that mount cannot offer, against a directory of
//! plain files laid out like a v2 cgroup.

use std::path::{Path, PathBuf};
use std::time::Duration;

use warren_backend::cgroup::{Cgroup, CgroupTree, CgroupV2, FreezeState, Hierarchy, Limits};

fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let path = left.split(' ').nth(4)?;
        right.starts_with("cgroup2 ").then(|| PathBuf::from(path))
    })
}

/// Removes the test's parent cgroup on drop.
struct Parent(PathBuf);

impl Drop for Parent {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn detect_matches_this_host() {
    let h = Hierarchy::detect().expect("detect");
    let v1_memory = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    assert_eq!(h.version(), if v1_memory { 1 } else { 2 });
}

#[tokio::test]
async fn v2_core_on_the_real_hierarchy() {
    if !warren_testkit::need_root("creating cgroups") {
        return;
    }
    let Some(root) = cgroup2_mount() else {
        // A property of the host's kernel setup, not something to install.
        eprintln!("SKIP: no cgroup2 hierarchy mounted on this host");
        return;
    };
    let parent = format!("warren-test-v2-{}", std::process::id());
    let _cleanup = Parent(root.join(&parent));
    let tree = CgroupTree::new(Hierarchy::V2(root.clone()), &parent).expect("tree");
    let cg = tree.create("capsule").expect("create");
    assert!(tree.open("capsule").expect("open").is_some());
    assert!(tree.create("capsule").is_err(), "created twice");

    let mut child = std::process::Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("spawn");
    cg.add_process(child.id()).expect("join");
    assert_eq!(cg.procs().expect("procs"), vec![child.id() as i32]);

    cg.freeze(Duration::from_secs(5)).await.expect("freeze");
    assert_eq!(cg.freeze_state().expect("state"), FreezeState::Frozen);
    let cpu = |cg: &Cgroup| -> u64 {
        let Cgroup::V2(v2) = cg else { panic!("v2") };
        let stat = std::fs::read_to_string(v2.dir().join("cpu.stat")).expect("cpu.stat");
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.parse().ok())
            .expect("usage_usec")
    };
    let frozen_at = cpu(&cg);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(cpu(&cg), frozen_at, "a frozen busy loop used CPU");

    cg.thaw(Duration::from_secs(5)).await.expect("thaw");
    assert_eq!(cg.freeze_state().expect("state"), FreezeState::Thawed);
    std::thread::sleep(Duration::from_millis(200));
    assert!(cpu(&cg) > frozen_at, "the thawed loop did not run");

    // Kill works on a frozen cgroup too.
    cg.freeze(Duration::from_secs(5)).await.expect("freeze");
    cg.kill_all(Duration::from_secs(5)).expect("kill");
    let status = child.wait().expect("wait");
    assert!(!status.success());
    assert!(cg.procs().expect("procs").is_empty());
    cg.remove(Duration::from_secs(5)).expect("remove");
    assert!(tree.open("capsule").expect("open").is_none());
}

/// Lays out a v2 cgroup's files in a plain directory.
fn fake_v2(dir: &Path) -> Cgroup {
    for (file, contents) in [
        ("cpu.max", "max 100000\n"),
        ("memory.max", "max\n"),
        ("memory.swap.max", "max\n"),
        ("pids.max", "max\n"),
        (
            "cpu.stat",
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        ),
        ("memory.current", "4096\n"),
        ("pids.current", "3\n"),
        (
            "memory.events",
            "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\noom_group_kill 0\n",
        ),
        ("cgroup.freeze", "0\n"),
        ("cgroup.events", "populated 1\nfrozen 0\n"),
    ] {
        std::fs::write(dir.join(file), contents).expect("write");
    }
    Cgroup::V2(CgroupV2::at(dir.to_owned()))
}

#[test]
fn v2_limits_and_stats_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cg = fake_v2(dir.path());
    cg.set_limits(&Limits {
        cpus: 2,
        memory_bytes: 256 << 20,
        pids_max: 100,
    })
    .expect("limits");
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).expect(f);
    assert_eq!(read("cpu.max"), "200000 100000");
    assert_eq!(read("memory.max"), (256u64 << 20).to_string());
    assert_eq!(read("memory.swap.max"), "0");
    assert_eq!(read("pids.max"), "100");

    let stats = cg.stats().expect("stats");
    assert_eq!(stats.cpu_usage_ns, 1_500_000);
    assert_eq!(stats.memory_bytes, 4096);
    assert_eq!(stats.memory_limit_bytes, 256 << 20);
    assert_eq!(stats.pids, 3);
    assert_eq!(stats.oom_kills, 2);

    // Freeze requested but not yet reported: "freezing"; then frozen.
    std::fs::write(dir.path().join("cgroup.freeze"), "1").expect("write");
    assert_eq!(cg.freeze_state().expect("state"), FreezeState::Freezing);
    std::fs::write(dir.path().join("cgroup.events"), "populated 1\nfrozen 1\n").expect("write");
    assert_eq!(cg.freeze_state().expect("state"), FreezeState::Frozen);

    // A garbled file is a typed parse error, not a zero.
    std::fs::write(dir.path().join("memory.current"), "lots\n").expect("write");
    assert!(cg.stats().is_err());
}
