//! A real microVM end to end: create (boot the guest kernel, envd as its
//! pid 1 behind the slot's TAP), exec through envd, pause (snapshot, process
//! stopped), resume through the page server, exec again (the guest's files
//! and processes survived), a second pause and resume (diff snapshot),
//! destroy (nothing left).
//!
//! Runs only where `FIRECRACKER_BIN` and `WARREN_KERNEL` point at a working
//! Firecracker and guest kernel (images/KERNEL.md) on a host whose
//! `/dev/kvm` boots ordinary guests; everywhere else it skips and says why.
//! Needs root, xfsprogs, e2fsprogs, busybox-static, and `envd` built
//! (`cargo build -p envd`).

mod fc_support;

use std::path::PathBuf;
use std::time::Duration;

use fc_support::{Destroy, World};
use warren_agent::manager::{CreateRequest, State};
use warren_backend::CapsuleId;
use warren_netslot::DEFAULT_TAP_TXQUEUELEN;

/// Firecracker and a guest kernel to run, or why the test cannot run here.
fn firecracker() -> Result<(PathBuf, PathBuf), String> {
    let nested = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .any(|l| l.starts_with("flags") && l.contains(" hypervisor"))
    });
    let host = if nested {
        "this host is itself a virtual machine (cpuinfo: hypervisor), so its /dev/kvm is a nested hypervisor, which may not boot ordinary guests (this CI machine's cannot)"
    } else {
        "no usable KVM host was configured"
    };
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .ok_or_else(|| format!("{name} does not point at a file ({host})"))
    };
    let bin = var("FIRECRACKER_BIN")?;
    let kernel = var("WARREN_KERNEL")?;
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Err(format!("/dev/kvm cannot be opened ({host})"));
    }
    Ok((bin, kernel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microvm_create_exec_pause_resume_exec_destroy_on_real_kvm() {
    let firecracker = match firecracker() {
        Ok(f) => f,
        Err(why) => {
            eprintln!("SKIP: no real microVM can run here: {why}");
            return;
        }
    };
    if !fc_support::prerequisites() {
        return;
    }
    let world = World::with(Some(firecracker), DEFAULT_TAP_TXQUEUELEN).await;
    let manager = world
        .manager(|c| c.envd_ready_timeout = Duration::from_secs(60))
        .await;
    let id = CapsuleId::new(format!("e2e-{}", std::process::id())).expect("id");
    let _guard = Destroy(world.backend.clone(), id.clone());
    let proxy = world.proxy.local_addr();

    let created = manager
        .create(CreateRequest {
            id: id.to_string(),
            template: "tiny".into(),
            vcpus: 1,
            memory_mb: 256,
            disk_mb: 512,
            ..CreateRequest::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create: {e}; console:\n{}", world.console(&id)));
    assert_eq!(created.state, State::Running);
    let (out, code) = fc_support::exec(proxy, &id, "echo kept > /root/note; sleep 1000 & echo $!")
        .await
        .expect("exec");
    assert_eq!(code, 0);
    let sleeper = out.trim().to_owned();

    for round in 1..=2 {
        let paused = manager.pause(id.as_str()).await.expect("pause");
        assert_eq!(paused.state, State::Paused);
        assert!(world.backend.firecracker_pid(&id).is_none(), "RAM freed");
        let resumed = manager
            .resume(id.as_str(), None, None)
            .await
            .unwrap_or_else(|e| panic!("resume {round}: {e}; console:\n{}", world.console(&id)));
        assert_eq!(resumed.state, State::Running);
        let (out, code) = fc_support::exec(
            proxy,
            &id,
            &format!("cat /root/note && kill -0 {sleeper} && echo alive"),
        )
        .await
        .expect("exec after resume");
        assert_eq!((out.as_str(), code), ("kept\nalive\n", 0), "round {round}");
        let stats = world.backend.page_server_stats(&id).expect("page server");
        assert!(stats.faults > 0, "{stats:?}");
    }

    manager.destroy(id.as_str()).await.expect("destroy");
    assert!(!world.capsule_dir(&id).exists());
    assert!(!world.backend.snapshot_dir(&id).exists());
    assert!(world.slots.get(id.as_str()).await.is_none());
}
