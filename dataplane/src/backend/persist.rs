//! Backends' state files: JSON written atomically (temporary file, fsync,
//! rename), so a crash leaves the previous state or the new one, never a
//! torn file that would cost a capsule its adoption.

use std::io::{self, Write};
use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};

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
