//! A template's ext4 image: the Firecracker backend's root drive.
//!
//! Made from the template directory with `mkfs.ext4 -d`, through an
//! idmapped view ([`super::view`]) so the guest, which has no id mapping,
//! sees its files owned by `root`, `user` and so on rather than by the
//! host ids the directory uses. A read-only overlay adds what every microVM
//! needs on top of the template's own files ([`GuestFiles`]): envd (and its
//! libraries when it is dynamically linked) and the guest init.
//!
//! Images are stored shrunk (`e2fsck -f`, then `resize2fs -M`, then the
//! file is cut to the file system's end). A capsule's copy-on-write view of
//! the image is grown to its disk size with [`grow`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::envd::EnvdRuntime;
use crate::view::{IdShift, PrivateMounts, run_logged};
use crate::{IdMap, tree};

/// The guest init every microVM image carries (`images/guest/init`).
pub const GUEST_INIT: &str = include_str!("../../../images/guest/init");
/// Where the guest init lives in an image.
pub const GUEST_INIT_PATH: &str = "sbin/warren-init";
/// Where envd lives in an image (and the guest init's default, a link).
pub const ENVD_PATHS: [&str; 2] = [super::ENVD_PATH, "usr/bin/envd"];

/// What an image carries beyond the template's files.
#[derive(Debug, Clone)]
pub struct GuestFiles {
    /// The host's envd, prepared to run in any template.
    pub envd: Option<EnvdRuntime>,
}

/// Builds `dest` (which must not exist) from the template directory
/// `rootfs`, shrunk; `scratch` is an empty directory for mount points and
/// the extra files. Returns the image's size in bytes.
pub fn build(
    rootfs: &Path,
    id_map: &IdMap,
    guest: &GuestFiles,
    scratch: &Path,
    dest: &Path,
) -> io::Result<u64> {
    let extras = scratch.join("extras");
    let (lower, view) = (scratch.join("lower"), scratch.join("view"));
    for d in [&extras, &lower, &view] {
        std::fs::create_dir(d)?;
    }
    write_guest_files(rootfs, id_map, guest, &extras)?;
    let usage = tree::usage(rootfs)?;
    let extra = tree::usage(&extras)?;
    let shift = IdShift::new(id_map)?;
    // Room for the files, an inode per 16 KiB (at least one per entry) and
    // a journal; doubled on a retry.
    let data = usage.bytes + extra.bytes;
    let mut size =
        (data + data / 4).max((usage.entries + extra.entries) * 16384 * 5 / 4) + (96 << 20);
    for attempt in 0..3 {
        let file = OpenOptions::new().write(true).create_new(true).open(dest)?;
        file.set_len(size.div_ceil(1 << 20) << 20)?;
        drop(file);
        let mut mkfs = PrivateMounts::new()
            .idmapped(rootfs, &lower, &shift)?
            .overlay(&[&extras, &lower], &view)?
            .command("mkfs.ext4")?;
        // 4 KiB blocks and one inode per 16 KiB whatever the image's size
        // (mke2fs would pick 1 KiB blocks for a small one): the image is
        // grown to gigabytes later and keeps these ratios.
        mkfs.args([
            "-q", "-F", "-t", "ext4", "-b", "4096", "-i", "16384", "-I", "256",
        ])
        .args(["-m", "0", "-L", "rootfs"])
        .args(["-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard"])
        .arg("-d")
        .arg(&view)
        .arg(dest);
        match run_logged(&mut mkfs, "mkfs.ext4 -d (e2fsprogs)", None) {
            Ok(()) => break,
            Err(e) if attempt < 2 && e.to_string().contains("allocate") => {
                tracing::debug!(size, error = %e, "image too small; retrying larger");
                std::fs::remove_file(dest)?;
                size *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    shrink(dest)
}

/// `e2fsck -f` then `resize2fs -M`, and cuts the file to the file system's
/// new end. Returns the new size in bytes.
pub fn shrink(image: &Path) -> io::Result<u64> {
    check(image)?;
    run_logged(
        Command::new("resize2fs").arg("-M").arg(image),
        "resize2fs -M (e2fsprogs)",
        None,
    )?;
    let size = fs_size(image)?;
    OpenOptions::new().write(true).open(image)?.set_len(size)?;
    Ok(size)
}

/// `e2fsck -f -y`: fails unless the file system is clean (or was repaired).
pub fn check(image: &Path) -> io::Result<()> {
    let out = Command::new("e2fsck")
        .args(["-f", "-y"])
        .arg(image)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("run e2fsck (e2fsprogs): {e}")))?;
    // 0: clean, 1: errors corrected.
    match out.status.code() {
        Some(0 | 1) => Ok(()),
        _ => Err(io::Error::other(format!(
            "e2fsck -f {} failed ({}): {}",
            image.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim()
        ))),
    }
}

/// Grows the ext4 file system on `target` (a file or a block device, e.g.
/// a capsule's copy-on-write view of a template image) to `size` bytes: a
/// file is extended first; a device must already be that large. Writes only
/// the new groups' metadata.
pub fn grow(target: &Path, size: u64) -> io::Result<()> {
    let meta = std::fs::metadata(target)?;
    let current = fs_size(target)?;
    if size < current {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} holds a {current}-byte file system; cannot grow it to {size}",
                target.display()
            ),
        ));
    }
    if meta.is_file() && meta.len() < size {
        OpenOptions::new().write(true).open(target)?.set_len(size)?;
    }
    run_logged(
        Command::new("resize2fs")
            .arg(target)
            .arg(format!("{}K", size / 1024)),
        "resize2fs (e2fsprogs)",
        None,
    )
}

/// The size of the ext4 file system on `target`, from its superblock.
pub fn fs_size(target: &Path) -> io::Result<u64> {
    let mut f = File::open(target)?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(1024))?;
    f.read_exact(&mut sb)?;
    let le16 = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]);
    let le32 = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    if le16(0x38) != 0xEF53 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} holds no ext2/3/4 file system", target.display()),
        ));
    }
    const INCOMPAT_64BIT: u32 = 0x80;
    let blocks_lo = u64::from(le32(0x04));
    let blocks_hi = if le32(0x60) & INCOMPAT_64BIT != 0 {
        u64::from(le32(0x150))
    } else {
        0
    };
    let block_size = 1024u64 << le32(0x18).min(16);
    Ok(((blocks_hi << 32) | blocks_lo) * block_size)
}

/// Writes envd and the guest init into `extras`, laid out to merge with
/// `rootfs` in an overlay (directories follow the template's own links, so
/// `sbin` stays a link where the template has `sbin -> usr/sbin`).
fn write_guest_files(
    rootfs: &Path,
    id_map: &IdMap,
    guest: &GuestFiles,
    extras: &Path,
) -> io::Result<()> {
    let place = |rel: &str, contents: Source<'_>, mode: u32| -> io::Result<()> {
        let rel = resolve_in(rootfs, Path::new(rel))?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        make_dirs_like(rootfs, id_map, extras, parent)?;
        let dest = extras.join(&rel);
        match contents {
            Source::File(src) => {
                std::fs::copy(src, &dest)?;
            }
            Source::Text(text) => std::fs::write(&dest, text)?,
            Source::Link(target) => std::os::unix::fs::symlink(target, &dest)?,
        }
        if !matches!(contents, Source::Link(_)) {
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    };
    place(GUEST_INIT_PATH, Source::Text(GUEST_INIT), 0o755)?;
    let Some(envd) = &guest.envd else {
        return Ok(());
    };
    let [primary, alias] = ENVD_PATHS;
    match &envd.libs {
        None => place(primary, Source::File(&envd.binary), 0o755)?,
        Some((libs, loader)) => {
            // The binary and its libraries under /.warren, started through
            // their own loader by a two-line wrapper (exec keeps envd pid 1).
            let inside = super::envd::LIBS_INSIDE;
            place(".warren/envd", Source::File(&envd.binary), 0o755)?;
            for lib in std::fs::read_dir(libs)? {
                let lib = lib?;
                let name = lib.file_name();
                let rel = format!("{inside}/{}", name.to_string_lossy());
                place(&rel, Source::File(&lib.path()), 0o755)?;
            }
            let wrapper = format!(
                "#!/bin/sh\nexec /{inside}/{loader} --library-path /{inside} /.warren/envd \"$@\"\n"
            );
            place(primary, Source::Text(&wrapper), 0o755)?;
        }
    }
    if resolve_in(rootfs, Path::new(alias))? != resolve_in(rootfs, Path::new(primary))? {
        place(alias, Source::Link(&format!("/{primary}")), 0)?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Source<'a> {
    File(&'a Path),
    Text(&'a str),
    Link(&'a str),
}

/// `rel`'s directories resolved through `root`'s symlinks, as a path
/// relative to `root` (links never lead outside it; `..` stops at its top).
fn resolve_in(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    let mut parts: Vec<std::ffi::OsString> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_owned()),
            _ => None,
        })
        .rev()
        .collect();
    let mut hops = 0;
    while let Some(part) = parts.pop() {
        let candidate = out.join(&part);
        // The last component is the file itself: never followed.
        let is_last = parts.is_empty();
        match std::fs::symlink_metadata(root.join(&candidate)) {
            Ok(m) if m.file_type().is_symlink() && !is_last => {
                hops += 1;
                if hops > 40 {
                    return Err(io::Error::other(format!(
                        "too many links resolving {}",
                        rel.display()
                    )));
                }
                let target = std::fs::read_link(root.join(&candidate))?;
                if target.is_absolute() {
                    out = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(p) => parts.push(p.to_owned()),
                        Component::ParentDir => parts.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ if part == ".." => {
                out.pop();
            }
            _ => out = candidate,
        }
    }
    Ok(out)
}

/// Creates `rel` (and its parents) under `extras` with the modes and the
/// (capsule) owners their counterparts have in `rootfs`.
fn make_dirs_like(rootfs: &Path, id_map: &IdMap, extras: &Path, rel: &Path) -> io::Result<()> {
    let mut sub = PathBuf::new();
    for c in rel.components() {
        sub.push(c);
        let dest = extras.join(&sub);
        if dest.is_dir() {
            continue;
        }
        std::fs::create_dir(&dest)?;
        let (mode, uid, gid) = match std::fs::metadata(rootfs.join(&sub)) {
            Ok(m) if m.is_dir() => (
                m.mode() & 0o7777,
                m.uid().saturating_sub(id_map.host_base),
                m.gid().saturating_sub(id_map.host_base),
            ),
            _ => (0o755, 0, 0),
        };
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
        std::os::unix::fs::chown(&dest, Some(uid), Some(gid))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_followed_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::os::unix::fs::symlink("usr/sbin", root.join("sbin")).unwrap();
        std::os::unix::fs::symlink("/usr", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("usr/up")).unwrap();
        let r = |p: &str| resolve_in(root, Path::new(p)).unwrap();
        assert_eq!(r("sbin/warren-init"), Path::new("usr/sbin/warren-init"));
        assert_eq!(r("abs/sbin/x"), Path::new("usr/sbin/x"));
        assert_eq!(r("usr/up/etc/x"), Path::new("etc/x"));
        assert_eq!(
            r("sbin"),
            Path::new("sbin"),
            "the last part is not followed"
        );
        assert_eq!(r("new/dir/f"), Path::new("new/dir/f"));
    }

    #[test]
    fn a_superblock_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("x.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        let ok = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&img)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok && !warren_testkit::missing("mkfs.ext4 failed or is not installed (apt: e2fsprogs)")
        {
            return;
        }
        assert_eq!(fs_size(&img).unwrap(), 32 << 20);
        assert!(fs_size(Path::new("/etc/passwd")).is_err());
    }
}
