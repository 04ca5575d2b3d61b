//! The Firecracker backend for real on this host, except Firecracker
//! itself: `mock-firecracker` stands in for it (this host's /dev/kvm is a
//! nested hypervisor that boots no guests). Real here: the network slot's
//! namespace and TAP, copy-on-write disks on XFS, template images built
//! with mkfs.ext4, Firecracker's process launched in the slot's namespace,
//! snapshot files with real memory contents, the page server on an io_uring
//! core serving the stand-in's userfaultfd (the stand-in checks every byte
//! it gets back), and the agent-restart paths. Every request body is
//! checked against Firecracker's OpenAPI spec.
//!
//! Needs root, xfsprogs, e2fsprogs, busybox-static, and `mock-firecracker`
//! and `envd` built (`cargo build -p vmm-api -p envd --bins`).

mod fc_support;

use std::collections::BTreeMap;
use std::path::Path;

use fc_support::{Destroy, World};
use serde_json::json;
use warren_dataplane::backend::{
    Backend, BackendError, CapsuleId, CapsuleSpec, PauseMode, Resources, RunState,
};
use warren_dataplane::netslot::{SlotOptions, TxLimit};

fn spec(id: &CapsuleId, netns: &Path) -> CapsuleSpec {
    CapsuleSpec {
        id: id.clone(),
        template: "tiny".into(),
        resources: Resources {
            vcpus: 2,
            memory_mb: 32,
            disk_mb: 256,
            max_pids: Resources::DEFAULT_MAX_PIDS,
        },
        netns: netns.to_owned(),
        hostname: None,
        env: BTreeMap::new(),
        metadata: BTreeMap::from([("owner".to_string(), "fc-test".to_string())]),
        tx_limit: Some(TxLimit {
            size: 1_000_000,
            one_time_burst: 500_000,
            refill_time_ms: 1000,
        }),
    }
}

fn unique(prefix: &str) -> CapsuleId {
    CapsuleId::new(format!("{prefix}-{}", std::process::id())).expect("id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_firecracker_create_pause_resume_destroy_requests_match_the_spec() {
    if !fc_support::prerequisites() {
        return;
    }
    let world = World::new(2500).await;
    let backend = &world.backend;
    assert_eq!(backend.pause_mode(), PauseMode::Snapshot);
    assert!(backend.shapes_egress());
    let id = unique("fcseq");
    let slot = world
        .slots
        .acquire(id.as_str(), SlotOptions::default())
        .await
        .expect("slot");
    let spec = spec(&id, &slot.netns_path());
    let _guard = Destroy(backend, id.clone());

    // Create: disk, TAP, process in the slot's namespace, configured, booted.
    let handle = backend.create(&spec).await.expect("create");
    assert_eq!(handle.status.state, RunState::Running);
    let pid = backend.firecracker_pid(&id).expect("firecracker runs");
    assert!(fc_support::in_netns(pid, &slot.netns_path()));
    assert!(fc_support::own_mount_ns(pid));
    assert_eq!(fc_support::tap_txqueuelen(slot.netns_name()), 2500);
    let disk = world.capsule_dir(&id).join("rootfs.ext4");
    assert_eq!(std::fs::metadata(&disk).expect("disk").len(), 256 << 20);
    // The guest's root: the template with the guest init and envd, owned
    // by the guest's own ids.
    assert!(fc_support::ext4_stat(&disk, "/sbin/warren-init").contains("Mode:  0755"));
    assert!(fc_support::ext4_stat(&disk, "/.warren/start-envd").contains("Mode:  0755"));
    assert_eq!(fc_support::ext4_uid(&disk, "/usr/local/bin/envd"), 0);
    assert_eq!(fc_support::ext4_uid(&disk, "/home/user"), 1000);
    assert_eq!(fc_support::ext4_uid(&disk, "/bin/busybox"), 0);

    // Bad requests change nothing.
    let err = backend.create(&spec).await.expect_err("duplicate");
    assert!(matches!(err, BackendError::AlreadyExists(_)), "{err}");
    let err = backend.resume(&id).await.expect_err("resume a running VM");
    assert!(matches!(err, BackendError::InvalidState { .. }), "{err}");

    // The egress limit, live.
    let faster = TxLimit {
        size: 4_000_000,
        one_time_burst: 0,
        refill_time_ms: 500,
    };
    backend.set_tx_limit(&id, Some(faster)).await.expect("limit");
    backend.set_tx_limit(&id, None).await.expect("unlimited");
    let err = backend
        .set_tx_limit(
            &id,
            Some(TxLimit {
                refill_time_ms: 0,
                ..faster
            }),
        )
        .await
        .expect_err("a limit without refill time");
    assert!(matches!(err, BackendError::InvalidSpec(_)), "{err}");

    // Pause: a full snapshot, the process gone.
    backend.pause(&id).await.expect("pause");
    assert_eq!(backend.status(&id).await.expect("status").state, RunState::Paused);
    assert_eq!(backend.firecracker_pid(&id), None);
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "firecracker stopped");
    let snapshots = backend.snapshot_dir(&id);
    for f in ["vmstate", "mem"] {
        assert!(snapshots.join(f).is_file(), "{f}");
    }
    assert_eq!(
        std::fs::metadata(snapshots.join("mem")).expect("mem").len(),
        32 << 20
    );
    let metrics = backend.metrics(&id).await.expect("metrics while paused");
    assert_eq!(metrics.memory_bytes, 0, "a paused microVM holds no RAM");
    let err = backend.pause(&id).await.expect_err("pause a paused VM");
    assert!(matches!(err, BackendError::InvalidState { .. }), "{err}");

    // Resume through the page server; the stand-in reads back all of its
    // memory through it and checks every byte.
    backend.resume(&id).await.expect("resume");
    assert_eq!(backend.status(&id).await.expect("status").state, RunState::Running);
    const VERIFIED: &str = "guest memory verified after restore";
    world.wait_console(&id, VERIFIED, 1).await;
    let served = backend.page_server_stats(&id).expect("page server");
    assert!(served.faults > 0, "{served:?}");
    let metrics = backend.metrics(&id).await.expect("metrics");
    assert!(metrics.memory_bytes > 0 && metrics.pids > 0, "{metrics:?}");

    // Pause again: a diff over the first snapshot, merged into it; the
    // page server saved the working set of the restore.
    backend.pause(&id).await.expect("second pause");
    assert!(!snapshots.join("mem.diff").exists());
    assert!(snapshots.join("mem.wset").is_file(), "working set saved");
    // And back: the merged memory must be exactly the guest's.
    backend.resume(&id).await.expect("second resume");
    world.wait_console(&id, VERIFIED, 2).await;

    // Destroy: nothing left of it.
    backend.destroy(&id).await.expect("destroy");
    assert!(!world.capsule_dir(&id).exists());
    assert!(!snapshots.exists());
    assert!(!world.config.runtime_dir.join(id.as_str()).exists());
    assert!(backend.firecracker_pid(&id).is_none());
    let err = backend.destroy(&id).await.expect_err("destroy twice");
    assert!(matches!(err, BackendError::NotFound(_)), "{err}");
    world.slots.release(&slot).await.expect("release");

    // What Firecracker was asked, in order, each body as the spec allows.
    let calls = world.recorded();
    let seq: Vec<String> = calls.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
    let boot = [
        "PUT /machine-config",
        "PUT /boot-source",
        "PUT /drives/rootfs",
        "PUT /network-interfaces/eth0",
        "PUT /mmds/config",
        "PUT /mmds",
        "PUT /actions",
        "PATCH /network-interfaces/eth0",
        "PATCH /network-interfaces/eth0",
    ];
    let pause = ["PATCH /vm", "PUT /snapshot/create"];
    let resume = ["PUT /snapshot/load", "PUT /mmds", "PATCH /vm"];
    let expected: Vec<&str> = [&boot[..], &pause, &resume, &pause, &resume].concat();
    assert_eq!(seq, expected);
    let body = |i: usize| &calls[i].2;
    assert_eq!(body(0), &json!({"vcpu_count": 2, "mem_size_mib": 32}));
    let args = body(1)["boot_args"].as_str().expect("boot args");
    for part in [
        "console=ttyS0",
        "root=/dev/vda",
        "init=/sbin/warren-init",
        &format!("ip=169.254.0.21::169.254.0.22:255.255.255.252:{id}:eth0:off"),
        "warren.envd=/.warren/start-envd",
    ] {
        assert!(args.contains(part), "{part:?} not in {args}");
    }
    assert_eq!(
        body(2),
        &json!({"drive_id": "rootfs", "is_root_device": true, "is_read_only": false,
                "path_on_host": disk.to_string_lossy()})
    );
    assert_eq!(
        body(3),
        &json!({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:a9:fe:00:15",
                "tx_rate_limiter": {"bandwidth": {"size": 1_000_000, "one_time_burst": 500_000,
                                                  "refill_time": 1000}}})
    );
    assert_eq!(
        body(4),
        &json!({"version": "V2", "network_interfaces": ["eth0"]})
    );
    let metadata = json!({"warren": {"capsule_id": id.as_str(), "template": "tiny",
                                     "metadata": {"owner": "fc-test"}}});
    assert_eq!(body(5), &metadata);
    assert_eq!(body(6), &json!({"action_type": "InstanceStart"}));
    assert_eq!(
        body(7),
        &json!({"iface_id": "eth0", "tx_rate_limiter": {"bandwidth":
            {"size": 4_000_000, "refill_time": 500}}})
    );
    assert_eq!(
        body(8),
        &json!({"iface_id": "eth0", "tx_rate_limiter": {"bandwidth": {"size": 0, "refill_time": 0}}})
    );
    let snap = |name: &str| snapshots.join(name).to_string_lossy().into_owned();
    assert_eq!(body(9), &json!({"state": "Paused"}));
    assert_eq!(
        body(10),
        &json!({"snapshot_path": snap("vmstate.new"), "mem_file_path": snap("mem.new"),
                "snapshot_type": "Full"})
    );
    let load = body(11);
    assert_eq!(load["snapshot_path"], json!(snap("vmstate")));
    assert_eq!(load["mem_backend"]["backend_type"], json!("Uffd"));
    assert_eq!(load["resume_vm"], json!(false));
    assert_eq!(load["track_dirty_pages"], json!(true));
    assert_eq!(body(12), &metadata, "MMDS put back after the restore");
    assert_eq!(body(13), &json!({"state": "Resumed"}));
    assert_eq!(
        body(15),
        &json!({"snapshot_path": snap("vmstate.new"), "mem_file_path": snap("mem.diff"),
                "snapshot_type": "Diff"})
    );
    assert_eq!(body(17), &metadata, "MMDS put back after the second restore");
    world.assert_requests_match_the_spec();
}
