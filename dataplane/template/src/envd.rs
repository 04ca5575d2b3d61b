//! Running the host's envd in any template. The namespace backend binds it
//! into each capsule; the ext4 images for microVMs carry a copy (see
//! [`super::image`]). A static envd is used as is. A dynamically linked one
//! (the default Rust build) would need the template's C library to match
//! the host's, and `tiny` has none: so its libraries (found with `ldd`) are
//! copied once per distinct set into `<data_dir>/runtime/envd-lib-<hash>/`,
//! placed at `/.warren/lib` in the capsule, and envd is started through that
//! directory's dynamic loader. Processes envd starts use the template's own
//! files, unaffected.

use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where envd lives inside a capsule (relative to `/`).
pub const ENVD_INSIDE: &str = super::ENVD_PATH;
/// Where its libraries are mounted inside a capsule (relative to `/`).
pub const LIBS_INSIDE: &str = ".warren/lib";

/// The host's envd, ready to bind into capsules.
#[derive(Debug, Clone)]
pub struct EnvdRuntime {
    pub binary: PathBuf,
    pub port: u16,
    /// Host directory of its libraries and the loader's file name, when it
    /// is dynamically linked.
    pub libs: Option<(PathBuf, String)>,
}

impl EnvdRuntime {
    pub fn prepare(binary: &Path, port: u16, runtime_dir: &Path) -> io::Result<Self> {
        let binary = binary.canonicalize()?;
        let libs = match crate::elf::interpreter(&binary)? {
            None => None,
            Some(loader) => Some(copy_libraries(&binary, &loader, runtime_dir)?),
        };
        Ok(Self { binary, port, libs })
    }

    /// Init's argv inside the capsule.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = Vec::new();
        if let Some((_, loader)) = &self.libs {
            argv.extend([
                format!("/{LIBS_INSIDE}/{loader}"),
                "--library-path".into(),
                format!("/{LIBS_INSIDE}"),
            ]);
        }
        argv.extend([
            format!("/{ENVD_INSIDE}"),
            "--port".into(),
            self.port.to_string(),
        ]);
        argv
    }
}

/// The libraries `ldd` lists for `binary`, plus its loader, copied into a
/// directory named after their paths, sizes and times (reused when equal).
fn copy_libraries(
    binary: &Path,
    loader: &Path,
    runtime_dir: &Path,
) -> io::Result<(PathBuf, String)> {
    let out = Command::new("ldd").arg(binary).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut files: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("=>").map(|(_, r)| r.trim()))
        .filter_map(|r| r.split_whitespace().next())
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    files.push(loader.to_owned());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for f in &files {
        let meta = std::fs::metadata(f)?;
        (f, meta.size(), meta.mtime(), meta.mtime_nsec()).hash(&mut hasher);
    }
    let dir = runtime_dir.join(format!("envd-lib-{:016x}", hasher.finish()));
    let loader_name = loader
        .file_name()
        .ok_or_else(|| io::Error::other(format!("odd loader path {}", loader.display())))?
        .to_string_lossy()
        .into_owned();
    if dir.is_dir() {
        return Ok((dir, loader_name));
    }
    std::fs::create_dir_all(runtime_dir)?;
    let staging = tempfile::Builder::new()
        .prefix(".envd-lib-")
        .tempdir_in(runtime_dir)?;
    for f in &files {
        let name = f
            .file_name()
            .ok_or_else(|| io::Error::other(format!("odd library path {}", f.display())))?;
        std::fs::copy(f, staging.path().join(name))?;
    }
    let staged = staging.keep();
    if let Err(e) = std::fs::rename(&staged, &dir) {
        let _ = std::fs::remove_dir_all(&staged);
        // Another agent process made the same directory first.
        if !dir.is_dir() {
            return Err(e);
        }
    }
    Ok((dir, loader_name))
}
