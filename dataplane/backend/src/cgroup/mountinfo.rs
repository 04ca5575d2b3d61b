//! Finding cgroup mounts in `/proc/self/mountinfo`.

use std::path::PathBuf;

/// One cgroup (v1) or cgroup2 mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CgroupMount {
    pub path: PathBuf,
    pub v2: bool,
    /// v1 controllers bound to this hierarchy (from the super options).
    pub controllers: Vec<String>,
    /// All super options.
    pub options: Vec<String>,
}

/// Every cgroup mount whose root is the hierarchy's root (a mount of a
/// sub-tree, as inside a container, is skipped).
pub(super) fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let super_opts = right.next().unwrap_or("");
            if left.get(3) != Some(&"/") {
                return None;
            }
            let path = PathBuf::from(left.get(4)?);
            let options: Vec<String> = super_opts.split(',').map(str::to_owned).collect();
            match fstype {
                "cgroup2" => Some(CgroupMount {
                    path,
                    v2: true,
                    controllers: Vec::new(),
                    options,
                }),
                "cgroup" => Some(CgroupMount {
                    path,
                    v2: false,
                    controllers: super_opts
                        .split(',')
                        .filter(|o| !o.contains('=') && *o != "rw" && *o != "ro")
                        .map(str::to_owned)
                        .collect(),
                    options,
                }),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hybrid_host() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 /nested /mnt/x rw - cgroup cgroup rw,pids
";
        let m = cgroup_mounts(text);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].path, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(m[2].controllers, vec!["xattr"]);
        assert!(m[3].v2);
        assert_eq!(m[3].options, vec!["rw"]);
    }
}
