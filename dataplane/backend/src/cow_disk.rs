//! Copy-on-write root disks for microVM capsules: a per-capsule writable
//! view of a template's ext4 image, created in O(1) and never a full copy.
//!
//! Two methods, chosen per host (or forced by configuration):
//! - **reflink** (`FICLONE`) when the disk directory and the template are on
//!   a filesystem that shares extents (btrfs, XFS with reflink): the disk is
//!   a plain file, `<dir>/<id>/rootfs.ext4`.
//! - **device-mapper snapshot** everywhere else: the template on a read-only
//!   loop device, a sparse cow store `<dir>/<id>/rootfs.cow` on another, and
//!   `/dev/mapper/warren-cow-<id>` on top (see [`dm`]).
//!
//! Templates are stored shrunk; a disk grows to the capsule's disk size on
//! creation (the file or device is extended and `resize2fs` grows the
//! filesystem, which writes only new group metadata). Destroying a disk
//! removes its device, loop devices and files; [`CowDisks::clean_stale`]
//! does the same for disks a previous agent run left behind.
//!
//! The Firecracker backend hands [`CowDisk::path`] to Firecracker as the
//! root drive's `path_on_host`. The calls block (ioctls, `resize2fs`,
//! `dmsetup`): call them from a blocking thread, not a reactor core.

mod dm;
mod reflink;

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::loopdev::{self, LoopDevice};

/// File name of a reflinked disk inside a capsule's directory.
const REFLINK_FILE: &str = "rootfs.ext4";
/// File name of a device-mapper cow store inside a capsule's directory.
const COW_STORE_FILE: &str = "rootfs.cow";
/// ext4 block size the disk sizes are rounded to.
const BLOCK: u64 = 4096;

/// How disks are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CowMethod {
    /// Reflink when the filesystem supports it, else device-mapper.
    Auto,
    Reflink,
    DmSnapshot,
}

/// The kind of an existing disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CowKind {
    Reflink,
    DmSnapshot,
}

#[derive(Debug, thiserror::Error)]
pub enum CowError {
    #[error("invalid capsule id {id:?}: only 1-64 ASCII letters, digits, '-' or '_'")]
    InvalidId { id: String },
    #[error("template image {0} is not a regular file")]
    NotARegularFile(PathBuf),
    #[error(
        "requested disk size {requested} bytes is smaller than the template image ({template} bytes)"
    )]
    TooSmall { requested: u64, template: u64 },
    #[error("no copy-on-write method works here: {0}")]
    Unsupported(String),
    #[error("{command} failed: {stderr}")]
    Tool { command: String, stderr: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl CowError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// A capsule's disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CowDisk {
    pub id: String,
    /// What Firecracker opens: the reflinked file or the dm device.
    pub path: PathBuf,
    pub kind: CowKind,
    /// Size in bytes (the guest sees a disk this large).
    pub size: u64,
}

/// Creates, finds and removes capsule disks under one directory
/// (`$WARREN_DIR/capsules`: a disk lives in `<dir>/<id>/`).
#[derive(Debug, Clone)]
pub struct CowDisks {
    dir: PathBuf,
    method: CowMethod,
    /// Marks this directory's dm devices (see [`dm`]).
    tag: String,
}

impl CowDisks {
    pub fn new(dir: impl Into<PathBuf>, method: CowMethod) -> Result<Self, CowError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| CowError::io(format!("creating {}", dir.display()), e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| CowError::io(format!("resolving {}", dir.display()), e))?;
        let tag = format!("{:08x}", fnv1a(dir.as_os_str().as_encoded_bytes()) as u32);
        Ok(Self { dir, method, tag })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes `id`'s disk from `template` (an ext4 image), grown to `size`
    /// bytes (rounded up to 4 KiB) or left at the template's size.
    /// On failure nothing is left behind.
    pub fn create(
        &self,
        id: &str,
        template: &Path,
        size: Option<u64>,
    ) -> Result<CowDisk, CowError> {
        validate_id(id)?;
        let meta = std::fs::metadata(template)
            .map_err(|e| CowError::io(format!("reading {}", template.display()), e))?;
        if !meta.is_file() {
            return Err(CowError::NotARegularFile(template.to_path_buf()));
        }
        let template_size = meta.len();
        let size = match size {
            Some(s) if s < template_size => {
                return Err(CowError::TooSmall {
                    requested: s,
                    template: template_size,
                });
            }
            Some(s) => s.div_ceil(BLOCK) * BLOCK,
            None => template_size,
        };
        let capsule_dir = self.dir.join(id);
        std::fs::create_dir_all(&capsule_dir)
            .map_err(|e| CowError::io(format!("creating {}", capsule_dir.display()), e))?;
        let result = match self.method {
            CowMethod::Reflink => self.create_reflink(id, template, template_size, size),
            CowMethod::DmSnapshot => self.create_dm(id, template, template_size, size),
            CowMethod::Auto => match self.create_reflink(id, template, template_size, size) {
                Err(CowError::Unsupported(why_not)) => {
                    tracing::debug!(id, "no reflink ({why_not}); using a device-mapper snapshot");
                    self.create_dm(id, template, template_size, size)
                        .map_err(|e| match e {
                            CowError::Unsupported(dm) => {
                                CowError::Unsupported(format!("{why_not}; {dm}"))
                            }
                            other => other,
                        })
                }
                other => other,
            },
        };
        match result {
            Ok(disk) => {
                tracing::info!(id, path = %disk.path.display(), kind = ?disk.kind, size, "capsule disk created");
                Ok(disk)
            }
            Err(e) => {
                let _ = self.destroy(id);
                Err(e)
            }
        }
    }

    fn create_reflink(
        &self,
        id: &str,
        template: &Path,
        template_size: u64,
        size: u64,
    ) -> Result<CowDisk, CowError> {
        let path = self.dir.join(id).join(REFLINK_FILE);
        let file = reflink::clone_file(template, &path).map_err(|e| {
            if e.kind() == io::ErrorKind::Unsupported {
                CowError::Unsupported(format!(
                    "cannot reflink {} into {} ({e})",
                    template.display(),
                    self.dir.display()
                ))
            } else {
                CowError::io(
                    format!("cloning {} to {}", template.display(), path.display()),
                    e,
                )
            }
        })?;
        drop(file);
        if size > template_size {
            grow_ext4(&path, size)?;
        }
        Ok(CowDisk {
            id: id.to_string(),
            path,
            kind: CowKind::Reflink,
            size,
        })
    }

    fn create_dm(
        &self,
        id: &str,
        template: &Path,
        template_size: u64,
        size: u64,
    ) -> Result<CowDisk, CowError> {
        dm::available().map_err(CowError::Unsupported)?;
        let store = self.dir.join(id).join(COW_STORE_FILE);
        // Sparse; room for every chunk plus the exception tables (16 bytes
        // per 4 KiB chunk) and the header.
        let store_size = size + size / 128 + (1 << 20);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&store)
            .and_then(|f| f.set_len(store_size))
            .map_err(|e| CowError::io(format!("creating {}", store.display()), e))?;
        let origin = LoopDevice::attach(template, true)
            .map_err(|e| CowError::io(format!("loop device for {}", template.display()), e))?;
        let cow = LoopDevice::attach(&store, false)
            .map_err(|e| CowError::io(format!("loop device for {}", store.display()), e))?;
        // The loop devices auto-clear once the dm table (their last user)
        // is removed; our fds close when they drop at the end of this scope.
        let path = dm::create(
            &self.tag,
            id,
            &origin.path(),
            template_size,
            &cow.path(),
            size,
        )?;
        if size > template_size {
            grow_ext4(&path, size)?;
        }
        Ok(CowDisk {
            id: id.to_string(),
            path,
            kind: CowKind::DmSnapshot,
            size,
        })
    }

    /// `id`'s disk if it exists (e.g. after an agent restart).
    pub fn get(&self, id: &str) -> Result<Option<CowDisk>, CowError> {
        validate_id(id)?;
        let file = self.dir.join(id).join(REFLINK_FILE);
        if let Ok(meta) = std::fs::metadata(&file) {
            return Ok(Some(CowDisk {
                id: id.to_string(),
                path: file,
                kind: CowKind::Reflink,
                size: meta.len(),
            }));
        }
        let device = dm::device_path(id);
        if self.dir.join(id).join(COW_STORE_FILE).exists() && device.exists() {
            let size = block_device_size(&device)?;
            return Ok(Some(CowDisk {
                id: id.to_string(),
                path: device,
                kind: CowKind::DmSnapshot,
                size,
            }));
        }
        Ok(None)
    }

    /// Bytes `id`'s disk occupies on the host: the blocks of the reflinked
    /// file (extents it still shares with the template included), or of
    /// the device-mapper cow store (what the capsule wrote).
    pub fn allocated_bytes(&self, id: &str) -> Result<u64, CowError> {
        use std::os::unix::fs::MetadataExt;
        validate_id(id)?;
        let dir = self.dir.join(id);
        [REFLINK_FILE, COW_STORE_FILE]
            .iter()
            .find_map(|name| std::fs::metadata(dir.join(name)).ok())
            .map(|m| m.blocks() * 512)
            .ok_or_else(|| {
                CowError::io(
                    format!("sizing the disk of {id}"),
                    io::Error::from(io::ErrorKind::NotFound),
                )
            })
    }

    /// Removes `id`'s disk: dm devices, loop devices, files; the capsule
    /// directory too when nothing else is in it. Missing parts are fine.
    pub fn destroy(&self, id: &str) -> Result<(), CowError> {
        validate_id(id)?;
        let capsule_dir = self.dir.join(id);
        if dm::available().is_ok() {
            dm::remove(id)?;
        }
        loopdev::detach_under(&capsule_dir)
            .map_err(|e| CowError::io(format!("detaching loop devices of {id}"), e))?;
        for name in [REFLINK_FILE, COW_STORE_FILE] {
            let path = capsule_dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(CowError::io(format!("removing {}", path.display()), e)),
            }
        }
        // Only if empty: the directory may hold the capsule's other files.
        let _ = std::fs::remove_dir(&capsule_dir);
        Ok(())
    }

    /// Ids that have a disk (file, cow store or dm device) under this directory.
    pub fn list(&self) -> Result<Vec<String>, CowError> {
        let mut ids = Vec::new();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| CowError::io(format!("listing {}", self.dir.display()), e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.join(REFLINK_FILE).exists() || path.join(COW_STORE_FILE).exists() {
                ids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        if dm::available().is_ok() {
            ids.extend(dm::list_ids(&self.tag)?);
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Destroys every disk whose id `keep` rejects; returns their ids.
    pub fn clean_stale(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<String>, CowError> {
        let mut removed = Vec::new();
        for id in self.list()? {
            if keep(&id) || validate_id(&id).is_err() {
                continue;
            }
            tracing::info!(id, "removing a stale capsule disk");
            self.destroy(&id)?;
            removed.push(id);
        }
        Ok(removed)
    }
}

/// Grows the ext4 filesystem on `target` (a file is extended first) to `size`.
fn grow_ext4(target: &Path, size: u64) -> Result<(), CowError> {
    warren_template::image::grow(target, size).map_err(|e| {
        CowError::io(
            format!("growing the file system on {}", target.display()),
            e,
        )
    })
}

fn block_device_size(device: &Path) -> Result<u64, CowError> {
    use std::io::Seek;
    let mut f = std::fs::File::open(device)
        .map_err(|e| CowError::io(format!("opening {}", device.display()), e))?;
    f.seek(io::SeekFrom::End(0))
        .map_err(|e| CowError::io(format!("sizing {}", device.display()), e))
}

/// Capsule ids name directories and dm devices: 1-64 of `[A-Za-z0-9_-]`.
fn validate_id(id: &str) -> Result<(), CowError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(CowError::InvalidId { id: id.to_string() })
    }
}

/// FNV-1a, 64 bit: a stable (across builds) short hash for the dm tag.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
