//! The edge as the public entry, against real upstreams on loopback:
//! requests that name no capsule go to the control plane (a stand-in
//! upstream here) with forwarding headers and per-key rate limits; capsules
//! on another host are reached through that host's edge, and a forwarding
//! loop is refused; paused capsules that resume on traffic are woken and
//! the request waits; connection caps; idle tunnels closed; TLS with SNI and
//! certificate reload.

mod proxy_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxy_support::*;
use warren_edge::{
    ApiRateConfig, CapsuleState, CertFiles, Edge, EdgeConfig, FleetEntry, Route, RouteBook,
    RouteTable, Waker,
};

fn config(tweak: impl FnOnce(&mut EdgeConfig)) -> EdgeConfig {
    let mut config = EdgeConfig::default();
    config.relay.listen = "127.0.0.1:0".parse().expect("an address");
    config.relay.cores = 2;
    tweak(&mut config);
    config
}

fn start(config: EdgeConfig, book: Arc<RouteBook>) -> Edge {
    Edge::start(config, None, book, None).expect("start the edge")
}

fn book(local: Vec<(&str, Route)>) -> Arc<RouteBook> {
    let book = Arc::new(RouteBook::new());
    book.set_local(RouteTable::new(
        local.into_iter().map(|(id, r)| (id.to_owned(), r)),
    ));
    book
}

fn local() -> Route {
    Route::here([127, 0, 0, 1].into())
}

#[test]
fn requests_naming_no_capsule_go_to_the_control_plane() {
    let control = Upstream::start("127.0.0.1");
    let capsule = Upstream::start("127.0.0.1");
    let edge = start(
        config(|c| c.control = Some(control.addr)),
        book(vec![("cap", local())]),
    );
    let api = get(
        edge.local_addr(),
        "/v1/capsules?limit=1",
        "Host: api.example\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n",
    );
    assert_eq!(api.status, 200, "{}", api.text());
    assert_eq!(api.text(), "GET /v1/capsules?limit=1");
    let head = control
        .heads
        .lock()
        .expect("heads")
        .last()
        .cloned()
        .expect("a head");
    let has = |line: &str| head.iter().any(|l| l.eq_ignore_ascii_case(line));
    // The client's own X-Forwarded-For is kept and extended; the scheme is
    // the edge's, not what the client claims.
    assert!(has("x-forwarded-for: 6.6.6.6, 127.0.0.1"), "{head:?}");
    assert!(has("x-forwarded-proto: http"), "{head:?}");
    assert!(has("x-forwarded-host: api.example"), "{head:?}");
    // Capsule traffic still goes to the capsule.
    let port = capsule.addr.port();
    let routed = get(edge.local_addr(), &format!("/proxy/cap/{port}/x"), "");
    assert_eq!(routed.text(), "GET /x");
    assert_eq!(capsule.heads.lock().expect("heads").len(), 1);
    // Host-named capsule ports with no configured domain: any
    // `{port}-{id}.` host, as an SDK composes from the API's address.
    let by_host = get(
        edge.local_addr(),
        "/y",
        &format!("Host: {port}-cap.127.0.0.1:8080\r\n"),
    );
    assert_eq!(by_host.text(), "GET /y");
    // Without a control plane, the same API request has nowhere to go.
    let bare = start(config(|_| {}), book(vec![]));
    assert_eq!(
        get(bare.local_addr(), "/v1/capsules", "").error_code(),
        "no_route"
    );
}

#[test]
fn the_api_is_rate_limited_per_key_with_retry_after() {
    let control = Upstream::start("127.0.0.1");
    let edge = start(
        config(|c| {
            c.control = Some(control.addr);
            c.relay.cores = 1;
            c.api_rate = Some(ApiRateConfig {
                per_second: 1.0,
                burst: 3.0,
            });
        }),
        book(vec![]),
    );
    let mut client = Client::connect(edge.local_addr());
    for _ in 0..3 {
        assert_eq!(client.get("/v1/me", "X-API-Key: k1\r\n").status, 200);
    }
    let limited = client.get("/v1/me", "X-API-Key: k1\r\n");
    assert_eq!(limited.status, 429);
    assert_eq!(limited.error_code(), "rate_limited");
    assert_eq!(limited.header("retry-after"), Some("1"));
    // Another key, a bearer token, and keyless requests are not held back.
    assert_eq!(client.get("/v1/me", "X-API-Key: k2\r\n").status, 200);
    assert_eq!(
        client.get("/v1/me", "Authorization: Bearer t1\r\n").status,
        200
    );
    assert_eq!(client.get("/health", "").status, 200);
}

#[test]
fn capsules_on_another_host_are_reached_through_its_edge_and_loops_are_refused() {
    let capsule = Upstream::start("127.0.0.1");
    let port = capsule.addr.port();
    // Host B runs the capsule; host A knows it from the fleet view.
    let edge_b = start(config(|_| {}), book(vec![("remote", local())]));
    let book_a = book(vec![]);
    let on_b = FleetEntry {
        host: Some(edge_b.local_addr()),
        state: CapsuleState::Running,
        access_token: None,
        auto_resume: false,
    };
    book_a.set_fleet([("remote".to_owned(), on_b.clone())]);
    let edge_a = start(config(|_| {}), Arc::clone(&book_a));
    let through_a = get(
        edge_a.local_addr(),
        "/page",
        &format!("Host: {port}-remote.warren.test\r\n"),
    );
    assert_eq!(through_a.status, 200, "{}", through_a.text());
    assert_eq!(through_a.text(), "GET /page");
    let head = capsule
        .heads
        .lock()
        .expect("heads")
        .last()
        .cloned()
        .expect("a head");
    assert!(
        !head
            .iter()
            .any(|l| l.to_ascii_lowercase().starts_with("x-warren-hop")),
        "the hop marker never reaches a capsule: {head:?}"
    );
    // Both edges believe the other holds it: the second hop refuses.
    let book_b = Arc::new(RouteBook::new());
    let edge_b2 = start(config(|_| {}), Arc::clone(&book_b));
    book_b.set_fleet([(
        "lost".to_owned(),
        FleetEntry {
            host: Some(edge_a.local_addr()),
            ..on_b.clone()
        },
    )]);
    book_a.update_fleet([(
        "lost".to_owned(),
        Some(FleetEntry {
            host: Some(edge_b2.local_addr()),
            ..on_b
        }),
    )]);
    let looped = get(edge_a.local_addr(), &format!("/proxy/lost/{port}/"), "");
    assert_eq!(looped.status, 508, "{}", looped.text());
    assert_eq!(looped.error_code(), "loop_detected");
    // The other host's edge is gone: a 502 that names the capsule.
    drop(edge_b);
    let gone = get(
        edge_a.local_addr(),
        &format!("/proxy/remote/{port}/"),
        "Accept: application/json\r\n",
    );
    assert_eq!(gone.status, 502);
    assert!(gone.text().contains("capsule remote"), "{}", gone.text());
}

/// Resumes a capsule after a while by publishing it running.
struct SlowResume {
    book: Arc<RouteBook>,
    woken: Mutex<Vec<String>>,
}

impl Waker for SlowResume {
    fn wake(&self, id: &str) {
        self.woken.lock().expect("woken").push(id.to_owned());
        let book = Arc::clone(&self.book);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let paused = Route {
                state: CapsuleState::Paused,
                ..local()
            };
            book.set_local(RouteTable::new([
                ("sleepy".to_owned(), local()),
                ("stays".to_owned(), paused),
            ]));
        });
    }
}

#[test]
fn a_paused_capsule_that_resumes_on_traffic_is_woken_and_the_request_waits() {
    let capsule = Upstream::start("127.0.0.1");
    let port = capsule.addr.port();
    let paused = Route {
        state: CapsuleState::Paused,
        ..local()
    };
    let book = book(vec![("sleepy", paused.clone()), ("stays", paused)]);
    book.set_fleet([(
        "sleepy".to_owned(),
        FleetEntry {
            host: None,
            state: CapsuleState::Paused,
            access_token: None,
            auto_resume: true,
        },
    )]);
    let waker = Arc::new(SlowResume {
        book: Arc::clone(&book),
        woken: Mutex::default(),
    });
    let edge = Edge::start(
        config(|c| c.resume_wait = Duration::from_secs(20)),
        None,
        book,
        Some(waker.clone() as Arc<dyn Waker>),
    )
    .expect("edge");
    let woke = get(
        edge.local_addr(),
        &format!("/proxy/sleepy/{port}/hello"),
        "",
    );
    assert_eq!(woke.status, 200, "{}", woke.text());
    assert_eq!(woke.text(), "GET /hello");
    assert_eq!(
        *waker.woken.lock().expect("woken"),
        vec!["sleepy".to_owned()]
    );
    // Without auto-resume: a clear 409, and nothing is woken.
    let refused = get(edge.local_addr(), &format!("/proxy/stays/{port}/"), "");
    assert_eq!(refused.status, 409);
    assert_eq!(refused.error_code(), "capsule_paused");
    assert_eq!(waker.woken.lock().expect("woken").len(), 1);
}

#[test]
fn a_capsule_that_never_resumes_times_the_request_out() {
    struct Never;
    impl Waker for Never {
        fn wake(&self, _: &str) {}
    }
    let book = book(vec![(
        "sleepy",
        Route {
            state: CapsuleState::Paused,
            ..local()
        },
    )]);
    book.set_fleet([(
        "sleepy".to_owned(),
        FleetEntry {
            host: None,
            state: CapsuleState::Paused,
            access_token: None,
            auto_resume: true,
        },
    )]);
    let edge = Edge::start(
        config(|c| c.resume_wait = Duration::from_millis(300)),
        None,
        book,
        Some(Arc::new(Never)),
    )
    .expect("edge");
    let timed_out = get(edge.local_addr(), "/proxy/sleepy/80/", "");
    assert_eq!(timed_out.status, 504);
    assert!(
        timed_out.text().contains("did not resume"),
        "{}",
        timed_out.text()
    );
}

#[test]
fn connections_over_the_per_address_cap_are_refused() {
    let capsule = Upstream::start("127.0.0.1");
    let port = capsule.addr.port();
    let edge = start(
        config(|c| c.relay.max_connections_per_ip = 3),
        book(vec![("cap", local())]),
    );
    let held: Vec<Client> = (0..3).map(|_| Client::connect(edge.local_addr())).collect();
    // The three are counted once accepted; then a fourth is refused.
    let mut extra = None;
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        let response = get(edge.local_addr(), &format!("/proxy/cap/{port}/"), "");
        if response.status == 503 {
            extra = Some(response);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let extra = extra.expect("a fourth connection is refused");
    assert_eq!(extra.error_code(), "too_many_connections");
    drop(held);
    // Slots free up when connections close.
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let response = get(edge.local_addr(), &format!("/proxy/cap/{port}/"), "");
        if response.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slots never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn idle_tunnels_are_closed() {
    let capsule = Upstream::start("127.0.0.1");
    let port = capsule.addr.port();
    let edge = start(
        config(|c| c.relay.tunnel_idle_timeout = Duration::from_millis(300)),
        book(vec![("cap", local())]),
    );
    let mut client = Client::connect(edge.local_addr());
    client.send(
        format!("GET /proxy/cap/{port}/raw-upgrade HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: raw-echo\r\n\r\n")
            .as_bytes(),
    );
    let switched = client.response();
    assert_eq!(switched.status, 101);
    // Traffic keeps it open past the timeout...
    for _ in 0..4 {
        client.stream().write_all(b"ping").expect("write");
        let mut echoed = [0u8; 4];
        client.stream().read_exact(&mut echoed).expect("echo");
        assert_eq!(&echoed, b"ping");
        std::thread::sleep(Duration::from_millis(120));
    }
    // ...silence closes it (the capsule sees end of stream and says bye).
    let started = Instant::now();
    let mut rest = Vec::new();
    client
        .stream()
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("timeout");
    let _ = client.stream().read_to_end(&mut rest);
    assert!(
        started.elapsed() < IO_TIMEOUT,
        "the idle tunnel stayed open"
    );
}

fn self_signed(dir: &std::path::Path, names: &[&str], tag: &str) -> CertFiles {
    let cert = rcgen::generate_simple_self_signed(
        names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
    )
    .expect("a certificate");
    let files = CertFiles {
        cert: dir.join(format!("{tag}.crt")),
        key: dir.join(format!("{tag}.key")),
    };
    std::fs::write(&files.cert, cert.cert.pem()).expect("write cert");
    std::fs::write(&files.key, cert.signing_key.serialize_pem()).expect("write key");
    files
}

/// One HTTPS request with a rustls client that trusts `ca` (PEM) for
/// `server_name`: the response, and the certificate the server presented.
fn https_get(
    addr: SocketAddr,
    ca: &std::path::Path,
    server_name: &str,
    raw: &str,
) -> (String, Vec<u8>) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(cert.expect("ca cert")).expect("add ca");
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(raw.as_bytes()).expect("send");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let presented = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    (String::from_utf8_lossy(&out).into_owned(), presented)
}

#[test]
fn tls_picks_the_certificate_by_sni_relays_and_reloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capsule = Upstream::start("127.0.0.1");
    let port = capsule.addr.port();
    let wildcard = self_signed(dir.path(), &["*.warren.test"], "wildcard");
    let api = self_signed(dir.path(), &["api.example", "127.0.0.1"], "api");
    let control = Upstream::start("127.0.0.1");
    let edge = Edge::start(
        config(|c| {
            c.control = Some(control.addr);
            c.domain = Some("warren.test".into());
        }),
        Some(vec![api.clone(), wildcard.clone()]),
        book(vec![("cap", local())]),
        None,
    )
    .expect("edge");
    let host = format!("{port}-cap.warren.test");
    let (response, _) = https_get(
        edge.local_addr(),
        &wildcard.cert,
        &host,
        &format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("GET /x"), "{response}");
    let head = capsule
        .heads
        .lock()
        .expect("heads")
        .last()
        .cloned()
        .expect("head");
    assert!(
        head.iter()
            .any(|l| l.eq_ignore_ascii_case("x-forwarded-proto: https")),
        "{head:?}"
    );
    let (response, first) = https_get(
        edge.local_addr(),
        &api.cert,
        "api.example",
        "GET /v1/me HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n",
    );
    assert!(response.ends_with("GET /v1/me"), "{response}");
    // A new certificate for the API name: new handshakes get it.
    let renewed = self_signed(dir.path(), &["api.example", "127.0.0.1"], "api");
    assert_eq!(renewed, api);
    edge.reload_tls().expect("reload");
    let (response, second) = https_get(
        edge.local_addr(),
        &api.cert,
        "api.example",
        "GET /v1/me HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n",
    );
    assert!(response.ends_with("GET /v1/me"), "{response}");
    assert_ne!(first, second, "the reloaded certificate is served");
    // A broken file keeps the previous certificates.
    std::fs::write(&api.key, "not a key").expect("break");
    assert!(edge.reload_tls().is_err());
    let (response, third) = https_get(
        edge.local_addr(),
        &api.cert,
        "api.example",
        "GET /v1/me HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n",
    );
    assert!(response.ends_with("GET /v1/me"), "{response}");
    assert_eq!(second, third);
    // Plain HTTP on the TLS port is not answered as HTTP.
    let mut plain = TcpStream::connect(edge.local_addr()).expect("connect");
    plain.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: api.example\r\n\r\n")
        .expect("send");
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/1.1 200"));
}

#[test]
fn absolute_form_targets_cannot_reach_envds_internal_routes() {
    let edge = start(config(|_| {}), book(vec![("cap", local())]));
    for target in [
        "http://x/init",
        "HTTP://x/snapshot/prepare",
        "http://x//init?a",
    ] {
        let refused = get(
            edge.local_addr(),
            target,
            "E2b-Sandbox-Id: cap\r\nE2b-Sandbox-Port: 49983\r\n",
        );
        assert_eq!(refused.status, 403, "{target}: {}", refused.text());
        assert_eq!(refused.error_code(), "internal_route");
    }
    let connect = get(edge.local_addr(), "/", "");
    assert_eq!(connect.error_code(), "no_route");
    let mut client = Client::connect(edge.local_addr());
    client.send(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n");
    assert_eq!(client.response().status, 400);
}

#[test]
fn chunk_extensions_are_dropped_so_no_bare_lf_reaches_the_upstream() {
    // An upstream that records the raw bytes of one request.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = Arc::clone(&seen);
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 4096];
        loop {
            let n = sock.read(&mut buf).expect("read");
            let mut all = recorder.lock().expect("seen");
            all.extend_from_slice(&buf[..n]);
            if n == 0 || all.ends_with(b"0\r\n\r\n") {
                break;
            }
        }
        let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    });
    let edge = start(config(|_| {}), book(vec![("cap", local())]));
    let mut client = Client::connect(edge.local_addr());
    client.send(
        format!(
            "POST /proxy/cap/{}/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"x\nGET /smuggled HTTP/1.1\"\r\nhello\r\n0\r\n\r\n",
            upstream.port()
        )
        .as_bytes(),
    );
    assert_eq!(client.response().status, 200);
    let raw = seen.lock().expect("seen").clone();
    let body = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &raw[i + 4..])
        .expect("a head");
    assert_eq!(body, b"5\r\nhello\r\n0\r\n\r\n");
    // A trailer with a bare LF is refused outright.
    let mut client = Client::connect(edge.local_addr());
    client.send(
        format!(
            "POST /proxy/cap/{}/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx: a\nGET / HTTP/1.1\r\n\r\n",
            upstream.port()
        )
        .as_bytes(),
    );
    assert!(client.is_closed() || client.response().status >= 400);
}
