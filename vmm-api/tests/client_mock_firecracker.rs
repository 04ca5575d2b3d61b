//! The client against `mock-firecracker`, a stand-in serving Firecracker's
//! API (Firecracker itself cannot run on hosts without KVM): requests arrive
//! as the spec expects, 204s are successes, `fault_message` errors are mapped.

mod support;

use std::collections::BTreeMap;

use serde_json::json;
use support::MockFirecracker;
use vmm_api::model::*;
use vmm_api::{Client, Error};

#[tokio::test]
async fn mock_firecracker_full_lifecycle_requests_match_the_spec() {
    let fc = MockFirecracker::start("cap-life");
    let client = Client::new(&fc.socket);
    let dir = fc.dir.path();
    let kernel = dir.join("vmlinux");
    std::fs::write(&kernel, b"kernel").expect("kernel");
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();

    let info = client.describe_instance().await.expect("GET /");
    assert_eq!(info.id, "cap-life");
    assert_eq!(info.state, InstanceState::NotStarted);
    assert!(
        !client
            .version()
            .await
            .expect("version")
            .firecracker_version
            .is_empty()
    );

    client
        .put_logger(&Logger {
            log_path: Some(path("fc.log")),
            level: Some(LogLevel::Info),
            ..Logger::default()
        })
        .await
        .expect("logger");
    client
        .put_metrics(&Metrics {
            metrics_path: path("fc.metrics"),
            emit_id: Some(true),
            properties: BTreeMap::from([("capsule".to_string(), "cap-life".to_string())]),
        })
        .await
        .expect("metrics");
    let machine = MachineConfig {
        track_dirty_pages: Some(true),
        ..MachineConfig::new(2, 256)
    };
    client
        .put_machine_config(&machine)
        .await
        .expect("machine-config");
    assert_eq!(
        client.machine_config().await.expect("get machine-config"),
        machine
    );
    client
        .put_boot_source(&BootSource {
            kernel_image_path: kernel.to_string_lossy().into_owned(),
            boot_args: Some("console=ttyS0 reboot=k panic=1".into()),
            initrd_path: None,
        })
        .await
        .expect("boot-source");
    client
        .put_drive(&Drive::root("rootfs", path("rootfs.ext4")))
        .await
        .expect("drive");
    let mut iface = NetworkInterface::new("eth0", "tap0");
    iface.guest_mac = Some("06:00:a9:fe:00:15".into());
    iface.tx_rate_limiter = Some(RateLimiter::DEFAULT_TX);
    client.put_network_interface(&iface).await.expect("iface");
    client
        .put_mmds_config(&MmdsConfig::v2(vec!["eth0".into()]))
        .await
        .expect("mmds config");
    client
        .put_vsock(&Vsock {
            guest_cid: 3,
            uds_path: path("v.sock"),
        })
        .await
        .expect("vsock");
    client
        .put_entropy(&EntropyDevice::default())
        .await
        .expect("entropy");
    client
        .put_balloon(&Balloon {
            amount_mib: 0,
            deflate_on_oom: true,
            stats_polling_interval_s: Some(1),
            free_page_hinting: None,
            free_page_reporting: None,
        })
        .await
        .expect("balloon");
    client.start().await.expect("InstanceStart");
    assert_eq!(
        client.describe_instance().await.expect("GET /").state,
        InstanceState::Running
    );

    // Live changes.
    client
        .patch_network_interface(&PartialNetworkInterface {
            iface_id: "eth0".into(),
            rx_rate_limiter: None,
            tx_rate_limiter: Some(RateLimiter::bandwidth(TokenBucket::per_second(
                1_000_000, None,
            ))),
        })
        .await
        .expect("patch iface");
    client
        .patch_drive(&PartialDrive {
            drive_id: "rootfs".into(),
            path_on_host: None,
            rate_limiter: Some(RateLimiter::remove_all()),
        })
        .await
        .expect("patch drive");
    let meta = json!({"warren": {"capsule": "cap-life", "n": 1}});
    client
        .put_mmds(meta.as_object().expect("object"))
        .await
        .expect("put mmds");
    let patch = json!({"warren": {"n": 2, "extra": true}});
    client
        .patch_mmds(patch.as_object().expect("object"))
        .await
        .expect("patch mmds");
    assert_eq!(
        client.mmds().await.expect("get mmds"),
        json!({"warren": {"capsule": "cap-life", "n": 2, "extra": true}})
    );
    client
        .patch_balloon(&BalloonUpdate { amount_mib: 16 })
        .await
        .expect("patch balloon");
    client
        .patch_balloon_stats(&BalloonStatsUpdate {
            stats_polling_interval_s: 2,
        })
        .await
        .expect("patch balloon stats");
    assert_eq!(client.balloon().await.expect("get balloon").amount_mib, 16);
    assert_eq!(client.balloon_stats().await.expect("stats").target_mib, 16);
    client
        .action(ActionType::FlushMetrics)
        .await
        .expect("flush metrics");

    // Pause, snapshot (full then diff), resume.
    client.pause().await.expect("pause");
    assert_eq!(
        client.describe_instance().await.expect("GET /").state,
        InstanceState::Paused
    );
    for t in [SnapshotType::Full, SnapshotType::Diff] {
        client
            .create_snapshot(&SnapshotCreate {
                snapshot_path: path("vmstate"),
                mem_file_path: path("mem"),
                snapshot_type: Some(t),
            })
            .await
            .expect("snapshot");
    }
    assert!(dir.join("vmstate").is_file() && dir.join("mem").is_file());
    client.resume().await.expect("resume");

    // What arrived: in order, and every body valid against the spec.
    let recorded = fc.recorded();
    let calls: Vec<String> = recorded
        .iter()
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    let expected = [
        "GET /",
        "GET /version",
        "PUT /logger",
        "PUT /metrics",
        "PUT /machine-config",
        "GET /machine-config",
        "PUT /boot-source",
        "PUT /drives/rootfs",
        "PUT /network-interfaces/eth0",
        "PUT /mmds/config",
        "PUT /vsock",
        "PUT /entropy",
        "PUT /balloon",
        "PUT /actions",
        "GET /",
        "PATCH /network-interfaces/eth0",
        "PATCH /drives/rootfs",
        "PUT /mmds",
        "PATCH /mmds",
        "GET /mmds",
        "PATCH /balloon",
        "PATCH /balloon/statistics",
        "GET /balloon",
        "GET /balloon/statistics",
        "PUT /actions",
        "PATCH /vm",
        "GET /",
        "PUT /snapshot/create",
        "PUT /snapshot/create",
        "PATCH /vm",
    ];
    assert_eq!(calls, expected);
    assert_eq!(
        recorded[13].2,
        Some(json!({"action_type": "InstanceStart"}))
    );
    assert_eq!(recorded[25].2, Some(json!({"state": "Paused"})));
    assert_eq!(
        recorded[15].2,
        Some(
            json!({"iface_id": "eth0", "tx_rate_limiter": {"bandwidth": {"size": 1_000_000, "refill_time": 1000}}})
        )
    );
    if let Some(spec) = support::spec() {
        for (method, path, body) in &recorded {
            let errors = spec.check_request(method, path, body.as_ref());
            assert!(errors.is_empty(), "{method} {path} {body:?}: {errors:?}");
        }
    }
}

#[tokio::test]
async fn mock_firecracker_faults_are_mapped_with_their_message() {
    let fc = MockFirecracker::start("cap-faults");
    let client = Client::new(&fc.socket);

    let err = client.pause().await.expect_err("pause before start");
    match &err {
        Error::Fault {
            status,
            fault_message,
            op,
        } => {
            assert_eq!(status.as_u16(), 400);
            assert_eq!(op, "PATCH /vm");
            assert!(
                fault_message.contains("not supported before starting"),
                "{fault_message}"
            );
        }
        other => panic!("expected a fault, got {other:?}"),
    }
    let err = client.mmds().await.expect_err("no MMDS store yet");
    assert!(
        matches!(&err, Error::Fault { status, .. } if status.as_u16() == 404),
        "{err:?}"
    );
    let err = client.start().await.expect_err("start without kernel");
    assert!(
        err.fault_message()
            .is_some_and(|m| m.contains("Missing kernel")),
        "{err}"
    );

    // Invalid input never reaches Firecracker.
    let before = fc.recorded().len();
    let err = client
        .put_machine_config(&MachineConfig::new(0, 128))
        .await
        .expect_err("vcpu 0");
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert_eq!(fc.recorded().len(), before);

    // The connection is still usable after faults.
    assert_eq!(
        client.describe_instance().await.expect("GET /").id,
        "cap-faults"
    );
}

#[tokio::test]
async fn mock_firecracker_snapshot_load_with_file_and_uffd_backends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("vmstate");
    let mem = dir.path().join("mem");
    std::fs::write(&state, b"s").expect("state");
    std::fs::write(&mem, b"m").expect("mem");
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();

    // File backend, not resumed.
    let fc = MockFirecracker::start("cap-load-file");
    let client = Client::new(&fc.socket);
    let missing = SnapshotLoad::new(s(&state), MemoryBackend::file(s(&dir.path().join("nope"))));
    let err = client
        .load_snapshot(&missing)
        .await
        .expect_err("missing memory file");
    assert!(
        err.fault_message()
            .is_some_and(|m| m.contains("memory backend")),
        "{err}"
    );
    let load = SnapshotLoad {
        track_dirty_pages: Some(true),
        network_overrides: vec![NetworkOverride {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
        }],
        ..SnapshotLoad::new(s(&state), MemoryBackend::file(s(&mem)))
    };
    client.load_snapshot(&load).await.expect("load");
    assert_eq!(
        client.describe_instance().await.expect("GET /").state,
        InstanceState::Paused
    );
    client.resume().await.expect("resume");

    // Uffd backend (a page server socket), resumed at once.
    let fc2 = MockFirecracker::start("cap-load-uffd");
    let client2 = Client::new(&fc2.socket);
    let uffd_sock = dir.path().join("uffd.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&uffd_sock).expect("bind");
    let load = SnapshotLoad {
        resume_vm: Some(true),
        ..SnapshotLoad::new(s(&state), MemoryBackend::uffd(s(&uffd_sock)))
    };
    client2.load_snapshot(&load).await.expect("load uffd");
    assert_eq!(
        client2.describe_instance().await.expect("GET /").state,
        InstanceState::Running
    );
    // A process that has been configured refuses a load.
    let err = client2.load_snapshot(&load).await.expect_err("second load");
    assert!(
        err.fault_message()
            .is_some_and(|m| m.contains("not allowed")),
        "{err}"
    );

    if let Some(spec) = support::spec() {
        for (method, path, body) in fc.recorded().iter().chain(fc2.recorded().iter()) {
            let errors = spec.check_request(method, path, body.as_ref());
            assert!(errors.is_empty(), "{method} {path} {body:?}: {errors:?}");
        }
    }
}

#[tokio::test]
async fn client_reports_a_missing_socket_and_reconnects_to_a_new_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = Client::new(dir.path().join("nothing.sock"));
    let err = client.version().await.expect_err("no socket");
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");

    // A kept connection to a process that went away is replaced by a new
    // one to whatever serves the socket now.
    let mut fc = MockFirecracker::start("cap-reconnect");
    let client = Client::new(&fc.socket);
    assert_eq!(
        client.describe_instance().await.expect("first").id,
        "cap-reconnect"
    );
    fc.restart("cap-reconnect2");
    assert_eq!(
        client.describe_instance().await.expect("after restart").id,
        "cap-reconnect2"
    );

    // A socket that accepts but never answers hits the deadline.
    let silent = dir.path().join("silent.sock");
    let _listener = tokio::net::UnixListener::bind(&silent).expect("bind");
    let client = Client::new(&silent).with_timeout(std::time::Duration::from_millis(200));
    let err = client.version().await.expect_err("no answer");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

/// The stand-in's snapshots carry its guest memory, and a load checks what
/// it got back: a full then a diff snapshot restore exactly, a memory file
/// changed behind its back is refused, and a diff needs dirty-page tracking.
#[tokio::test]
async fn mock_firecracker_snapshots_carry_memory_and_loads_check_it() {
    let fc = MockFirecracker::start("cap-memory");
    let client = Client::new(&fc.socket);
    let dir = fc.dir.path();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    std::fs::write(dir.join("vmlinux"), b"kernel").expect("kernel");
    client
        .put_machine_config(&MachineConfig::new(1, 16))
        .await
        .expect("machine-config");
    client
        .put_boot_source(&BootSource {
            kernel_image_path: path("vmlinux"),
            boot_args: None,
            initrd_path: None,
        })
        .await
        .expect("boot-source");
    client.start().await.expect("start");
    client.pause().await.expect("pause");
    let snapshot = |kind| SnapshotCreate {
        snapshot_path: path("vmstate"),
        mem_file_path: path("mem"),
        snapshot_type: Some(kind),
    };
    let err = client
        .create_snapshot(&snapshot(SnapshotType::Diff))
        .await
        .expect_err("diff without dirty-page tracking");
    assert!(
        err.fault_message()
            .is_some_and(|m| m.contains("dirty page")),
        "{err}"
    );
    client
        .create_snapshot(&snapshot(SnapshotType::Full))
        .await
        .expect("full snapshot");
    let mem = std::fs::read(dir.join("mem")).expect("memory file");
    assert_eq!(mem.len(), 16 << 20);
    assert!(mem.iter().any(|&b| b != 0), "the guest's pages are in it");

    let load = || SnapshotLoad {
        track_dirty_pages: Some(true),
        ..SnapshotLoad::new(path("vmstate"), MemoryBackend::file(path("mem")))
    };
    let fc2 = MockFirecracker::start("cap-memory-2");
    let client2 = Client::new(&fc2.socket);
    client2.load_snapshot(&load()).await.expect("load");
    client2.resume().await.expect("resume");
    client2.pause().await.expect("pause");
    client2
        .create_snapshot(&snapshot(SnapshotType::Diff))
        .await
        .expect("diff over the full snapshot");
    let fc3 = MockFirecracker::start("cap-memory-3");
    Client::new(&fc3.socket)
        .load_snapshot(&load())
        .await
        .expect("the merged memory loads");

    // One byte changed in a page the guest wrote.
    let mut tampered = std::fs::read(dir.join("mem")).expect("memory file");
    let at = tampered.iter().position(|&b| b != 0).expect("data");
    tampered[at] ^= 0xff;
    std::fs::write(dir.join("mem"), tampered).expect("write");
    let fc4 = MockFirecracker::start("cap-memory-4");
    let err = Client::new(&fc4.socket)
        .load_snapshot(&load())
        .await
        .expect_err("changed memory");
    assert!(
        err.fault_message().is_some_and(|m| m.contains("differs")),
        "{err}"
    );
}
