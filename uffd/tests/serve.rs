//! Serving a guest that behaves like Firecracker: touch patterns, balloon
//! removes, mremap/munmap, fork, several regions, diff layers, and several VMs
//! on one core. Every test's guest checks every byte it reads.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::*;
use warren_uffd::{End, Snapshot};

#[test]
fn touch_patterns_on_three_vms_sharing_one_core() {
    let dir = tempfile::tempdir().expect("tempdir");
    let len = 16 * MIB;
    // Holes are zero pages in the snapshot.
    let (mem, _) = memory_file(dir.path(), "mem", len, &[(MIB, 256 * 1024), (9 * MIB, MIB)]);
    let snap = snapshot(&mem);
    let core = Core::start(vec![
        config(dir.path(), "seq", snap.clone(), PAGE),
        config(dir.path(), "random", snap.clone(), PAGE),
        config(dir.path(), "stride", snap.clone(), 64 * 1024),
    ]);
    let vms = [
        ("seq", "touch:seq"),
        ("random", "touch:random"),
        ("stride", "touch:stride=7"),
    ];
    // The three guests run at once, all served by the one core.
    std::thread::scope(|s| {
        for (name, script) in vms {
            let sock = dir.path().join(format!("{name}.sock"));
            let mem = &mem;
            s.spawn(move || run_guest(&sock, mem, script, &[]));
        }
    });
    let pages = len / PAGE;
    let hole_pages = (MIB / 4 + MIB) / PAGE;
    let outcomes = core.join();
    for (o, (name, _)) in outcomes.iter().zip(vms) {
        assert_eq!(o.end, End::PeerClosed, "{name}");
        assert_eq!(
            o.stats.pages_copied + o.stats.pages_zeroed,
            pages,
            "{name}: every page filled once"
        );
        assert_eq!(
            o.stats.pages_zeroed, hole_pages,
            "{name}: holes served as zero pages"
        );
        assert_eq!(o.stats.bytes_copied, (pages - hole_pages) * PAGE, "{name}");
        assert_eq!(o.stats.errors, 0, "{name}");
        assert_eq!(
            o.stats.latency.count(),
            o.stats.faults,
            "{name}: one latency sample per fault"
        );
    }
    // Without fault-around every page is its own fault.
    assert_eq!(outcomes[0].stats.faults, pages);
    assert_eq!(outcomes[1].stats.faults, pages);
    // With 64 KiB fault-around a stride of 7 pages faults once per window.
    assert_eq!(outcomes[2].stats.faults, pages / 16);
    assert_eq!(outcomes[2].stats.fault_around_pages, pages - pages / 16);
}

#[test]
fn balloon_remove_makes_the_range_read_as_zeros() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mem, _) = memory_file(dir.path(), "mem", 8 * MIB, &[]);
    let core = Core::one(config(dir.path(), "vm", snapshot(&mem), 64 * 1024));
    let sock = dir.path().join("vm.sock");
    // Touch everything, drop 1 MiB (the guest expects zeros there from now on),
    // drop a range that was never touched, then read it all again.
    run_guest(
        &sock,
        &mem,
        "touch:seq:0:4m,dontneed:1m:1m,dontneed:6m:512k,touch:random",
        &[],
    );
    let o = &core.join()[0];
    assert_eq!(o.end, End::PeerClosed);
    assert_eq!(o.stats.removes, 2);
    assert_eq!(o.stats.errors, 0);
    // The removed pages came back as zero pages, not copies.
    assert_eq!(o.stats.pages_zeroed, (MIB + 512 * 1024) / PAGE);
}

#[test]
fn mremap_and_munmap_are_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mem, _) = memory_file(dir.path(), "mem", 8 * MIB, &[(5 * MIB, MIB)]);
    let core = Core::one(config(dir.path(), "vm", snapshot(&mem), 64 * 1024));
    let sock = dir.path().join("vm.sock");
    run_guest(
        &sock,
        &mem,
        "touch:seq:0:1m,mremap:2m:1m,touch:random,munmap:4m:512k,mremap:5m:2m,touch:stride=5",
        &["--events", "remap,unmap"],
    );
    let o = &core.join()[0];
    assert_eq!(o.end, End::PeerClosed);
    assert_eq!(o.stats.remaps, 2);
    assert!(o.stats.unmaps >= 1);
    assert_eq!(o.stats.unknown_address_faults, 0);
    assert_eq!(o.stats.errors, 0);
}

#[test]
fn a_forked_child_is_served_from_the_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mem, _) = memory_file(dir.path(), "mem", 4 * MIB, &[(3 * MIB, MIB / 2)]);
    let core = Core::one(config(dir.path(), "vm", snapshot(&mem), PAGE));
    let sock = dir.path().join("vm.sock");
    // The parent touches a quarter; the child must see every page right, both
    // the ones it inherited and the ones it faults in through its own uffd.
    run_guest(
        &sock,
        &mem,
        "touch:seq:0:1m,write:8k:4k:9,fork,touch:random",
        &["--events", "fork"],
    );
    let o = &core.join()[0];
    assert_eq!(o.end, End::PeerClosed);
    assert_eq!(o.stats.forks, 1);
    // 1024 pages. Parent: the first 256; child: the 768 it did not inherit;
    // parent again: the same 768 (the child's pages are its own).
    assert_eq!(o.stats.faults, 256 + 768 + 768);
}

#[test]
fn several_regions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mem, _) = memory_file(dir.path(), "mem", 6 * MIB, &[]);
    let core = Core::one(config(dir.path(), "vm", snapshot(&mem), 16 * 1024));
    run_guest(
        &dir.path().join("vm.sock"),
        &mem,
        "touch:random",
        &["--regions", "3"],
    );
    let o = &core.join()[0];
    assert_eq!(o.end, End::PeerClosed);
    assert_eq!(o.stats.pages_copied, 6 * MIB / PAGE);
}

#[test]
fn diff_layers_win_where_dirty_even_when_zeroed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let len = 4 * MIB;
    let (base, mut image) = memory_file(dir.path(), "base", len, &[(2 * MIB, 64 * 1024)]);
    // A diff as Firecracker writes it: full length, only dirty pages written.
    let write_diff = |name: &str, pages: &[(u64, Option<u8>)], image: &mut Vec<u8>| {
        let path = dir.path().join(name);
        let f = std::fs::File::create(&path).expect("create diff");
        f.set_len(len).expect("set_len");
        for &(off, fill) in pages {
            let bytes = fill.map_or_else(
                || page_bytes(off ^ 0x5555, PAGE),
                |b| vec![b; PAGE as usize],
            );
            f.write_all_at(&bytes, off).expect("write");
            image[off as usize..(off + PAGE) as usize].copy_from_slice(&bytes);
        }
        path
    };
    // Layer 1: new data, a page the guest zeroed (base has data there), and a
    // page written inside the base's hole.
    let d1 = write_diff(
        "diff1",
        &[
            (8 * PAGE, None),
            (9 * PAGE, Some(0)),
            (2 * MIB + PAGE, None),
        ],
        &mut image,
    );
    // Layer 2: overrides layer 1's page 8 and zeroes another base page.
    let d2 = write_diff(
        "diff2",
        &[(8 * PAGE, Some(0x77)), (100 * PAGE, Some(0))],
        &mut image,
    );
    let expect = write_image(dir.path(), "expect", &image);
    let snap = Arc::new(Snapshot::open_layered(&base, &[d1, d2]).expect("open layered"));
    let core = Core::one(config(dir.path(), "vm", snap, 64 * 1024));
    run_guest(&dir.path().join("vm.sock"), &expect, "touch:random", &[]);
    let o = &core.join()[0];
    assert_eq!(o.end, End::PeerClosed);
    // Zero pages: the holes left in the base (16 pages minus the one the
    // diff wrote) and the two pages the diffs zeroed.
    assert_eq!(o.stats.pages_zeroed, 15 + 2);
}

#[test]
fn pages_of_zeros_are_mapped_as_zero_pages_not_copied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let len = 4 * MIB;
    // Firecracker writes free guest pages as data: zeros that are not holes.
    let (mem, _) = memory_file(dir.path(), "mem", len, &[]);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&mem)
        .expect("open");
    f.write_all_at(&vec![0u8; MIB as usize], 2 * MIB)
        .expect("write zeros");
    f.write_all_at(&[0u8; PAGE as usize], 5 * PAGE)
        .expect("write a zero page");
    drop(f);
    let core = Core::one(config(dir.path(), "vm", snapshot(&mem), 64 * 1024));
    run_guest(
        &dir.path().join("vm.sock"),
        &mem,
        "touch:random,write:2m:8k:5",
        &[],
    );
    let o = &core.join()[0];
    assert_eq!(o.end, End::PeerClosed);
    let zero_pages = MIB / PAGE + 1;
    assert_eq!(o.stats.pages_zeroed, zero_pages);
    assert_eq!(o.stats.pages_copied, len / PAGE - zero_pages);
    assert_eq!(o.stats.bytes_copied, (len / PAGE - zero_pages) * PAGE);
}
