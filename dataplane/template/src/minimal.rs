//! The built-in `minimal` template: Debian bookworm made with `debootstrap`
//! (variant `minbase`) from the host's own apt mirror ([`super::apt`]),
//! with ca-certificates, curl, sudo, procps and python3, a user `user`
//! (uid 1000, shell `/bin/bash`, passwordless sudo) and the mount point for
//! envd (the namespace backend binds the host's envd there; ext4 images get
//! a copy, see [`super::image`]).
//!
//! debootstrap runs as host root on an idmapped view of the new root
//! ([`super::view`]), so every file lands owned by the capsule id range
//! with setuid bits and device nodes intact; nothing is chowned afterwards.
//!
//! Progress: one log line per stage with its elapsed time, a line every
//! 15 s while debootstrap runs (with its latest step), and debootstrap's
//! whole output in `$WARREN_DIR/logs/template-minimal.log`. Downloaded
//! packages are kept in `$WARREN_DIR/cache/debootstrap` for the next build.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::view::{IdShift, PrivateMounts, run_logged};
use crate::{IdMap, MINIMAL, TemplateDefaults, TemplateError, apt};

/// The Debian release.
pub const SUITE: &str = "bookworm";
/// Packages beyond debootstrap's `minbase`.
pub const PACKAGES: [&str; 5] = ["ca-certificates", "curl", "sudo", "procps", "python3"];

/// Runs inside the new root (as root, through the idmapped view).
const CONFIGURE: &str = r#"set -eu
useradd --create-home --uid 1000 --user-group --shell /bin/bash user
echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/user
chmod 0440 /etc/sudoers.d/user
printf 'capsule\n' > /etc/hostname
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
printf 'nameserver 8.8.8.8\nnameserver 1.1.1.1\n' > /etc/resolv.conf
: > /etc/machine-id
mkdir -p /usr/local/bin /.warren/lib
: > /usr/local/bin/envd
chmod 0755 /usr/local/bin/envd
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log /var/log/apt/* /tmp/* /var/tmp/*
"#;

/// `minimal`'s defaults: commands run as `user` in its home.
pub fn defaults() -> TemplateDefaults {
    TemplateDefaults {
        user: Some("user".into()),
        workdir: Some("/home/user".into()),
        ..Default::default()
    }
}

/// Where a build reads and writes besides the new root.
#[derive(Debug)]
pub(super) struct Context<'a> {
    pub id_map: IdMap,
    /// `/` on a host: where the apt configuration is read.
    pub apt_root: &'a Path,
    pub cache_dir: &'a Path,
    pub log_dir: &'a Path,
}

fn fail(message: impl Into<String>) -> TemplateError {
    TemplateError::Build {
        name: MINIMAL.into(),
        message: message.into(),
    }
}

/// Builds the tree at `rootfs` (which must not exist).
pub(super) fn build(rootfs: &Path, cx: &Context<'_>) -> Result<(), TemplateError> {
    let started = Instant::now();
    let mirror = apt::find_mirror(cx.apt_root, SUITE).map_err(|e| fail(e.to_string()))?;
    for dir in [cx.cache_dir, cx.log_dir] {
        std::fs::create_dir_all(dir)
            .map_err(TemplateError::io(format!("create {}", dir.display())))?;
    }
    let log_path = cx.log_dir.join("template-minimal.log");
    let log = File::create(&log_path)
        .map_err(TemplateError::io(format!("create {}", log_path.display())))?;
    tracing::info!(
        mirror = %mirror.uri,
        from = %mirror.origin.display(),
        log = %log_path.display(),
        "minimal: building Debian {SUITE} (stage 1/3: debootstrap; usually a few minutes)"
    );

    std::fs::create_dir(rootfs)
        .map_err(TemplateError::io(format!("create {}", rootfs.display())))?;
    std::fs::set_permissions(rootfs, std::fs::Permissions::from_mode(0o755))
        .map_err(TemplateError::io("chmod the new root"))?;
    std::os::unix::fs::chown(rootfs, Some(cx.id_map.host(0)), Some(cx.id_map.host(0)))
        .map_err(TemplateError::io("chown the new root"))?;
    let view = rootfs.with_file_name("view");
    std::fs::create_dir(&view).map_err(TemplateError::io(format!("create {}", view.display())))?;
    let shift =
        IdShift::new(&cx.id_map).map_err(TemplateError::io("make the id-shift namespace"))?;
    let mounts = || {
        PrivateMounts::new()
            .idmapped(rootfs, &view, &shift)
            .map_err(TemplateError::io("prepare the idmapped view"))
    };

    let stage = Instant::now();
    let mut debootstrap = mounts()?
        .command("debootstrap")
        .map_err(TemplateError::io("prepare debootstrap"))?;
    debootstrap
        .arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg("--components=main")
        .arg(format!("--cache-dir={}", cx.cache_dir.display()));
    if let Some(keyring) = &mirror.keyring {
        debootstrap.arg(format!("--keyring={}", keyring.display()));
    }
    debootstrap
        .arg(SUITE)
        .arg(&view)
        .arg(&mirror.uri)
        .env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(TemplateError::io("log"))?)
        .stderr(log.try_clone().map_err(TemplateError::io("log"))?);
    let mut child = debootstrap
        .spawn()
        .map_err(|e| fail(format!("run debootstrap (apt package: debootstrap): {e}")))?;
    let mut next_report = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(TemplateError::io("wait for debootstrap"))?
        {
            break status;
        }
        if Instant::now() >= next_report {
            tracing::info!(
                elapsed_s = stage.elapsed().as_secs(),
                step = %last_line(&log_path),
                "minimal: debootstrap running"
            );
            next_report += Duration::from_secs(15);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        return Err(fail(format!(
            "debootstrap from {} failed ({status}); last step: {}; whole output in {}",
            mirror.uri,
            last_line(&log_path),
            log_path.display()
        )));
    }
    tracing::info!(
        elapsed_s = stage.elapsed().as_secs_f64(),
        "minimal: stage 1/3 (debootstrap) done"
    );

    let stage = Instant::now();
    let mut configure = mounts()?
        .command("chroot")
        .map_err(TemplateError::io("prepare the chroot"))?;
    configure
        .arg(&view)
        .args(["/bin/sh", "-c", CONFIGURE])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    run_logged(&mut configure, "configuring the new root", Some(&log))
        .map_err(|e| fail(e.to_string()))?;
    tracing::info!(
        elapsed_s = stage.elapsed().as_secs_f64(),
        "minimal: stage 2/3 (user, sudo, cleanup) done"
    );

    let stage = Instant::now();
    verify(rootfs)?;
    std::fs::remove_dir(&view).map_err(TemplateError::io(format!("remove {}", view.display())))?;
    let usage = super::tree::usage(rootfs).map_err(TemplateError::io("measure the new root"))?;
    tracing::info!(
        elapsed_s = stage.elapsed().as_secs_f64(),
        total_s = started.elapsed().as_secs_f64(),
        mib = usage.bytes >> 20,
        files = usage.entries,
        "minimal: stage 3/3 (checks) done; template ready"
    );
    Ok(())
}

/// What users and envd rely on is there.
fn verify(rootfs: &Path) -> Result<(), TemplateError> {
    for file in [
        "usr/bin/bash",
        "usr/bin/sudo",
        "usr/bin/curl",
        "usr/bin/python3",
        "usr/bin/ps",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/sudoers.d/user",
        "home/user/.bashrc",
        super::ENVD_PATH,
    ] {
        if std::fs::symlink_metadata(rootfs.join(file)).is_err() {
            return Err(fail(format!("{file} is missing from the built tree")));
        }
    }
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd"))
        .map_err(TemplateError::io("read etc/passwd"))?;
    if !passwd.lines().any(|l| l.starts_with("user:x:1000:1000:")) {
        return Err(fail("no user `user` with uid 1000 in /etc/passwd"));
    }
    Ok(())
}

/// The last non-empty line of the build log (debootstrap's latest step).
fn last_line(path: &Path) -> String {
    let mut tail = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(4096)));
        let _ = f.read_to_end(&mut tail);
    }
    String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}
