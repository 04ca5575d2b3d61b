//! End-to-end tests of the data plane proxy against real upstreams on
//! loopback: static and streaming HTTP servers, a WebSocket echo server, a
//! slow server, one that starts listening late, one that redirects.

mod proxy_support;

use std::io::{BufRead, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy_support::*;
use warren_edge::{
    BucketConfig, CapsuleState, Limits, Proxy, ProxyConfig, Route, RouteTable, Routes, Secret,
};

const AGENT_TOKEN: &str = "agent-internal-token";
const ENVD_TOKEN: &str = "envd-token-of-capsule";

fn route(ip: &str) -> Route {
    Route {
        address: ip.parse().expect("an IP address"),
        state: CapsuleState::Running,
        access_token: None,
        envd_access_token: None,
        limits: Limits::default(),
    }
}

fn start(routes: Vec<(&str, Route)>, tweak: impl FnOnce(&mut ProxyConfig)) -> Proxy {
    let mut config = ProxyConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        cores: 2,
        domain: Some("warren.test".into()),
        agent_token: Some(Secret::new(AGENT_TOKEN)),
        ..ProxyConfig::default()
    };
    tweak(&mut config);
    let table = RouteTable::new(routes.into_iter().map(|(id, r)| (id.to_owned(), r)));
    Proxy::start(config, Arc::new(Routes::new(table))).expect("start proxy")
}

/// A proxy with capsule `cap` routed to a fresh upstream on 127.0.0.1.
fn simple() -> (Proxy, Arc<Upstream>) {
    let upstream = Upstream::start("127.0.0.1");
    (start(vec![("cap", route("127.0.0.1"))], |_| {}), upstream)
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    compio::runtime::Runtime::new()
        .expect("a compio runtime")
        .block_on(future)
}

/// Polls `check` until it holds (hang guard, not a timing assertion).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn routes_by_headers_host_and_path() {
    let (proxy, up) = simple();
    let port = up.addr.port();
    let addr = proxy.local_addr();
    let by_path = get(addr, &format!("/proxy/cap/{port}/a/b/?q=1"), "");
    assert_eq!(by_path.text(), "GET /a/b/?q=1");
    let by_host = get(addr, "/x", &format!("Host: {port}-cap.warren.test\r\n"));
    assert_eq!((by_host.status, by_host.text().as_str()), (200, "GET /x"));
    let by_headers = get(
        addr,
        "/y",
        &format!("E2b-Sandbox-Id: cap\r\nE2b-Sandbox-Port: {port}\r\n"),
    );
    assert_eq!(by_headers.text(), "GET /y");
    let nothing = get(addr, "/", "");
    assert_eq!(
        (nothing.status, nothing.error_code().as_str()),
        (400, "no_route")
    );
    let bad = get(addr, "/proxy/cap/0/", "");
    assert_eq!((bad.status, bad.error_code().as_str()), (400, "bad_target"));
}

#[test]
fn keep_alive_reuses_both_sides() {
    let (proxy, up) = simple();
    let mut client = Client::connect(proxy.local_addr());
    let path = format!("/proxy/cap/{}/conn", up.addr.port());
    let ids: Vec<String> = (0..5).map(|_| client.get(&path, "").text()).collect();
    assert!(
        ids.iter().all(|id| id == &ids[0]),
        "one upstream connection carried every request: {ids:?}"
    );
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    let metrics = proxy.render_metrics();
    assert!(
        metrics.contains("warren_proxy_upstream_reused_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("warren_proxy_connections_accepted_total 1\n"),
        "{metrics}"
    );
}

#[test]
fn gib_bodies_both_ways_with_checksums() {
    const GIB: u64 = 1 << 30;
    let (proxy, up) = simple();
    let port = up.addr.port();
    let mut client = Client::connect(proxy.local_addr());
    // Upload.
    client.send(
        format!(
            "POST /proxy/cap/{port}/upload HTTP/1.1\r\nHost: t\r\nContent-Length: {GIB}\r\n\r\n"
        )
        .as_bytes(),
    );
    let mut block = vec![0u8; 1 << 20];
    let mut offset = 0;
    while offset < GIB {
        pattern_block(offset, &mut block);
        client.stream().write_all(&block).unwrap();
        offset += block.len() as u64;
    }
    let answer = client.response().json();
    assert_eq!(answer["len"], GIB);
    assert_eq!(answer["checksum"], pattern_checksum(GIB));
    // Download, on the same connection.
    client.send(
        format!("GET /proxy/cap/{port}/big?bytes={GIB} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    );
    let lines = read_head_lines(&mut client.reader).unwrap();
    assert!(lines[0].contains("200"));
    let headers: Vec<(String, String)> = lines[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(a, b)| (a.into(), b.trim().into()))
        .collect();
    let mut sum = Checksum::default();
    read_body(&mut client.reader, &headers, false, &mut |b| sum.update(b));
    assert_eq!(sum.len, GIB);
    assert_eq!(sum.finish(), pattern_checksum(GIB));
    let stats = proxy.stats("cap").unwrap();
    assert!(
        stats.bytes_to_capsule > GIB && stats.bytes_from_capsule > GIB,
        "{stats:?}"
    );
}

#[test]
fn chunked_bodies_both_ways_with_trailers() {
    let (proxy, up) = simple();
    let mut client = Client::connect(proxy.local_addr());
    let path = format!("/proxy/cap/{}/echo", up.addr.port());
    let mut body = Vec::new();
    for (i, size) in [1usize, 17, 70_000, 3, 1 << 20].iter().enumerate() {
        body.extend(std::iter::repeat_n(b'a' + i as u8, *size));
    }
    let mut request =
        format!("POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    let mut at = 0;
    for size in [1usize, 17, 70_000, 3, 1 << 20] {
        request.extend(format!("{size:x};ext=1\r\n").bytes());
        request.extend(&body[at..at + size]);
        request.extend(b"\r\n");
        at += size;
    }
    request.extend(b"0\r\nx-client-trailer: yes\r\n\r\n");
    for _ in 0..2 {
        client.send(&request);
        let response = client.response();
        assert_eq!(response.header("transfer-encoding"), Some("chunked"));
        assert_eq!(response.body.len(), body.len());
        assert!(response.body == body, "echoed body differs");
    }
}

#[test]
fn websocket_echo_alongside_heavy_polling() {
    let ws_port = websocket_echo("127.0.0.1").port();
    let (proxy, up) = simple();
    let addr = proxy.local_addr();
    let url = format!("ws://{addr}/proxy/cap/{ws_port}/api/kernels/1/channels");
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let (mut ws, response) = tungstenite::client::client(url.as_str(), stream)
        .expect("websocket handshake through the proxy");
    assert_eq!(response.status(), 101);
    let pollers: Vec<_> = (0..8)
        .map(|_| {
            let path = format!("/proxy/cap/{}/api/status", up.addr.port());
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                for _ in 0..300 {
                    assert_eq!(client.get(&path, "").status, 200);
                }
            })
        })
        .collect();
    for i in 0..500 {
        let text = format!("message {i} {}", "x".repeat(i * 7 % 3000));
        ws.send(tungstenite::Message::text(text.clone())).unwrap();
        let echoed = ws.read().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    for poller in pollers {
        poller.join().unwrap();
    }
    ws.close(None).unwrap();
    assert!(
        proxy
            .render_metrics()
            .contains("warren_proxy_tunnels_total 1")
    );
}

#[test]
fn upgraded_tunnel_half_closes_correctly() {
    let (proxy, up) = simple();
    let mut client = Client::connect(proxy.local_addr());
    client.send(format!("GET /proxy/cap/{}/raw-upgrade HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: raw-echo\r\n\r\n", up.addr.port()).as_bytes());
    let head = read_head_lines(&mut client.reader).unwrap();
    assert!(head[0].contains("101"), "{head:?}");
    client.send(b"ping");
    let mut echo = [0u8; 4];
    client.reader.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping");
    // Our FIN reaches the upstream, which still gets to answer and close.
    client.stream().shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    client.reader.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"bye");
}

#[test]
fn redirects_are_rewritten_for_path_routes() {
    let (proxy, up) = simple();
    let port = up.addr.port();
    let addr = proxy.local_addr();
    let prefix = format!("/proxy/cap/{port}");
    let cases = [
        ("/login".to_owned(), format!("{prefix}/login")),
        ("/dir/".to_owned(), format!("{prefix}/dir/")),
        ("/".to_owned(), format!("{prefix}/")),
        ("/a?next=/b".to_owned(), format!("{prefix}/a?next=/b")),
        (
            format!("http://127.0.0.1:{port}/x/"),
            format!("{prefix}/x/"),
        ),
        (format!("http://localhost:{port}/y"), format!("{prefix}/y")),
        (
            format!("http://{addr}/via-public-host/"),
            format!("{prefix}/via-public-host/"),
        ),
        ("relative/dir/".to_owned(), "relative/dir/".to_owned()),
        (
            "https://example.com/z/".to_owned(),
            "https://example.com/z/".to_owned(),
        ),
        (format!("{prefix}/already/"), format!("{prefix}/already/")),
    ];
    for (location, expected) in cases {
        let encoded = location
            .replace('/', "%2F")
            .replace(':', "%3A")
            .replace('?', "%3F")
            .replace('=', "%3D");
        let response = get(
            addr,
            &format!("{prefix}/redirect?to={encoded}"),
            &format!("Host: {addr}\r\n"),
        );
        assert_eq!(response.status, 302);
        assert_eq!(
            response.header("location"),
            Some(expected.as_str()),
            "Location {location}"
        );
    }
    // Header routes are not prefixed: nothing to rewrite.
    let response = get(
        addr,
        "/redirect?to=%2Flogin",
        &format!("E2b-Sandbox-Id: cap\r\nE2b-Sandbox-Port: {port}\r\n"),
    );
    assert_eq!(response.header("location"), Some("/login"));
}

#[test]
fn slowloris_head_times_out() {
    let upstream = Upstream::start("127.0.0.1");
    let proxy = start(vec![("cap", route("127.0.0.1"))], |c| {
        c.header_timeout = Duration::from_millis(300)
    });
    let mut client = Client::connect(proxy.local_addr());
    client.send(
        format!(
            "GET /proxy/cap/{}/ HTTP/1.1\r\nHost: t\r\n",
            upstream.addr.port()
        )
        .as_bytes(),
    );
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(150));
        // The write may fail once the proxy has given up; that is the point.
        let _ = client.stream().write_all(b"X-Slow: 1\r\n");
    }
    let response = client.response();
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (408, "request_timeout")
    );
    assert_eq!(response.header("connection"), Some("close"));
    assert!(client.is_closed());
}

#[test]
fn idle_connections_time_out() {
    let upstream = Upstream::start("127.0.0.1");
    let proxy = start(vec![("cap", route("127.0.0.1"))], |c| {
        c.header_timeout = Duration::from_millis(200);
        c.idle_timeout = Duration::from_millis(300);
    });
    // Silent since connect: closed after the header timeout, without a page.
    let mut silent = Client::connect(proxy.local_addr());
    assert!(silent.is_closed());
    // Idle after a request: closed after the idle timeout.
    let mut idle = Client::connect(proxy.local_addr());
    assert_eq!(
        idle.get(&format!("/proxy/cap/{}/", upstream.addr.port()), "")
            .status,
        200
    );
    assert!(idle.is_closed());
    eventually("closed connections uncounted", || {
        proxy.stats("cap").unwrap().open_connections == 0
    });
}

#[test]
fn oversized_head_is_431() {
    let (proxy, up) = simple();
    let mut client = Client::connect(proxy.local_addr());
    let big = "a".repeat(40 << 10);
    client.send(
        format!(
            "GET /proxy/cap/{}/ HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n",
            up.addr.port()
        )
        .as_bytes(),
    );
    let response = client.response();
    assert_eq!(
        (response.status, response.error_code().as_str()),
        (431, "request_header_too_large")
    );
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let response = get(
        proxy.local_addr(),
        &format!("/proxy/cap/{}/", up.addr.port()),
        &many,
    );
    assert_eq!(response.status, 431);
}

/// Opens `count` keep-alive connections to `addr`, one GET each, and holds
/// them until its stdin closes. A separate process, because both ends of
/// 10,000 connections would not fit one process's descriptor limit.
const HOLDER: &str = r#"
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
host, port, count, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
held = []
for _ in range(count):
    s = socket.create_connection((host, port))
    s.settimeout(60)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < length:
        body += s.recv(4096)
    if not data.startswith(b"HTTP/1.1 200"):
        sys.exit(f"bad response: {data[:80]!r}")
    held.append(s)
print("ready", len(held), flush=True)
sys.stdin.read()
"#;

#[test]
fn ten_thousand_idle_connections_are_held() {
    const N: usize = 10_000;
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise RLIMIT_NOFILE to its hard limit");
    assert!(
        hard >= N as u64 + 1024,
        "RLIMIT_NOFILE hard limit {hard} is too low for {N} connections"
    );
    let (proxy, up) = simple();
    let path = format!("/proxy/cap/{}/ping", up.addr.port());
    let addr = proxy.local_addr();
    let mut holder = std::process::Command::new("python3")
        .args([
            "-c",
            HOLDER,
            &addr.ip().to_string(),
            &addr.port().to_string(),
            &N.to_string(),
            &path,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the connection holder");
    let mut ready = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(
        ready.trim(),
        format!("ready {N}"),
        "the holder opened every connection"
    );
    eventually("all connections counted", || {
        proxy.stats("cap").unwrap().open_connections == N as u64
    });
    assert!(
        proxy
            .render_metrics()
            .contains(&format!("warren_proxy_connections_open {N}\n"))
    );
    // Still serving while they sit idle.
    for _ in 0..20 {
        assert_eq!(get(addr, &path, "").status, 200);
    }
    drop(holder.stdin.take());
    holder.wait().unwrap();
    eventually("connections released", || {
        proxy.stats("cap").unwrap().open_connections == 0
    });
}

#[test]
fn drain_waits_then_force_closes_and_reopen_restores() {
    let (proxy, up) = simple();
    let port = up.addr.port();
    let addr = proxy.local_addr();
    // A request in flight (held by the upstream) and an idle keep-alive connection.
    let mut busy = Client::connect(addr);
    busy.send(format!("GET /proxy/cap/{port}/stream HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let head = read_head_lines(&mut busy.reader).unwrap();
    assert!(head[0].contains("200"));
    let mut idle = Client::connect(addr);
    assert_eq!(idle.get(&format!("/proxy/cap/{port}/x"), "").status, 200);
    eventually("both counted", || {
        proxy.stats("cap").unwrap().open_connections == 2
    });
    block_on(proxy.drain("cap", Duration::from_millis(300)));
    assert_eq!(proxy.stats("cap").unwrap().open_connections, 0);
    assert!(idle.is_closed(), "idle connection closed by the drain");
    let mut rest = Vec::new();
    let _ = busy.reader.read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains("last"),
        "in-flight response was cut, not completed"
    );
    // Closed to the public while drained, open again after reopen.
    let refused = get(addr, &format!("/proxy/cap/{port}/x"), "");
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (503, "capsule_unavailable")
    );
    proxy.reopen("cap");
    assert_eq!(get(addr, &format!("/proxy/cap/{port}/x"), "").status, 200);
    // Evict closes at once and forgets the counters.
    let mut held = Client::connect(addr);
    assert_eq!(held.get(&format!("/proxy/cap/{port}/x"), "").status, 200);
    block_on(proxy.evict("cap"));
    assert!(held.is_closed());
    assert!(proxy.stats("cap").is_none());
    up.open_gate();
}

#[test]
fn unknown_and_paused_capsules_get_typed_errors() {
    let upstream = Upstream::start("127.0.0.1");
    let mut paused = route("127.0.0.1");
    paused.state = CapsuleState::Paused;
    let proxy = start(vec![("sleepy", paused)], |_| {});
    let port = upstream.addr.port();
    let unknown = get(proxy.local_addr(), &format!("/proxy/ghost/{port}/"), "");
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (404, "capsule_not_found")
    );
    assert!(
        unknown.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ghost")
    );
    let json = get(
        proxy.local_addr(),
        &format!("/proxy/sleepy/{port}/"),
        "Accept: application/json\r\n",
    );
    assert_eq!(
        (json.status, json.error_code().as_str()),
        (409, "capsule_paused")
    );
    let message = json.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("sleepy") && message.contains(&port.to_string()),
        "{message}"
    );
    let html = get(
        proxy.local_addr(),
        &format!("/proxy/sleepy/{port}/"),
        "Accept: text/html,*/*\r\n",
    );
    assert_eq!(html.status, 409);
    assert!(
        html.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(html.text().contains("sleepy"));
    // Unpausing is a table swap.
    proxy
        .routes()
        .publish(RouteTable::new([("sleepy".to_owned(), route("127.0.0.1"))]));
    assert_eq!(
        get(proxy.local_addr(), &format!("/proxy/sleepy/{port}/"), "").status,
        200
    );
}

#[test]
fn private_capsules_need_their_token() {
    let upstream = Upstream::start("127.0.0.1");
    let mut private = route("127.0.0.1");
    private.access_token = Some(Secret::new("traffic-secret"));
    let proxy = start(vec![("priv", private)], |_| {});
    let path = format!("/proxy/priv/{}/", upstream.addr.port());
    let missing = get(proxy.local_addr(), &path, "");
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (401, "access_token_missing")
    );
    let wrong = get(proxy.local_addr(), &path, "X-Access-Token: nope\r\n");
    assert_eq!(
        (wrong.status, wrong.error_code().as_str()),
        (403, "access_token_invalid")
    );
    assert_eq!(
        get(
            proxy.local_addr(),
            &path,
            "X-Access-Token: traffic-secret\r\n"
        )
        .status,
        200
    );
    assert_eq!(
        get(
            proxy.local_addr(),
            &path,
            "e2b-traffic-access-token: traffic-secret\r\n"
        )
        .status,
        200
    );
}

/// A loopback address of our own for an "envd" on port 49983, so parallel
/// test runs on this machine do not collide on the port.
fn envd_upstream() -> (String, Arc<Upstream>) {
    for i in 0..50u32 {
        let ip = format!(
            "127.{}.{}.{}",
            83,
            (std::process::id() + i) % 250 + 1,
            7 + i % 200
        );
        if let Ok(listener) = TcpListener::bind((ip.as_str(), warren_proto::addr::ENVD_PORT)) {
            return (ip, Upstream::serve(listener, true));
        }
    }
    panic!("no free loopback address for port 49983");
}

#[test]
fn envd_internal_routes_only_for_the_agent() {
    let (ip, envd) = envd_upstream();
    let mut capsule = route(&ip);
    capsule.envd_access_token = Some(Secret::new(ENVD_TOKEN));
    let proxy = start(vec![("cap", capsule)], |_| {});
    let addr = proxy.local_addr();
    let envd_port = warren_proto::addr::ENVD_PORT;
    let route_headers = format!("E2b-Sandbox-Id: cap\r\nE2b-Sandbox-Port: {envd_port}\r\n");
    for path in [
        "/init",
        "/snapshot/prepare",
        "/%69nit",
        "//init/",
        "/x/../snapshot/prepare",
    ] {
        let via_path = get(addr, &format!("/proxy/cap/{envd_port}{path}"), "");
        assert_eq!(
            (via_path.status, via_path.error_code().as_str()),
            (403, "internal_route"),
            "{path}"
        );
        let via_headers = get(addr, path, &route_headers);
        assert_eq!(via_headers.status, 403, "{path}");
    }
    // Public calls to other envd routes pass, untouched.
    let health = get(
        addr,
        "/health",
        &format!("{route_headers}X-Access-Token: user-sent\r\n"),
    );
    assert_eq!(health.status, 200);
    // The agent's token makes a request internal: /init passes and envd gets its token.
    let internal = get(
        addr,
        "/init",
        &format!(
            "{route_headers}X-Warren-Agent-Token: {AGENT_TOKEN}\r\nX-Access-Token: forged\r\n"
        ),
    );
    assert_eq!(
        (internal.status, internal.text().as_str()),
        (200, "GET /init")
    );
    let heads = envd.heads.lock().unwrap();
    let init = heads
        .iter()
        .find(|h| h[0].starts_with("GET /init "))
        .expect("envd saw /init");
    let lower: Vec<String> = init.iter().map(|l| l.to_ascii_lowercase()).collect();
    assert!(
        lower.contains(&format!("x-access-token: {ENVD_TOKEN}")),
        "{init:?}"
    );
    assert!(
        !lower
            .iter()
            .any(|l| l.contains("forged") || l.starts_with("x-warren-agent-token")),
        "{init:?}"
    );
    let health_head = heads
        .iter()
        .find(|h| h[0].starts_with("GET /health "))
        .unwrap();
    assert!(
        health_head.iter().any(|l| l == "X-Access-Token: user-sent"),
        "public requests keep their own token"
    );
    drop(heads);
    let wrong = get(
        addr,
        "/init",
        &format!("{route_headers}X-Warren-Agent-Token: guess\r\n"),
    );
    assert_eq!(
        (wrong.status, wrong.error_code().as_str()),
        (403, "agent_token_invalid")
    );
    let by_path = get(
        addr,
        &format!("/proxy/cap/{envd_port}/init"),
        &format!("X-Warren-Agent-Token: {AGENT_TOKEN}\r\n"),
    );
    assert_eq!(by_path.status, 400);
}

#[test]
fn forwarded_headers_are_set() {
    let (proxy, up) = simple();
    let port = up.addr.port();
    let echo = get(proxy.local_addr(), &format!("/proxy/cap/{port}/headers"), "Host: public.example:8443\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: gopher\r\ne2b-traffic-access-token: t\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n").text();
    let lines: Vec<&str> = echo.lines().collect();
    assert_eq!(lines[0], "GET /headers HTTP/1.1");
    assert!(
        lines.contains(&"x-forwarded-for: 203.0.113.9, 127.0.0.1"),
        "{echo}"
    );
    assert!(lines.contains(&"x-forwarded-proto: http"), "{echo}");
    assert!(
        lines.contains(&"x-forwarded-host: public.example:8443"),
        "{echo}"
    );
    assert!(
        lines.contains(&format!("x-forwarded-prefix: /proxy/cap/{port}").as_str()),
        "{echo}"
    );
    assert!(lines.contains(&"Host: public.example:8443"), "{echo}");
    for gone in ["gopher", "e2b-traffic-access-token", "X-Hop", "Connection"] {
        assert!(!echo.contains(gone), "{gone} forwarded: {echo}");
    }
}

#[test]
fn expect_100_continue_both_ways() {
    let (proxy, up) = simple();
    // An upstream that answers 100 itself: relayed.
    let mut client = Client::connect(proxy.local_addr());
    client.send(format!("POST /proxy/cap/{}/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", up.addr.port()).as_bytes());
    let interim = client.response();
    assert_eq!(interim.status, 100);
    client.send(b"hello");
    let done = client.response();
    assert_eq!(done.json()["len"], 5);
    // An upstream that never says 100: the proxy tells the client to go on.
    let quiet = Upstream::serve(TcpListener::bind("127.0.0.1:0").unwrap(), false);
    client.send(format!("POST /proxy/cap/{}/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n", quiet.addr.port()).as_bytes());
    assert_eq!(client.response().status, 100);
    client.send(b"abc");
    assert_eq!(client.response().json()["len"], 3);
}

#[test]
fn dial_retries_a_port_that_comes_up_late() {
    let port = late_upstream("127.0.0.1", Duration::from_millis(150));
    let proxy = start(vec![("cap", route("127.0.0.1"))], |_| {});
    let response = get(proxy.local_addr(), &format!("/proxy/cap/{port}/ready"), "");
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "GET /ready")
    );
    // A port that never comes up: 502 naming capsule and port.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = get(proxy.local_addr(), &format!("/proxy/cap/{closed}/"), "");
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (502, "upstream_unreachable")
    );
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("cap port {closed}"))
    );
}

#[test]
fn slow_and_streaming_responses_flow_through() {
    let (proxy, up) = simple();
    let port = up.addr.port();
    assert_eq!(
        get(
            proxy.local_addr(),
            &format!("/proxy/cap/{port}/slow?ms=700"),
            ""
        )
        .text(),
        "slow"
    );
    // The first chunk arrives while the upstream is still holding the rest.
    let mut client = Client::connect(proxy.local_addr());
    client.send(format!("GET /proxy/cap/{port}/stream HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    read_head_lines(&mut client.reader).unwrap();
    let mut line = String::new();
    client.reader.read_line(&mut line).unwrap();
    assert_eq!(line, "5\r\n");
    let mut first = [0u8; 7];
    client.reader.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"first\r\n");
    up.open_gate();
    let mut rest = [0u8; 14];
    client.reader.read_exact(&mut rest).unwrap();
    assert_eq!(&rest, b"4\r\nlast\r\n0\r\n\r\n");
}

#[test]
fn bandwidth_limit_is_applied() {
    const MIB: u64 = 1 << 20;
    let upstream = Upstream::start("127.0.0.1");
    let mut limited = route("127.0.0.1");
    // 1 MiB/s, starting with a full 1 MiB bucket.
    limited.limits.bandwidth = Some(BucketConfig {
        size: MIB,
        one_time_burst: 0,
        refill_time: 1000,
    });
    let proxy = start(
        vec![("slow", limited), ("fast", route("127.0.0.1"))],
        |_| {},
    );
    let started = Instant::now();
    let response = get(
        proxy.local_addr(),
        &format!("/proxy/slow/{}/big?bytes={}", upstream.addr.port(), 3 * MIB),
        "",
    );
    let elapsed = started.elapsed();
    assert_eq!(response.body.len() as u64, 3 * MIB);
    // 1 MiB from the full bucket, then 2 MiB at 1 MiB/s: no less than ~2 s.
    assert!(
        elapsed >= Duration::from_millis(1500),
        "3 MiB at 1 MiB/s took only {elapsed:?}"
    );
    let mut ops_limited = route("127.0.0.1");
    ops_limited.limits.ops = Some(BucketConfig {
        size: 2,
        one_time_burst: 0,
        refill_time: 1000,
    });
    proxy
        .routes()
        .publish(RouteTable::new([("ops".to_owned(), ops_limited)]));
    let started = Instant::now();
    let mut client = Client::connect(proxy.local_addr());
    for _ in 0..5 {
        assert_eq!(
            client
                .get(&format!("/proxy/ops/{}/", upstream.addr.port()), "")
                .status,
            200
        );
    }
    // 2 requests from the bucket, 3 more at 2/s.
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "5 requests at 2/s took {:?}",
        started.elapsed()
    );
}
