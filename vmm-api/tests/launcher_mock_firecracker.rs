//! The launcher for real: processes in a network namespace the test makes,
//! in a private mount namespace, stopped with SIGTERM then SIGKILL, stale
//! instances found and cleaned. The process launched is `mock-firecracker`,
//! a stand-in serving Firecracker's API, because Firecracker cannot run on
//! hosts without KVM.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use support::{NetnsGuard, can_use_namespaces, mock_firecracker_bin};
use vmm_api::LaunchError;
use vmm_api::launcher::{LaunchSpec, Launcher, LauncherConfig, StopOutcome};

fn launcher(dir: &Path) -> Launcher {
    let mut config = LauncherConfig::new(mock_firecracker_bin(), dir.join("run"));
    config.stop_grace = Duration::from_millis(500);
    Launcher::new(config).expect("launcher")
}

fn ns_inode(pid: u32, ns: &str) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/{ns}"))
        .expect("ns")
        .ino()
}

fn alive(pid: u32) -> bool {
    // A zombie of ours still has /proc/<pid>; look at its state.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn mock_firecracker_runs_in_the_netns_and_a_private_mount_namespace() {
    if !can_use_namespaces() {
        return;
    }
    let netns = NetnsGuard::new("launch");
    let dir = tempfile::tempdir().expect("tempdir");
    let launcher = launcher(dir.path());
    let console = dir.path().join("logs/cap-ns.console.log");
    let mut spec = LaunchSpec::new("cap-ns", &console);
    spec.netns = Some(netns.path());
    let fc = launcher.launch(&spec).await.expect("launch");
    let pid = fc.pid();

    // In the test's network namespace, not ours.
    let netns_ino = std::fs::metadata(netns.path()).expect("netns file").ino();
    assert_eq!(ns_inode(pid, "net"), netns_ino);
    assert_ne!(ns_inode(pid, "net"), ns_inode(std::process::id(), "net"));
    // Its own mount namespace, with no propagation back to the host.
    assert_ne!(ns_inode(pid, "mnt"), ns_inode(std::process::id(), "mnt"));
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    assert!(
        !mountinfo.contains(" shared:"),
        "mounts still shared:\n{mountinfo}"
    );
    // Its own session, so the agent's terminal/process group signals miss it.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .expect("stat")
        .split_whitespace()
        .collect();
    assert_eq!(
        fields[3],
        pid.to_string(),
        "session id (stat field 6) is its pid"
    );

    // The API answers and the console went to the log.
    assert_eq!(fc.api_socket(), launcher.api_socket("cap-ns"));
    let info = fc.client().describe_instance().await.expect("GET /");
    assert_eq!(info.id, "cap-ns");
    let log = std::fs::read_to_string(&console).expect("console log");
    assert!(
        log.contains("cap-ns: API listening on"),
        "console log: {log:?}"
    );

    // Launching the same id again is refused while it runs.
    let again = launcher.launch(&spec).await.expect_err("second launch");
    assert!(
        matches!(again, LaunchError::AlreadyRunning { .. }),
        "{again:?}"
    );

    let socket = fc.api_socket().to_path_buf();
    assert_eq!(
        fc.stop(Duration::from_secs(5)).await.expect("stop"),
        StopOutcome::Terminated
    );
    assert!(!alive(pid), "process {pid} still there");
    assert!(!socket.exists(), "socket left behind");
    assert!(
        !launcher.instance_dir("cap-ns").exists(),
        "instance dir left behind"
    );
}

#[tokio::test]
async fn mock_firecracker_ignoring_sigterm_is_killed_after_the_grace_period() {
    if !can_use_namespaces() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let launcher = launcher(dir.path());
    let mut spec = LaunchSpec::new("cap-stubborn", dir.path().join("c.log"));
    spec.extra_args = vec!["--ignore-sigterm".into()];
    let fc = launcher.launch(&spec).await.expect("launch");
    let pid = fc.pid();
    assert_eq!(
        fc.stop(Duration::from_millis(300)).await.expect("stop"),
        StopOutcome::Killed
    );
    assert!(!alive(pid));
}

#[tokio::test]
async fn mock_firecracker_stale_instances_are_found_and_cleaned_after_restart() {
    if !can_use_namespaces() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let first_run = launcher(dir.path());
    let keep = first_run
        .launch(&LaunchSpec::new("cap-keep", dir.path().join("k.log")))
        .await
        .expect("launch keep");
    let stale = first_run
        .launch(&LaunchSpec::new("cap-stale", dir.path().join("s.log")))
        .await
        .expect("launch stale");
    let (keep_pid, stale_pid) = (keep.pid(), stale.pid());
    // A dead instance: its directory and socket remain, nothing serves them.
    let dead_dir = first_run.instance_dir("cap-dead");
    std::fs::create_dir_all(&dead_dir).expect("dir");
    drop(std::os::unix::net::UnixListener::bind(dead_dir.join("api.sock")).expect("bind"));
    // The agent goes away without stopping anything.
    drop((keep, stale, first_run));

    let second_run = launcher(dir.path());
    let found = second_run.find_running().expect("scan");
    let ids: Vec<(&str, u32)> = found.iter().map(|f| (f.id.as_str(), f.pid)).collect();
    assert_eq!(ids, [("cap-keep", keep_pid), ("cap-stale", stale_pid)]);

    let report = second_run
        .clean_stale(|id| id == "cap-keep")
        .await
        .expect("clean");
    assert_eq!(report.stopped.len(), 1);
    assert_eq!(report.stopped[0].0, "cap-stale");
    assert_eq!(report.stopped[0].1, stale_pid);
    assert_eq!(report.kept.len(), 1);
    assert!(report.removed.contains(&dead_dir), "{report:?}");
    assert!(!alive(stale_pid));
    assert!(!dead_dir.exists());
    assert!(!second_run.instance_dir("cap-stale").exists());

    // The kept one still serves, and can be adopted and stopped.
    let kept = second_run.adopt(&report.kept[0]).expect("adopt");
    assert_eq!(
        kept.client().describe_instance().await.expect("GET /").id,
        "cap-keep"
    );
    assert_eq!(
        kept.stop(Duration::from_secs(5)).await.expect("stop"),
        StopOutcome::Terminated
    );
    assert!(second_run.find_running().expect("scan").is_empty());

    // A stale socket does not block a new launch under the same id.
    std::fs::create_dir_all(second_run.instance_dir("cap-keep")).expect("dir");
    drop(std::os::unix::net::UnixListener::bind(second_run.api_socket("cap-keep")).expect("bind"));
    let again = second_run
        .launch(&LaunchSpec::new("cap-keep", dir.path().join("k.log")))
        .await
        .expect("relaunch over a stale socket");
    again.stop(Duration::from_secs(5)).await.expect("stop");
}

#[tokio::test]
async fn launch_failures_are_reported_and_leave_nothing_running() {
    if !can_use_namespaces() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A "firecracker" that exits at once.
    let failing = dir.path().join("fails.sh");
    std::fs::write(&failing, "#!/bin/sh\necho 'bad kernel' >&2\nexit 3\n").expect("script");
    // One that never serves its API.
    let hanging = dir.path().join("hangs.sh");
    let hang_pid = dir.path().join("hang.pid");
    std::fs::write(
        &hanging,
        format!(
            "#!/bin/sh\necho $$ > {}\necho 'booting...'\nexec sleep 60\n",
            hang_pid.display()
        ),
    )
    .expect("script");
    for f in [&failing, &hanging] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    let mut config = LauncherConfig::new(&failing, dir.path().join("run"));
    config.socket_timeout = Duration::from_millis(500);
    let launcher = Launcher::new(config.clone()).expect("launcher");
    let err = launcher
        .launch(&LaunchSpec::new("cap-fail", dir.path().join("f.log")))
        .await
        .expect_err("exits");
    match err {
        LaunchError::Exited {
            status,
            console_tail,
            ..
        } => {
            assert!(status.contains('3'), "{status}");
            assert!(console_tail.contains("bad kernel"), "{console_tail}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }

    config.firecracker_bin = hanging;
    let launcher = Launcher::new(config).expect("launcher");
    let err = launcher
        .launch(&LaunchSpec::new("cap-hang", dir.path().join("h.log")))
        .await
        .expect_err("never serves");
    assert!(
        matches!(&err, LaunchError::SocketTimeout { console_tail, .. } if console_tail.contains("booting")),
        "{err:?}"
    );
    let pid: u32 = std::fs::read_to_string(&hang_pid)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    assert!(!alive(pid), "the hung process {pid} was not killed");

    let err = launcher
        .launch(&LaunchSpec::new("../escape", dir.path().join("x.log")))
        .await
        .expect_err("bad id");
    assert!(matches!(err, LaunchError::InvalidId { .. }), "{err:?}");

    let mut spec = LaunchSpec::new("cap-nonetns", dir.path().join("n.log"));
    spec.netns = Some(dir.path().join("no-such-netns"));
    let err = launcher.launch(&spec).await.expect_err("missing netns");
    assert!(err.to_string().contains("netns"), "{err}");
}
