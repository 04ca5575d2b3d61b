//! Fixtures of the Firecracker backend tests: a world with real network
//! slots (the crate's `testing` fixtures), an XFS scratch filesystem for
//! the data directory (reflinked copy-on-write disks), a data-plane proxy
//! whose core runs the page servers, and `mock-firecracker` standing in for
//! Firecracker, which cannot run on this host (its /dev/kvm boots no
//! guests). Everything is removed on drop, even when a test fails.

#![allow(dead_code)] // each test file uses part of it

pub use warren_testkit::swagger;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use warren_agent::manager::{Manager, ManagerConfig};
use warren_backend::firecracker::{FirecrackerBackend, FirecrackerConfig};
use warren_backend::loopdev::LoopDevice;
use warren_backend::{Backend, CapsuleId};
use warren_edge::{Proxy, ProxyConfig, RouteTable, Routes, Secret};
use warren_netslot::SlotManager;
use warren_netslot::testing::TestNet;
use warren_template::TemplateStore;

pub const AGENT_TOKEN: &str = "fc-test-agent-token";

/// Root and the tools the world needs (see `warren_testkit::missing`).
pub fn prerequisites() -> bool {
    warren_testkit::need_root_and_tools(
        "namespaces, TAP, loop devices, mounts",
        &[
            ("mkfs.xfs", "xfsprogs"),
            ("mkfs.ext4", "e2fsprogs"),
            ("debugfs", "e2fsprogs"),
            ("setpriv", "util-linux"),
        ],
    ) && warren_testkit::need_file(Path::new("/bin/busybox"), "busybox-static")
}

/// A binary built beside the tests (`target/<profile>/<name>`).
pub fn built_bin(name: &str) -> PathBuf {
    warren_testkit::built_bin(name, None)
}

/// Firecracker's spec, or `None` after printing why the check is skipped.
pub fn spec() -> Option<swagger::Spec> {
    warren_testkit::firecracker_spec()
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An XFS filesystem (reflinks) on a loop device, unmounted on drop.
pub struct Scratch {
    pub dir: PathBuf,
    _loop: LoopDevice,
    _tmp: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let image = tmp.path().join("xfs.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(2 << 30))
            .expect("xfs image");
        run(
            "mkfs.xfs",
            &["-q", "-m", "reflink=1", &image.to_string_lossy()],
        );
        let lo = LoopDevice::attach(&image, false).expect("loop device");
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).expect("mount point");
        run(
            "mount",
            &[&lo.path().to_string_lossy(), &dir.to_string_lossy()],
        );
        Self {
            dir,
            _loop: lo,
            _tmp: tmp,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A directory under /run (a tmpfs, short socket paths), removed on drop.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn new() -> Self {
        let dir = PathBuf::from(format!(
            "/run/wfc-{}-{:08x}",
            std::process::id(),
            rand_u32()
        ));
        std::fs::create_dir_all(&dir).expect("run dir");
        Self(dir)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// One test's host: slots, proxy, data directory, a Firecracker backend.
pub struct World {
    pub backend: FirecrackerBackend,
    pub config: FirecrackerConfig,
    pub proxy: Arc<Proxy>,
    pub slots: Arc<SlotManager>,
    pub net: TestNet,
    /// Every request the mock-firecracker processes received.
    pub record: PathBuf,
    pub run_dir: RunDir,
    pub scratch: Scratch,
}

impl World {
    /// A world whose Firecracker is `mock-firecracker` (recording every
    /// request) with a placeholder kernel.
    pub async fn new(tap_txqueuelen: u32) -> Self {
        Self::with(None, tap_txqueuelen).await
    }

    /// A world running `firecracker` (binary, guest kernel) when given, else
    /// the stand-in.
    pub async fn with(firecracker: Option<(PathBuf, PathBuf)>, tap_txqueuelen: u32) -> Self {
        let scratch = Scratch::new();
        let run_dir = RunDir::new();
        let net = TestNet::new(0);
        let slots = Arc::new(net.open().await);
        let proxy = Arc::new(start_proxy());
        let data = scratch.dir.join("warren");
        std::fs::create_dir_all(data.join("kernels")).expect("data dir");
        let record = run_dir.0.join("requests.jsonl");
        let (bin, kernel, extra_args) = match firecracker {
            Some((bin, kernel)) => (bin, kernel, Vec::new()),
            None => {
                let kernel = data.join("kernels/vmlinux");
                std::fs::write(&kernel, b"not a kernel: mock-firecracker boots nothing")
                    .expect("kernel");
                let args = vec!["--record".into(), record.clone().into()];
                (built_bin("mock-firecracker"), kernel, args)
            }
        };
        let mut config = FirecrackerConfig::new(data, bin, kernel, built_bin("envd"));
        config.runtime_dir = run_dir.0.join("vmm");
        config.tap_txqueuelen = tap_txqueuelen;
        config.extra_args = extra_args;
        config.api_timeout = Duration::from_secs(20);
        let backend = Self::open(&config, &slots, &proxy).await;
        Self {
            backend,
            config,
            proxy,
            slots,
            net,
            record,
            run_dir,
            scratch,
        }
    }

    /// A backend over this world's data directory ("the restarted agent").
    pub async fn open(
        config: &FirecrackerConfig,
        slots: &Arc<SlotManager>,
        proxy: &Arc<Proxy>,
    ) -> FirecrackerBackend {
        let cores: Arc<dyn warren_runtime::Cores> = proxy.clone();
        FirecrackerBackend::new(config.clone(), slots.clone(), cores)
            .await
            .expect("firecracker backend")
    }

    /// A sandbox manager over this world's backend, slots and proxy.
    pub async fn manager(&self, configure: impl FnOnce(&mut ManagerConfig)) -> Arc<Manager> {
        let mut config = ManagerConfig::new(self.config.data_dir.clone());
        configure(&mut config);
        Manager::open(
            config,
            Arc::new(self.backend.clone()),
            self.slots.clone(),
            self.proxy.clone(),
            TemplateStore::new(
                self.config.data_dir.join("templates"),
                self.config.id_map,
                self.config.busybox.clone(),
            )
            .with_envd(self.config.envd_bin.clone()),
        )
        .await
        .expect("manager")
    }

    /// Requests the stand-ins received, in order: (method, path, body).
    pub fn recorded(&self) -> Vec<(String, String, Value)> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("record line");
                (
                    v["method"].as_str().expect("method").to_owned(),
                    v["path"].as_str().expect("path").to_owned(),
                    v["body"].clone(),
                )
            })
            .collect()
    }

    /// Checks every recorded body against Firecracker's spec.
    pub fn assert_requests_match_the_spec(&self) {
        let Some(spec) = spec() else { return };
        for (method, path, body) in self.recorded() {
            let body = (!body.is_null()).then_some(body);
            let errors = spec.check_request(&method, &path, body.as_ref());
            assert!(errors.is_empty(), "{method} {path} {body:?}: {errors:?}");
        }
    }

    pub fn capsule_dir(&self, id: &CapsuleId) -> PathBuf {
        self.backend.capsule_dir(id)
    }

    /// The capsule's console log (the stand-in's stdout and stderr).
    pub fn console(&self, id: &CapsuleId) -> String {
        std::fs::read_to_string(self.capsule_dir(id).join("console.log")).unwrap_or_default()
    }

    /// Waits until the console log holds `line` `times` times.
    pub async fn wait_console(&self, id: &CapsuleId, line: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.console(id).matches(line).count() < times {
            assert!(
                !self.console(id).contains("differs"),
                "restored memory is wrong:\n{}",
                self.console(id)
            );
            assert!(
                Instant::now() < deadline,
                "console of {id} never said {line:?}:\n{}",
                self.console(id)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn start_proxy() -> Proxy {
    Proxy::start(
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cores: 1,
            agent_token: Some(Secret::new(AGENT_TOKEN)),
            ..ProxyConfig::default()
        },
        Arc::new(Routes::new(RouteTable::default())),
    )
    .expect("proxy")
}

/// Destroys the capsule when dropped (a test that fails half-way).
pub struct Destroy(pub FirecrackerBackend, pub CapsuleId);

impl Drop for Destroy {
    fn drop(&mut self) {
        let (backend, id) = (self.0.clone(), self.1.clone());
        // A fresh runtime on a fresh thread: this may run inside a test's
        // runtime (or while it unwinds).
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let _ = rt.block_on(backend.destroy(&id));
        })
        .join();
    }
}

/// The TAP's queue length in the slot's namespace.
pub fn tap_txqueuelen(netns_name: &str) -> u32 {
    let out = run("ip", &["-n", netns_name, "-d", "link", "show", "tap0"]);
    out.split_whitespace()
        .skip_while(|w| *w != "qlen")
        .nth(1)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no qlen in {out}"))
}

/// Whether process `pid` is alive (a zombie is not: a Firecracker adopted
/// from a "previous agent" is still this test's child, reaped by no one).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Whether process `pid` runs in the network namespace at `netns`.
pub fn in_netns(pid: u32, netns: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(format!("/proc/{pid}/ns/net")).expect("process netns");
    let b = std::fs::metadata(netns).expect("netns file");
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

/// Whether process `pid` has a mount namespace of its own.
pub fn own_mount_ns(pid: u32) -> bool {
    let ours = std::fs::read_link("/proc/self/ns/mnt").expect("own mnt ns");
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("mnt ns") != ours
}

/// `stat` of a path inside an ext4 image (read with debugfs, unmounted).
pub fn ext4_stat(image: &Path, path: &str) -> String {
    run(
        "debugfs",
        &["-R", &format!("stat {path}"), &image.to_string_lossy()],
    )
}

/// Owner uid of a path inside an ext4 image.
pub fn ext4_uid(image: &Path, path: &str) -> u32 {
    let stat = ext4_stat(image, path);
    stat.split("User:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("no owner of {path} in {stat}"))
}

/// envd running in the stand-in guest's namespace (without the right to
/// set the host's clock), killed on drop.
pub struct GuestEnvd(Child);

impl GuestEnvd {
    pub fn start(guest_netns: &Path, log: &Path) -> Self {
        let name = guest_netns
            .file_name()
            .expect("netns name")
            .to_string_lossy()
            .into_owned();
        let log = std::fs::File::create(log).expect("envd log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &name,
                "setpriv",
                "--bounding-set",
                "-sys_time",
            ])
            .arg(built_bin("envd"))
            .args(["--port", "49983"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start envd");
        Self(child)
    }
}

impl Drop for GuestEnvd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether the TAP exists in the namespace `netns_name`.
pub fn tap_exists(netns_name: &str) -> bool {
    Command::new("ip")
        .args(["-n", netns_name, "link", "show", "tap0"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A process run through the proxy's envd relay: (stdout, exit code).
pub async fn exec(
    proxy: std::net::SocketAddr,
    id: &CapsuleId,
    script: &str,
) -> Result<(String, i32), String> {
    use futures_util::StreamExt;
    use http::{HeaderName, HeaderValue};
    use warren_proto::connect::Client;
    use warren_proto::process::{ProcessClient, ProcessConfig, StartRequest, process_event};
    let h = HeaderName::from_static;
    let client = ProcessClient::new(
        Client::builder(format!("http://{proxy}"))
            .header(
                h("e2b-sandbox-id"),
                HeaderValue::from_str(id.as_str()).expect("id"),
            )
            .header(h("e2b-sandbox-port"), HeaderValue::from_static("49983"))
            .header(
                h("x-warren-agent-token"),
                HeaderValue::from_static(AGENT_TOKEN),
            )
            .build()
            .expect("client"),
    );
    let req = StartRequest {
        process: Some(ProcessConfig {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut events = client.start(&req).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(ev) = events.next().await {
        match ev.map_err(|e| e.to_string())?.event.and_then(|e| e.event) {
            Some(process_event::Event::Data(d)) => {
                if let Some(process_event::data_event::Output::Stdout(b)) = d.output {
                    out.extend_from_slice(&b);
                }
            }
            Some(process_event::Event::End(end)) => {
                return Ok((String::from_utf8_lossy(&out).into_owned(), end.exit_code));
            }
            _ => {}
        }
    }
    Err("the stream ended without an end event".into())
}
