//! Helpers shared by vmm-api's integration tests: a Swagger 2.0 schema
//! checker over Firecracker's spec, and test fixtures.
#![allow(dead_code)]

pub mod swagger;

use std::path::PathBuf;
use std::process::Command;

/// `shared/` (Firecracker's spec lives in `shared/firecracker/`): `WARREN_SHARED`,
/// else `<repo>/../shared`.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("WARREN_SHARED") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    };
    dir.join("firecracker/firecracker-api.yaml")
        .is_file()
        .then_some(dir)
}

/// Firecracker's spec, or `None` after printing why the test is skipped.
pub fn spec() -> Option<swagger::Spec> {
    let Some(dir) = shared_dir() else {
        eprintln!(
            "SKIP: Firecracker's spec not found: set WARREN_SHARED to the shared/ directory \
             holding firecracker/firecracker-api.yaml"
        );
        return None;
    };
    Some(swagger::Spec::load(
        &dir.join("firecracker/firecracker-api.yaml"),
    ))
}

/// The stand-in binary serving Firecracker's API (Firecracker cannot run here).
pub fn mock_firecracker_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mock-firecracker"))
}

/// Whether namespaces can be created; prints why not otherwise.
pub fn can_use_namespaces() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIP: needs root (network and mount namespaces)");
    false
}

/// A network namespace made for one test (`ip netns add`), deleted on drop.
pub struct NetnsGuard {
    pub name: String,
}

impl NetnsGuard {
    pub fn new(tag: &str) -> Self {
        let name = format!(
            "warren-vmmtest-{tag}-{}-{}",
            std::process::id(),
            rand_suffix()
        );
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(status.success(), "ip netns add {name} failed");
        Self { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn rand_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:08x}", h.finish() as u32)
}

/// A `mock-firecracker` started directly (without the launcher), killed on drop.
pub struct MockFirecracker {
    pub child: std::process::Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub record: PathBuf,
}

impl MockFirecracker {
    pub fn start(id: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("api.sock");
        let record = dir.path().join("requests.jsonl");
        let child = Self::spawn(id, &socket, &record);
        Self {
            child,
            dir,
            socket,
            record,
        }
    }

    /// Kills the process and starts a new one on the same socket path.
    pub fn restart(&mut self, id: &str) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::remove_file(&self.socket).expect("remove socket");
        self.child = Self::spawn(id, &self.socket, &self.record);
    }

    fn spawn(id: &str, socket: &std::path::Path, record: &std::path::Path) -> std::process::Child {
        let child = Command::new(mock_firecracker_bin())
            .args(["--id", id, "--api-sock"])
            .arg(socket)
            .arg("--record")
            .arg(record)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start mock-firecracker");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "mock-firecracker did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child
    }

    /// Requests as they arrived: (method, path, body).
    pub fn recorded(&self) -> Vec<(String, String, Option<serde_json::Value>)> {
        let text = std::fs::read_to_string(&self.record).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("record line");
                let body = (!v["body"].is_null()).then(|| v["body"].clone());
                (
                    v["method"].as_str().expect("method").to_string(),
                    v["path"].as_str().expect("path").to_string(),
                    body,
                )
            })
            .collect()
    }
}

impl Drop for MockFirecracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
