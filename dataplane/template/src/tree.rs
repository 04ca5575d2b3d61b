//! Measuring a directory tree: the bytes it occupies and its entries, on one
//! file system, hard links counted once, symlinks not followed.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What a tree holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocated bytes (blocks), as `du` counts them.
    pub bytes: u64,
    /// Files, directories, links and special files.
    pub entries: u64,
}

/// Walks `root` (without crossing into other file systems).
pub fn usage(root: &Path) -> io::Result<Usage> {
    let top = std::fs::symlink_metadata(root)?;
    let mut usage = Usage::default();
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert(meta.ino()) {
            continue;
        }
        usage.entries += 1;
        usage.bytes += meta.blocks() * 512;
        if meta.is_dir() && meta.dev() == top.dev() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_entries_and_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::hard_link(root.join("d/f"), root.join("g")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("l")).unwrap();
        let u = usage(root).unwrap();
        assert_eq!(u.entries, 4); // root, d, f (once), l
        assert!(
            u.bytes >= 64 * 1024 && u.bytes < 2 * 64 * 1024 + 3 * 8192,
            "{u:?}"
        );
    }
}
