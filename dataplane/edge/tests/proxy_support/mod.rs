//! Real upstreams on loopback for the proxy tests, and a small blocking
//! HTTP/1.1 client. Every server runs on std threads, one per connection.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// Guard against hangs: a test fails rather than blocks forever.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes of the deterministic test stream at `offset` (position-dependent,
/// so a lost, duplicated or reordered block changes the checksum).
pub fn pattern_block(offset: u64, out: &mut [u8]) {
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let word = (offset / 8 + i as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// A running checksum over a stream (FNV-1a over 8-byte words, order-sensitive).
#[derive(Default)]
pub struct Checksum {
    state: u64,
    pending: Vec<u8>,
    pub len: u64,
}

impl Checksum {
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.pending.is_empty() {
            let need = 8 - self.pending.len();
            let take = need.min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == 8 {
                let word =
                    u64::from_le_bytes(self.pending[..].try_into().expect("test support I/O"));
                self.mix(word);
                self.pending.clear();
            }
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().expect("test support I/O")));
        }
        self.pending.extend_from_slice(words.remainder());
    }

    fn mix(&mut self, word: u64) {
        self.state = (self.state ^ word)
            .wrapping_mul(0x0100_0000_01b3)
            .rotate_left(5);
    }

    pub fn finish(mut self) -> u64 {
        let tail = std::mem::take(&mut self.pending);
        for b in tail {
            self.mix(u64::from(b));
        }
        self.state ^ self.len
    }
}

/// Checksum of the first `len` bytes of the test pattern.
pub fn pattern_checksum(len: u64) -> u64 {
    let mut sum = Checksum::default();
    let mut block = vec![0u8; 1 << 20];
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(block.len() as u64) as usize;
        pattern_block(offset, &mut block[..n]);
        sum.update(&block[..n]);
        offset += n as u64;
    }
    sum.finish()
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Reads a head (request or response) line by line.
pub fn read_head_lines(reader: &mut impl BufRead) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            return Some(lines);
        }
        lines.push(line);
    }
}

fn parse_headers(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// Reads a body framed by `headers`, feeding every byte to `sink`.
pub fn read_body(
    reader: &mut impl BufRead,
    headers: &[(String, String)],
    no_body: bool,
    sink: &mut dyn FnMut(&[u8]),
) {
    if no_body {
        return;
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut buf = vec![0u8; 256 << 10];
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("chunk size line");
            let size =
                usize::from_str_radix(line.trim().split(';').next().expect("test support I/O"), 16)
                    .expect("chunk size");
            if size == 0 {
                // Trailers.
                read_head_lines(reader).expect("trailers");
                return;
            }
            let mut left = size;
            while left > 0 {
                let n = left.min(buf.len());
                reader.read_exact(&mut buf[..n]).expect("chunk data");
                sink(&buf[..n]);
                left -= n;
            }
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf).expect("chunk CRLF");
            assert_eq!(&crlf, b"\r\n");
        }
    } else if let Some(len) = get("content-length") {
        let mut left: u64 = len.parse().expect("content-length");
        while left > 0 {
            let n = (left as usize).min(buf.len());
            reader.read_exact(&mut buf[..n]).expect("body");
            sink(&buf[..n]);
            left -= n as u64;
        }
    } else {
        loop {
            let n = reader.read(&mut buf).expect("body until close");
            if n == 0 {
                return;
            }
            sink(&buf[..n]);
        }
    }
}

/// Reads one response (skipping nothing: a 1xx is returned as is).
pub fn read_response(reader: &mut impl BufRead, head_request: bool) -> Option<Response> {
    let lines = read_head_lines(reader)?;
    let status: u16 = lines.first()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = parse_headers(&lines[1..]);
    let mut body = Vec::new();
    let no_body = head_request || status < 200 || status == 204 || status == 304;
    read_body(reader, &headers, no_body, &mut |b| {
        body.extend_from_slice(b)
    });
    Some(Response {
        status,
        headers,
        body,
    })
}

/// A keep-alive client connection.
pub struct Client {
    pub reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect to proxy");
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("test support I/O");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("test support I/O");
        Self {
            reader: BufReader::new(stream),
        }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream().write_all(raw).expect("send request");
    }

    /// Sends `GET path` with extra header lines (each ending in \r\n).
    pub fn get(&mut self, path: &str, headers: &str) -> Response {
        let host = if headers.to_ascii_lowercase().contains("host:") {
            ""
        } else {
            "Host: test.local\r\n"
        };
        self.send(format!("GET {path} HTTP/1.1\r\n{host}{headers}\r\n").as_bytes());
        self.response()
    }

    pub fn response(&mut self) -> Response {
        read_response(&mut self.reader, false).expect("a response")
    }

    /// True when the proxy closed the connection (EOF or reset).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0) | Err(_))
    }
}

/// One-shot GET on a fresh connection.
pub fn get(addr: SocketAddr, path: &str, headers: &str) -> Response {
    Client::connect(addr).get(path, headers)
}

/// A test upstream: an HTTP/1.1 keep-alive server with routes for every test.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicU64>,
    /// The gate `/stream` waits on after its first chunk.
    pub gate: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
    gate_tx: Mutex<Option<mpsc::Sender<()>>>,
    /// Heads received, for header assertions.
    pub heads: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Upstream {
    pub fn start(ip: &str) -> Arc<Upstream> {
        let listener = TcpListener::bind((ip, 0)).expect("bind upstream");
        Self::serve(listener, true)
    }

    /// Serves on `listener`; `sends_continue`: answer `Expect: 100-continue`.
    pub fn serve(listener: TcpListener, sends_continue: bool) -> Arc<Upstream> {
        let (gate_tx, gate_rx) = mpsc::channel();
        let upstream = Arc::new(Upstream {
            addr: listener.local_addr().expect("test support I/O"),
            connections: Arc::default(),
            gate: Arc::new(Mutex::new(Some(gate_rx))),
            gate_tx: Mutex::new(Some(gate_tx)),
            heads: Arc::default(),
        });
        let server = Arc::clone(&upstream);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let id = server.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let server = Arc::clone(&server);
                std::thread::spawn(move || server.connection(stream, id, sends_continue));
            }
        });
        upstream
    }

    /// Lets a `/stream` response finish.
    pub fn open_gate(&self) {
        if let Some(tx) = self.gate_tx.lock().expect("test support I/O").take() {
            let _ = tx.send(());
        }
    }

    fn connection(&self, stream: TcpStream, id: u64, sends_continue: bool) {
        stream.set_nodelay(true).expect("test support I/O");
        let mut writer = stream.try_clone().expect("test support I/O");
        let mut reader = BufReader::new(stream);
        while let Some(lines) = read_head_lines(&mut reader) {
            let request_line = lines[0].clone();
            let mut parts = request_line.split_whitespace();
            let method = parts.next().unwrap_or("").to_owned();
            let target = parts.next().unwrap_or("").to_owned();
            let headers = parse_headers(&lines[1..]);
            self.heads
                .lock()
                .expect("test support I/O")
                .push(lines.clone());
            let get = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            if sends_continue
                && get("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            {
                writer
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .expect("test support I/O");
            }
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let param = |key: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                    .map(str::to_owned)
            };
            let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
            let ok = |writer: &mut TcpStream, body: &[u8], extra: &str| {
                let mut response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{extra}\r\n",
                    body.len()
                )
                .into_bytes();
                response.extend_from_slice(body);
                writer.write_all(&response).expect("test support I/O");
            };
            match path {
                "/conn" => ok(&mut writer, id.to_string().as_bytes(), ""),
                "/headers" => ok(&mut writer, lines.join("\n").as_bytes(), ""),
                "/big" => {
                    let len: u64 = param("bytes")
                        .expect("test support I/O")
                        .parse()
                        .expect("test support I/O");
                    write!(writer, "HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n")
                        .expect("test support I/O");
                    let mut block = vec![0u8; 1 << 20];
                    let mut offset = 0;
                    while offset < len {
                        let n = (len - offset).min(block.len() as u64) as usize;
                        pattern_block(offset, &mut block[..n]);
                        if writer.write_all(&block[..n]).is_err() {
                            return;
                        }
                        offset += n as u64;
                    }
                }
                "/upload" | "/echo" => {
                    let mut sum = Checksum::default();
                    let mut echoed = Vec::new();
                    let echo = path == "/echo";
                    read_body(&mut reader, &headers, false, &mut |b| {
                        sum.update(b);
                        if echo {
                            echoed.extend_from_slice(b);
                        }
                    });
                    if echo {
                        // Answer chunked, in three chunks, with a trailer.
                        write!(
                            writer,
                            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                        )
                        .expect("test support I/O");
                        for part in echoed.chunks(echoed.len().div_ceil(3).max(1)) {
                            write!(writer, "{:x}\r\n", part.len()).expect("test support I/O");
                            writer.write_all(part).expect("test support I/O");
                            writer.write_all(b"\r\n").expect("test support I/O");
                        }
                        writer
                            .write_all(b"0\r\nx-trailer: done\r\n\r\n")
                            .expect("test support I/O");
                    } else {
                        let len = sum.len;
                        let body = format!("{{\"len\":{len},\"checksum\":{}}}", sum.finish());
                        ok(&mut writer, body.as_bytes(), "");
                    }
                }
                "/redirect" => {
                    let to = param("to").expect("test support I/O");
                    let to = to
                        .replace("%2F", "/")
                        .replace("%3A", ":")
                        .replace("%3F", "?")
                        .replace("%3D", "=");
                    write!(
                        writer,
                        "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\n\r\n"
                    )
                    .expect("test support I/O");
                }
                "/slow" => {
                    let ms: u64 = param("ms")
                        .expect("test support I/O")
                        .parse()
                        .expect("test support I/O");
                    std::thread::sleep(Duration::from_millis(ms));
                    ok(&mut writer, b"slow", "");
                }
                "/stream" => {
                    writer
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n",
                        )
                        .expect("test support I/O");
                    writer.flush().expect("test support I/O");
                    let gate = self.gate.lock().expect("test support I/O").take();
                    if let Some(gate) = gate {
                        let _ = gate.recv_timeout(IO_TIMEOUT);
                    }
                    if writer.write_all(b"4\r\nlast\r\n0\r\n\r\n").is_err() {
                        return;
                    }
                }
                "/raw-upgrade" => {
                    // After 101: echo until the client half-closes, then say bye.
                    writer.write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: raw-echo\r\n\r\n").expect("test support I/O");
                    let mut buf = [0u8; 4096];
                    let mut reader = reader.into_inner();
                    loop {
                        match reader.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => writer.write_all(&buf[..n]).expect("test support I/O"),
                        }
                    }
                    writer.write_all(b"bye").expect("test support I/O");
                    return;
                }
                _ => {
                    let body = format!("{method} {target}");
                    ok(&mut writer, body.as_bytes(), "content-type: text/plain\r\n");
                }
            }
            if close {
                return;
            }
        }
    }
}

/// A WebSocket echo server (tungstenite).
pub fn websocket_echo(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).expect("bind ws");
    let addr = listener.local_addr().expect("test support I/O");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let Ok(mut ws) = tungstenite::accept(stream) else {
                    return;
                };
                while let Ok(message) = ws.read() {
                    if message.is_close() {
                        break;
                    }
                    if (message.is_text() || message.is_binary()) && ws.send(message).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A port that refuses for `delay`, then serves like [`Upstream`].
pub fn late_upstream(ip: &str, delay: Duration) -> u16 {
    let probe = TcpListener::bind((ip, 0)).expect("test support I/O");
    let addr = probe.local_addr().expect("test support I/O");
    drop(probe);
    let ip = ip.to_owned();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let listener = TcpListener::bind((ip.as_str(), addr.port())).expect("late bind");
        let _keep = Upstream::serve(listener, true);
        std::thread::park();
    });
    addr.port()
}
