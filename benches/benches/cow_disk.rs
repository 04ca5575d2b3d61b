//! Copy-on-write capsule disk creation against a full copy of the same
//! image, in the same run: a 1 GiB ext4 template filled with data, on an XFS
//! filesystem with reflinks (made on a loop device by the bench).
//!
//! - `reflink/create`: `CowDisks::create` at the template's size.
//! - `reflink/create_grown_4GiB`: the same, grown to 4 GiB (adds `resize2fs`).
//! - `dm_snapshot/create`: where the kernel has device-mapper.
//! - `full_copy`: read/write copy of the image with a 1 MiB buffer, like
//!   `cp --reflink=never` (no fsync on either side, so the copy is measured
//!   at page-cache speed: the ratio is the copy's best case).
//!
//! Prints `ratio full_copy/reflink` at the end. Needs root, mkfs.xfs and
//! e2fsprogs; otherwise prints why and exits.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::Criterion;
use warren_backend::cow_disk::{CowDisks, CowMethod};
use warren_backend::loopdev::LoopDevice;

const MIB: u64 = 1 << 20;
const TEMPLATE_SIZE: u64 = 1024 * MIB;

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

fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (loop devices, mounts)".into());
    }
    for tool in ["mkfs.xfs", "mkfs.ext4", "resize2fs", "e2fsck", "mount"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!(
                "{tool} is not installed (apt: xfsprogs, e2fsprogs)"
            ));
        }
    }
    None
}

/// A scratch XFS (reflink=1) on a loop device; unmounted on drop.
struct Scratch {
    _tmp: tempfile::TempDir,
    mnt: PathBuf,
    _loop: LoopDevice,
}

impl Scratch {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let image = tmp.path().join("xfs.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(8 * TEMPLATE_SIZE))
            .expect("image");
        run(
            "mkfs.xfs",
            &["-q", "-m", "reflink=1", &image.to_string_lossy()],
        );
        let lo = LoopDevice::attach(&image, false).expect("loop");
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir_all(&mnt).expect("mnt");
        run(
            "mount",
            &[&lo.path().to_string_lossy(), &mnt.to_string_lossy()],
        );
        Self {
            _tmp: tmp,
            mnt,
            _loop: lo,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// A 1 GiB ext4 image nearly full of non-zero data.
fn make_template(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).expect("src");
    let mut f = std::fs::File::create(src.join("data")).expect("data");
    let chunk: Vec<u8> = (0..MIB as usize)
        .map(|i| (i * 31 % 251) as u8 | 1)
        .collect();
    for _ in 0..(TEMPLATE_SIZE / MIB - 96) {
        f.write_all(&chunk).expect("write");
    }
    drop(f);
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
            "1G",
        ],
    );
    std::fs::remove_dir_all(&src).expect("rm src");
    image
}

fn full_copy(src: &Path, dst: &Path) {
    let mut input = std::fs::File::open(src).expect("open");
    let mut output = std::fs::File::create(dst).expect("create");
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = input.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        output.write_all(&buf[..n]).expect("write");
    }
}

fn median(samples: &Mutex<Vec<Duration>>) -> Duration {
    let mut v = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("SKIP cow_disk bench: {why}");
        return;
    }
    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(15))
        .configure_from_args();
    let scratch = Scratch::new();
    let template = make_template(&scratch.mnt);
    let disks = CowDisks::new(scratch.mnt.join("capsules"), CowMethod::Reflink).expect("disks");
    let reflink_times = Mutex::new(Vec::new());
    let copy_times = Mutex::new(Vec::new());

    let mut group = c.benchmark_group("cow_disk_1GiB");
    let mut n = 0u64;
    // Times `create` only; each disk is destroyed outside the measurement.
    let mut create = |b: &mut criterion::Bencher<'_>,
                      disks: &CowDisks,
                      size: Option<u64>,
                      record: Option<&Mutex<Vec<Duration>>>| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let id = format!("bench-{n}");
                let start = Instant::now();
                let disk = disks.create(&id, &template, size).expect("create");
                total += start.elapsed();
                assert!(disk.size >= TEMPLATE_SIZE);
                disks.destroy(&id).expect("destroy");
            }
            if let Some(r) = record {
                r.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(total / iters as u32);
            }
            total
        })
    };
    group.bench_function("reflink/create", |b| {
        create(b, &disks, None, Some(&reflink_times))
    });
    group.bench_function("reflink/create_grown_4GiB", |b| {
        create(b, &disks, Some(4 * TEMPLATE_SIZE), None)
    });
    let dm_here = std::fs::read_to_string("/proc/misc").is_ok_and(|m| m.contains("device-mapper"));
    if dm_here {
        let dm_disks =
            CowDisks::new(scratch.mnt.join("capsules-dm"), CowMethod::DmSnapshot).expect("disks");
        group.bench_function("dm_snapshot/create", |b| create(b, &dm_disks, None, None));
    } else {
        eprintln!(
            "cow_disk bench: no device-mapper in this kernel; dm_snapshot/create not measured"
        );
    }
    let copy = scratch.mnt.join("copy.ext4");
    group.bench_function("full_copy", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                full_copy(&template, &copy);
                total += start.elapsed();
                std::fs::remove_file(&copy).expect("rm");
            }
            copy_times
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(total / iters as u32);
            total
        })
    });
    group.finish();

    let (cow, full) = (median(&reflink_times), median(&copy_times));
    println!(
        "cow_disk_1GiB: reflink create median {cow:?}, full copy median {full:?}, ratio full_copy/reflink = {:.0}x",
        full.as_secs_f64() / cow.as_secs_f64().max(1e-9)
    );
    c.final_summary();
}
