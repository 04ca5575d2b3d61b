//! Copy-on-write capsule disks for real: a template ext4 image on an XFS
//! filesystem with reflinks (made on a loop device by the test), disks
//! created, written through a mount, grown, destroyed; the template stays
//! byte-for-byte the same and nothing is left behind. The device-mapper
//! method runs where the kernel has device-mapper (and skips, saying so,
//! where it does not).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use warren_backend::cow_disk::{CowDisks, CowError, CowKind, CowMethod};
use warren_backend::loopdev::{self, LoopDevice};

const MIB: u64 = 1 << 20;

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn output(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Root and the tools these tests drive (see `warren_testkit::missing`).
fn prerequisites(tools: &[&str]) -> bool {
    let tools: Vec<(&str, &str)> = tools.iter().map(|t| (*t, "e2fsprogs, xfsprogs")).collect();
    warren_testkit::need_root_and_tools("loop devices, mounts", &tools)
}

/// A mounted filesystem, unmounted (lazily, so it cannot fail on a busy
/// mount) on drop; its loop device then auto-clears.
struct Mount {
    dir: PathBuf,
    _loop: Option<LoopDevice>,
}

impl Mount {
    /// Mounts `source` (a block device, or a file through a loop device).
    fn new(source: &Path, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("mountpoint");
        let is_file = std::fs::metadata(source).expect("source").is_file();
        let lo = is_file.then(|| LoopDevice::attach(source, false).expect("loop attach"));
        let device = lo
            .as_ref()
            .map_or_else(|| source.to_path_buf(), LoopDevice::path);
        run(
            "mount",
            &[&device.to_string_lossy(), &dir.to_string_lossy()],
        );
        Self {
            dir: dir.to_path_buf(),
            _loop: lo,
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A scratch XFS filesystem (reflink=1) on a loop device.
fn xfs_scratch(dir: &Path) -> Mount {
    let image = dir.join("xfs.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(2048 * MIB))
        .expect("xfs image");
    run(
        "mkfs.xfs",
        &["-q", "-m", "reflink=1", &image.to_string_lossy()],
    );
    Mount::new(&image, &dir.join("xfs"))
}

/// A shrunk ext4 template image with known content, like the template store
/// keeps them.
fn make_template(dir: &Path) -> PathBuf {
    let src = dir.join("template-root");
    std::fs::create_dir_all(src.join("etc")).expect("dirs");
    std::fs::write(src.join("etc/hostname"), "template\n").expect("file");
    let blob: Vec<u8> = (0..16 * MIB as usize)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(src.join("blob"), blob).expect("blob");
    let image = dir.join("template.ext4");
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-b",
            "4096",
            "-d",
            &src.to_string_lossy(),
            &image.to_string_lossy(),
            "64M",
        ],
    );
    run("e2fsck", &["-fy", &image.to_string_lossy()]);
    run("resize2fs", &["-M", &image.to_string_lossy()]);
    image
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read");
    format!("{:x}", Sha256::digest(bytes))
}

fn fs_bytes(target: &Path) -> u64 {
    let out = output("dumpe2fs", &["-h", &target.to_string_lossy()]);
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from dumpe2fs: {out}"))
    };
    field("Block count:") * field("Block size:")
}

fn used_bytes(path: &Path) -> u64 {
    let out = output("df", &["-B1", "--output=used", &path.to_string_lossy()]);
    out.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df")
}

fn loops_under(dir: &Path) -> Vec<PathBuf> {
    loopdev::list()
        .expect("list loops")
        .into_iter()
        .filter(|(_, backing)| backing.starts_with(dir))
        .map(|(dev, _)| dev)
        .collect()
}

/// Writes through the disk, then checks from a fresh mount that the writes
/// landed and the filesystem is consistent and grown.
fn write_through(disk: &Path, mountpoint: &Path, expect_size: u64) {
    {
        let m = Mount::new(disk, mountpoint);
        assert_eq!(
            std::fs::read_to_string(m.dir.join("etc/hostname")).expect("read"),
            "template\n"
        );
        std::fs::write(m.dir.join("etc/hostname"), "capsule\n").expect("overwrite");
        std::fs::write(m.dir.join("blob"), b"changed").expect("overwrite blob");
        std::fs::write(m.dir.join("new-file"), vec![1u8; 4 * MIB as usize]).expect("new file");
    }
    run("e2fsck", &["-fn", &disk.to_string_lossy()]);
    assert!(fs_bytes(disk) >= expect_size - MIB, "filesystem not grown");
    let m = Mount::new(disk, mountpoint);
    assert_eq!(
        std::fs::read_to_string(m.dir.join("etc/hostname")).expect("read"),
        "capsule\n"
    );
    assert_eq!(
        std::fs::read(m.dir.join("new-file")).expect("read").len(),
        4 * MIB as usize
    );
}

#[test]
fn reflink_disk_create_write_destroy_leaves_template_untouched() {
    if !prerequisites(&["mkfs.xfs", "mkfs.ext4", "e2fsck", "resize2fs", "dumpe2fs"]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let xfs = xfs_scratch(tmp.path());
    let template = make_template(&xfs.dir);
    let template_sum = sha256(&template);
    let disks = CowDisks::new(xfs.dir.join("capsules"), CowMethod::Auto).expect("disks");
    let id = format!("cow-{}", std::process::id());

    let used_before = used_bytes(&xfs.dir);
    let disk = disks
        .create(&id, &template, Some(256 * MIB))
        .expect("create");
    assert_eq!(disk.kind, CowKind::Reflink);
    assert_eq!(disk.size, 256 * MIB);
    assert_eq!(
        std::fs::metadata(&disk.path).expect("disk").len(),
        256 * MIB
    );
    // Shares the template's extents: no copy of its data was written.
    let grown_by = used_bytes(&xfs.dir).saturating_sub(used_before);
    let template_len = std::fs::metadata(&template).expect("template").len();
    assert!(
        grown_by < template_len / 4,
        "creating the disk used {grown_by} bytes for a {template_len}-byte template"
    );
    assert_eq!(disks.get(&id).expect("get"), Some(disk.clone()));

    write_through(&disk.path, &tmp.path().join("mnt"), 256 * MIB);
    assert_eq!(sha256(&template), template_sum, "the template changed");

    disks.destroy(&id).expect("destroy");
    assert!(!disk.path.exists());
    assert!(!disks.dir().join(&id).exists());
    assert!(loops_under(disks.dir()).is_empty());
    assert_eq!(disks.get(&id).expect("get"), None);
    assert_eq!(sha256(&template), template_sum, "the template changed");
    // Destroying again is fine.
    disks.destroy(&id).expect("destroy twice");
}

#[test]
fn stale_disks_are_found_and_cleaned_after_restart() {
    if !prerequisites(&["mkfs.xfs", "mkfs.ext4", "e2fsck", "resize2fs"]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let xfs = xfs_scratch(tmp.path());
    let template = make_template(&xfs.dir);
    let dir = xfs.dir.join("capsules");
    {
        let disks = CowDisks::new(&dir, CowMethod::Reflink).expect("disks");
        for id in ["keep-1", "stale-1", "stale-2"] {
            disks.create(id, &template, None).expect("create");
        }
        // The capsule's own files beside its disk are not ours to remove.
        std::fs::write(dir.join("stale-2/config.json"), "{}").expect("other file");
    }
    let disks = CowDisks::new(&dir, CowMethod::Reflink).expect("disks after restart");
    assert_eq!(
        disks.list().expect("list"),
        ["keep-1", "stale-1", "stale-2"]
    );
    let removed = disks.clean_stale(|id| id == "keep-1").expect("clean");
    assert_eq!(removed, ["stale-1", "stale-2"]);
    assert_eq!(disks.list().expect("list"), ["keep-1"]);
    assert!(!dir.join("stale-1").exists());
    assert!(dir.join("stale-2/config.json").exists());
    assert!(!dir.join("stale-2/rootfs.ext4").exists());
    disks.destroy("keep-1").expect("destroy");
}

#[test]
fn bad_requests_get_clear_errors_and_leave_nothing() {
    if !prerequisites(&["mkfs.ext4", "e2fsck", "resize2fs"]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let template = make_template(tmp.path());
    let template_len = std::fs::metadata(&template).expect("template").len();
    // The temp dir is on this host's root filesystem; reflink may or may not work there.
    let disks = CowDisks::new(tmp.path().join("capsules"), CowMethod::Auto).expect("disks");

    for bad in ["", "../x", "a/b", "a b"] {
        let err = disks.create(bad, &template, None).expect_err("bad id");
        assert!(matches!(err, CowError::InvalidId { .. }), "{bad:?}: {err}");
    }
    let err = disks
        .create("small", &template, Some(template_len - 4096))
        .expect_err("too small");
    assert!(matches!(err, CowError::TooSmall { .. }), "{err}");
    let err = disks
        .create("dir", tmp.path(), None)
        .expect_err("directory as template");
    assert!(matches!(err, CowError::NotARegularFile(_)), "{err}");
    let err = disks
        .create("missing", &tmp.path().join("nope.ext4"), None)
        .expect_err("missing template");
    assert!(err.to_string().contains("nope.ext4"), "{err}");
    for id in ["small", "dir", "missing"] {
        assert!(!disks.dir().join(id).exists(), "{id} left a directory");
    }

    // Forcing reflink where the filesystem has none says so and cleans up.
    let probe = tmp.path().join("probe");
    let reflink_here = Command::new("cp")
        .args([
            "--reflink=always",
            &template.to_string_lossy(),
            &probe.to_string_lossy(),
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !reflink_here {
        let forced = CowDisks::new(tmp.path().join("capsules"), CowMethod::Reflink).expect("disks");
        let err = forced
            .create("noreflink", &template, None)
            .expect_err("no reflink");
        assert!(matches!(err, CowError::Unsupported(_)), "{err}");
        assert!(!forced.dir().join("noreflink").exists());
        let dm_here =
            std::fs::read_to_string("/proc/misc").is_ok_and(|m| m.contains("device-mapper"));
        if !dm_here {
            // Neither method works: the error names both reasons.
            let err = disks
                .create("nomethod", &template, None)
                .expect_err("no method");
            let msg = err.to_string();
            assert!(
                msg.contains("reflink") && msg.contains("device-mapper"),
                "{msg}"
            );
            assert!(!disks.dir().join("nomethod").exists());
        }
    }
}

#[test]
fn dm_snapshot_disk_create_write_destroy_leaves_template_untouched() {
    if !prerequisites(&["mkfs.ext4", "e2fsck", "resize2fs", "dumpe2fs", "dmsetup"]) {
        return;
    }
    let misc = std::fs::read_to_string("/proc/misc").unwrap_or_default();
    if !misc.contains("device-mapper") {
        eprintln!("SKIP: this kernel has no device-mapper; the dm-snapshot method cannot run here");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let template = make_template(tmp.path());
    let template_sum = sha256(&template);
    let disks = CowDisks::new(tmp.path().join("capsules"), CowMethod::DmSnapshot).expect("disks");
    let id = format!("cowdm-{}", std::process::id());
    let disk = disks
        .create(&id, &template, Some(256 * MIB))
        .expect("create");
    assert_eq!(disk.kind, CowKind::DmSnapshot);
    assert_eq!(
        disks.get(&id).expect("get").map(|d| d.size),
        Some(256 * MIB)
    );

    write_through(&disk.path, &tmp.path().join("mnt"), 256 * MIB);
    assert_eq!(sha256(&template), template_sum, "the template changed");

    disks.destroy(&id).expect("destroy");
    assert!(!disk.path.exists());
    let tables = output("dmsetup", &["ls"]);
    assert!(!tables.contains(&id), "dm devices left: {tables}");
    assert!(loops_under(disks.dir()).is_empty());
    assert!(
        loopdev::list()
            .expect("loops")
            .iter()
            .all(|(_, b)| b != &template),
        "template loop device left"
    );
    assert_eq!(sha256(&template), template_sum);
}
