//! Helpers shared by vmm-api's integration tests: Firecracker's spec (with
//! `warren-testkit`'s checker), the stand-in, and test fixtures.
#![allow(dead_code)]

pub use warren_testkit::swagger;

use std::path::PathBuf;
use std::process::Command;

/// Firecracker's spec, or `None` after printing why the test is skipped.
pub fn spec() -> Option<swagger::Spec> {
    warren_testkit::firecracker_spec()
}

/// The stand-in binary serving Firecracker's API (Firecracker cannot run
/// here; `dev/fc-standin`).
pub fn mock_firecracker_bin() -> PathBuf {
    warren_testkit::built_bin("mock-firecracker", None)
}

/// Whether namespaces can be created; prints why not otherwise.
pub fn can_use_namespaces() -> bool {
    warren_testkit::need_root("network and mount namespaces")
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
