//! Fixtures for the slot tests and the tx-limit benchmark (feature
//! `testing`): a private address block, prefix and table per user, a
//! test-made "internet" namespace (never the real one), banner servers,
//! senders and sinks that run inside namespaces, and independent observers
//! (`ip`, `nft`, `tc`) of what exists on the host. Everything made here is
//! removed on drop, even when the test fails. Needs root and iproute2.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

use crate::{
    GUEST_ADDR, NetConfig, SLOT_IF, Slot, SlotManager, TAP_ADDR, TAP_NAME, TAP_PREFIX_LEN, netns,
    tap,
};

/// Test blocks are /24s of 198.18.0.0/15 (RFC 2544's benchmarking range):
/// nothing outside this machine answers there, and each test locks its own.
const BLOCKS: u32 = 512;
const LOCK_DIR: &str = "/tmp/warren-netslot-test-blocks";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Skips (with the reason) unless running as root.
pub fn skip_unless_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    eprintln!("SKIP: network slot tests need root (namespaces, veth, nftables, tc)");
    true
}

/// One test's private network world.
pub struct TestNet {
    pub prefix: String,
    pub config: NetConfig,
    block: u32,
    _lock: Flock<File>,
    _state: tempfile::TempDir,
    extra_netns: Mutex<Vec<String>>,
    extra_links: Mutex<Vec<String>>,
}

/// The test's stand-in for the internet: a namespace behind a veth from the
/// host, plus a link-local "metadata" address routed into it.
pub struct Internet {
    pub netns: PathBuf,
    /// Its address (capsules with egress reach it through the host's NAT).
    pub addr: Ipv4Addr,
    /// The host's address on the link to it (what masqueraded traffic shows).
    pub host_addr: Ipv4Addr,
    /// A 169.254/16 address inside it, routed from the host.
    pub metadata: Ipv4Addr,
}

impl Internet {
    /// A banner server on the internet's ordinary address, port 80.
    pub async fn web(&self) -> Server {
        Server::start(
            Some(&self.netns),
            SocketAddrV4::new(self.addr, 80),
            "internet",
        )
        .await
    }

    /// A banner server on the link-local "metadata" address, port 80,
    /// checked to answer the host (so only a firewall can keep capsules out).
    pub async fn metadata_server(&self) -> Server {
        let server = Server::start(
            Some(&self.netns),
            SocketAddrV4::new(self.metadata, 80),
            "metadata",
        )
        .await;
        fetch(None, server.addr)
            .await
            .expect("the host reaches the metadata stand-in");
        server
    }
}

impl TestNet {
    pub fn new(pool_size: usize) -> Self {
        let seed = std::process::id()
            ^ SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
        let (block, lock) = claim_block(seed);
        let prefix = format!("wt{:06x}", seed & 0xff_ffff);
        let state = tempfile::tempdir().expect("state dir");
        let mut config = NetConfig::new(state.path().join("net"));
        config.prefix = prefix.clone();
        config.table = prefix.clone();
        config.capsule_net = ipnet::Ipv4Net::new(block_addr(block, 0), 27).expect("net");
        config.veth_net = ipnet::Ipv4Net::new(block_addr(block, 64), 26).expect("net");
        config.pool_size = pool_size;
        Self {
            prefix,
            config,
            block,
            _lock: lock,
            _state: state,
            extra_netns: Mutex::new(Vec::new()),
            extra_links: Mutex::new(Vec::new()),
        }
    }

    pub fn addr(&self, last: u8) -> Ipv4Addr {
        block_addr(self.block, last)
    }

    pub async fn open(&self) -> SlotManager {
        SlotManager::open(self.config.clone())
            .await
            .expect("open slot manager")
    }

    /// Makes the test's internet namespace.
    pub fn internet(&self) -> Internet {
        let name = format!("{}-inet", self.prefix);
        let link = format!("{}i", self.prefix);
        let (host_addr, addr) = (self.addr(129), self.addr(130));
        let metadata = Ipv4Addr::new(
            169,
            254,
            250 + (self.block / 256) as u8,
            (self.block % 256) as u8,
        );
        self.track_netns(&name);
        self.track_link(&link);
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        ip(&["addr", "add", &format!("{host_addr}/30"), "dev", &link]);
        ip(&["link", "set", &link, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{addr}/30"),
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{metadata}/32"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&[
            "route",
            "add",
            &format!("{metadata}/32"),
            "via",
            &addr.to_string(),
            "dev",
            &link,
        ]);
        Internet {
            netns: netns::path(&name),
            addr,
            host_addr,
            metadata,
        }
    }

    /// An extra address of the host's own (on a link of its own, like a
    /// service address on the host's uplink).
    pub fn host_service_addr(&self) -> Ipv4Addr {
        let link = format!("{}d", self.prefix);
        let addr = self.addr(200);
        self.make_host_link(&link);
        ip(&["addr", "add", &format!("{addr}/32"), "dev", &link]);
        ip(&["link", "set", &link, "up"]);
        addr
    }

    /// A link `name` on the host (a veth whose peer goes with it; this
    /// kernel may have no `dummy`), removed when the test ends.
    pub fn make_host_link(&self, name: &str) {
        self.track_link(name);
        let peer = format!("{}p{}", self.prefix, name.len());
        ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
    }

    pub fn track_netns(&self, name: &str) {
        self.extra_netns.lock().expect("lock").push(name.to_owned());
    }

    pub fn track_link(&self, name: &str) {
        self.extra_links.lock().expect("lock").push(name.to_owned());
    }

    /// Names of this test's slot namespaces on the host.
    pub fn own_netns(&self) -> Vec<String> {
        let out = run("ip", &["netns", "list"]);
        out.lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| name.starts_with(&format!("{}-ns-", self.prefix)))
            .map(str::to_owned)
            .collect()
    }

    /// Names of this test's slot links on the host.
    pub fn own_links(&self) -> Vec<String> {
        let out = run("ip", &["-o", "link", "show"]);
        out.lines()
            .filter_map(|line| line.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name))
            .filter(|name| name.starts_with(&format!("{}-v", self.prefix)))
            .map(str::to_owned)
            .collect()
    }

    /// Whether the test's nftables table exists.
    pub fn table_exists(&self) -> bool {
        Command::new("nft")
            .args(["list", "table", "inet", &self.prefix])
            .output()
            .expect("run nft")
            .status
            .success()
    }

    /// The elements of one of the table's sets, as nft prints them in JSON.
    pub fn set_elements(&self, set: &str) -> Vec<String> {
        let out = run("nft", &["-j", "list", "set", "inet", &self.prefix, set]);
        let json: serde_json::Value = serde_json::from_str(&out).expect("nft json");
        json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item.get("set"))
            .flat_map(|set| set["elem"].as_array().cloned().unwrap_or_default())
            .map(|elem| match elem {
                serde_json::Value::String(s) => s,
                other => other["concat"]
                    .as_array()
                    .map(|parts| {
                        parts
                            .iter()
                            .map(|p| p.as_str().unwrap_or_default().to_owned())
                            .collect::<Vec<_>>()
                            .join(" . ")
                    })
                    .unwrap_or_else(|| other.to_string()),
            })
            .collect()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for name in self
            .extra_netns
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
        {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
        for name in self
            .extra_links
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
        {
            let _ = Command::new("ip").args(["link", "del", &name]).output();
        }
        let config = self.config.clone();
        let purged = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(SlotManager::purge(&config))
        })
        .join();
        if !matches!(purged, Ok(Ok(()))) {
            eprintln!("cleanup of {} incomplete: {purged:?}", self.prefix);
        }
    }
}

/// Locks a free /24 of the test range: free of other tests' locks and of any
/// host route.
fn claim_block(seed: u32) -> (u32, Flock<File>) {
    fs::create_dir_all(LOCK_DIR).expect("lock dir");
    for i in 0..BLOCKS {
        let block = (seed.wrapping_add(i.wrapping_mul(7))) % BLOCKS;
        let file = File::create(Path::new(LOCK_DIR).join(format!("{block}"))).expect("lock file");
        let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        let routes = run(
            "ip",
            &[
                "-4",
                "route",
                "show",
                "table",
                "all",
                "root",
                &format!("{}/24", block_addr(block, 0)),
            ],
        );
        if routes.trim().is_empty() {
            return (block, lock);
        }
    }
    panic!("no free test address block in 198.18.0.0/15");
}

fn block_addr(block: u32, last: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + block * 256 + u32::from(last))
}

/// Runs `ip args...`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    run("ip", args);
}

/// Runs a command, panicking with its stderr on failure; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("{program}: {err}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TCP server answering every connection with `"<name> sees <peer ip>"`.
pub struct Server {
    pub addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves on `addr` inside the namespace at `ns` (the host's when `None`).
    pub async fn start(ns: Option<&Path>, addr: SocketAddrV4, name: &str) -> Self {
        let listener = listen(ns, addr).await;
        let addr = match listener.local_addr().expect("local addr") {
            SocketAddr::V4(addr) => addr,
            SocketAddr::V6(_) => unreachable!("bound to IPv4"),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (name, flag) = (name.to_owned(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        let _ = writeln!(stream, "{name} sees {}", peer.ip());
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => return,
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// The server's port on another address.
    pub fn at(&self, ip: Ipv4Addr) -> SocketAddrV4 {
        SocketAddrV4::new(ip, self.addr.port())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn listen(ns: Option<&Path>, addr: SocketAddrV4) -> TcpListener {
    let bind = move || {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    };
    match ns {
        Some(ns) => netns::run_in(ns, bind).await,
        None => bind(),
    }
    .unwrap_or_else(|err| panic!("listen on {addr}: {err}"))
}

/// Connects from inside `ns` (the host when `None`) and returns the banner.
pub async fn fetch(ns: Option<&Path>, addr: SocketAddrV4) -> io::Result<String> {
    let connect = move || {
        let mut stream = TcpStream::connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut banner = String::new();
        stream.read_to_string(&mut banner)?;
        Ok(banner.trim().to_owned())
    };
    match ns {
        Some(ns) => netns::run_in(ns, connect).await,
        None => tokio::task::spawn_blocking(connect).await.expect("join"),
    }
}

/// Asserts that a connection from `ns` to `addr` fails (dropped or refused).
pub async fn assert_unreachable(ns: Option<&Path>, addr: SocketAddrV4, what: &str) {
    if let Ok(banner) = fetch(ns, addr).await {
        panic!("{what}: {addr} answered {banner:?}");
    }
}

/// Bytes the tx shaper of slot namespace `netns_name` has sent (its root
/// qdisc's counter: whole frames, as the limit counts them).
pub fn shaped_bytes(netns_name: &str) -> u64 {
    let out = run(
        "tc",
        &[
            "-n", netns_name, "-s", "-j", "qdisc", "show", "dev", SLOT_IF,
        ],
    );
    let json: serde_json::Value = serde_json::from_str(&out).expect("tc json");
    json.as_array()
        .into_iter()
        .flatten()
        .find(|q| q["root"] == true)
        .and_then(|q| q["bytes"].as_u64())
        .unwrap_or(0)
}

/// A sink counting the bytes it receives, inside `ns`.
pub struct Sink {
    pub addr: SocketAddrV4,
    pub received: Arc<AtomicU64>,
    _server: JoinHandle<()>,
}

impl Sink {
    pub async fn start(ns: &Path, addr: SocketAddrV4) -> Self {
        let listener = netns::run_in(ns, move || TcpListener::bind(addr))
            .await
            .expect("sink listen");
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        let server = std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        });
        Self {
            addr,
            received,
            _server: server,
        }
    }
}

/// Sends as fast as it can from inside `ns` to `addr` until dropped.
pub struct Sender {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    pub async fn start(ns: &Path, addr: SocketAddrV4) -> Self {
        let stream = netns::run_in(ns, move || {
            TcpStream::connect_timeout(&addr.into(), CONNECT_TIMEOUT)
        })
        .await
        .expect("sender connect");
        // A stalled path must not hang the test's cleanup.
        stream
            .set_write_timeout(Some(Duration::from_secs(1)))
            .expect("write timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut stream = stream;
            let chunk = vec![0x5au8; 64 * 1024];
            while !flag.load(Ordering::SeqCst) {
                if stream.write_all(&chunk).is_err() {
                    return;
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A stand-in for Firecracker's virtio-net device, so the TAP path carries
/// real traffic here: it attaches to the slot's TAP as Firecracker does and
/// relays frames (virtio-net headers included) to and from a veth whose other
/// end is a "guest" namespace holding [`GUEST_ADDR`]. The relay's own end
/// sits in a third, address-less namespace, so no kernel routes around it.
pub struct FakeGuest {
    /// The guest's namespace: run servers and clients here.
    pub netns: PathBuf,
    stop: Arc<AtomicBool>,
    relays: Vec<JoinHandle<()>>,
}

impl FakeGuest {
    pub async fn start(net: &TestNet, slot: &Slot) -> Self {
        let guest = format!("{}-guest", net.prefix);
        let wire = format!("{}-wire", net.prefix);
        for ns in [&guest, &wire] {
            net.track_netns(ns);
            ip(&["netns", "add", ns]);
        }
        ip(&[
            "-n", &wire, "link", "add", "g0", "type", "veth", "peer", "name", "eth0", "netns",
            &guest,
        ]);
        ip(&["-n", &wire, "link", "set", "g0", "up"]);
        let guest_addr = format!("{GUEST_ADDR}/{TAP_PREFIX_LEN}");
        ip(&["-n", &guest, "addr", "add", &guest_addr, "dev", "eth0"]);
        ip(&["-n", &guest, "link", "set", "eth0", "up"]);
        ip(&["-n", &guest, "link", "set", "lo", "up"]);
        let gateway = TAP_ADDR.to_string();
        ip(&["-n", &guest, "route", "add", "default", "via", &gateway]);

        let tap = netns::run_in(&slot.netns_path(), || tap::attach(TAP_NAME))
            .await
            .expect("attach to the TAP");
        let wire = netns::run_in(&netns::path(&wire), || packet_socket("g0"))
            .await
            .expect("packet socket on the wire");
        let (tap, wire) = (Arc::new(tap), Arc::new(wire));
        let stop = Arc::new(AtomicBool::new(false));
        let relays = [(&tap, &wire), (&wire, &tap)]
            .into_iter()
            .map(|(from, to)| {
                let (from, to, stop) = (Arc::clone(from), Arc::clone(to), Arc::clone(&stop));
                std::thread::spawn(move || relay(&from, &to, &stop))
            })
            .collect();
        Self {
            netns: netns::path(&guest),
            stop,
            relays,
        }
    }
}

impl Drop for FakeGuest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for relay in self.relays.drain(..) {
            let _ = relay.join();
        }
    }
}

/// Copies frames from `from` to `to` until `stop`.
fn relay(from: &File, to: &File, stop: &AtomicBool) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut frame = vec![0u8; 128 * 1024];
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(100u16)), Ok(1..)) {
            continue;
        }
        let Ok(n) = (&*from).read(&mut frame) else {
            return;
        };
        let _ = (&*to).write(&frame[..n]);
    }
}

/// A raw packet socket on `ifname` exchanging frames with a virtio-net
/// header in front, as the TAP does.
fn packet_socket(ifname: &str) -> io::Result<File> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the descriptor is owned right below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::c_int::from(proto),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    for option in [libc::PACKET_VNET_HDR, libc::PACKET_IGNORE_OUTGOING] {
        let on: libc::c_int = 1;
        // SAFETY: the option value is one c_int, passed with its size.
        let set = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                option,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let name = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
    // SAFETY: `name` is a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    // SAFETY: `addr` is a sockaddr_ll and its size is passed with it.
    let bound = unsafe {
        libc::bind(
            fd,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if bound < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(File::from(socket))
}
