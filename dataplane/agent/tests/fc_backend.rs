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
//! and `envd` built (`cargo build -p warren-fc-standin -p envd --bins`).

mod fc_support;

use std::collections::BTreeMap;
use std::path::Path;

use fc_support::{Destroy, World};
use serde_json::json;
use warren_backend::{
    Backend, BackendError, CapsuleId, CapsuleSpec, PauseMode, Resources, RunState,
};
use warren_netslot::{Slot, SlotOptions, TxLimit};

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

/// A new capsule's id (`prefix-<pid>`), its network slot and its spec.
async fn capsule(world: &World, prefix: &str) -> (CapsuleId, Slot, CapsuleSpec) {
    let id = unique(prefix);
    let slot = world
        .slots
        .acquire(id.as_str(), SlotOptions::default())
        .await
        .expect("slot");
    let spec = spec(&id, &slot.netns_path());
    (id, slot, spec)
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
    let (id, slot, spec) = capsule(&world, "fcseq").await;
    let _guard = Destroy(backend.clone(), id.clone());

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
    assert!(fc_support::ext4_stat(&disk, "/usr/bin/envd").contains("Type: symlink"));
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
    backend
        .set_tx_limit(&id, Some(faster))
        .await
        .expect("limit");
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
    assert_eq!(
        backend.status(&id).await.expect("status").state,
        RunState::Paused
    );
    assert_eq!(backend.firecracker_pid(&id), None);
    assert!(!fc_support::alive(pid), "firecracker stopped");
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
    assert_eq!(
        backend.status(&id).await.expect("status").state,
        RunState::Running
    );
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
    assert_eq!(
        body(17),
        &metadata,
        "MMDS put back after the second restore"
    );
    world.assert_requests_match_the_spec();
}

/// The sandbox manager over the Firecracker backend: envd (real, in a
/// stand-in guest namespace behind the slot's TAP, which the test relays as
/// Firecracker's virtio-net would) answers through the capsule address; a
/// pause drains the proxied connections (a running command's stream is
/// force-closed after the grace), asks envd to prepare and snapshots; the
/// resume restores through the page server, re-initialises envd and
/// reopens the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_firecracker_manager_drains_snapshots_restores_and_reinits_envd() {
    use std::time::{Duration, Instant};
    use warren_agent::manager::{CreateRequest, EnvdDefaults, State, TxLimitRecord};
    use warren_netslot::DEFAULT_TAP_TXQUEUELEN;
    use warren_netslot::testing::FakeGuest;

    if !fc_support::prerequisites() {
        return;
    }
    let world = World::new(DEFAULT_TAP_TXQUEUELEN).await;
    let manager = world
        .manager(|c| {
            c.envd_ready_timeout = Duration::from_secs(30);
            c.drain_grace = Duration::from_millis(300);
        })
        .await;
    let id = unique("fcmgr");
    let _guard = Destroy(world.backend.clone(), id.clone());
    let req = CreateRequest {
        id: id.to_string(),
        template: "tiny".into(),
        vcpus: 1,
        memory_mb: 32,
        disk_mb: 256,
        defaults: EnvdDefaults {
            env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
            ..EnvdDefaults::default()
        },
        envd_token: Some("envd-secret".into()),
        ..CreateRequest::default()
    };
    let create = tokio::spawn({
        let manager = manager.clone();
        async move { manager.create(req).await }
    });
    // Once the TAP exists, the stand-in guest and its envd come up behind it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let slot = loop {
        if let Some(slot) = world.slots.get(id.as_str()).await
            && fc_support::tap_exists(slot.netns_name())
        {
            break slot;
        }
        assert!(Instant::now() < deadline, "no TAP appeared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let guest = FakeGuest::start(&world.net, &slot).await;
    let _envd = fc_support::GuestEnvd::start(&guest.netns, &world.run_dir.0.join("envd.log"));
    let record = create.await.expect("join").expect("create");
    assert_eq!(record.state, State::Running);
    assert!(record.envd_version.is_some());
    assert_eq!(fc_support::tap_txqueuelen(slot.netns_name()), 5000);
    // Egress is shaped once, by Firecracker: the slot has no limit of its own.
    let info = world.slots.list().await;
    let info = info.iter().find(|i| i.slot == slot).expect("slot info");
    assert_eq!(info.tx_limit, None);

    let proxy = world.proxy.local_addr();
    let (out, code) = fc_support::exec(proxy, &id, "echo $GREETING")
        .await
        .expect("exec");
    assert_eq!((out.as_str(), code), ("hello\n", 0));

    // A command still running when the pause comes is cut off after the grace.
    let long = tokio::spawn({
        let id = id.clone();
        async move { fc_support::exec(proxy, &id, "sleep 30; echo late").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused = manager.pause(id.as_str()).await.expect("pause");
    assert_eq!(paused.state, State::Paused);
    let cut = tokio::time::timeout(Duration::from_secs(10), long)
        .await
        .expect("the running command's stream was closed")
        .expect("join");
    assert!(cut.is_err(), "{cut:?}");
    assert!(
        fc_support::exec(proxy, &id, "true").await.is_err(),
        "a paused capsule is not reachable"
    );
    assert!(world.backend.firecracker_pid(&id).is_none());

    // A resume that fails (its memory file is missing) loses nothing: the
    // capsule stays paused and resumes once the file is back.
    let mem = world.backend.snapshot_dir(&id).join("mem");
    let aside = mem.with_extension("aside");
    std::fs::rename(&mem, &aside).expect("move the memory file away");
    manager
        .resume(id.as_str(), None, None)
        .await
        .expect_err("no memory file");
    assert_eq!(
        manager.get(id.as_str()).expect("record").state,
        State::Paused
    );
    std::fs::rename(&aside, &mem).expect("put it back");
    let resumed = manager
        .resume(id.as_str(), None, None)
        .await
        .expect("resume");
    assert_eq!(resumed.state, State::Running);
    let (out, _) = fc_support::exec(proxy, &id, "echo $GREETING")
        .await
        .expect("exec after resume");
    assert_eq!(out, "hello\n", "defaults re-applied");
    world
        .wait_console(&id, "guest memory verified after restore", 1)
        .await;

    let limit = TxLimitRecord {
        size: 2_000_000,
        one_time_burst: 1_000_000,
        refill_time_ms: 1000,
    };
    let changed = manager
        .set_tx_limit(id.as_str(), Some(limit))
        .await
        .expect("tx limit");
    assert_eq!(changed.tx_limit, Some(limit));

    manager.destroy(id.as_str()).await.expect("destroy");
    assert!(world.slots.get(id.as_str()).await.is_none());
    assert!(!world.capsule_dir(&id).exists());

    let calls = world.recorded();
    let nic = calls
        .iter()
        .find(|(m, p, _)| m == "PUT" && p == "/network-interfaces/eth0")
        .expect("NIC");
    assert_eq!(
        nic.2["tx_rate_limiter"],
        json!({"bandwidth": {"size": 200_000_000, "one_time_burst": 100_000_000, "refill_time": 1000}}),
        "the default limit: 200 MB/s, 100 MB burst, 1 s refill"
    );
    assert!(calls.iter().any(|(m, p, b)| m == "PATCH"
        && p == "/network-interfaces/eth0"
        && b["tx_rate_limiter"]["bandwidth"]["size"] == json!(2_000_000)));
    world.assert_requests_match_the_spec();
}

/// The agent restarts while a restored microVM is still faulting its
/// memory in: the new backend adopts the running VM and gives it a new
/// page server (the userfaultfd taken back from the process), and the
/// guest finishes reading its memory, every byte right. Then a restart
/// while it is paused: its snapshot is its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_firecracker_restart_reattaches_the_page_server_and_adopts_paused_vms() {
    use std::sync::Arc;
    if !fc_support::prerequisites() {
        return;
    }
    let mut world = World::new(5000).await;
    let (id, slot, mut spec) = capsule(&world, "fcrst").await;
    // Large enough that the guest is still reading when the agent goes.
    spec.resources.memory_mb = 128;
    let mut guard = Destroy(world.backend.clone(), id.clone());
    let backend = world.backend.clone();
    backend.create(&spec).await.expect("create");
    backend.pause(&id).await.expect("pause");
    backend.resume(&id).await.expect("resume");
    let served = backend.page_server_stats(&id).expect("page server");
    let pages = (128u64 << 20) / 4096;
    assert!(
        served.pages_copied + served.pages_zeroed < pages,
        "the guest had not read all of its memory yet: {served:?}"
    );
    let pid = backend.firecracker_pid(&id).expect("pid");

    // The agent goes away: its backend and its data-plane cores (and with
    // them the page server). Firecracker keeps running.
    let new_proxy = Arc::new(fc_support::start_proxy());
    world.backend = World::open(&world.config, &world.slots, &new_proxy).await;
    guard.0 = world.backend.clone();
    drop(backend);
    drop(std::mem::replace(&mut world.proxy, new_proxy));
    let backend = world.backend.clone();
    assert!(fc_support::alive(pid), "firecracker survived");

    let handle = backend.adopt(&id).await.expect("adopt");
    assert_eq!(handle.status.state, RunState::Running);
    assert_eq!(backend.firecracker_pid(&id), Some(pid));
    world
        .wait_console(&id, "guest memory verified after restore", 1)
        .await;
    let served = backend.page_server_stats(&id).expect("new page server");
    assert!(served.faults > 0, "the new page server served: {served:?}");

    // Paused, then the agent restarts again: the snapshot is the state.
    backend.pause(&id).await.expect("pause");
    drop(backend);
    world.backend = World::open(&world.config, &world.slots, &world.proxy).await;
    guard.0 = world.backend.clone();
    let backend = world.backend.clone();
    let handle = backend.adopt(&id).await.expect("adopt paused");
    assert_eq!(handle.status.state, RunState::Paused);
    backend.resume(&id).await.expect("resume after the restart");
    world
        .wait_console(&id, "guest memory verified after restore", 2)
        .await;
    backend.destroy(&id).await.expect("destroy");
    world.slots.release(&slot).await.expect("release");
    world.assert_requests_match_the_spec();
}

/// An agent that died half-way through a pause: before the snapshot was
/// complete the VM runs on (vCPUs resumed, partial files dropped); after,
/// the pause is finished (process stopped, snapshot committed) and the
/// capsule resumes from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_firecracker_interrupted_pauses_are_undone_or_finished_on_adoption() {
    use vmm_api::Client;
    use vmm_api::model::{SnapshotCreate, SnapshotType};
    if !fc_support::prerequisites() {
        return;
    }
    let mut world = World::new(5000).await;
    let (id, slot, spec) = capsule(&world, "fcint").await;
    let mut guard = Destroy(world.backend.clone(), id.clone());
    world.backend.create(&spec).await.expect("create");
    let state_file = world.capsule_dir(&id).join("firecracker.json");
    let api = Client::new(world.config.runtime_dir.join(id.as_str()).join("api.sock"));
    let snapshots = world.backend.snapshot_dir(&id);
    let set_phase = |phase: &str| {
        let mut state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state_file).expect("state")).expect("json");
        state["phase"] = json!(phase);
        std::fs::write(&state_file, state.to_string()).expect("write state");
    };
    let restart = |world: &World| {
        let config = world.config.clone();
        let (slots, proxy) = (world.slots.clone(), world.proxy.clone());
        async move { World::open(&config, &slots, &proxy).await }
    };

    // Died after pausing the vCPUs, mid-snapshot.
    api.pause().await.expect("pause vCPUs");
    std::fs::create_dir_all(&snapshots).expect("snapshot dir");
    std::fs::write(snapshots.join("vmstate.new"), b"partial").expect("partial");
    set_phase("pausing");
    world.backend = restart(&world).await;
    guard.0 = world.backend.clone();
    let handle = world.backend.adopt(&id).await.expect("adopt");
    assert_eq!(handle.status.state, RunState::Running);
    assert!(
        !snapshots.join("vmstate.new").exists(),
        "partial snapshot dropped"
    );
    assert_eq!(
        api.describe_instance().await.expect("describe").state,
        vmm_api::model::InstanceState::Running
    );

    // Died after the snapshot was written, before stopping Firecracker.
    api.pause().await.expect("pause vCPUs");
    let path = |n: &str| snapshots.join(n).to_string_lossy().into_owned();
    api.create_snapshot(&SnapshotCreate {
        snapshot_path: path("vmstate.new"),
        mem_file_path: path("mem.new"),
        snapshot_type: Some(SnapshotType::Full),
    })
    .await
    .expect("snapshot");
    set_phase("captured");
    let pid = world.backend.firecracker_pid(&id).expect("pid");
    world.backend = restart(&world).await;
    guard.0 = world.backend.clone();
    let handle = world.backend.adopt(&id).await.expect("adopt");
    assert_eq!(handle.status.state, RunState::Paused);
    assert!(!fc_support::alive(pid), "process stopped");
    assert!(snapshots.join("vmstate").is_file() && snapshots.join("mem").is_file());
    world.backend.resume(&id).await.expect("resume from it");
    world
        .wait_console(&id, "guest memory verified after restore", 1)
        .await;
    world.backend.destroy(&id).await.expect("destroy");
    world.slots.release(&slot).await.expect("release");
}

/// A start that fails (here Firecracker refuses the kernel) leaves nothing
/// behind: no process, disk, files or instance directory; bad specs are
/// refused before anything is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_firecracker_failed_creates_leave_nothing_behind() {
    if !fc_support::prerequisites() {
        return;
    }
    let world = World::new(5000).await;
    let (id, slot, good) = capsule(&world, "fcfail").await;

    let mut bad = good.clone();
    bad.resources.vcpus = 33;
    let err = world.backend.create(&bad).await.expect_err("33 vCPUs");
    assert!(matches!(err, BackendError::InvalidSpec(_)), "{err}");
    let mut bad = good.clone();
    bad.netns = "/run/netns/not-this-capsules".into();
    let err = world.backend.create(&bad).await.expect_err("foreign netns");
    assert!(matches!(err, BackendError::InvalidSpec(_)), "{err}");
    assert!(!world.capsule_dir(&id).exists());

    std::fs::remove_file(&world.config.kernel).expect("remove the kernel");
    let err = world.backend.create(&good).await.expect_err("no kernel");
    assert!(
        matches!(
            err,
            BackendError::Vmm {
                step: "boot source",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        !world.capsule_dir(&id).exists(),
        "capsule directory removed"
    );
    assert!(!world.config.runtime_dir.join(id.as_str()).exists());
    assert!(
        world
            .backend
            .persisted()
            .await
            .expect("persisted")
            .is_empty()
    );
    assert!(!world.recorded().is_empty(), "firecracker was asked");
    world.slots.release(&slot).await.expect("release");
}
