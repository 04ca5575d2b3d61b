//! Device-mapper snapshots through `dmsetup`: a capsule's disk is
//! `snapshot(origin, cow)` where the origin is the template image (a
//! read-only loop device), extended with a `zero` target up to the capsule's
//! disk size, and the cow store is a sparse per-capsule file on a loop
//! device. Creating one writes no data: O(1) whatever the image size.
//!
//! Devices are named `warren-cow-<id>` (and `...-base` for the origin) and
//! carry the UUID `WARREN-COW-<tag>-<id>`, where the tag identifies the disk
//! directory, so stale ones are found without touching anyone else's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::CowError;

const SECTOR: u64 = 512;
/// Snapshot chunk size in sectors (4 KiB, the ext4 block size).
const CHUNK_SECTORS: u64 = 8;

/// Whether this kernel has device-mapper and `dmsetup` is installed.
pub fn available() -> Result<(), String> {
    let misc = std::fs::read_to_string("/proc/misc").unwrap_or_default();
    if !misc
        .lines()
        .any(|l| l.trim_end().ends_with("device-mapper"))
    {
        return Err("the kernel has no device-mapper (no 'device-mapper' in /proc/misc)".into());
    }
    match Command::new("dmsetup").arg("version").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "dmsetup version failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!(
            "dmsetup is not installed ({e}); apt package: dmsetup"
        )),
    }
}

pub fn name(id: &str) -> String {
    format!("warren-cow-{id}")
}

fn base_name(id: &str) -> String {
    format!("warren-cow-{id}-base")
}

fn uuid(tag: &str, id: &str) -> String {
    format!("WARREN-COW-{tag}-{id}")
}

/// `/dev/mapper/warren-cow-<id>`.
pub fn device_path(id: &str) -> PathBuf {
    PathBuf::from("/dev/mapper").join(name(id))
}

/// Creates the snapshot device of `size` bytes over `origin` (template
/// loop device of `origin_size` bytes) and `cow` (the cow store's loop device).
pub fn create(
    tag: &str,
    id: &str,
    origin: &Path,
    origin_size: u64,
    cow: &Path,
    size: u64,
) -> Result<PathBuf, CowError> {
    let origin_sectors = origin_size / SECTOR;
    let total = size / SECTOR;
    let mut base_table = format!("0 {origin_sectors} linear {} 0\n", origin.display());
    if total > origin_sectors {
        base_table.push_str(&format!(
            "{origin_sectors} {} zero\n",
            total - origin_sectors
        ));
    }
    dmsetup_create(
        &base_name(id),
        &format!("{}-base", uuid(tag, id)),
        &base_table,
    )?;
    let table = format!(
        "0 {total} snapshot /dev/mapper/{} {} P {CHUNK_SECTORS}\n",
        base_name(id),
        cow.display()
    );
    if let Err(e) = dmsetup_create(&name(id), &uuid(tag, id), &table) {
        let _ = dmsetup(&["remove", "--retry", &base_name(id)]);
        return Err(e);
    }
    Ok(device_path(id))
}

/// Removes `id`'s devices; missing ones are fine.
pub fn remove(id: &str) -> Result<(), CowError> {
    for dev in [name(id), base_name(id)] {
        if PathBuf::from("/dev/mapper").join(&dev).exists() || exists(&dev)? {
            dmsetup(&["remove", "--retry", &dev])?;
        }
    }
    Ok(())
}

fn exists(dev: &str) -> Result<bool, CowError> {
    Ok(list()?.iter().any(|(name, _)| name == dev))
}

/// Ids of this tag's snapshot devices.
pub fn list_ids(tag: &str) -> Result<Vec<String>, CowError> {
    let prefix = format!("WARREN-COW-{tag}-");
    Ok(list()?
        .into_iter()
        .filter_map(|(_, uuid)| {
            let id = uuid.strip_prefix(&prefix)?;
            let id = id.strip_suffix("-base").unwrap_or(id);
            Some(id.to_string())
        })
        .collect())
}

/// Every device-mapper device: (name, uuid).
fn list() -> Result<Vec<(String, String)>, CowError> {
    let out = dmsetup(&[
        "info",
        "-c",
        "--noheadings",
        "--separator",
        " ",
        "-o",
        "name,uuid",
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((
                parts.next()?.to_string(),
                parts.next().unwrap_or("").to_string(),
            ))
        })
        .collect())
}

fn dmsetup_create(name: &str, uuid: &str, table: &str) -> Result<(), CowError> {
    let mut child = Command::new("dmsetup")
        .args(["create", name, "--uuid", uuid])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CowError::io("running dmsetup", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(table.as_bytes())
            .map_err(|e| CowError::io("writing the dm table", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CowError::io("running dmsetup", e))?;
    if !out.status.success() {
        return Err(CowError::Tool {
            command: format!("dmsetup create {name} (table: {})", table.trim()),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    // Without udev, make sure the /dev/mapper node exists.
    dmsetup(&["mknodes", name])?;
    Ok(())
}

fn dmsetup(args: &[&str]) -> Result<String, CowError> {
    let out = Command::new("dmsetup")
        .args(args)
        .output()
        .map_err(|e| CowError::io("running dmsetup", e))?;
    if !out.status.success() {
        return Err(CowError::Tool {
            command: format!("dmsetup {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
