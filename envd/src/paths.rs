//! Path resolution as E2B's envd does it: `~` is the user's home, relative
//! paths resolve against the default workdir (else the user's home), and the
//! result is made absolute and lexically clean.

use std::path::{Component, Path, PathBuf};

use crate::users::User;

/// Resolves `path` for `user`. An empty path means the base directory itself.
pub fn resolve(path: &str, user: &User, workdir: Option<&Path>) -> PathBuf {
    let expanded = if path == "~" {
        user.home.clone()
    } else if let Some(rest) = path.strip_prefix("~/") {
        user.home.join(rest)
    } else {
        PathBuf::from(path)
    };
    let absolute = if expanded.is_absolute() {
        expanded
    } else {
        workdir.unwrap_or(&user.home).join(expanded)
    };
    clean(&absolute)
}

/// Removes `.` and resolves `..` lexically (`/a/../..` is `/`).
pub fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use nix::unistd::{Gid, Uid};

    use super::*;

    fn user() -> User {
        User {
            name: "user".into(),
            uid: Uid::from_raw(1000),
            gid: Gid::from_raw(1000),
            groups: vec![],
            home: "/home/user".into(),
            shell: "/bin/sh".into(),
        }
    }

    #[test]
    fn resolves_like_envd() {
        let u = user();
        assert_eq!(resolve("a/b", &u, None), PathBuf::from("/home/user/a/b"));
        assert_eq!(
            resolve("a/b", &u, Some(Path::new("/work"))),
            PathBuf::from("/work/a/b")
        );
        assert_eq!(
            resolve("~/x", &u, Some(Path::new("/work"))),
            PathBuf::from("/home/user/x")
        );
        assert_eq!(resolve("~", &u, None), PathBuf::from("/home/user"));
        assert_eq!(
            resolve("/etc/../tmp/./x", &u, None),
            PathBuf::from("/tmp/x")
        );
        assert_eq!(resolve("../../../..", &u, None), PathBuf::from("/"));
        assert_eq!(resolve("", &u, None), PathBuf::from("/home/user"));
    }
}
