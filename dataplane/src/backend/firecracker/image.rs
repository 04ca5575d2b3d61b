//! Root-disk images for microVMs: a template's directory turned into an
//! ext4 image the guest boots from, with what every microVM needs added:
//! Warren's guest init (`/sbin/warren-init`, from `images/guest/init`) and
//! the host's envd (with its libraries and a start script when it is
//! dynamically linked, as the namespace backend runs it).
//!
//! This is the interim image store until templates carry their own images:
//! images are built on first use with `mkfs.ext4 -d` from a staging copy of
//! the template whose file owners are shifted back from the host's id range
//! ([`IdMap`]) to the guest's own ids, and cached in
//! `$WARREN_DIR/cache/firecracker/<template>-<key>.ext4`, the key covering
//! the template, envd and the init, so a changed part gives a new image
//! while disks made from the old one keep it.

use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::backend::namespace::envd::{ENVD_INSIDE, EnvdRuntime, LIBS_INSIDE};
use crate::template::{IdMap, Template, TemplateError};

/// Warren's guest init, installed as [`vmm_api::boot::GUEST_INIT`].
const GUEST_INIT: &str = include_str!("../../../../images/guest/init");
/// The script the guest init execs (`warren.envd=` on the command line).
const ENVD_START: &str = ".warren/start-envd";

/// Builds and caches template images.
#[derive(Debug, Clone)]
pub struct Images {
    dir: PathBuf,
    envd: EnvdRuntime,
    id_map: IdMap,
}

impl Images {
    /// `dir` holds the images; `envd` is the host's envd, prepared.
    pub fn new(dir: PathBuf, envd: EnvdRuntime, id_map: IdMap) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, envd, id_map })
    }

    /// Kernel arguments the images need (where the guest init finds envd).
    pub fn boot_args(&self) -> Vec<String> {
        vec![format!("warren.envd=/{ENVD_START}")]
    }

    /// The image of `template`, built first if needed. Blocking.
    pub fn ensure(&self, template: &Template) -> Result<PathBuf, TemplateError> {
        let name = &template.meta.name;
        let image = self
            .dir
            .join(format!("{name}-{:016x}.ext4", self.key(template)?));
        if image.is_file() {
            return Ok(image);
        }
        let build = |message: String| TemplateError::Build {
            name: name.clone(),
            message,
        };
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{name}.image-"))
            .tempdir_in(&self.dir)
            .map_err(TemplateError::io("create a staging directory"))?;
        let root = staging.path().join("root");
        run(Command::new("cp")
            .arg("-a")
            .arg("--reflink=auto")
            .arg(template.rootfs())
            .arg(&root))
        .map_err(build)?;
        shift_owners(&root, &self.id_map).map_err(TemplateError::io("shift file owners"))?;
        self.install(&root)
            .map_err(TemplateError::io("install the guest init and envd"))?;
        let (bytes, inodes) =
            tree_size(&root).map_err(TemplateError::io("measure the template"))?;
        let size_mib = (bytes + bytes / 4).div_ceil(1 << 20) + 32;
        let tmp = staging.path().join("image.ext4");
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "warren-root", "-m", "0", "-b", "4096"])
            .args(["-N", &(inodes * 2 + 1024).to_string()])
            .args(["-E", "root_owner=0:0", "-d"])
            .arg(&root)
            .arg(&tmp)
            .arg(format!("{size_mib}M")))
        .map_err(build)?;
        std::fs::rename(&tmp, &image).map_err(TemplateError::io("move the image into place"))?;
        tracing::info!(template = %name, image = %image.display(), size_mib, "template image built");
        Ok(image)
    }

    /// Adds the guest init and envd to a staged root.
    fn install(&self, root: &Path) -> io::Result<()> {
        let file = |rel: &str, mode: u32, write: &dyn Fn(&Path) -> io::Result<()>| {
            let path = root.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let _ = std::fs::remove_file(&path);
            write(&path)?;
            std::os::unix::fs::lchown(&path, Some(0), Some(0))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        };
        let init = vmm_api::boot::GUEST_INIT.trim_start_matches('/');
        file(init, 0o755, &|p| std::fs::write(p, GUEST_INIT))?;
        file(ENVD_INSIDE, 0o755, &|p| {
            std::fs::copy(&self.envd.binary, p).map(drop)
        })?;
        if let Some((libs, _)) = &self.envd.libs {
            for lib in std::fs::read_dir(libs)? {
                let lib = lib?;
                let rel = format!("{LIBS_INSIDE}/{}", lib.file_name().to_string_lossy());
                file(&rel, 0o755, &|p| std::fs::copy(lib.path(), p).map(drop))?;
            }
        }
        let script = format!("#!/bin/sh\nexec {}\n", self.envd.argv().join(" "));
        file(ENVD_START, 0o755, &|p| std::fs::write(p, &script))
    }

    /// What the image is made of: the template, envd and the init.
    fn key(&self, template: &Template) -> Result<u64, TemplateError> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let stamp = |path: &Path, h: &mut std::collections::hash_map::DefaultHasher| {
            std::fs::metadata(path)
                .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()).hash(h))
                .map_err(TemplateError::io(format!("stat {}", path.display())))
        };
        stamp(&template.dir().join("template.json"), &mut h)?;
        stamp(&template.rootfs(), &mut h)?;
        stamp(&self.envd.binary, &mut h)?;
        self.envd.argv().hash(&mut h);
        self.envd.libs.as_ref().map(|(dir, _)| dir).hash(&mut h);
        GUEST_INIT.hash(&mut h);
        Ok(h.finish())
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("{:?}: {e}", command.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed: {}",
            command.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Gives every file under `root` back the guest's own ids: host id
/// `host_base + n` becomes `n`.
fn shift_owners(root: &Path, map: &IdMap) -> io::Result<()> {
    let shift = |id: u32| {
        id.checked_sub(map.host_base)
            .filter(|n| *n < map.count)
            .unwrap_or(id)
    };
    let meta = std::fs::symlink_metadata(root)?;
    std::os::unix::fs::lchown(root, Some(shift(meta.uid())), Some(shift(meta.gid())))?;
    // chown clears set-id bits; put them back.
    if !meta.file_type().is_symlink() && meta.mode() & 0o6000 != 0 {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(root)? {
            shift_owners(&entry?.path(), map)?;
        }
    }
    Ok(())
}

/// Bytes (in whole 4 KiB blocks) and entries under `root`.
fn tree_size(root: &Path) -> io::Result<(u64, u64)> {
    let meta = std::fs::symlink_metadata(root)?;
    let mut total = (meta.len().div_ceil(4096) * 4096 + 4096, 1);
    if meta.is_dir() {
        for entry in std::fs::read_dir(root)? {
            let (bytes, n) = tree_size(&entry?.path())?;
            total = (total.0 + bytes, total.1 + n);
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_shifted_back_to_guest_ids() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root (chown)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let map = IdMap {
            host_base: 1_000_000_000,
            count: 65_536,
        };
        let root = dir.path().join("r");
        std::fs::create_dir_all(root.join("home/user")).unwrap();
        std::fs::write(root.join("home/user/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/nowhere", root.join("link")).unwrap();
        for (p, id) in [
            ("", 0),
            ("home", 0),
            ("home/user", 1000),
            ("home/user/f", 1000),
            ("link", 0),
        ] {
            std::os::unix::fs::lchown(root.join(p), Some(map.host(id)), Some(map.host(id)))
                .unwrap();
        }
        shift_owners(&root, &map).unwrap();
        for (p, id) in [
            ("", 0),
            ("home/user", 1000),
            ("home/user/f", 1000),
            ("link", 0),
        ] {
            let m = std::fs::symlink_metadata(root.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (id, id), "{p}");
        }
    }
}
