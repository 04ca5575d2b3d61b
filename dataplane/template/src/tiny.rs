//! The built-in `tiny` template: a static busybox with its applet links,
//! `root` and `user` (uid 1000) accounts, and the directories envd expects.
//! Made from the host's busybox in well under a second.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use crate::{IdMap, TemplateError};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
user:x:1000:1000:user:/home/user:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\ntty:x:5:\nuser:x:1000:\nnogroup:x:65534:\n";
const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
const RESOLV_CONF: &str = "nameserver 8.8.8.8\nnameserver 1.1.1.1\n";

/// Directories and their modes (capsule root owns them unless listed in
/// [`USER_OWNED`]).
const DIRS: [(&str, u32); 16] = [
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("usr/local", 0o755),
    ("usr/local/bin", 0o755),
    ("etc", 0o755),
    ("home", 0o755),
    ("home/user", 0o755),
    ("root", 0o700),
    ("tmp", 0o1777),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("run", 0o755),
];
const USER_OWNED: &str = "home/user";

/// Where the namespace backend bind-mounts the host's envd (an empty file
/// here, the mount point).
pub const ENVD_PATH: &str = "usr/local/bin/envd";

/// Builds the tree at `rootfs` (which must not exist).
pub(super) fn build(rootfs: &Path, id_map: &IdMap, busybox: &Path) -> Result<(), TemplateError> {
    check_static(busybox)?;
    std::fs::create_dir(rootfs)
        .map_err(TemplateError::io(format!("create {}", rootfs.display())))?;
    for (dir, mode) in DIRS {
        let path = rootfs.join(dir);
        std::fs::create_dir(&path).map_err(TemplateError::io(format!("create {dir}")))?;
        set_mode(&path, mode)?;
    }
    for dir in ["var", "var/tmp", "var/log", "mnt", "opt"] {
        std::fs::create_dir(rootfs.join(dir))
            .map_err(TemplateError::io(format!("create {dir}")))?;
    }
    set_mode(&rootfs.join("var/tmp"), 0o1777)?;

    let target = rootfs.join("bin/busybox");
    std::fs::copy(busybox, &target)
        .map_err(TemplateError::io(format!("copy {}", busybox.display())))?;
    set_mode(&target, 0o755)?;
    for applet in applets(busybox)? {
        let link = rootfs.join(&applet);
        if applet == "bin/busybox" || link.exists() {
            continue;
        }
        symlink("/bin/busybox", &link).map_err(TemplateError::io(format!("link {applet}")))?;
    }

    for (name, contents) in [
        ("etc/passwd", PASSWD),
        ("etc/group", GROUP),
        ("etc/hosts", HOSTS),
        ("etc/resolv.conf", RESOLV_CONF),
        ("etc/hostname", "capsule\n"),
    ] {
        std::fs::write(rootfs.join(name), contents)
            .map_err(TemplateError::io(format!("write {name}")))?;
    }
    let envd = rootfs.join(ENVD_PATH);
    std::fs::write(&envd, b"").map_err(TemplateError::io("create the envd mount point"))?;
    set_mode(&envd, 0o755)?;

    chown_tree(rootfs, id_map.host(0))?;
    chown_tree(&rootfs.join(USER_OWNED), id_map.host(1000))
}

/// The applet paths busybox installs, relative to `/` (`bin/sh`, ...).
fn applets(busybox: &Path) -> Result<Vec<String>, TemplateError> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(TemplateError::io(format!(
            "run {} --list-full",
            busybox.display()
        )))?;
    if !out.status.success() {
        return Err(build_error(format!(
            "{} --list-full failed: {}",
            busybox.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_owned())
        // Applet paths are plain `dir/name`: refuse anything that could
        // leave the tree.
        .filter(|l| !l.is_empty() && !l.split('/').any(|c| c == ".." || c.is_empty()))
        .collect();
    if !list.iter().any(|l| l == "bin/sh") {
        return Err(build_error(format!(
            "{} has no sh applet",
            busybox.display()
        )));
    }
    Ok(list)
}

/// Refuses a dynamically linked busybox (it would not run inside a tree
/// without a C library).
fn check_static(busybox: &Path) -> Result<(), TemplateError> {
    match super::elf::interpreter(busybox) {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(build_error(format!(
            "{} is dynamically linked (install Debian's busybox-static)",
            busybox.display()
        ))),
        Err(e) => Err(build_error(format!(
            "{}: {e} (install Debian's busybox-static)",
            busybox.display()
        ))),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), TemplateError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(TemplateError::io(format!("chmod {}", path.display())))
}

/// `lchown -R` to `id:id`.
fn chown_tree(path: &Path, id: u32) -> Result<(), TemplateError> {
    std::os::unix::fs::lchown(path, Some(id), Some(id))
        .map_err(TemplateError::io(format!("chown {}", path.display())))?;
    let meta = std::fs::symlink_metadata(path)
        .map_err(TemplateError::io(format!("stat {}", path.display())))?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(path)
            .map_err(TemplateError::io(format!("list {}", path.display())))?;
        for entry in entries {
            let entry = entry.map_err(TemplateError::io(format!("list {}", path.display())))?;
            chown_tree(&entry.path(), id)?;
        }
    }
    Ok(())
}

fn build_error(message: String) -> TemplateError {
    TemplateError::Build {
        name: super::TINY.to_owned(),
        message,
    }
}
