//! Reading and writing cgroup control files with errors that name the file.

use std::path::Path;

use super::CgroupError;

pub(super) fn read(op: &'static str, path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Io {
        op,
        path: path.to_owned(),
        source,
    })
}

pub(super) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Io {
        op: "write",
        path: path.to_owned(),
        source,
    })
}

pub(super) fn mkdir(path: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir(path).map_err(|source| CgroupError::Io {
        op: "create",
        path: path.to_owned(),
        source,
    })
}

/// Creates `path` and missing parents; an existing directory is fine.
pub(super) fn mkdir_all(path: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(path).map_err(|source| CgroupError::Io {
        op: "create",
        path: path.to_owned(),
        source,
    })
}

/// A single unsigned number, or `max` (read as `u64::MAX`).
pub(super) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read("read", path)?;
    let trimmed = text.trim();
    if trimmed == "max" {
        return Ok(u64::MAX);
    }
    trimmed.parse().map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        contents: text.clone(),
    })
}

/// The value of `key` in a flat-keyed file (`key value` per line, like
/// `memory.events` or `cpu.stat`).
pub(super) fn read_keyed(path: &Path, key: &str) -> Result<u64, CgroupError> {
    let text = read("read", path)?;
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| CgroupError::Parse {
            path: path.to_owned(),
            contents: text.clone(),
        })
}
