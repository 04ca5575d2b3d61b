//! Output of short-lived processes is never lost: hundreds of processes
//! that print and exit at once, started concurrently through envd's
//! Connect API (a regression test for a race between exit and the last
//! read of the pipes).

#![allow(clippy::unwrap_used)] // a test: failing loudly is the point

use envd::state::{Defaults, Envd};
use futures_util::{StreamExt, future::join_all};
use warren_proto::{
    connect::Client,
    process::{ProcessClient, ProcessConfig, StartRequest, process_event},
};

async fn start_envd() -> ProcessClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    let envd = Envd::new(
        Default::default(),
        Defaults {
            user,
            ..Defaults::default()
        },
    )
    .unwrap();
    tokio::spawn(envd::server::serve(listener, envd, std::future::pending()));
    ProcessClient::new(Client::builder(format!("http://{addr}")).build().unwrap())
}

async fn run(client: &ProcessClient, script: String) -> (String, String, i32) {
    let req = StartRequest {
        process: Some(ProcessConfig {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), script],
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut events = client.start(&req).await.unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(ev) = events.next().await {
        match ev.unwrap().event.and_then(|e| e.event) {
            Some(process_event::Event::Data(d)) => match d.output {
                Some(process_event::data_event::Output::Stdout(b)) => out.extend_from_slice(&b),
                Some(process_event::data_event::Output::Stderr(b)) => err.extend_from_slice(&b),
                _ => {}
            },
            Some(process_event::Event::End(end)) => {
                return (
                    String::from_utf8(out).unwrap(),
                    String::from_utf8(err).unwrap(),
                    end.exit_code,
                );
            }
            _ => {}
        }
    }
    panic!("no end event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_of_instant_processes_is_never_lost() {
    let client = start_envd().await;
    for round in 0..6 {
        let results = join_all((0..50).map(|i| {
            run(
                &client,
                format!("echo out-{i}; echo err-{i} >&2; exit {}", i % 3),
            )
        }))
        .await;
        for (i, (out, err, code)) in results.into_iter().enumerate() {
            assert_eq!(
                (out.as_str(), err.as_str(), code),
                (
                    format!("out-{i}\n").as_str(),
                    format!("err-{i}\n").as_str(),
                    (i % 3) as i32
                ),
                "round {round}, process {i}"
            );
        }
    }
}
