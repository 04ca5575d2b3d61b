//! Helpers shared by the integration tests: memory files, a compio core
//! serving page servers, and the `warren-uffd guest` process that plays
//! Firecracker.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use warren_uffd::{PageServer, ServerConfig, Snapshot};

pub const PAGE: u64 = 4096;
pub const MIB: u64 = 1 << 20;

/// The bytes of the memory page at `offset`: distinct for every page, so a page
/// served at the wrong offset is caught.
pub fn page_bytes(offset: u64, len: u64) -> Vec<u8> {
    let mut x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes a memory file of `len` bytes with distinct page contents, leaving
/// `holes` (offset, length) unwritten. Returns its path and image.
pub fn memory_file(dir: &Path, name: &str, len: u64, holes: &[(u64, u64)]) -> (PathBuf, Vec<u8>) {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).expect("create memory file");
    f.set_len(len).expect("set_len");
    let mut image = vec![0u8; len as usize];
    for off in (0..len).step_by(PAGE as usize) {
        if holes.iter().any(|&(h, l)| off >= h && off < h + l) {
            continue;
        }
        let bytes = page_bytes(off, PAGE);
        f.write_all_at(&bytes, off).expect("write page");
        image[off as usize..(off + PAGE) as usize].copy_from_slice(&bytes);
    }
    (path, image)
}

/// Writes `image` to a file (the expected memory the guest checks against).
pub fn write_image(dir: &Path, name: &str, image: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, image).expect("write image");
    path
}

pub fn snapshot(path: &Path) -> Arc<Snapshot> {
    Arc::new(Snapshot::open(path).expect("open snapshot"))
}

/// A thread running a compio runtime that serves page servers (one core of the agent).
pub struct Core {
    pub servers: Vec<PageServer>,
    thread: Option<JoinHandle<()>>,
}

impl Core {
    /// Starts a core and spawns one page server per config on it.
    pub fn start(configs: Vec<ServerConfig>) -> Core {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = compio::runtime::Runtime::new().expect("compio runtime");
            runtime.block_on(async move {
                let servers: Vec<PageServer> = configs
                    .into_iter()
                    .map(|c| PageServer::spawn(c).expect("spawn page server"))
                    .collect();
                tx.send(servers.clone()).expect("send handles");
                for s in &servers {
                    s.wait().await;
                }
            });
        });
        let servers = rx.recv().expect("page servers started");
        Core {
            servers,
            thread: Some(thread),
        }
    }

    pub fn one(config: ServerConfig) -> Core {
        Core::start(vec![config])
    }

    pub fn server(&self) -> &PageServer {
        &self.servers[0]
    }

    /// Waits for every server to finish (the guests exited) and the core to end.
    pub fn join(mut self) -> Vec<warren_uffd::Outcome> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.servers.iter().any(|s| s.outcome().is_none()) {
            assert!(
                Instant::now() < deadline,
                "page servers did not finish: {:?}",
                self.servers
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("core thread");
        }
        self.servers
            .iter()
            .map(|s| s.outcome().expect("finished"))
            .collect()
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // On a failed test: stop everything so the core thread ends.
        for s in &self.servers {
            s.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_warren-uffd")
}

/// A child process, killed and reaped if the test ends (or panics) first.
pub struct Proc(Option<Child>);

impl Proc {
    pub fn new(child: Child) -> Proc {
        Proc(Some(child))
    }
}

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("process already finished")
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("process already finished")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `warren-uffd guest` against `socket`, checking against `expect`.
pub fn spawn_guest(socket: &Path, expect: &Path, script: &str, extra: &[&str]) -> Proc {
    let child = Command::new(bin())
        .arg("guest")
        .arg("--socket")
        .arg(socket)
        .arg("--expect")
        .arg(expect)
        .arg("--script")
        .arg(script)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn guest");
    Proc::new(child)
}

/// Waits for a child with a deadline; kills it and panics if it hangs.
/// Returns (exit code, stdout, stderr).
pub fn finish(mut proc: Proc, timeout: Duration) -> (Option<i32>, String, String) {
    let mut child = proc.0.take().expect("process already finished");
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "child hung for {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a guest to completion and asserts it saw exactly the expected memory.
pub fn run_guest(socket: &Path, expect: &Path, script: &str, extra: &[&str]) -> String {
    let (code, out, err) = finish(
        spawn_guest(socket, expect, script, extra),
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "guest failed: {err}\n{out}");
    out
}

/// Reads lines from a child's stdout until one equals `want`.
pub fn wait_for_line(child: &mut Child, want: &str) {
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read guest stdout");
        assert!(n > 0, "guest exited before printing {want:?}");
        if line.trim() == want {
            return;
        }
    }
}

/// Polls `cond` for up to 10 s.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A config with fault-around set, for a socket in `dir`.
pub fn config(dir: &Path, name: &str, snapshot: Arc<Snapshot>, fault_around: u64) -> ServerConfig {
    let mut c = ServerConfig::new(dir.join(format!("{name}.sock")), snapshot);
    c.fault_around = fault_around;
    c
}
