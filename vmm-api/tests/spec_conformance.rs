//! Every request body the client can produce validates against
//! Firecracker's OpenAPI spec (`shared/firecracker/firecracker-api.yaml`),
//! and the checker doing that rejects what Firecracker would reject.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::{Value, json};
use vmm_api::Request;
use vmm_api::model::*;

/// Names each variant; no wildcard arm, so a new endpoint does not compile
/// until it is named here and given samples in `samples()`.
fn variant_name(r: &Request<'_>) -> &'static str {
    match r {
        Request::DescribeInstance => "DescribeInstance",
        Request::GetVersion => "GetVersion",
        Request::GetMachineConfig => "GetMachineConfig",
        Request::PutMachineConfig(_) => "PutMachineConfig",
        Request::PutBootSource(_) => "PutBootSource",
        Request::PutDrive(_) => "PutDrive",
        Request::PatchDrive(_) => "PatchDrive",
        Request::PutNetworkInterface(_) => "PutNetworkInterface",
        Request::PatchNetworkInterface(_) => "PatchNetworkInterface",
        Request::PutMmdsConfig(_) => "PutMmdsConfig",
        Request::PutMmds(_) => "PutMmds",
        Request::PatchMmds(_) => "PatchMmds",
        Request::GetMmds => "GetMmds",
        Request::Action(_) => "Action",
        Request::PatchVm(_) => "PatchVm",
        Request::CreateSnapshot(_) => "CreateSnapshot",
        Request::LoadSnapshot(_) => "LoadSnapshot",
        Request::PutBalloon(_) => "PutBalloon",
        Request::PatchBalloon(_) => "PatchBalloon",
        Request::GetBalloon => "GetBalloon",
        Request::GetBalloonStats => "GetBalloonStats",
        Request::PatchBalloonStats(_) => "PatchBalloonStats",
        Request::PutMetrics(_) => "PutMetrics",
        Request::PutLogger(_) => "PutLogger",
        Request::PutEntropy(_) => "PutEntropy",
        Request::PutVsock(_) => "PutVsock",
    }
}

const ALL_VARIANTS: usize = 26;

fn full_limiter() -> RateLimiter {
    RateLimiter {
        bandwidth: Some(TokenBucket {
            size: 200_000_000,
            one_time_burst: Some(100_000_000),
            refill_time: 1000,
        }),
        ops: Some(TokenBucket::per_second(1000, None)),
    }
}

/// Owned sample bodies: minimal (required fields only) and maximal (every
/// optional field set), and every enum value.
struct Samples {
    machine: Vec<MachineConfig>,
    boot: Vec<BootSource>,
    drives: Vec<Drive>,
    partial_drives: Vec<PartialDrive>,
    ifaces: Vec<NetworkInterface>,
    partial_ifaces: Vec<PartialNetworkInterface>,
    mmds_config: Vec<MmdsConfig>,
    mmds: Vec<MmdsContents>,
    actions: Vec<InstanceAction>,
    vm: Vec<Vm>,
    snap_create: Vec<SnapshotCreate>,
    snap_load: Vec<SnapshotLoad>,
    balloon: Vec<Balloon>,
    balloon_update: Vec<BalloonUpdate>,
    balloon_stats: Vec<BalloonStatsUpdate>,
    metrics: Vec<Metrics>,
    logger: Vec<Logger>,
    entropy: Vec<EntropyDevice>,
    vsock: Vec<Vsock>,
}

fn samples() -> Samples {
    let mut machine = vec![MachineConfig::new(2, 512)];
    for (i, hp) in HugePages::ALL.into_iter().enumerate() {
        machine.push(MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 1024,
            smt: Some(i % 2 == 0),
            track_dirty_pages: Some(true),
            huge_pages: Some(hp),
            cpu_template: None,
        });
    }
    for t in CpuTemplate::ALL {
        let mut m = MachineConfig::new(1, 128);
        m.cpu_template = Some(t);
        machine.push(m);
    }

    let boot = vec![
        BootSource {
            kernel_image_path: "/var/lib/warren/kernels/vmlinux".into(),
            boot_args: None,
            initrd_path: None,
        },
        BootSource {
            kernel_image_path: "/var/lib/warren/kernels/vmlinux".into(),
            boot_args: Some("console=ttyS0 reboot=k panic=1".into()),
            initrd_path: Some("/var/lib/warren/kernels/initrd".into()),
        },
    ];

    let mut drives = vec![Drive::root(
        "rootfs",
        "/var/lib/warren/capsules/c1/rootfs.ext4",
    )];
    for (cache, engine) in CacheType::ALL.into_iter().zip(IoEngine::ALL) {
        drives.push(Drive {
            drive_id: "rootfs".into(),
            is_root_device: true,
            path_on_host: "/dev/mapper/warren-cow-c1".into(),
            is_read_only: false,
            partuuid: Some("0eaa91a0-01".into()),
            cache_type: Some(cache),
            io_engine: Some(engine),
            rate_limiter: Some(full_limiter()),
        });
    }
    let partial_drives = vec![
        PartialDrive {
            drive_id: "rootfs".into(),
            path_on_host: Some("/x.ext4".into()),
            rate_limiter: None,
        },
        PartialDrive {
            drive_id: "rootfs".into(),
            path_on_host: Some("/x.ext4".into()),
            rate_limiter: Some(full_limiter()),
        },
    ];

    let ifaces = vec![
        NetworkInterface::new("eth0", "tap0"),
        NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: Some("06:00:a9:fe:00:15".into()),
            mtu: Some(1500),
            rx_rate_limiter: Some(full_limiter()),
            tx_rate_limiter: Some(RateLimiter::DEFAULT_TX),
        },
    ];
    let partial_ifaces = vec![
        PartialNetworkInterface {
            iface_id: "eth0".into(),
            rx_rate_limiter: None,
            tx_rate_limiter: Some(RateLimiter::bandwidth(TokenBucket::per_second(
                1_000_000, None,
            ))),
        },
        PartialNetworkInterface {
            iface_id: "eth0".into(),
            rx_rate_limiter: Some(full_limiter()),
            tx_rate_limiter: Some(RateLimiter::remove_all()),
        },
    ];

    let mut mmds_config = vec![MmdsConfig {
        version: None,
        network_interfaces: vec!["eth0".into()],
        ipv4_address: None,
        imds_compat: None,
    }];
    for v in MmdsVersion::ALL {
        mmds_config.push(MmdsConfig {
            version: Some(v),
            network_interfaces: vec!["eth0".into()],
            ipv4_address: Some(Ipv4Addr::new(169, 254, 169, 254)),
            imds_compat: Some(true),
        });
    }
    let mmds = vec![
        MmdsContents::new(),
        json!({"warren": {"capsule_id": "c1", "token": "t", "n": 3, "list": [1, null]}})
            .as_object()
            .expect("object")
            .clone(),
    ];

    let actions = ActionType::ALL
        .map(|action_type| InstanceAction { action_type })
        .to_vec();
    let vm = VmState::ALL.map(|state| Vm { state }).to_vec();

    let mut snap_create = vec![SnapshotCreate {
        snapshot_path: "/s/vmstate".into(),
        mem_file_path: "/s/mem".into(),
        snapshot_type: None,
    }];
    for t in SnapshotType::ALL {
        snap_create.push(SnapshotCreate {
            snapshot_type: Some(t),
            ..snap_create[0].clone()
        });
    }

    let mut snap_load = vec![SnapshotLoad::new(
        "/s/vmstate",
        MemoryBackend::file("/s/mem"),
    )];
    for (i, backend) in MemoryBackendType::ALL.into_iter().enumerate() {
        for hp in SnapshotHugePages::ALL {
            if hp == SnapshotHugePages::Hugetlbfs2M && backend != MemoryBackendType::Uffd {
                continue;
            }
            snap_load.push(SnapshotLoad {
                snapshot_path: "/s/vmstate".into(),
                mem_backend: MemoryBackend {
                    backend_type: backend,
                    backend_path: "/run/warren/uffd/c1.sock".into(),
                },
                resume_vm: Some(i == 0),
                track_dirty_pages: Some(true),
                network_overrides: vec![NetworkOverride {
                    iface_id: "eth0".into(),
                    host_dev_name: "tap0".into(),
                }],
                vsock_override: Some(VsockOverride {
                    uds_path: "/run/warren/vmm/c1/v.sock".into(),
                }),
                clock_realtime: Some(true),
                huge_pages: Some(hp),
            });
        }
    }

    let balloon = vec![
        Balloon {
            amount_mib: 0,
            deflate_on_oom: true,
            stats_polling_interval_s: None,
            free_page_hinting: None,
            free_page_reporting: None,
        },
        Balloon {
            amount_mib: 64,
            deflate_on_oom: false,
            stats_polling_interval_s: Some(5),
            free_page_hinting: Some(true),
            free_page_reporting: Some(true),
        },
    ];
    let balloon_update = vec![BalloonUpdate { amount_mib: 32 }];
    let balloon_stats = vec![BalloonStatsUpdate {
        stats_polling_interval_s: 1,
    }];

    let mut metrics_full = Metrics::new("/var/lib/warren/logs/c1.metrics");
    metrics_full.emit_id = Some(true);
    metrics_full.properties = BTreeMap::from([("capsule".into(), "c1".into())]);
    let metrics = vec![Metrics::new("/m"), metrics_full];

    let mut logger = vec![Logger::default()];
    for level in LogLevel::ALL {
        logger.push(Logger {
            log_path: Some("/var/lib/warren/logs/c1.fc.log".into()),
            level: Some(level),
            show_level: Some(true),
            show_log_origin: Some(false),
            module: Some("api_server::request".into()),
        });
    }
    let entropy = vec![
        EntropyDevice::default(),
        EntropyDevice {
            rate_limiter: Some(full_limiter()),
        },
    ];
    let vsock = vec![Vsock {
        guest_cid: 3,
        uds_path: "/run/warren/vmm/c1/v.sock".into(),
    }];

    Samples {
        machine,
        boot,
        drives,
        partial_drives,
        ifaces,
        partial_ifaces,
        mmds_config,
        mmds,
        actions,
        vm,
        snap_create,
        snap_load,
        balloon,
        balloon_update,
        balloon_stats,
        metrics,
        logger,
        entropy,
        vsock,
    }
}

fn requests(s: &Samples) -> Vec<Request<'_>> {
    let mut r = vec![
        Request::DescribeInstance,
        Request::GetVersion,
        Request::GetMachineConfig,
        Request::GetMmds,
        Request::GetBalloon,
        Request::GetBalloonStats,
    ];
    r.extend(s.machine.iter().map(Request::PutMachineConfig));
    r.extend(s.boot.iter().map(Request::PutBootSource));
    r.extend(s.drives.iter().map(Request::PutDrive));
    r.extend(s.partial_drives.iter().map(Request::PatchDrive));
    r.extend(s.ifaces.iter().map(Request::PutNetworkInterface));
    r.extend(s.partial_ifaces.iter().map(Request::PatchNetworkInterface));
    r.extend(s.mmds_config.iter().map(Request::PutMmdsConfig));
    r.extend(s.mmds.iter().map(Request::PutMmds));
    r.extend(s.mmds.iter().map(Request::PatchMmds));
    r.extend(s.actions.iter().map(Request::Action));
    r.extend(s.vm.iter().map(Request::PatchVm));
    r.extend(s.snap_create.iter().map(Request::CreateSnapshot));
    r.extend(s.snap_load.iter().map(Request::LoadSnapshot));
    r.extend(s.balloon.iter().map(Request::PutBalloon));
    r.extend(s.balloon_update.iter().map(Request::PatchBalloon));
    r.extend(s.balloon_stats.iter().map(Request::PatchBalloonStats));
    r.extend(s.metrics.iter().map(Request::PutMetrics));
    r.extend(s.logger.iter().map(Request::PutLogger));
    r.extend(s.entropy.iter().map(Request::PutEntropy));
    r.extend(s.vsock.iter().map(Request::PutVsock));
    r
}

#[test]
fn every_request_body_validates_against_firecracker_spec() {
    let Some(spec) = support::spec() else { return };
    let s = samples();
    let requests = requests(&s);
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for r in &requests {
        seen.insert(variant_name(r));
        r.validate()
            .unwrap_or_else(|e| panic!("sample {} is invalid: {e}", r.describe()));
        let body = r.body();
        let errors = spec.check_request(r.method().as_str(), &r.path(), body.as_ref());
        if !errors.is_empty() {
            failures.push(format!(
                "{} {}: {errors:?}",
                r.describe(),
                body.unwrap_or(Value::Null)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "bodies the spec rejects:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        seen.len(),
        ALL_VARIANTS,
        "every endpoint has samples: {seen:?}"
    );
    eprintln!("{} request bodies checked against the spec", requests.len());
}

#[test]
fn maximal_bodies_set_every_property_the_client_models() {
    // Guards the samples themselves: a maximal body that silently lost a
    // field would leave that field unchecked.
    let s = samples();
    let drive = serde_json::to_value(&s.drives[1]).expect("json");
    assert_eq!(drive.as_object().map(|o| o.len()), Some(8), "{drive}");
    let load = serde_json::to_value(s.snap_load.last().expect("sample")).expect("json");
    assert_eq!(load.as_object().map(|o| o.len()), Some(8), "{load}");
    let iface = serde_json::to_value(&s.ifaces[1]).expect("json");
    assert_eq!(iface.as_object().map(|o| o.len()), Some(6), "{iface}");
}

#[test]
fn response_models_match_the_spec() {
    let Some(spec) = support::spec() else { return };
    let stats = BalloonStats {
        target_pages: 1,
        actual_pages: 1,
        target_mib: 1,
        actual_mib: 1,
        swap_in: Some(1),
        swap_out: Some(1),
        major_faults: Some(1),
        minor_faults: Some(1),
        free_memory: Some(1),
        total_memory: Some(1),
        available_memory: Some(1),
        disk_caches: Some(1),
        hugetlb_allocations: Some(1),
        hugetlb_failures: Some(1),
        oom_kill: Some(1),
        alloc_stall: Some(1),
        async_scan: Some(1),
        direct_scan: Some(1),
        async_reclaim: Some(1),
        direct_reclaim: Some(1),
    };
    let info = |state| InstanceInfo {
        app_name: "Firecracker".into(),
        id: "c1".into(),
        state,
        vmm_version: "1.17.0".into(),
    };
    let cases = [
        ("/balloon/statistics", serde_json::to_value(stats)),
        ("/", serde_json::to_value(info(InstanceState::NotStarted))),
        ("/", serde_json::to_value(info(InstanceState::Running))),
        ("/", serde_json::to_value(info(InstanceState::Paused))),
        (
            "/version",
            serde_json::to_value(FirecrackerVersion {
                firecracker_version: "1.17.0".into(),
            }),
        ),
        (
            "/machine-config",
            serde_json::to_value(&samples().machine[1]),
        ),
        ("/balloon", serde_json::to_value(&samples().balloon[1])),
    ];
    for (path, value) in cases {
        let value = value.expect("json");
        let errors = spec.check_response("GET", path, &value);
        assert!(errors.is_empty(), "GET {path} {value}: {errors:?}");
    }
}

/// The checker must be able to fail, or the test above proves nothing.
#[test]
fn checker_rejects_bodies_firecracker_would_reject() {
    let Some(spec) = support::spec() else { return };
    let rejected = |method: &str, path: &str, body: Value, expect: &str| {
        let errors = spec.check_request(method, path, Some(&body));
        assert!(
            errors.iter().any(|e| e.contains(expect)),
            "{method} {path} {body}: expected an error mentioning {expect:?}, got {errors:?}"
        );
    };
    // Misspelled field.
    rejected(
        "PUT",
        "/machine-config",
        json!({"vcpu_cont": 2, "vcpu_count": 2, "mem_size_mib": 128}),
        "vcpu_cont",
    );
    // Wrong enum value.
    rejected("PATCH", "/vm", json!({"state": "Stopped"}), "Stopped");
    rejected(
        "PUT",
        "/actions",
        json!({"action_type": "InstanceStop"}),
        "InstanceStop",
    );
    // Missing required field.
    rejected(
        "PUT",
        "/drives/rootfs",
        json!({"drive_id": "rootfs", "path_on_host": "/x", "is_read_only": false}),
        "is_root_device",
    );
    // Wrong type.
    rejected(
        "PUT",
        "/machine-config",
        json!({"vcpu_count": "2", "mem_size_mib": 128}),
        "expected an integer",
    );
    // null where a field should be omitted.
    rejected(
        "PUT",
        "/machine-config",
        json!({"vcpu_count": 2, "mem_size_mib": 128, "smt": null}),
        "expected a boolean",
    );
    // Nested definition through $ref.
    rejected(
        "PUT",
        "/network-interfaces/eth0",
        json!({"iface_id": "eth0", "host_dev_name": "tap0", "tx_rate_limiter": {"bandwidth": {"sizee": 1, "refill_time": 1}}}),
        "sizee",
    );
    rejected(
        "PUT",
        "/snapshot/load",
        json!({"snapshot_path": "/s", "mem_backend": {"backend_type": "Mmap", "backend_path": "/m"}}),
        "Mmap",
    );
    // Bounds.
    rejected(
        "PUT",
        "/machine-config",
        json!({"vcpu_count": 33, "mem_size_mib": 128}),
        "maximum",
    );
    rejected(
        "PUT",
        "/vsock",
        json!({"guest_cid": 2, "uds_path": "/v"}),
        "minimum",
    );
    rejected(
        "PATCH",
        "/network-interfaces/eth0",
        json!({"iface_id": "eth0", "rx_rate_limiter": {"ops": {"size": -1, "refill_time": 1}}}),
        "minimum",
    );
    // Pattern formats.
    rejected(
        "PUT",
        "/mmds/config",
        json!({"network_interfaces": ["eth0"], "ipv4_address": "10.0.0.1"}),
        "does not match",
    );
    // Array items.
    rejected(
        "PUT",
        "/mmds/config",
        json!({"network_interfaces": [1]}),
        "expected a string",
    );
    // Unknown operation, body where none is taken.
    assert!(
        !spec
            .check_request("PUT", "/no-such-thing", Some(&json!({})))
            .is_empty()
    );
    assert!(
        !spec
            .check_request("GET", "/version", Some(&json!({})))
            .is_empty()
    );
    assert!(!spec.check_request("PUT", "/boot-source", None).is_empty());
    // And it accepts a conforming body (free-form MMDS contents included).
    assert!(
        spec.check_request("PUT", "/mmds", Some(&json!({"a": {"b": [1, null]}})))
            .is_empty()
    );
    assert!(
        spec.check_definition("TokenBucket", &json!({"size": 1, "refill_time": 1}))
            .is_empty()
    );
}

#[test]
fn client_refuses_invalid_input_before_sending() {
    let invalid: Vec<(MachineConfig, &str)> = vec![
        (MachineConfig::new(0, 128), "vcpu_count"),
        (MachineConfig::new(33, 128), "vcpu_count"),
        (
            MachineConfig {
                smt: Some(true),
                ..MachineConfig::new(3, 128)
            },
            "SMT",
        ),
        (MachineConfig::new(1, 0), "mem_size_mib"),
    ];
    for (m, expect) in &invalid {
        let err = Request::PutMachineConfig(m)
            .validate()
            .expect_err("invalid");
        assert!(err.to_string().contains(expect), "{err}");
    }
    let drive = Drive::root("../etc", "/x");
    assert!(Request::PutDrive(&drive).validate().is_err());
    let mut iface = NetworkInterface::new("eth0", "a-very-long-tap-name");
    assert!(Request::PutNetworkInterface(&iface).validate().is_err());
    iface.host_dev_name = "tap0".into();
    iface.guest_mac = Some("06:00:zz:00:00:01".into());
    assert!(Request::PutNetworkInterface(&iface).validate().is_err());
    let no_refill = PartialNetworkInterface {
        iface_id: "eth0".into(),
        rx_rate_limiter: None,
        tx_rate_limiter: Some(RateLimiter::bandwidth(TokenBucket {
            size: 10,
            one_time_burst: None,
            refill_time: 0,
        })),
    };
    assert!(
        Request::PatchNetworkInterface(&no_refill)
            .validate()
            .is_err()
    );
    let mut mmds = MmdsConfig::v2(vec!["eth0".into()]);
    mmds.ipv4_address = Some(Ipv4Addr::new(10, 0, 0, 1));
    assert!(Request::PutMmdsConfig(&mmds).validate().is_err());
    let mut load = SnapshotLoad::new("/s", MemoryBackend::file("/m"));
    load.huge_pages = Some(SnapshotHugePages::Hugetlbfs2M);
    assert!(Request::LoadSnapshot(&load).validate().is_err());
    let vsock = Vsock {
        guest_cid: 2,
        uds_path: "/v".into(),
    };
    assert!(Request::PutVsock(&vsock).validate().is_err());
}
