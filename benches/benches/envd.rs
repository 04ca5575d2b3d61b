//! envd hot paths, with envd served in-process on loopback:
//! - process start → end round trip for `true` (Connect server stream);
//! - `/files` upload and download throughput at 1 MiB and 100 MiB, beside a
//!   plain local file copy of the same size as the floor.
//!
//! Run: `cargo bench -p warren-benches --bench envd`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use envd::state::{Defaults, Envd};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client as HttpClient, rt::TokioExecutor};
use warren_proto::{
    connect::Client,
    process::{ProcessClient, ProcessConfig, StartRequest},
};

fn start_envd(rt: &tokio::runtime::Runtime) -> SocketAddr {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let envd: Arc<Envd> = Envd::new(
            Default::default(),
            Defaults {
                user: "root".into(),
                ..Defaults::default()
            },
        )
        .expect("envd state");
        tokio::spawn(envd::server::serve(listener, envd, std::future::pending()));
        addr
    })
}

fn process_round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let addr = start_envd(&rt);
    let client = ProcessClient::new(
        Client::builder(format!("http://{addr}"))
            .build()
            .expect("client"),
    );
    let req = StartRequest {
        process: Some(ProcessConfig {
            cmd: "true".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    c.bench_function("envd/process_start_to_end_true", |b| {
        b.to_async(&rt).iter(|| async {
            let mut events = client.start(&req).await.expect("start");
            while let Some(ev) = events.next().await {
                ev.expect("event");
            }
        })
    });
}

fn file_transfer(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let addr = start_envd(&rt);
    let http: HttpClient<_, Full<Bytes>> = HttpClient::builder(TokioExecutor::new()).build_http();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("envd/files");
    group.measurement_time(Duration::from_secs(10));
    for (label, size) in [("1MiB", 1usize << 20), ("100MiB", 100 << 20)] {
        if size > 1 << 20 {
            group.sample_size(10);
        }
        let data = Bytes::from(vec![0x5a; size]);
        let src = dir.path().join(format!("src-{label}"));
        std::fs::write(&src, &data).expect("write source");
        let dst = dir.path().join(format!("dst-{label}"));
        let uri = format!("http://{addr}/files?path={}", dst.display());
        group.throughput(Throughput::Bytes(size as u64));

        group.bench_function(BenchmarkId::new("local_copy_floor", label), |b| {
            b.iter(|| std::fs::copy(&src, &dst).expect("copy"))
        });
        group.bench_function(BenchmarkId::new("upload", label), |b| {
            b.to_async(&rt).iter(|| async {
                let req = http::Request::post(&uri)
                    .header("content-type", "application/octet-stream")
                    .body(Full::new(data.clone()))
                    .expect("request");
                let resp = http.request(req).await.expect("upload");
                assert!(resp.status().is_success());
                resp.into_body().collect().await.expect("body");
            })
        });
        group.bench_function(BenchmarkId::new("download", label), |b| {
            b.to_async(&rt).iter(|| async {
                let req = http::Request::get(&uri)
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                let resp = http.request(req).await.expect("download");
                let mut body = resp.into_body();
                let mut n = 0;
                while let Some(frame) = body.frame().await {
                    n += frame.expect("frame").data_ref().map_or(0, |d| d.len());
                }
                assert_eq!(n, size);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, process_round_trip, file_transfer);
criterion_main!(benches);
