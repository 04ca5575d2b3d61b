//! 2 MiB hugetlbfs guest memory, as Firecracker's `huge_pages: "2M"` uses.
//!
//! Reserves huge pages through `/proc/sys/vm/nr_hugepages` (root) and restores
//! the previous value afterwards, even on failure. Skips, saying why, when the
//! kernel cannot provide them.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::*;
use warren_uffd::{End, Snapshot};

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
const HUGE: u64 = 2 * MIB;

/// Raises `nr_hugepages` by `extra` for the test's lifetime.
struct HugePages {
    previous: u64,
}

impl HugePages {
    fn reserve(extra: u64) -> Result<HugePages, String> {
        let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"));
        let previous: u64 = read(NR_HUGEPAGES)?
            .trim()
            .parse()
            .map_err(|e| format!("{e}"))?;
        std::fs::write(NR_HUGEPAGES, (previous + extra).to_string())
            .map_err(|e| format!("cannot write {NR_HUGEPAGES} (needs root): {e}"))?;
        let guard = HugePages { previous };
        let free = read("/proc/meminfo")?
            .lines()
            .find_map(|l| {
                l.strip_prefix("HugePages_Free:")
                    .map(|v| v.trim().parse::<u64>())
            })
            .and_then(Result::ok)
            .unwrap_or(0);
        if free < extra {
            return Err(format!(
                "the kernel provided only {free} free 2 MiB pages of the {extra} asked for"
            ));
        }
        Ok(guard)
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(NR_HUGEPAGES, self.previous.to_string()) {
            eprintln!("could not restore {NR_HUGEPAGES} to {}: {e}", self.previous);
        }
    }
}

#[test]
fn two_mib_pages_with_holes_diff_layers_and_balloon_removes() {
    let _huge = match HugePages::reserve(16) {
        Ok(g) => g,
        Err(why) => {
            eprintln!("SKIPPED two_mib_pages...: no 2 MiB huge pages: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let len = 8 * HUGE;
    // A whole huge page of hole (zeros), and a small hole inside another one.
    let (base, mut image) = memory_file(
        dir.path(),
        "base",
        len,
        &[(2 * HUGE, HUGE), (4 * HUGE + 64 * 1024, 64 * 1024)],
    );
    // A diff dirtying single 4 KiB blocks inside huge pages: those pages are
    // assembled from two files. One dirty block was zeroed by the guest.
    let diff = dir.path().join("diff");
    let f = std::fs::File::create(&diff).expect("create diff");
    f.set_len(len).expect("set_len");
    for (off, bytes) in [
        (5 * HUGE + 12 * PAGE, page_bytes(1, PAGE)),
        (6 * HUGE, vec![0; PAGE as usize]),
    ] {
        f.write_all_at(&bytes, off).expect("write");
        image[off as usize..(off + PAGE) as usize].copy_from_slice(&bytes);
    }
    let expect = write_image(dir.path(), "expect", &image);
    let snap = Arc::new(Snapshot::open_layered(&base, &[diff]).expect("open"));
    let core = Core::one(config(dir.path(), "vm", snap, 64 * 1024));
    run_guest(
        &dir.path().join("vm.sock"),
        &expect,
        "touch:random,dontneed:2m:2m,touch:seq,write:4m:4k:5,touch:stride=3",
        &["--page-size", "2m", "--regions", "2"],
    );
    let o = core.join().remove(0);
    assert_eq!(o.end, End::PeerClosed);
    assert_eq!(o.stats.errors, 0);
    assert_eq!(o.stats.removes, 1);
    // Each huge page faults once, plus the removed one again.
    assert_eq!(o.stats.faults, 8 + 1);
    // The hole page and the removed page are zeros (copied: ZEROPAGE does not
    // exist for hugetlb), the other seven are copies.
    assert_eq!(o.stats.pages_zeroed, 2);
    assert_eq!(o.stats.pages_copied, 7);
    assert_eq!(o.stats.bytes_copied, 7 * HUGE);
}
