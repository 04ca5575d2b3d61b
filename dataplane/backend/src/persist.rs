//! Backends' state files: JSON written atomically (temporary file, fsync,
//! rename), so a crash leaves the previous state or the new one, never a
//! torn file that would cost a capsule its adoption.

use std::io::{self, Write};
use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};

use crate::{BackendError, BackendKind, CapsuleId};

/// Writes `value` as `dir/name`.
pub fn save<T: Serialize>(dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&json)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    Ok(())
}

/// Reads `dir/name`; a file that does not parse is `InvalidData`.
pub fn load<T: DeserializeOwned>(dir: &Path, name: &str) -> io::Result<T> {
    let text = std::fs::read(dir.join(name))?;
    serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A capsule's state file `dir/name`: missing is [`BackendError::NotFound`],
/// unreadable [`BackendError::CorruptState`].
pub fn load_capsule<T: DeserializeOwned>(
    id: &CapsuleId,
    dir: &Path,
    name: &str,
) -> Result<T, BackendError> {
    load(dir, name).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => BackendError::NotFound(id.clone()),
        _ => BackendError::CorruptState {
            id: id.clone(),
            reason: e.to_string(),
        },
    })
}

/// The capsules in `capsules_dir` (one directory each) that have a state
/// file `name`, sorted.
pub fn capsule_ids(
    capsules_dir: &Path,
    name: &str,
    kind: BackendKind,
) -> Result<Vec<CapsuleId>, BackendError> {
    let entries = std::fs::read_dir(capsules_dir).map_err(|source| BackendError::Unsupported {
        kind,
        reason: format!("list {}: {source}", capsules_dir.display()),
    })?;
    let mut ids: Vec<CapsuleId> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join(name).is_file())
        .filter_map(|e| CapsuleId::new(e.file_name().to_string_lossy().into_owned()).ok())
        .collect();
    ids.sort();
    Ok(ids)
}
