//! Template store: templates are root filesystems kept as directories under
//! `$WARREN_DIR/templates/<name>/` (`rootfs/` plus `template.json`). The
//! namespace backend mounts a template's `rootfs/` read-only as the shared
//! lower layer of every capsule made from it.
//!
//! A template's files are owned through the store's [`IdMap`]: capsule uid
//! `u` is host uid `host_base + u`, so capsule root owns `/` inside its user
//! namespace while owning nothing on the host.
//!
//! Built-in templates are made on demand the first time they are asked for,
//! in a staging directory renamed into place (atomic and idempotent).

pub(crate) mod elf;
mod tiny;

pub use tiny::ENVD_PATH;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the template the tests and the quick start use.
pub const TINY: &str = "tiny";

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

/// What `template.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateMeta {
    pub name: String,
    /// Made by Warren itself (rather than by a build).
    pub builtin: bool,
    pub id_map: IdMap,
}

/// A template on disk.
#[derive(Debug, Clone)]
pub struct Template {
    pub meta: TemplateMeta,
    dir: PathBuf,
}

impl Template {
    /// The root filesystem directory (the namespace backend's lower layer).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The templates of one host.
#[derive(Debug, Clone)]
pub struct TemplateStore {
    dir: PathBuf,
    id_map: IdMap,
    busybox: PathBuf,
}

impl TemplateStore {
    /// `dir` is `$WARREN_DIR/templates`; `busybox` is a statically linked
    /// busybox (Debian's `busybox-static` installs `/bin/busybox`).
    pub fn new(dir: PathBuf, id_map: IdMap, busybox: PathBuf) -> Self {
        Self {
            dir,
            id_map,
            busybox,
        }
    }

    pub fn id_map(&self) -> IdMap {
        self.id_map
    }

    /// The template `name`, which must exist.
    pub fn get(&self, name: &str) -> Result<Template, TemplateError> {
        check_name(name)?;
        let dir = self.dir.join(name);
        let meta_path = dir.join("template.json");
        let text = match std::fs::read(&meta_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TemplateError::NotFound(name.to_owned()));
            }
            Err(e) => {
                return Err(TemplateError::io(format!("read {}", meta_path.display()))(
                    e,
                ));
            }
        };
        let meta: TemplateMeta = serde_json::from_slice(&text).map_err(|e| TemplateError::Io {
            context: format!("parse {}", meta_path.display()),
            source: e.into(),
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

    /// The template `name`, building it first when it is a built-in that is
    /// not on disk yet. Blocking (a build takes well under a second).
    pub fn ensure(&self, name: &str) -> Result<Template, TemplateError> {
        match self.get(name) {
            Err(TemplateError::NotFound(_)) if name == TINY => {}
            other => return other,
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(TemplateError::io(format!("create {}", self.dir.display())))?;
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{name}.build-"))
            .tempdir_in(&self.dir)
            .map_err(TemplateError::io("create a staging directory"))?;
        tiny::build(&staging.path().join("rootfs"), &self.id_map, &self.busybox)?;
        let meta = TemplateMeta {
            name: name.to_owned(),
            builtin: true,
            id_map: self.id_map,
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| TemplateError::Io {
            context: "encode template.json".into(),
            source: e.into(),
        })?;
        std::fs::write(staging.path().join("template.json"), json)
            .map_err(TemplateError::io("write template.json"))?;
        let staged = staging.keep();
        match std::fs::rename(&staged, self.dir.join(name)) {
            Ok(()) => {}
            // Someone else finished the same build first: theirs is as good.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {
                remove_tree(&staged);
            }
            Err(e) => {
                remove_tree(&staged);
                return Err(TemplateError::io("move the built template into place")(e));
            }
        }
        self.get(name)
    }
}

fn remove_tree(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), error = %e, "could not remove a staging directory");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
