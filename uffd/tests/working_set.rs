//! Recording a restore's working set, then prefetching it on the next restore.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use warren_uffd::{End, WorkingSet, working_set};

#[test]
fn a_recorded_working_set_is_prefetched_on_the_next_restore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mem, _) = memory_file(dir.path(), "mem", 32 * MIB, &[(20 * MIB, MIB)]);
    let snap = snapshot(&mem);
    let ws_path = working_set::path_for(&mem);
    // The restore touches 8 MiB in random order, and 1 MiB with a hole in it.
    let script = "touch:random:4m:8m,touch:seq:20m:1m";
    let touched = (9 * MIB / PAGE) as usize;

    // First restore: no working set yet; record one.
    let mut cfg = config(dir.path(), "first", snap.clone(), PAGE);
    cfg.record = Some(ws_path.clone());
    let core = Core::one(cfg);
    run_guest(&dir.path().join("first.sock"), &mem, script, &[]);
    let first = core.join().remove(0);
    assert_eq!(first.end, End::PeerClosed);
    assert_eq!(
        first.working_set.as_ref().map(|r| r.is_ok()),
        Some(true),
        "{:?}",
        first.working_set
    );
    let ws = WorkingSet::load(&ws_path).expect("load the recorded set");
    assert_eq!(ws.len(), touched, "every first touch recorded once");
    assert_eq!(ws.memory_len(), 32 * MIB);
    assert_eq!(first.stats.faults as usize, touched);

    // Second restore: prefetch it. The guest waits until the prefetcher is
    // done, then touches the same pages: none of them faults.
    let mut cfg = config(dir.path(), "second", snap.clone(), PAGE);
    cfg.prefetch = Some(Arc::new(ws.clone()));
    cfg.record = Some(ws_path.clone());
    let core = Core::one(cfg);
    let mut guest = spawn_guest(
        &dir.path().join("second.sock"),
        &mem,
        &format!("pause,{script}"),
        &[],
    );
    wait_for_line(&mut guest, "paused");
    let server = core.server().clone();
    eventually("prefetch to finish", || {
        server.stats().prefetch_hits as usize == touched
    });
    guest
        .stdin
        .take()
        .map(|mut s| std::io::Write::write_all(&mut s, b"\n"))
        .transpose()
        .expect("resume");
    let (code, _, err) = finish(guest, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}");
    let second = core.join().remove(0);
    assert_eq!(second.stats.faults, 0, "every touched page was prefetched");
    assert_eq!(second.stats.prefetch_misses(), 0);
    assert_eq!(
        second.stats.pages_zeroed,
        MIB / PAGE,
        "the hole was prefetched as zero pages"
    );
    // The re-recorded set is the same set.
    assert_eq!(WorkingSet::load(&ws_path).expect("reload").len(), touched);

    // Third restore: the guest races the prefetcher and also touches pages
    // outside the set. Everything is still correct; misses are counted.
    let mut cfg = config(dir.path(), "third", snap, 64 * 1024);
    cfg.prefetch = Some(Arc::new(ws));
    let core = Core::one(cfg);
    run_guest(
        &dir.path().join("third.sock"),
        &mem,
        "touch:random:4m:8m,touch:seq:28m:1m",
        &[],
    );
    let third = core.join().remove(0);
    assert_eq!(third.end, End::PeerClosed);
    assert!(third.stats.prefetch_unpredicted > 0, "{:?}", third.stats);
    assert!(third.stats.prefetch_hits > 0);
}

#[test]
fn a_working_set_for_another_memory_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mem, _) = memory_file(dir.path(), "mem", MIB, &[]);
    let mut cfg = config(dir.path(), "vm", snapshot(&mem), PAGE);
    cfg.prefetch = Some(Arc::new(WorkingSet::new(2 * MIB, vec![1, 2, 3])));
    let runtime = compio::runtime::Runtime::new().expect("runtime");
    let err = runtime
        .block_on(async { warren_uffd::PageServer::spawn(cfg) })
        .expect_err("mismatch");
    assert!(
        matches!(err, warren_uffd::ServerError::WorkingSet(_)),
        "{err}"
    );
}

/// With fault-around on (the agent's setting), the set holds every page of
/// each window the restore filled, not just the faulting page: the next
/// restore then has nothing left to fault on. Pages the balloon took are
/// left out of the refreshed set.
#[test]
fn fault_around_windows_are_recorded_whole_and_refreshed_each_restore() {
    const WINDOW: u64 = 64 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mem, _) = memory_file(dir.path(), "mem", 32 * MIB, &[]);
    let snap = snapshot(&mem);
    let ws_path = working_set::path_for(&mem);
    let script = "touch:random:4m:8m";
    let pages = 8 * MIB / PAGE;

    // Cold restore: one fault per window, every page of the window recorded,
    // the faulting page first.
    let mut cfg = config(dir.path(), "cold", snap.clone(), WINDOW);
    cfg.record = Some(ws_path.clone());
    let core = Core::one(cfg);
    run_guest(&dir.path().join("cold.sock"), &mem, script, &[]);
    let cold = core.join().remove(0);
    assert_eq!(cold.stats.faults, pages / 16);
    let ws = WorkingSet::load(&ws_path).expect("recorded set");
    assert_eq!(ws.len() as u64, pages, "whole windows recorded");
    let first_window = &ws.blocks()[..16];
    let base = first_window[0] / 16 * 16;
    let mut sorted = first_window.to_vec();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (base..base + 16).collect::<Vec<u32>>(),
        "one window first"
    );

    // Prefetched restore: once the prefetcher is done, the same touches
    // fault nowhere. Meanwhile the balloon takes 1 MiB.
    let mut cfg = config(dir.path(), "warm", snap, WINDOW);
    cfg.prefetch = Some(Arc::new(ws));
    cfg.record = Some(ws_path.clone());
    let core = Core::one(cfg);
    let mut guest = spawn_guest(
        &dir.path().join("warm.sock"),
        &mem,
        &format!("pause,{script},dontneed:5m:1m"),
        &[],
    );
    wait_for_line(&mut guest, "paused");
    let server = core.server().clone();
    eventually("prefetch to finish", || {
        server.stats().prefetch_hits == pages
    });
    guest
        .stdin
        .take()
        .map(|mut s| std::io::Write::write_all(&mut s, b"\n"))
        .transpose()
        .expect("resume");
    let (code, _, err) = finish(guest, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}");
    let warm = core.join().remove(0);
    assert_eq!(warm.stats.faults, 0, "{:?}", warm.stats);
    assert_eq!(warm.stats.removes, 1);
    let refreshed = WorkingSet::load(&ws_path).expect("refreshed set");
    assert_eq!(
        refreshed.len() as u64,
        pages - MIB / PAGE,
        "the balloon's pages left out"
    );
    let balloon = (5 * MIB / PAGE) as u32..(6 * MIB / PAGE) as u32;
    assert!(!refreshed.blocks().iter().any(|b| balloon.contains(b)));
}
