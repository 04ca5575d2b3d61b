//! `mock-firecracker`: a stand-in that serves Firecracker's REST API on a
//! Unix socket, for tests on hosts where Firecracker cannot run (no usable
//! KVM). It keeps Firecracker's run states and answers like Firecracker
//! does (204 on success, `400 {"fault_message"}` on refusal, pre-boot-only
//! and post-boot-only calls), but boots nothing.
//!
//! Its guest memory is real ([`memory`]): snapshots write it (full or
//! diff), loads read it back from a memory file or through a userfaultfd
//! page server, doing Firecracker's side of the handshake, and refuse a
//! restore whose memory differs from what the snapshot recorded.
//!
//! Usage: `mock-firecracker --api-sock PATH [--id ID] [--record FILE]
//! [--ignore-sigterm]`. `--record` appends every request as a JSON line
//! `{"method","path","body"}` so tests can check what arrived. Other
//! arguments are accepted and ignored, as Firecracker's would be used.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::UnixListener;

mod memory;
use memory::Memory;

const HELP: &str = "mock-firecracker --api-sock PATH [--id ID] [--record FILE] [--ignore-sigterm]\n\
A stand-in serving Firecracker's API for tests on hosts without KVM. Boots nothing.";

#[derive(Default)]
struct Args {
    api_sock: Option<PathBuf>,
    id: Option<String>,
    record: Option<PathBuf>,
    ignore_sigterm: bool,
}

fn parse_args() -> Args {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--api-sock" => args.api_sock = it.next().map(PathBuf::from),
            "--id" => args.id = it.next(),
            "--record" => args.record = it.next().map(PathBuf::from),
            "--ignore-sigterm" => args.ignore_sigterm = true,
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            _ => {}
        }
    }
    args
}

#[derive(Clone, Copy, PartialEq)]
enum Run {
    NotStarted,
    Running,
    Paused,
}

struct State {
    id: String,
    run: Run,
    /// Anything besides logger/metrics configured (snapshot/load refuses then).
    configured: bool,
    boot_source: bool,
    machine: Value,
    drives: Vec<String>,
    ifaces: Vec<String>,
    mmds: Option<Value>,
    balloon: Option<Value>,
    metrics: bool,
    record: Option<std::fs::File>,
    /// Guest memory, from boot or a load on.
    memory: Option<Memory>,
    /// Dirty pages tracked (machine-config or load), as diffs need.
    track_dirty_pages: bool,
}

type Answer = (StatusCode, Option<Value>);

fn fault(msg: impl Into<String>) -> Answer {
    (
        StatusCode::BAD_REQUEST,
        Some(json!({ "fault_message": msg.into() })),
    )
}

const OK: Answer = (StatusCode::NO_CONTENT, None);
const NOT_AFTER_START: &str =
    "The requested operation is not supported after starting the microVM.";
const NOT_BEFORE_START: &str =
    "The requested operation is not supported before starting the microVM.";

impl State {
    fn handle(&mut self, method: &Method, path: &str, body: Option<Value>) -> Answer {
        let started = self.run != Run::NotStarted;
        let body_obj = body.clone().unwrap_or(Value::Null);
        let pre_boot = |s: &mut State| -> Option<Answer> {
            if started {
                return Some(fault(NOT_AFTER_START));
            }
            s.configured = true;
            None
        };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("GET", [""]) => (
                StatusCode::OK,
                Some(json!({
                    "app_name": "Firecracker",
                    "id": self.id,
                    "state": match self.run { Run::NotStarted => "Not started", Run::Running => "Running", Run::Paused => "Paused" },
                    "vmm_version": "1.17.0-dev (mock-firecracker)",
                })),
            ),
            ("GET", ["version"]) => (
                StatusCode::OK,
                Some(json!({"firecracker_version": "1.17.0-dev (mock-firecracker)"})),
            ),
            ("GET", ["machine-config"]) => (StatusCode::OK, Some(self.machine.clone())),
            ("PUT", ["machine-config"]) => {
                if let Some(a) = pre_boot(self) {
                    return a;
                }
                let vcpus = body_obj["vcpu_count"].as_u64().unwrap_or(0);
                if !(1..=32).contains(&vcpus) {
                    return fault(
                        "The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.",
                    );
                }
                self.track_dirty_pages = body_obj["track_dirty_pages"].as_bool() == Some(true);
                self.machine = body_obj;
                OK
            }
            ("PUT", ["boot-source"]) => {
                if let Some(a) = pre_boot(self) {
                    return a;
                }
                let kernel = body_obj["kernel_image_path"].as_str().unwrap_or("");
                if !std::path::Path::new(kernel).is_file() {
                    return fault(format!(
                        "The kernel file cannot be opened: No such file or directory (os error 2): {kernel}"
                    ));
                }
                self.boot_source = true;
                OK
            }
            ("PUT", ["drives", id]) | ("PUT", ["network-interfaces", id]) => {
                if let Some(a) = pre_boot(self) {
                    return a;
                }
                let key = if segments[0] == "drives" {
                    "drive_id"
                } else {
                    "iface_id"
                };
                if body_obj[key].as_str() != Some(id) {
                    return fault(format!(
                        "The id from the path [{id}] does not match the id from the body [{}]!",
                        body_obj[key]
                    ));
                }
                let list = if segments[0] == "drives" {
                    &mut self.drives
                } else {
                    &mut self.ifaces
                };
                list.push(id.to_string());
                OK
            }
            ("PATCH", ["drives", id]) | ("PATCH", ["network-interfaces", id]) => {
                if !started {
                    return fault(NOT_BEFORE_START);
                }
                let list = if segments[0] == "drives" {
                    &self.drives
                } else {
                    &self.ifaces
                };
                if !list.iter().any(|d| d == id) {
                    return fault(format!("Invalid device ID: {id}"));
                }
                OK
            }
            ("PUT", ["mmds", "config"]) | ("PUT", ["vsock"]) | ("PUT", ["entropy"]) => {
                pre_boot(self).unwrap_or(OK)
            }
            ("PUT", ["balloon"]) => {
                if let Some(a) = pre_boot(self) {
                    return a;
                }
                self.balloon = Some(body_obj);
                OK
            }
            ("PATCH", ["balloon"]) | ("PATCH", ["balloon", "statistics"]) => {
                match &mut self.balloon {
                    None => fault("Balloon device not configured."),
                    Some(b) => {
                        if segments.len() == 2
                            && b["stats_polling_interval_s"].as_u64().unwrap_or(0) == 0
                        {
                            return fault("Statistics for the balloon device are not enabled");
                        }
                        if let Value::Object(update) = body_obj {
                            for (k, v) in update {
                                b[k] = v;
                            }
                        }
                        OK
                    }
                }
            }
            ("GET", ["balloon"]) => match &self.balloon {
                None => fault("Balloon device not configured."),
                Some(b) => (StatusCode::OK, Some(b.clone())),
            },
            ("GET", ["balloon", "statistics"]) => match &self.balloon {
                Some(b) if b["stats_polling_interval_s"].as_u64().unwrap_or(0) > 0 => {
                    let mib = b["amount_mib"].as_u64().unwrap_or(0);
                    (
                        StatusCode::OK,
                        Some(
                            json!({"target_pages": mib * 256, "actual_pages": mib * 256, "target_mib": mib, "actual_mib": mib, "free_memory": 1u64 << 26}),
                        ),
                    )
                }
                Some(_) => fault("Statistics for the balloon device are not enabled"),
                None => fault("Balloon device not configured."),
            },
            ("PUT", ["mmds"]) => {
                self.mmds = Some(body_obj);
                OK
            }
            ("PATCH", ["mmds"]) => match &mut self.mmds {
                None => fault("The MMDS data store is not initialized."),
                Some(m) => {
                    merge_patch(m, body_obj);
                    OK
                }
            },
            ("GET", ["mmds"]) => match &self.mmds {
                None => (
                    StatusCode::NOT_FOUND,
                    Some(json!({"fault_message": "The MMDS data store content can not be found."})),
                ),
                Some(m) => (StatusCode::OK, Some(m.clone())),
            },
            ("PUT", ["metrics"]) => {
                self.metrics = true;
                OK
            }
            ("PUT", ["logger"]) => OK,
            ("PUT", ["actions"]) => match body_obj["action_type"].as_str() {
                Some("InstanceStart") => {
                    if started {
                        return fault("The microVM is already running.");
                    }
                    if !self.boot_source {
                        return fault("Start microvm error: Missing kernel configuration.");
                    }
                    let mib = self.machine["mem_size_mib"].as_u64().unwrap_or(128);
                    let mut memory = match Memory::new(mib) {
                        Ok(m) => m,
                        Err(e) => return fault(format!("Cannot allocate guest memory: {e}")),
                    };
                    memory.boot(&self.id);
                    memory.run();
                    self.memory = Some(memory);
                    self.run = Run::Running;
                    eprintln!(
                        "mock-firecracker {}: guest started (nothing is booted)",
                        self.id
                    );
                    OK
                }
                Some("SendCtrlAltDel") => {
                    if !started {
                        return fault(NOT_BEFORE_START);
                    }
                    // The guest reboots; with `reboot=k` Firecracker exits.
                    std::thread::spawn(|| {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        std::process::exit(0);
                    });
                    OK
                }
                Some("FlushMetrics") if self.metrics => OK,
                Some("FlushMetrics") => fault("The metrics system is not initialized."),
                _ => fault(format!(
                    "An error occurred when deserializing the json body of a request: unknown variant: {}",
                    body_obj["action_type"]
                )),
            },
            ("PATCH", ["vm"]) => {
                if !started {
                    return fault(NOT_BEFORE_START);
                }
                match body_obj["state"].as_str() {
                    Some("Paused") => self.run = Run::Paused,
                    Some("Resumed") => {
                        if self.run == Run::Paused
                            && let Some(m) = &mut self.memory
                        {
                            m.run();
                        }
                        self.run = Run::Running;
                    }
                    _ => return fault("unknown variant for state, expected `Paused` or `Resumed`"),
                }
                OK
            }
            ("PUT", ["snapshot", "create"]) => {
                if self.run != Run::Paused {
                    return fault(if started {
                        "Cannot create snapshot: the microVM is not paused."
                    } else {
                        NOT_BEFORE_START
                    });
                }
                let diff = body_obj["snapshot_type"].as_str() == Some("Diff");
                if diff && !self.track_dirty_pages {
                    return fault(
                        "Diff snapshots are not allowed on uVMs with dirty page tracking disabled.",
                    );
                }
                let (state_path, mem_path) = (
                    body_obj["snapshot_path"].as_str().unwrap_or(""),
                    body_obj["mem_file_path"].as_str().unwrap_or(""),
                );
                let Some(memory) = &mut self.memory else {
                    return fault("Cannot create snapshot: no guest memory.");
                };
                let saved = memory
                    .save(std::path::Path::new(mem_path), diff)
                    .and_then(|()| memory.digest());
                let digest = match saved {
                    Ok(d) => d,
                    Err(e) => return fault(format!("Cannot create snapshot: {e}")),
                };
                let vmstate = json!({
                    "mock_firecracker_vmstate": {
                        "mem_size_mib": memory.mib(),
                        "digest": digest.to_string(),
                        "generation": memory.generation,
                        "machine": self.machine,
                        "drives": self.drives,
                        "ifaces": self.ifaces,
                    }
                });
                if let Err(e) = std::fs::write(state_path, vmstate.to_string()) {
                    return fault(format!("Cannot create snapshot file {state_path}: {e}"));
                }
                OK
            }
            ("PUT", ["snapshot", "load"]) => {
                if started || self.configured {
                    return fault(
                        "Loading a microVM snapshot not allowed after configuring boot-specific resources.",
                    );
                }
                let snapshot = body_obj["snapshot_path"].as_str().unwrap_or("");
                if !std::path::Path::new(snapshot).is_file() {
                    return fault(format!(
                        "Load snapshot error: Cannot open snapshot file: No such file or directory (os error 2): {snapshot}"
                    ));
                }
                let backend = &body_obj["mem_backend"];
                let path = backend["backend_path"].as_str().unwrap_or("");
                let uffd = match backend["backend_type"].as_str() {
                    Some("File") if std::path::Path::new(path).is_file() => false,
                    Some("Uffd") if std::path::Path::new(path).exists() => true,
                    _ => {
                        return fault(format!(
                            "Load snapshot error: Cannot open the memory backend {path}: No such file or directory (os error 2)"
                        ));
                    }
                };
                if let Err(e) = self.restore(snapshot, path, uffd) {
                    return fault(format!("Load snapshot error: {e}"));
                }
                self.configured = true;
                self.track_dirty_pages = body_obj["track_dirty_pages"].as_bool() == Some(true);
                self.run = if body_obj["resume_vm"].as_bool() == Some(true) {
                    if let Some(m) = &mut self.memory {
                        m.run();
                    }
                    Run::Running
                } else {
                    Run::Paused
                };
                OK
            }
            _ => fault(format!(
                "Invalid request method and/or path: {method} {path}."
            )),
        }
    }
}

impl State {
    /// Loads the state file and the guest memory (from the memory file, or
    /// through the page server at `backend`), checked against the digest
    /// the snapshot recorded. A state file this stand-in did not write
    /// carries no memory: the guest gets fresh zeroed memory, unchecked,
    /// and a page server is only connected to.
    fn restore(&mut self, snapshot: &str, backend: &str, uffd: bool) -> Result<(), String> {
        let text = std::fs::read_to_string(snapshot).unwrap_or_default();
        let vmstate = serde_json::from_str::<Value>(&text)
            .ok()
            .map(|v| v["mock_firecracker_vmstate"].clone())
            .filter(Value::is_object);
        let Some(vmstate) = vmstate else {
            if uffd {
                std::os::unix::net::UnixStream::connect(backend)
                    .map_err(|e| format!("Cannot connect to {backend}: {e}"))?;
            }
            self.memory = Some(Memory::new(128).map_err(|e| e.to_string())?);
            return Ok(());
        };
        let mib = vmstate["mem_size_mib"].as_u64().unwrap_or(0);
        let digest = vmstate["digest"]
            .as_str()
            .and_then(|d| d.parse::<u64>().ok())
            .ok_or("the state file has no memory digest")?;
        let mut memory = Memory::new(mib).map_err(|e| format!("guest memory: {e}"))?;
        let backend = std::path::Path::new(backend);
        if uffd {
            memory.load_from_page_server(backend, digest, &self.id)?;
        } else {
            memory.load_file(backend, digest)?;
        }
        memory.generation = vmstate["generation"].as_u64().unwrap_or(0);
        let names = |key: &str| -> Vec<String> {
            vmstate[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        self.drives = names("drives");
        self.ifaces = names("ifaces");
        self.machine = vmstate["machine"].clone();
        self.memory = Some(memory);
        Ok(())
    }
}

/// RFC 7396 JSON merge patch.
fn merge_patch(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in p {
                if v.is_null() {
                    if let Some(t) = target.as_object_mut() {
                        t.remove(&k);
                    }
                } else {
                    merge_patch(&mut target[&k], v);
                }
            }
        }
        other => *target = other,
    }
}

async fn serve(
    state: Arc<Mutex<State>>,
    req: hyper::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let bytes = req.into_body().collect().await?.to_bytes();
    let body = if bytes.is_empty() {
        None
    } else {
        serde_json::from_slice::<Value>(&bytes).ok()
    };
    let (status, answer) = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = s.record.as_mut() {
            let line = json!({"method": method.as_str(), "path": path, "body": body.clone().unwrap_or(Value::Null)});
            let _ = writeln!(f, "{line}");
        }
        if !bytes.is_empty() && !matches!(body, Some(Value::Object(_))) {
            fault(
                "An error occurred when deserializing the json body of a request: expected a JSON object.",
            )
        } else {
            s.handle(&method, &path, body)
        }
    };
    let mut builder = Response::builder().status(status);
    let body = match answer {
        Some(v) => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    Ok(builder.body(Full::new(body)).unwrap_or_default())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse_args();
    let Some(api_sock) = args.api_sock else {
        eprintln!("mock-firecracker: --api-sock is required\n{HELP}");
        std::process::exit(2);
    };
    if args.ignore_sigterm {
        // SAFETY: installing SIG_IGN for SIGTERM has no handler code to run.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
    let listener = match UnixListener::bind(&api_sock) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "mock-firecracker: Failed to open the API socket at {}: {e}",
                api_sock.display()
            );
            std::process::exit(1);
        }
    };
    let record = args.record.map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap_or_else(|e| {
                eprintln!("mock-firecracker: cannot open {}: {e}", p.display());
                std::process::exit(1);
            })
    });
    let id = args.id.unwrap_or_else(|| "anonymous-instance".into());
    println!(
        "mock-firecracker {id}: API listening on {}",
        api_sock.display()
    );
    let state = Arc::new(Mutex::new(State {
        id,
        run: Run::NotStarted,
        configured: false,
        boot_source: false,
        machine: json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": false, "track_dirty_pages": false, "huge_pages": "None"}),
        drives: Vec::new(),
        ifaces: Vec::new(),
        mmds: None,
        balloon: None,
        metrics: false,
        record,
        memory: None,
        track_dirty_pages: false,
    }));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| serve(state.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
