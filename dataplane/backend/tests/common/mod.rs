//! Helpers for the namespace backend's integration tests: network namespaces,
//! backends over throwaway data directories, capsule drop guards, and
//! leftover checks. Everything is named with the test process's pid so
//! parallel runs on one machine do not collide.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use warren_backend::namespace::{InitCommand, NamespaceBackend, NamespaceConfig};
use warren_backend::{CapsuleId, CapsuleSpec, Resources};

pub const CGROUP_PARENT: &str = "warren-test";

pub use warren_testkit::unique;

/// True (after printing why) when the test cannot run here.
pub fn skip_unless_root() -> bool {
    !warren_testkit::need_root("the namespace backend")
}

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Self {
        let name = unique("wt-ns");
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

pub fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd).args(args).status().expect("spawn");
    assert!(status.success(), "{cmd} {args:?} failed");
}

/// A backend over a temporary data directory, removed on drop.
pub struct Fixture {
    pub backend: NamespaceBackend,
    pub data: tempfile::TempDir,
    pub config: NamespaceConfig,
}

/// A stand-in init that idles (and reaps) until killed.
pub fn idle_init() -> InitCommand {
    shell_init("while :; do sleep 3600; done")
}

pub fn shell_init(script: &str) -> InitCommand {
    InitCommand::Template(vec!["/bin/sh".into(), "-c".into(), script.into()])
}

impl Fixture {
    pub fn new(init: InitCommand) -> Self {
        let data = tempfile::Builder::new()
            .prefix("warren-nstest-")
            .tempdir()
            .expect("tempdir");
        let mut config = NamespaceConfig::new(data.path().to_owned(), init);
        config.cgroup_parent = CGROUP_PARENT.into();
        let backend = NamespaceBackend::new(config.clone()).expect("backend");
        Self {
            backend,
            data,
            config,
        }
    }

    /// Another backend over the same data directory ("the restarted agent").
    pub fn reopen(&self) -> NamespaceBackend {
        NamespaceBackend::new(self.config.clone()).expect("backend")
    }

    pub fn spec(&self, netns: &Netns, resources: Resources) -> CapsuleSpec {
        CapsuleSpec {
            id: CapsuleId::new(unique("c")).expect("id"),
            template: "tiny".into(),
            resources,
            netns: netns.path(),
            hostname: None,
            env: BTreeMap::new(),
            metadata: BTreeMap::new(),
            tx_limit: None,
        }
    }
}

impl Fixture {
    /// Creates a capsule in `net`, destroyed when the guard drops.
    pub async fn start(&self, net: &Netns, resources: Resources) -> (CapsuleSpec, Guard) {
        use warren_backend::Backend;
        let spec = self.spec(net, resources);
        let guard = Guard {
            backend: self.backend.clone(),
            id: spec.id.clone(),
        };
        self.backend.create(&spec).await.expect("create");
        (spec, guard)
    }
}

pub fn resources() -> Resources {
    Resources {
        vcpus: 1,
        memory_mb: 128,
        disk_mb: 64,
        max_pids: 128,
    }
}

/// Destroys the capsule on drop unless it is already gone.
pub struct Guard {
    pub backend: NamespaceBackend,
    pub id: CapsuleId,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.backend.destroy_blocking(&self.id);
    }
}

/// Runs `sh -c script` inside the capsule: (exit code, stdout, stderr).
pub fn sh(backend: &NamespaceBackend, id: &CapsuleId, script: &str) -> (i32, String, String) {
    let out = backend
        .command(id, "/bin/sh")
        .expect("command")
        .args(["-c", script])
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads a file inside the capsule through its init's root.
pub fn read_inside(pid: i32, path: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/root{path}")).ok()
}

/// Waits up to `secs` for `f` to return Some.
pub fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > end {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Asserts nothing of capsule `id` is left on the host: its directory, its
/// cgroup in every hierarchy, a loop device backed by its image, a mount
/// naming its directory, or its init process.
pub fn assert_no_leftovers(dir: &Path, id: &CapsuleId, init_pid: Option<i32>) {
    assert!(!dir.exists(), "{} still exists", dir.display());
    for entry in std::fs::read_dir("/sys/fs/cgroup").expect("cgroup root") {
        let cg = entry
            .expect("entry")
            .path()
            .join(CGROUP_PARENT)
            .join(id.as_str());
        assert!(!cg.exists(), "cgroup {} still exists", cg.display());
    }
    for entry in std::fs::read_dir("/sys/block").expect("/sys/block") {
        let backing = entry.expect("entry").path().join("loop/backing_file");
        if let Ok(file) = std::fs::read_to_string(&backing) {
            assert!(
                !file.starts_with(dir.to_str().expect("utf-8")),
                "{} still backs a loop device",
                file.trim()
            );
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(dir.to_str().expect("utf-8")),
        "a mount under {} is visible",
        dir.display()
    );
    if let Some(pid) = init_pid {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, a zombie awaiting the host's reaper, or the pid reused by an
        // unrelated process: never a live init.
        let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
        let init_comm = stat.contains("(sh)") || stat.contains("(envd)");
        assert!(
            !init_comm || state == Some("Z"),
            "init {pid} still runs: {stat}"
        );
    }
}

/// The envd binary: `WARREN_ENVD_BIN`, else `envd` built beside the tests.
pub fn envd_binary() -> PathBuf {
    warren_testkit::built_bin("envd", Some("WARREN_ENVD_BIN"))
}

/// One HTTP/1.1 GET to `127.0.0.1:port` inside network namespace `netns`,
/// retried for up to `secs`: the response's status line and body.
pub fn http_get_in_netns(
    netns: &Path,
    port: u16,
    path: &str,
    secs: u64,
) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let ns = std::fs::File::open(netns).expect("netns");
    let path = path.to_owned();
    std::thread::spawn(move || {
        // Only this thread moves into the namespace.
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        wait_for(secs, || {
            let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .ok()?;
            write!(
                conn,
                "GET {path} HTTP/1.1\r\nHost: capsule\r\nConnection: close\r\n\r\n"
            )
            .ok()?;
            let mut response = String::new();
            conn.read_to_string(&mut response).ok()?;
            let (head, body) = response.split_once("\r\n\r\n")?;
            Some((head.lines().next()?.to_owned(), body.to_owned()))
        })
    })
    .join()
    .expect("thread")
}
