//! The guest init (`images/guest/init`) with the kernel command line the
//! agent renders (`vmm_api::boot`): its `ip=` parsing, and a whole run as
//! pid 1 in fresh PID, mount, UTS and network namespaces over a busybox
//! root, where it must mount what envd needs, configure the network and
//! exec envd (a stand-in script that reports what it sees, since there is
//! no guest kernel to boot here).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::NetnsGuard;
use vmm_api::boot::KernelCmdline;

fn init_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../images/guest/init")
}

fn busybox() -> Option<PathBuf> {
    let found = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        let _ = warren_testkit::missing("busybox is not installed (apt: busybox-static)");
    }
    found
}

/// Sources the init in library mode and runs `snippet` with busybox sh.
fn sh(busybox: &Path, snippet: &str) -> String {
    let out = Command::new(busybox)
        .args(["sh", "-c"])
        .arg(format!(". {}; {snippet}", init_script().display()))
        .env("WARREN_INIT_LIB", "1")
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{snippet}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn guest_init_parses_the_agents_kernel_cmdline() {
    let Some(bb) = busybox() else { return };
    let cmdline = KernelCmdline::default().render();
    let fields =
        "echo \"$IP_ADDR|$IP_GW|$IP_MASK|$IP_PREFIX|$IP_HOSTNAME|$IP_DEVICE|$IP_DNS0|$IP_DNS1\"";
    let got = sh(
        &bb,
        &format!("parse_ip \"$(cmdline_value ip '{cmdline}')\"; {fields}"),
    );
    assert_eq!(
        got.trim(),
        "169.254.0.21|169.254.0.22|255.255.255.252|30|warren|eth0|8.8.8.8|1.1.1.1"
    );

    // The form in the issue: no hostname, no DNS.
    let got = sh(
        &bb,
        &format!("parse_ip 169.254.0.21::169.254.0.22:255.255.255.252::eth0:off; {fields}"),
    );
    assert_eq!(
        got.trim(),
        "169.254.0.21|169.254.0.22|255.255.255.252|30||eth0||"
    );

    // Not static configurations, and bad masks, are refused.
    for bad in [
        "",
        "dhcp",
        "off",
        "::1.2.3.4:255.255.255.0",
        "10.0.0.2::10.0.0.1:255.0.255.0::eth0:off",
    ] {
        let got = sh(
            &bb,
            &format!("if parse_ip '{bad}'; then echo yes; else echo no; fi"),
        );
        assert_eq!(got.trim(), "no", "ip={bad:?} accepted");
    }
    for (mask, prefix) in [
        ("255.255.255.255", "32"),
        ("255.255.255.0", "24"),
        ("255.128.0.0", "9"),
        ("0.0.0.0", "0"),
    ] {
        assert_eq!(sh(&bb, &format!("mask_to_prefix {mask}")).trim(), prefix);
    }
    // Last occurrence wins, keys match whole arguments only.
    let got = sh(
        &bb,
        "cmdline_value warren.envd 'xwarren.envd=/a warren.envd=/b warren.envd=/c quiet'",
    );
    assert_eq!(got, "/c");
}

#[test]
fn guest_init_runs_as_pid1_in_namespaces_and_execs_envd() {
    let Some(bb) = busybox() else { return };
    if !support::can_use_namespaces() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    for d in [
        "bin", "sbin", "usr/bin", "etc", "proc", "sys", "dev", "run", "tmp",
    ] {
        std::fs::create_dir_all(root.join(d)).expect("dir");
    }
    std::fs::copy(&bb, root.join("bin/busybox")).expect("busybox");
    for applet in [
        "sh", "mount", "mkdir", "grep", "cat", "ip", "hostname", "ln", "rm", "echo", "sync",
        "poweroff",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("applet");
    }
    std::fs::copy(init_script(), root.join("sbin/warren-init")).expect("init");
    // A resolver symlink, as Debian images with a resolver daemon have.
    std::os::unix::fs::symlink("/run/resolved/resolv.conf", root.join("etc/resolv.conf"))
        .expect("link");
    // envd's stand-in: report what the guest looks like, then exit.
    std::fs::write(
        root.join("usr/bin/envd"),
        "#!/bin/sh\n{\n echo \"pid=$$\"\n echo \"hostname=$(hostname)\"\n \
         cat /proc/mounts\n ip -4 addr show dev eth0\n ip route\n cat /etc/resolv.conf\n} > /report 2>&1\n",
    )
    .expect("envd");
    use std::os::unix::fs::PermissionsExt;
    for f in ["sbin/warren-init", "usr/bin/envd"] {
        std::fs::set_permissions(root.join(f), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }

    // The guest NIC: one end of a veth pair, named eth0 inside the namespace.
    let netns = NetnsGuard::new("init");
    let host_end = format!("wvi{}", std::process::id() % 100_000);
    let ok = Command::new("ip")
        .args([
            "link",
            "add",
            &host_end,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &netns.name,
        ])
        .status()
        .expect("ip link add");
    assert!(ok.success());

    let cmdline = KernelCmdline {
        hostname: "capsule-test".into(),
        ..KernelCmdline::default()
    }
    .render();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &netns.name,
            "unshare",
            "--mount",
            "--pid",
            "--uts",
            "--fork",
            "--kill-child",
        ])
        .arg("chroot")
        .arg(&root)
        .arg("/sbin/warren-init")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("WARREN_INIT_CMDLINE", &cmdline)
        .output()
        .expect("run init");
    let _ = Command::new("ip").args(["link", "del", &host_end]).status();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "init failed: {stderr}");
    assert!(
        stderr.contains("warren-init: starting /usr/bin/envd"),
        "{stderr}"
    );

    let report = std::fs::read_to_string(root.join("report")).expect("envd ran and reported");
    assert!(report.contains("pid=1\n"), "envd is not pid 1:\n{report}");
    assert!(report.contains("hostname=capsule-test\n"), "{report}");
    for (fstype, target) in [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("devpts", "/dev/pts"),
        ("tmpfs", "/dev/shm"),
        ("tmpfs", "/run"),
        ("cgroup2", "/sys/fs/cgroup"),
    ] {
        assert!(
            report.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 2 && f[1] == target && f[2] == fstype
            }),
            "{fstype} not mounted on {target}:\n{report}"
        );
    }
    // /tmp is the disk's, so snapshots keep what users leave there.
    assert!(
        !report
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/tmp")),
        "/tmp mounted over:\n{report}"
    );
    assert!(report.contains("inet 169.254.0.21/30"), "{report}");
    assert!(
        report.contains("default via 169.254.0.22 dev eth0"),
        "{report}"
    );
    assert!(
        report.contains("nameserver 8.8.8.8\nnameserver 1.1.1.1\n"),
        "{report}"
    );
    // The init's mounts stayed in its namespace.
    let host_mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    assert!(
        !host_mounts.contains(&root.to_string_lossy().into_owned()),
        "mounts leaked"
    );
}

#[test]
fn guest_init_powers_off_when_envd_is_missing() {
    let Some(bb) = busybox() else { return };
    // Library mode with a fake `poweroff`: main must refuse to go on.
    let got = sh(
        &bb,
        "mount_filesystems() { :; }; configure_network() { :; }; write_resolv_conf() { :; }; \
         hostname() { :; }; poweroff() { echo POWEROFF; }; sync() { :; }; \
         (WARREN_INIT_CMDLINE='warren.envd=/nonexistent/envd' main) 2>&1 || true",
    );
    assert!(got.contains("envd not found at /nonexistent/envd"), "{got}");
    assert!(got.contains("POWEROFF"), "{got}");
}

#[test]
fn kernel_config_check_reports_missing_options() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../images/kernel/check-config.sh");
    let text = std::fs::read_to_string(&script).expect("script");
    // Every option the script requires, set: passes.
    let required: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("need CONFIG_"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(required.contains(&"VIRTIO_NET") && required.contains(&"EXT4_FS"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let good = tmp.path().join("good.config");
    let body: String = required.iter().map(|o| format!("CONFIG_{o}=y\n")).collect();
    std::fs::write(&good, &body).expect("config");
    let out = Command::new("sh")
        .arg(&script)
        .arg(&good)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // virtio-net as a module is not enough: the guest has no modules.
    let bad = tmp.path().join("bad.config");
    std::fs::write(
        &bad,
        body.replace("CONFIG_VIRTIO_NET=y", "CONFIG_VIRTIO_NET=m"),
    )
    .expect("config");
    let out = Command::new("sh")
        .arg(&script)
        .arg(&bad)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("missing: CONFIG_VIRTIO_NET=y"), "{stdout}");
}
