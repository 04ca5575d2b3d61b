//! `warren-template`: the template store, what capsules are made from. The
//! backends (`warren-backend`) read it; the agent builds, snapshots into and
//! deletes from it. A template is a root
//! filesystem plus defaults (user, env, workdir, start command, vcpus,
//! memory), kept under `$WARREN_DIR/templates/`:
//!
//! ```text
//! templates/<name>                 -> .v/<name>.<version>   (a symlink: the current version)
//! templates/.v/<name>.<version>/   template.json, rootfs/, image.ext4 (made on demand),
//!                                  users/<capsule-id> (capsules whose overlay uses this version)
//! templates/.staging/<pid>.<...>/  builds and snapshots in progress
//! ```
//!
//! `rootfs/` is the namespace backend's shared read-only lower layer;
//! `image.ext4` ([`image`]) is the Firecracker backend's root drive, made
//! from `rootfs/` the first time a backend asks ([`TemplateStore::image`]).
//!
//! Every write is atomic: a template is assembled in a staging directory and
//! published by renaming it into `.v/` and then renaming a new symlink over
//! `templates/<name>`, so a crash leaves the old template or the new one,
//! never half of one (staging directories of dead processes are removed
//! later). Replacing a template never touches the version running capsules
//! use as their lower layer: a version is removed only once no name points
//! at it and no capsule holds it ([`TemplateStore::hold`]). Changes to the
//! links and holders are serialised by an `flock` on `templates/.lock`, so
//! several store handles (and processes) can share one directory.
//!
//! A template's files are owned through the store's [`IdMap`]: capsule uid
//! `u` is host uid `host_base + u`, so capsule root owns `/` inside its user
//! namespace while owning nothing on the host.
//!
//! Built-in templates are made on demand the first time they are asked for:
//! [`TINY`] (busybox, under a second) and [`MINIMAL`] (Debian bookworm via
//! debootstrap from the host's apt mirror, minutes; [`minimal`]).

pub mod apt;
pub(crate) mod elf;
pub mod envd;
pub mod image;
mod minimal;
pub mod size;
mod tiny;
pub mod tree;
pub mod view;

pub use tiny::ENVD_PATH;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Name of the template the tests and the quick start use.
pub const TINY: &str = "tiny";
/// Name of the Debian template (the SDKs' default).
pub const MINIMAL: &str = "minimal";

const META_FILE: &str = "template.json";
const IMAGE_FILE: &str = "image.ext4";
const VERSIONS: &str = ".v";
const STAGING: &str = ".staging";
const USERS: &str = "users";

/// How capsule uids and gids map to host ones: capsule id `n` (below
/// `count`) is host id `host_base + n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub host_base: u32,
    pub count: u32,
}

impl Default for IdMap {
    /// Well above the ranges Debian hands out in `/etc/subuid` (100000+
    /// per user), one 64 Ki range shared by all capsules.
    fn default() -> Self {
        Self {
            host_base: 1_000_000_000,
            count: 65_536,
        }
    }
}

impl IdMap {
    /// The host id of capsule id `id` (ids past the range are clamped to the
    /// range's last id, which is "nobody").
    pub fn host(&self, id: u32) -> u32 {
        self.host_base + id.min(self.count - 1)
    }
}

/// Errors of the template store.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("invalid template name {0:?}: use 1-64 of [a-z0-9_-], starting with a letter or digit")]
    InvalidName(String),
    #[error("unknown template {0:?}")]
    NotFound(String),
    #[error("template {0:?} already exists (set overwrite to replace it)")]
    AlreadyExists(String),
    #[error("template {name:?} is in use by capsule(s) {}", capsules.join(", "))]
    InUse { name: String, capsules: Vec<String> },
    #[error("template {name:?} is owned through id map {found:?}, this host uses {expected:?}")]
    IdMapMismatch {
        name: String,
        found: IdMap,
        expected: IdMap,
    },
    #[error("building template {name:?}: {message}")]
    Build { name: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl TemplateError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

/// What a capsule made from a template starts with, unless the create
/// request says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateDefaults {
    /// The user commands, terminals and file operations run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Where commands start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// A daemon started in every new capsule (a recipe's `START`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
}

impl TemplateDefaults {
    /// These defaults with `over`'s fields where it sets them; `env` is
    /// merged (`over`'s values win).
    pub fn overlaid(&self, over: &TemplateDefaults) -> TemplateDefaults {
        let mut env = self.env.clone();
        env.extend(over.env.clone());
        TemplateDefaults {
            user: over.user.clone().or_else(|| self.user.clone()),
            env,
            workdir: over.workdir.clone().or_else(|| self.workdir.clone()),
            start_cmd: over.start_cmd.clone().or_else(|| self.start_cmd.clone()),
            vcpus: over.vcpus.or(self.vcpus),
            memory_mb: over.memory_mb.or(self.memory_mb),
        }
    }
}

/// What `template.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateMeta {
    pub name: String,
    /// Made by Warren itself (rather than by a build or a snapshot): it
    /// can be made again, by [`TemplateStore::ensure`].
    pub builtin: bool,
    pub id_map: IdMap,
    #[serde(default)]
    pub defaults: TemplateDefaults,
    /// Bytes the root filesystem directory occupies.
    #[serde(default)]
    pub rootfs_bytes: u64,
    #[serde(default)]
    pub created_at_ms: i64,
    /// Where it came from (`snapshot of capsule c1 (template tiny)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// One version of a template on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub meta: TemplateMeta,
    dir: PathBuf,
}

impl Template {
    /// The root filesystem directory (the namespace backend's lower layer).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// This version's directory (`templates/.v/<name>.<version>`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The ext4 image, when it has been made ([`TemplateStore::image`]).
    pub fn image_bytes(&self) -> Option<u64> {
        std::fs::metadata(self.dir.join(IMAGE_FILE))
            .ok()
            .map(|m| m.len())
    }
}

/// A template being assembled (see [`TemplateStore::begin`]).
#[derive(Debug)]
pub struct Staged {
    dir: tempfile::TempDir,
}

impl Staged {
    /// Where the root filesystem goes (does not exist yet).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }
}

/// A template as listed: its current version and who uses which version.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSummary {
    pub template: Template,
    /// Capsules holding any version of this name.
    pub capsules: Vec<String>,
}

/// What a new template is, besides its files.
#[derive(Debug, Clone, Default)]
pub struct NewTemplate {
    pub defaults: TemplateDefaults,
    pub origin: Option<String>,
    /// Replace an existing template of that name (else AlreadyExists).
    pub overwrite: bool,
}

/// The templates of one host. Cheap to clone; clones (and other stores over
/// the same directory) coordinate through the directory's lock.
#[derive(Debug, Clone)]
pub struct TemplateStore {
    dir: PathBuf,
    id_map: IdMap,
    busybox: PathBuf,
    envd: Option<PathBuf>,
    apt_root: PathBuf,
}

/// The store's `flock`, held while links and holders change.
struct StoreLock(#[allow(dead_code)] Flock<File>);

impl TemplateStore {
    /// `dir` is `$WARREN_DIR/templates`; `busybox` is a statically linked
    /// busybox (Debian's `busybox-static` installs `/bin/busybox`).
    pub fn new(dir: PathBuf, id_map: IdMap, busybox: PathBuf) -> Self {
        Self {
            dir,
            id_map,
            busybox,
            envd: None,
            apt_root: PathBuf::from("/"),
        }
    }

    /// The envd binary copied into ext4 images (without it, images carry
    /// only the guest init and the backend must provide envd).
    pub fn with_envd(mut self, binary: PathBuf) -> Self {
        self.envd = Some(binary);
        self
    }

    /// Where the apt configuration `minimal`'s mirror comes from is read
    /// (`/` on a host; a test's fake root).
    pub fn with_apt_root(mut self, root: PathBuf) -> Self {
        self.apt_root = root;
        self
    }

    pub fn id_map(&self) -> IdMap {
        self.id_map
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `$WARREN_DIR` (logs, caches and the envd runtime live beside the store).
    fn data_dir(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }

    fn lock(&self) -> Result<StoreLock, TemplateError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(TemplateError::io(format!("create {}", self.dir.display())))?;
        lock_file(&self.dir.join(".lock")).map(StoreLock)
    }

    /// The current version of `name`.
    pub fn get(&self, name: &str) -> Result<Template, TemplateError> {
        check_name(name)?;
        let link = self.dir.join(name);
        let dir = match std::fs::canonicalize(&link) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TemplateError::NotFound(name.to_owned()));
            }
            Err(e) => return Err(TemplateError::io(format!("resolve {}", link.display()))(e)),
        };
        let meta = read_meta(&dir).map_err(|e| match e {
            TemplateError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                TemplateError::NotFound(name.to_owned())
            }
            other => other,
        })?;
        if meta.id_map != self.id_map {
            return Err(TemplateError::IdMapMismatch {
                name: name.to_owned(),
                found: meta.id_map,
                expected: self.id_map,
            });
        }
        Ok(Template { meta, dir })
    }

    pub fn exists(&self, name: &str) -> bool {
        self.get(name).is_ok()
    }

    /// The template `name`, building it first when it is a built-in that is
    /// not on disk yet (`tiny`: under a second; `minimal`: minutes, with
    /// progress in the log). Blocking. Concurrent callers wait for one build.
    pub fn ensure(&self, name: &str) -> Result<Template, TemplateError> {
        match self.get(name) {
            Err(TemplateError::NotFound(_)) if is_builtin(name) => {}
            other => return other,
        }
        self.build_builtin(name, false)
    }

    /// Builds the built-in `name` again and replaces the current version
    /// (capsules running on the old one keep it until they are gone).
    pub fn rebuild(&self, name: &str) -> Result<Template, TemplateError> {
        if !is_builtin(name) {
            return Err(TemplateError::Build {
                name: name.to_owned(),
                message: format!("only the built-in templates ({TINY}, {MINIMAL}) can be rebuilt"),
            });
        }
        self.build_builtin(name, true)
    }

    fn build_builtin(&self, name: &str, overwrite: bool) -> Result<Template, TemplateError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(TemplateError::io(format!("create {}", self.dir.display())))?;
        let _building = lock_file(&self.dir.join(format!(".build-{name}.lock")))?;
        if !overwrite && let Ok(t) = self.get(name) {
            return Ok(t); // another caller built it while we waited
        }
        let new = NewTemplate {
            defaults: match name {
                MINIMAL => minimal::defaults(),
                _ => TemplateDefaults::default(),
            },
            origin: Some("built in".into()),
            overwrite,
        };
        let result = self.create_as(name, true, new, |rootfs| match name {
            TINY => tiny::build(rootfs, &self.id_map, &self.busybox),
            _ => minimal::build(
                rootfs,
                &minimal::Context {
                    id_map: self.id_map,
                    apt_root: &self.apt_root,
                    cache_dir: &self.data_dir().join("cache/debootstrap"),
                    log_dir: &self.data_dir().join("logs"),
                },
            ),
        });
        match result {
            // A snapshot took the name first: that is the template now.
            Err(TemplateError::AlreadyExists(_)) => self.get(name),
            other => other,
        }
    }

    /// Makes template `name` from the root filesystem `fill` writes (into a
    /// directory path that does not exist yet) and publishes it atomically.
    pub fn create(
        &self,
        name: &str,
        new: NewTemplate,
        fill: impl FnOnce(&Path) -> Result<(), TemplateError>,
    ) -> Result<Template, TemplateError> {
        self.create_as(name, false, new, fill)
    }

    fn create_as(
        &self,
        name: &str,
        builtin: bool,
        new: NewTemplate,
        fill: impl FnOnce(&Path) -> Result<(), TemplateError>,
    ) -> Result<Template, TemplateError> {
        check_name(name)?;
        if !new.overwrite && self.exists(name) {
            return Err(TemplateError::AlreadyExists(name.to_owned()));
        }
        let staged = self.begin()?;
        fill(&staged.rootfs())?;
        self.commit_as(staged, name, builtin, new)
    }

    /// Starts a template whose root filesystem the caller writes at
    /// [`Staged::rootfs`] (e.g. a copy of a capsule's), then
    /// [`TemplateStore::commit`]s. Dropping it removes what was written.
    pub fn begin(&self) -> Result<Staged, TemplateError> {
        Ok(Staged {
            dir: self.staging_dir()?,
        })
    }

    /// Publishes a staged template as `name`, atomically.
    pub fn commit(
        &self,
        staged: Staged,
        name: &str,
        new: NewTemplate,
    ) -> Result<Template, TemplateError> {
        self.commit_as(staged, name, false, new)
    }

    fn commit_as(
        &self,
        staged: Staged,
        name: &str,
        builtin: bool,
        new: NewTemplate,
    ) -> Result<Template, TemplateError> {
        check_name(name)?;
        let rootfs = staged.rootfs();
        let usage = tree::usage(&rootfs)
            .map_err(TemplateError::io(format!("measure {}", rootfs.display())))?;
        let meta = TemplateMeta {
            name: name.to_owned(),
            builtin,
            id_map: self.id_map,
            defaults: new.defaults,
            rootfs_bytes: usage.bytes,
            created_at_ms: now_ms(),
            origin: new.origin,
        };
        let dir = staged.dir;
        write_meta(dir.path(), &meta)?;
        std::fs::create_dir(dir.path().join(USERS))
            .map_err(TemplateError::io("create the holders directory"))?;
        sync_tree_metadata(dir.path());
        self.publish(dir, name, new.overwrite)
    }

    /// A new staging directory, named after this process so a crashed
    /// process's leftovers can be told apart and removed.
    fn staging_dir(&self) -> Result<tempfile::TempDir, TemplateError> {
        let dir = self.dir.join(STAGING);
        std::fs::create_dir_all(&dir)
            .map_err(TemplateError::io(format!("create {}", dir.display())))?;
        tempfile::Builder::new()
            .prefix(&format!("{}.", std::process::id()))
            .tempdir_in(&dir)
            .map_err(TemplateError::io("create a staging directory"))
    }

    /// Moves a finished staging directory into `.v/` and points `name` at it.
    fn publish(
        &self,
        staging: tempfile::TempDir,
        name: &str,
        overwrite: bool,
    ) -> Result<Template, TemplateError> {
        let garbage = {
            let _lock = self.lock()?;
            self.migrate_legacy_locked()?;
            let versions = self.dir.join(VERSIONS);
            std::fs::create_dir_all(&versions)
                .map_err(TemplateError::io(format!("create {}", versions.display())))?;
            let version = unique_name(&versions, name);
            let version_dir = versions.join(&version);
            std::fs::rename(staging.path(), &version_dir)
                .map_err(TemplateError::io("move the template into the store"))?;
            // The directory is now the store's; the guard must not remove it.
            let _ = staging.keep();
            let link_tmp = self.dir.join(format!(".{version}.link"));
            let _ = std::fs::remove_file(&link_tmp);
            let linked = std::os::unix::fs::symlink(format!("{VERSIONS}/{version}"), &link_tmp)
                .and_then(|()| {
                    let flags = if overwrite {
                        nix::fcntl::RenameFlags::empty()
                    } else {
                        nix::fcntl::RenameFlags::RENAME_NOREPLACE
                    };
                    nix::fcntl::renameat2(
                        nix::fcntl::AT_FDCWD,
                        &link_tmp,
                        nix::fcntl::AT_FDCWD,
                        &self.dir.join(name),
                        flags,
                    )
                    .map_err(std::io::Error::from)
                });
            if let Err(e) = linked {
                let _ = std::fs::remove_file(&link_tmp);
                let garbage = self.collect_garbage_locked();
                drop(_lock);
                remove_all(garbage);
                return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
                    TemplateError::AlreadyExists(name.to_owned())
                } else {
                    TemplateError::io(format!("publish template {name}"))(e)
                });
            }
            sync_dir(&self.dir);
            self.collect_garbage_locked()
        };
        remove_all(garbage);
        tracing::info!(template = name, overwrite, "template published");
        self.get(name)
    }

    /// Removes template `name`. Refused while a capsule holds it; the
    /// built-ins may be removed too (they are made again when next asked for).
    pub fn delete(&self, name: &str) -> Result<(), TemplateError> {
        check_name(name)?;
        let garbage = {
            let _lock = self.lock()?;
            self.migrate_legacy_locked()?;
            let link = self.dir.join(name);
            let version = match std::fs::read_link(&link) {
                Ok(v) => v,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(TemplateError::NotFound(name.to_owned()));
                }
                Err(e) => return Err(TemplateError::io(format!("read {}", link.display()))(e)),
            };
            let holders = self.holders_of(name);
            if !holders.is_empty() {
                return Err(TemplateError::InUse {
                    name: name.to_owned(),
                    capsules: holders,
                });
            }
            std::fs::remove_file(&link)
                .map_err(TemplateError::io(format!("remove {}", link.display())))?;
            sync_dir(&self.dir);
            tracing::info!(template = name, version = %version.display(), "template deleted");
            self.collect_garbage_locked()
        };
        remove_all(garbage);
        Ok(())
    }

    /// The current version of `name` (made first when it is a built-in),
    /// recorded as used by `capsule` until [`TemplateStore::release`]: the
    /// version's files stay in place while the capsule runs on them, even
    /// when the name is replaced or deleted meanwhile.
    pub fn hold(&self, name: &str, capsule: &str) -> Result<Template, TemplateError> {
        check_holder(capsule)?;
        self.ensure(name)?;
        let _lock = self.lock()?;
        let template = self.get(name)?;
        let users = template.dir.join(USERS);
        std::fs::create_dir_all(&users)
            .and_then(|()| File::create(users.join(capsule)))
            .and_then(|f| f.sync_all())
            .map_err(TemplateError::io(format!(
                "record {capsule} as a user of {name}"
            )))?;
        Ok(template)
    }

    /// Ends every hold of `capsule`; versions nobody needs any more go.
    pub fn release(&self, capsule: &str) -> Result<(), TemplateError> {
        check_holder(capsule)?;
        let garbage = {
            let _lock = self.lock()?;
            for version in self.versions() {
                match std::fs::remove_file(version.join(USERS).join(capsule)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(TemplateError::io(format!(
                            "release {capsule}'s hold on {}",
                            version.display()
                        ))(e));
                    }
                }
            }
            self.collect_garbage_locked()
        };
        remove_all(garbage);
        Ok(())
    }

    /// Every template (current versions), by name, and [`TINY`] even
    /// before it is made: it is made within the first create that asks
    /// for it (`minimal` takes minutes and is listed once built).
    pub fn list(&self) -> Vec<TemplateSummary> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| check_name(n).is_ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        let mut list: Vec<TemplateSummary> = names
            .into_iter()
            .filter_map(|name| {
                let template = self.get(&name).ok()?;
                let capsules = self.holders_of(&name);
                Some(TemplateSummary { template, capsules })
            })
            .collect();
        if !list.iter().any(|s| s.template.meta.name == TINY) {
            let on_offer = Template {
                meta: TemplateMeta {
                    name: TINY.into(),
                    builtin: true,
                    id_map: self.id_map,
                    defaults: TemplateDefaults::default(),
                    rootfs_bytes: 0,
                    created_at_ms: 0,
                    origin: Some("built in, made on first use".into()),
                },
                dir: self.dir.join(TINY),
            };
            list.push(TemplateSummary {
                template: on_offer,
                capsules: Vec::new(),
            });
            list.sort_by(|a, b| a.template.meta.name.cmp(&b.template.meta.name));
        }
        list
    }

    /// Capsules holding any version published under `name`.
    fn holders_of(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}.");
        let mut holders: Vec<String> = self
            .versions()
            .into_iter()
            .filter(|v| {
                v.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.strip_prefix(&prefix).is_some_and(|r| !r.contains('.')))
            })
            .flat_map(|v| holders_in(&v))
            .collect();
        holders.sort();
        holders.dedup();
        holders
    }

    fn versions(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join(VERSIONS))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Moves versions no name points at and no capsule holds (and staging
    /// directories of dead processes) out of the way; returns them for
    /// removal after the lock is released.
    fn collect_garbage_locked(&self) -> Vec<PathBuf> {
        let mut garbage = Vec::new();
        let referenced: HashSet<std::ffi::OsString> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .filter_map(|t| t.file_name().map(|n| n.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let mut trash: Option<tempfile::TempDir> = None;
        for version in self.versions() {
            let Some(file_name) = version.file_name() else {
                continue;
            };
            if referenced.contains(file_name) || !holders_in(&version).is_empty() {
                continue;
            }
            // An image build in progress keeps its version.
            let Ok(image_lock) = try_lock_file(&version.join(".image.lock")) else {
                continue;
            };
            if trash.is_none() {
                trash = self.staging_dir().ok();
            }
            let Some(bin) = &trash else {
                break;
            };
            match std::fs::rename(&version, bin.path().join(file_name)) {
                Ok(()) => {
                    tracing::info!(version = %version.display(), "removing an unused template version")
                }
                Err(e) => {
                    tracing::warn!(version = %version.display(), error = %e, "cannot remove an unused template version")
                }
            }
            drop(image_lock);
        }
        garbage.extend(trash.map(tempfile::TempDir::keep));
        if let Ok(entries) = std::fs::read_dir(self.dir.join(STAGING)) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let pid = name
                    .to_str()
                    .and_then(|n| n.split('.').next())
                    .and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| {
                    p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists()
                }) {
                    tracing::info!(dir = %entry.path().display(), "removing what a crashed process left while making a template");
                    garbage.push(entry.path());
                }
            }
        }
        garbage
    }

    /// Turns templates stored as plain directories (by earlier agents) into
    /// a version and a link.
    fn migrate_legacy_locked(&self) -> Result<(), TemplateError> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let Some(name) = entry
                .file_name()
                .into_string()
                .ok()
                .filter(|n| check_name(n).is_ok())
            else {
                continue;
            };
            let path = entry.path();
            let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            if !is_dir || !path.join(META_FILE).exists() {
                continue;
            }
            let versions = self.dir.join(VERSIONS);
            std::fs::create_dir_all(&versions)
                .map_err(TemplateError::io(format!("create {}", versions.display())))?;
            let version = unique_name(&versions, &name);
            let link_tmp = self.dir.join(format!(".{version}.link"));
            std::fs::rename(&path, versions.join(&version))
                .and_then(|()| std::fs::create_dir_all(versions.join(&version).join(USERS)))
                .and_then(|()| {
                    std::os::unix::fs::symlink(format!("{VERSIONS}/{version}"), &link_tmp)
                })
                .and_then(|()| std::fs::rename(&link_tmp, &path))
                .map_err(TemplateError::io(format!(
                    "move template {name} into a version"
                )))?;
            tracing::info!(template = name, "template moved into the versioned layout");
        }
        Ok(())
    }

    /// The template's ext4 image, made (and cached) on first use: the
    /// Firecracker backend's root drive. Blocking (seconds for `tiny`, tens
    /// of seconds for Debian); concurrent callers wait for one build.
    pub fn image(&self, template: &Template) -> Result<PathBuf, TemplateError> {
        let path = template.dir.join(IMAGE_FILE);
        if path.exists() {
            return Ok(path);
        }
        let name = template.meta.name.clone();
        let err = |message: String| TemplateError::Build {
            name: name.clone(),
            message,
        };
        // Fails when the version was removed meanwhile (replaced and unused).
        let _building = lock_file(&template.dir.join(".image.lock"))
            .map_err(|e| err(format!("this version of the template is gone: {e}")))?;
        if path.exists() {
            return Ok(path);
        }
        let started = std::time::Instant::now();
        tracing::info!(template = %name, "making the template's ext4 image");
        let guest = image::GuestFiles {
            envd: match &self.envd {
                Some(binary) => Some(
                    envd::EnvdRuntime::prepare(
                        binary,
                        warren_proto::addr::ENVD_PORT,
                        &self.data_dir().join("runtime"),
                    )
                    .map_err(|e| err(format!("envd {}: {e}", binary.display())))?,
                ),
                None => None,
            },
        };
        let scratch = self.staging_dir()?;
        let tmp = template.dir.join(format!(".{IMAGE_FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let size = image::build(
            &template.rootfs(),
            &self.id_map,
            &guest,
            scratch.path(),
            &tmp,
        )
        .and_then(|size| {
            File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            sync_dir(&template.dir);
            Ok(size)
        })
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(format!("ext4 image: {e}"))
        })?;
        tracing::info!(template = %name, bytes = size, elapsed_s = started.elapsed().as_secs_f64(), "ext4 image ready");
        Ok(path)
    }
}

pub fn is_builtin(name: &str) -> bool {
    matches!(name, TINY | MINIMAL)
}

fn read_meta(dir: &Path) -> Result<TemplateMeta, TemplateError> {
    let path = dir.join(META_FILE);
    let text =
        std::fs::read(&path).map_err(TemplateError::io(format!("read {}", path.display())))?;
    serde_json::from_slice(&text).map_err(|e| TemplateError::Io {
        context: format!("parse {}", path.display()),
        source: e.into(),
    })
}

fn write_meta(dir: &Path, meta: &TemplateMeta) -> Result<(), TemplateError> {
    let json = serde_json::to_vec_pretty(meta).map_err(|e| TemplateError::Io {
        context: "encode template.json".into(),
        source: e.into(),
    })?;
    let mut f =
        File::create(dir.join(META_FILE)).map_err(TemplateError::io("write template.json"))?;
    f.write_all(&json)
        .and_then(|()| f.sync_all())
        .map_err(TemplateError::io("write template.json"))
}

fn holders_in(version: &Path) -> Vec<String> {
    std::fs::read_dir(version.join(USERS))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `<name>.<base36 time><n>`, not yet present in `dir`.
fn unique_name(dir: &Path, name: &str) -> String {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    (0u32..)
        .map(|n| format!("{name}.{stamp:x}{n}"))
        .find(|v| !dir.join(v).exists())
        .unwrap_or_else(|| format!("{name}.{stamp:x}"))
}

fn lock_file(path: &Path) -> Result<Flock<File>, TemplateError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(TemplateError::io(format!("open {}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| TemplateError::io(format!("lock {}", path.display()))(e.into()))
}

fn try_lock_file(path: &Path) -> std::io::Result<Flock<File>> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e.into())
}

fn remove_all(paths: Vec<PathBuf>) {
    for path in paths {
        if let Err(e) = std::fs::remove_dir_all(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove");
        }
    }
}

fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "fsync failed");
    }
}

/// Flushes the file system holding a freshly written tree before it is
/// published (`syncfs`: one call, rather than an fsync per file).
fn sync_tree_metadata(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = nix::unistd::syncfs(&d);
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn check_name(name: &str) -> Result<(), TemplateError> {
    let ok = (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(TemplateError::InvalidName(name.to_owned()))
    }
}

/// Holders are capsule ids: 1-64 of `[A-Za-z0-9_-]` (safe as a file name).
fn check_holder(capsule: &str) -> Result<(), TemplateError> {
    let ok = (1..=64).contains(&capsule.len())
        && capsule
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(TemplateError::Io {
            context: format!("invalid capsule id {capsule:?}"),
            source: std::io::ErrorKind::InvalidInput.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> TemplateStore {
        TemplateStore::new(
            dir.join("templates"),
            IdMap::default(),
            "/bin/busybox".into(),
        )
    }

    /// A template whose root filesystem is one file.
    fn make(
        store: &TemplateStore,
        name: &str,
        text: &str,
        overwrite: bool,
    ) -> Result<Template, TemplateError> {
        store.create(
            name,
            NewTemplate {
                overwrite,
                ..Default::default()
            },
            |rootfs| {
                std::fs::create_dir(rootfs).unwrap();
                std::fs::write(rootfs.join("f"), text).unwrap();
                Ok(())
            },
        )
    }

    #[test]
    fn names_are_validated() {
        let store = TemplateStore::new(
            "/nonexistent".into(),
            IdMap::default(),
            "/bin/busybox".into(),
        );
        for bad in ["", "../etc", "a/b", ".hidden", "UPPER", &"x".repeat(65)] {
            assert!(
                matches!(store.get(bad), Err(TemplateError::InvalidName(_))),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(store.get("nope"), Err(TemplateError::NotFound(_))));
        assert!(matches!(
            store.ensure("nope"),
            Err(TemplateError::NotFound(_))
        ));
    }

    #[test]
    fn defaults_overlay_field_by_field() {
        let base = TemplateDefaults {
            user: Some("user".into()),
            env: [("A".into(), "1".into()), ("B".into(), "2".into())].into(),
            workdir: Some("/home/user".into()),
            vcpus: Some(2),
            ..Default::default()
        };
        let over = TemplateDefaults {
            user: Some("root".into()),
            env: [("B".into(), "3".into())].into(),
            memory_mb: Some(512),
            ..Default::default()
        };
        let merged = base.overlaid(&over);
        assert_eq!(merged.user.as_deref(), Some("root"));
        assert_eq!(merged.workdir.as_deref(), Some("/home/user"));
        assert_eq!(merged.env["A"], "1");
        assert_eq!(merged.env["B"], "3");
        assert_eq!((merged.vcpus, merged.memory_mb), (Some(2), Some(512)));
    }

    #[test]
    fn create_overwrite_clash_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let v1 = make(&store, "app", "one", false).unwrap();
        assert_eq!(
            std::fs::read_to_string(v1.rootfs().join("f")).unwrap(),
            "one"
        );
        assert!(v1.meta.rootfs_bytes > 0);
        assert!(matches!(
            make(&store, "app", "two", false),
            Err(TemplateError::AlreadyExists(_))
        ));
        // A capsule runs on v1 while the name is replaced: v1 stays.
        store.hold("app", "cap1").unwrap();
        let v2 = make(&store, "app", "two", true).unwrap();
        assert_ne!(v1.dir(), v2.dir());
        assert_eq!(
            std::fs::read_to_string(store.get("app").unwrap().rootfs().join("f")).unwrap(),
            "two"
        );
        assert_eq!(
            std::fs::read_to_string(v1.rootfs().join("f")).unwrap(),
            "one"
        );
        assert!(matches!(
            store.delete("app"),
            Err(TemplateError::InUse { capsules, .. }) if capsules == ["cap1"]
        ));
        store.release("cap1").unwrap();
        assert!(!v1.dir().exists(), "an unused old version is removed");
        store.delete("app").unwrap();
        assert!(!v2.dir().exists());
        assert!(matches!(store.get("app"), Err(TemplateError::NotFound(_))));
        assert!(matches!(
            store.delete("app"),
            Err(TemplateError::NotFound(_))
        ));
        // Only `tiny`, which is always on offer.
        let names: Vec<String> = store
            .list()
            .into_iter()
            .map(|s| s.template.meta.name)
            .collect();
        assert_eq!(names, [TINY]);
    }

    #[test]
    fn a_failed_fill_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let err = store
            .create("broken", NewTemplate::default(), |rootfs| {
                std::fs::create_dir(rootfs).unwrap();
                std::fs::write(rootfs.join("half"), "x").unwrap();
                Err(TemplateError::Build {
                    name: "broken".into(),
                    message: "stopped halfway".into(),
                })
            })
            .unwrap_err();
        assert!(matches!(err, TemplateError::Build { .. }));
        assert!(matches!(
            store.get("broken"),
            Err(TemplateError::NotFound(_))
        ));
        let staging: Vec<_> = std::fs::read_dir(dir.path().join("templates/.staging"))
            .unwrap()
            .collect();
        assert!(staging.is_empty(), "{staging:?}");
    }

    #[test]
    fn legacy_directories_become_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let legacy = dir.path().join("templates/old");
        std::fs::create_dir_all(legacy.join("rootfs")).unwrap();
        write_meta(
            &legacy,
            &TemplateMeta {
                name: "old".into(),
                builtin: false,
                id_map: IdMap::default(),
                defaults: TemplateDefaults::default(),
                rootfs_bytes: 0,
                created_at_ms: 0,
                origin: None,
            },
        )
        .unwrap();
        assert!(store.get("old").is_ok(), "a plain directory still reads");
        make(&store, "other", "x", false).unwrap();
        let link = std::fs::read_link(dir.path().join("templates/old")).unwrap();
        assert!(link.starts_with(VERSIONS), "{link:?}");
        assert!(store.get("old").unwrap().rootfs().is_dir());
    }
}
