//! `EntryInfo` for a path, as E2B's envd reports it: symlinks described by
//! their target's type and mode, Go's permission string, owner and group
//! names, and user metadata from `user.e2b.*` extended attributes.

use std::{
    collections::HashMap,
    fs::Metadata,
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::Path,
};

use warren_proto::filesystem::{EntryInfo, FileType};

use crate::users::Accounts;

/// The extended-attribute namespace user metadata lives in.
pub const METADATA_XATTR_PREFIX: &str = "user.e2b.";

pub fn file_type(meta: &Metadata) -> FileType {
    let t = meta.file_type();
    if t.is_file() {
        FileType::File
    } else if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else {
        FileType::Unspecified
    }
}

/// Go's `FileMode.String()` for a Unix mode: `-rw-r--r--`, `drwxr-xr-x`,
/// `Lrwxrwxrwx`, `Dcrw-rw-rw-`, `urwxr-xr-x`.
pub fn permissions_string(meta: &Metadata) -> String {
    let t = meta.file_type();
    let mode = meta.permissions().mode();
    let mut s = String::new();
    if t.is_dir() {
        s.push('d');
    }
    if t.is_symlink() {
        s.push('L');
    }
    if t.is_block_device() || t.is_char_device() {
        s.push('D');
    }
    if t.is_fifo() {
        s.push('p');
    }
    if t.is_socket() {
        s.push('S');
    }
    if mode & 0o4000 != 0 {
        s.push('u');
    }
    if mode & 0o2000 != 0 {
        s.push('g');
    }
    if t.is_char_device() {
        s.push('c');
    }
    if mode & 0o1000 != 0 {
        s.push('t');
    }
    if s.is_empty() {
        s.push('-');
    }
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if mode & (1 << (8 - i)) != 0 { c } else { '-' });
    }
    s
}

/// User metadata stored on `path`.
pub fn read_metadata(path: &Path) -> HashMap<String, String> {
    let Ok(names) = xattr::list(path) else {
        return HashMap::new();
    };
    names
        .filter_map(|name| {
            let name = name.to_str()?.to_owned();
            let key = name.strip_prefix(METADATA_XATTR_PREFIX)?.to_owned();
            let value = xattr::get(path, &name).ok()??;
            Some((key, String::from_utf8(value).ok()?))
        })
        .collect()
}

/// Describes `path` (not following a final symlink, but describing its target).
pub fn entry_info(path: &Path, accounts: &Accounts) -> std::io::Result<EntryInfo> {
    let meta = std::fs::symlink_metadata(path)?;
    let is_symlink = meta.file_type().is_symlink();
    let (kind, mode, symlink_target) = if is_symlink {
        let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        match std::fs::metadata(path) {
            Ok(target_meta) => (
                file_type(&target_meta),
                target_meta.permissions().mode() & 0o777,
                Some(target.display().to_string()),
            ),
            Err(_) => (FileType::Unspecified, 0, Some(target.display().to_string())),
        }
    } else {
        (file_type(&meta), meta.permissions().mode() & 0o777, None)
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".to_owned());
    Ok(EntryInfo {
        name,
        r#type: kind as i32,
        path: path.display().to_string(),
        size: meta.len() as i64,
        mode,
        permissions: permissions_string(&meta),
        owner: accounts.user_name(meta.uid()),
        group: accounts.group_name(meta.gid()),
        modified_time: Some(pbjson_types::Timestamp {
            seconds: meta.mtime(),
            nanos: meta.mtime_nsec() as i32,
        }),
        symlink_target,
        metadata: read_metadata(path),
        is_symlink,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_permission_strings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            permissions_string(&std::fs::metadata(&file).unwrap()),
            "-rw-r--r--"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            permissions_string(&std::fs::metadata(dir.path()).unwrap()),
            "drwxr-xr-x"
        );
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(
            permissions_string(&std::fs::symlink_metadata(&link).unwrap()),
            "Lrwxrwxrwx"
        );
        assert_eq!(
            permissions_string(&std::fs::metadata("/dev/null").unwrap()),
            "Dcrw-rw-rw-"
        );
    }

    #[test]
    fn symlinks_describe_their_target() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&sub, &link).unwrap();
        let info = entry_info(&link, &Accounts::default()).unwrap();
        assert!(info.is_symlink);
        assert_eq!(info.r#type, FileType::Directory as i32);
        assert_eq!(
            info.symlink_target.as_deref(),
            Some(std::fs::canonicalize(&sub).unwrap().to_str().unwrap())
        );
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nope"), &dangling).unwrap();
        let info = entry_info(&dangling, &Accounts::default()).unwrap();
        assert_eq!(info.r#type, FileType::Unspecified as i32);
    }
}
