//! Tx limiter accuracy: the rate a namespace capsule achieves under its `tc`
//! shaping, against the configured rate, at several rates. Prints a table:
//! payload (what the receiver got, TCP/IP headers excluded) and wire (what
//! the shaper counted: whole frames, as the limit is defined).
//!
//! Needs root, iproute2 and nftables; skips with a message otherwise.
//! `cargo bench -p warren-benches --bench tx_limit`

use std::net::SocketAddrV4;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use warren_netslot::testing::{Sender, Sink, TestNet, shaped_bytes, skip_unless_root};
use warren_netslot::{SlotOptions, TxLimit};

/// Rates measured, in MB/s (10^6 bytes); the last is the default limit.
const RATES_MB: [u64; 6] = [1, 2, 10, 50, 100, 200];
/// Time for a fresh bucket to drain and TCP to settle before measuring.
const SETTLE: Duration = Duration::from_millis(1500);
const WINDOW: Duration = Duration::from_secs(4);

fn main() {
    if skip_unless_root() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let net = TestNet::new(0);
    let inet = net.internet();
    let slots = net.open().await;
    let options = SlotOptions {
        egress: true,
        tx_limit: None,
    };
    let slot = slots
        .acquire("bench-tx", options)
        .await
        .expect("acquire a slot");
    let sink = Sink::start(&inet.netns, SocketAddrV4::new(inet.addr, 9000)).await;
    let _sender = Sender::start(&slot.netns_path(), sink.addr).await;

    println!(
        "tx limiter accuracy (HTB on the slot veth; bucket = 100 ms of rate, no one-time burst)"
    );
    println!(
        "| configured MB/s | payload MB/s | payload/configured | wire MB/s | wire/configured |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for mb in RATES_MB {
        let limit = TxLimit {
            size: mb * 100_000,
            one_time_burst: 0,
            refill_time_ms: 100,
        };
        slots
            .set_tx_limit(&slot, Some(limit))
            .await
            .expect("set tx limit");
        tokio::time::sleep(SETTLE).await;
        let (payload, wire) = measure(&sink, slot.netns_name()).await;
        let configured = limit.bytes_per_second() as f64;
        println!(
            "| {mb} | {:.3} | {:.4} | {:.3} | {:.4} |",
            payload / 1e6,
            payload / configured,
            wire / 1e6,
            wire / configured
        );
    }
    slots
        .set_tx_limit(&slot, None)
        .await
        .expect("remove tx limit");
    tokio::time::sleep(SETTLE).await;
    let (payload, _) = measure(&sink, slot.netns_name()).await;
    println!("| unlimited | {:.3} | | | |", payload / 1e6);
}

/// Payload and wire bytes per second over [`WINDOW`].
async fn measure(sink: &Sink, netns: &str) -> (f64, f64) {
    let (payload0, wire0, t0) = (
        sink.received.load(Ordering::Relaxed),
        shaped_bytes(netns),
        Instant::now(),
    );
    tokio::time::sleep(WINDOW).await;
    let (payload1, wire1) = (sink.received.load(Ordering::Relaxed), shaped_bytes(netns));
    let seconds = t0.elapsed().as_secs_f64();
    (
        (payload1 - payload0) as f64 / seconds,
        wire1.saturating_sub(wire0) as f64 / seconds,
    )
}
