//! Users and groups of the capsule, read straight from `/etc/passwd` and
//! `/etc/group` (no NSS: envd is linked statically and runs inside templates
//! without a C library of their own).

use std::{fs, path::PathBuf};

use nix::unistd::{Gid, Uid};

/// A user processes and file operations run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    /// Supplementary groups (the primary group first).
    pub groups: Vec<Gid>,
    pub home: PathBuf,
    pub shell: String,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unknown user {0:?}")]
    Unknown(String),
    #[error("reading {path}: {source}")]
    Read {
        path: &'static str,
        source: std::io::Error,
    },
}

/// Where the account databases live (tests point this at a temp dir).
#[derive(Clone, Debug)]
pub struct Accounts {
    passwd: PathBuf,
    group: PathBuf,
}

impl Default for Accounts {
    fn default() -> Self {
        Self {
            passwd: PathBuf::from("/etc/passwd"),
            group: PathBuf::from("/etc/group"),
        }
    }
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
    shell: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        let _gecos = f.next()?;
        let home = f.next()?;
        let shell = f.next().unwrap_or("/bin/sh");
        (!name.is_empty() && !name.starts_with('#')).then_some(PasswdEntry {
            name,
            uid,
            gid,
            home,
            shell,
        })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let gid = f.next()?.parse().ok()?;
        let members = f
            .next()
            .unwrap_or_default()
            .split(',')
            .filter(|m| !m.is_empty())
            .collect();
        (!name.is_empty() && !name.starts_with('#')).then_some(GroupEntry { name, gid, members })
    })
}

impl Accounts {
    pub fn at(passwd: impl Into<PathBuf>, group: impl Into<PathBuf>) -> Self {
        Self {
            passwd: passwd.into(),
            group: group.into(),
        }
    }

    fn read(&self, which: &'static str) -> Result<String, UserError> {
        let path = if which == "passwd" {
            &self.passwd
        } else {
            &self.group
        };
        match fs::read_to_string(path) {
            Ok(text) => Ok(text),
            // A capsule without a group file still has users.
            Err(e) if which == "group" && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(String::new())
            }
            Err(source) => Err(UserError::Read {
                path: if which == "passwd" {
                    "/etc/passwd"
                } else {
                    "/etc/group"
                },
                source,
            }),
        }
    }

    /// Looks a user up by name.
    pub fn user(&self, name: &str) -> Result<User, UserError> {
        let passwd = self.read("passwd")?;
        let entry = passwd_entries(&passwd)
            .find(|e| e.name == name)
            .ok_or_else(|| UserError::Unknown(name.to_owned()))?;
        let groups_text = self.read("group")?;
        let mut groups = vec![Gid::from_raw(entry.gid)];
        for g in group_entries(&groups_text) {
            if g.gid != entry.gid && g.members.contains(&entry.name) {
                groups.push(Gid::from_raw(g.gid));
            }
        }
        Ok(User {
            name: entry.name.to_owned(),
            uid: Uid::from_raw(entry.uid),
            gid: Gid::from_raw(entry.gid),
            groups,
            home: PathBuf::from(if entry.home.is_empty() {
                "/"
            } else {
                entry.home
            }),
            shell: entry.shell.to_owned(),
        })
    }

    /// The name of a uid, or the number itself when it has no entry.
    pub fn user_name(&self, uid: u32) -> String {
        self.read("passwd")
            .ok()
            .and_then(|text| {
                passwd_entries(&text)
                    .find(|e| e.uid == uid)
                    .map(|e| e.name.to_owned())
            })
            .unwrap_or_else(|| uid.to_string())
    }

    /// The name of a gid, or the number itself when it has no entry.
    pub fn group_name(&self, gid: u32) -> String {
        self.read("group")
            .ok()
            .and_then(|text| {
                group_entries(&text)
                    .find(|g| g.gid == gid)
                    .map(|g| g.name.to_owned())
            })
            .unwrap_or_else(|| gid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts(dir: &tempfile::TempDir) -> Accounts {
        let passwd = dir.path().join("passwd");
        let group = dir.path().join("group");
        fs::write(
            &passwd,
            "root:x:0:0:root:/root:/bin/sh\n# comment\nuser:x:1000:1000::/home/user:/bin/bash\nbroken line\n",
        )
        .unwrap();
        fs::write(
            &group,
            "root:x:0:\nuser:x:1000:\ndocker:x:998:user,other\nwheel:x:10:root\n",
        )
        .unwrap();
        Accounts::at(passwd, group)
    }

    #[test]
    fn looks_up_users_with_supplementary_groups() {
        let dir = tempfile::tempdir().unwrap();
        let acc = accounts(&dir);
        let user = acc.user("user").unwrap();
        assert_eq!(user.uid.as_raw(), 1000);
        assert_eq!(user.home, PathBuf::from("/home/user"));
        assert_eq!(user.shell, "/bin/bash");
        let groups: Vec<u32> = user.groups.iter().map(|g| g.as_raw()).collect();
        assert_eq!(groups, vec![1000, 998]);
        assert_eq!(acc.user("root").unwrap().groups.len(), 2);
        assert!(matches!(acc.user("nobody"), Err(UserError::Unknown(_))));
        assert_eq!(acc.user_name(1000), "user");
        assert_eq!(acc.user_name(4242), "4242");
        assert_eq!(acc.group_name(998), "docker");
    }
}
