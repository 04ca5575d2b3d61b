//! What runs in a capsule, through its envd (relayed by the capsule's
//! agent): commands (foreground with their output collected, or in the
//! background), the process list and signals, and files. A [`Session`] is
//! the caller's running capsule with an envd client acting as the
//! template's default user; the REST layer's WebSockets stream from it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use warren_api_types::files::{FileEntry, ListResponse};
use warren_api_types::process::{
    BackgroundExecResponse, ExecRequest, ExecResponse, ProcessEntry, ProcessList,
};
use warren_proto::connect::MessageStream;
use warren_proto::{filesystem as fs, process as pr};

use super::{CapsuleError, Result, get};
use crate::app::AppState;
use crate::auth::Principal;
use crate::db::{self, capsules::CapsuleRow, templates::TemplateRow};
use crate::envd_client::{EnvdClient, selector};
use crate::lifecycle;
use crate::transfer::BoxError;

/// Output a foreground exec keeps (per stream); the rest is dropped.
const MAX_OUTPUT: usize = 16 << 20;

/// A running capsule of the caller, ready for envd calls.
#[derive(Debug)]
pub struct Session {
    pub row: CapsuleRow,
    pub envd: EnvdClient,
    /// How a shell string runs here, e.g. `["/bin/sh", "-c"]`.
    pub shell: Vec<String>,
}

/// Opens the caller's running capsule `id` (which counts as activity).
pub async fn open(app: &AppState, p: &Principal, id: &str) -> Result<Session> {
    let row = get(app, p, id).await?;
    row.require_running()?;
    let host = lifecycle::host(app, row.host()?).await?;
    host.require_online()?;
    let tpl: Option<TemplateRow> = match &row.template_id {
        Some(id) => db::templates::by_id(&app.db, id).await?,
        None => None,
    };
    let user = tpl.as_ref().map_or("user", |t| t.default_user.as_str());
    let shell = tpl
        .as_ref()
        .map(TemplateRow::shell_argv)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| vec!["/bin/bash".into(), "-l".into(), "-c".into()]);
    let envd = app.envd(&host, &row.id, user)?;
    db::capsules::touch(&app.db, &row.id).await?;
    Ok(Session { row, envd, shell })
}

fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(CapsuleError::Invalid(msg.into()))
}

/// Checks a path argument (envd resolves it inside the capsule).
pub fn check_path(path: &str) -> Result<()> {
    if path.is_empty() {
        return invalid("path is required");
    }
    if path.len() > 4096 || path.contains('\0') {
        return invalid("path must be at most 4096 bytes without NUL");
    }
    Ok(())
}

pub fn check_env(envs: &HashMap<String, String>) -> Result<()> {
    if envs.len() > 256 {
        return invalid("at most 256 environment variables");
    }
    for (k, v) in envs {
        let ok = !k.is_empty()
            && k.len() <= 256
            && !k.contains('=')
            && !k.contains('\0')
            && !v.contains('\0')
            && v.len() <= 32 << 10;
        if !ok {
            return invalid(format!("invalid environment variable '{k}'"));
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && tag.parse::<u32>().is_err()
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        invalid("tag must be 1 to 64 of [A-Za-z0-9._-] and not a number")
    }
}

fn check_exec(req: &ExecRequest) -> Result<()> {
    if req.cmd.trim().is_empty() {
        return invalid("cmd is required");
    }
    if req.cmd.len() > 64 << 10 || req.cmd.contains('\0') {
        return invalid("cmd must be at most 64 KiB without NUL");
    }
    if req
        .args
        .as_ref()
        .is_some_and(|a| a.len() > 4096 || a.iter().any(|s| s.contains('\0')))
    {
        return invalid("args: at most 4096, without NUL");
    }
    if req.timeout_sec.is_some_and(|t| t == 0 || t > 24 * 3600) {
        return invalid("timeout_sec must be between 1 and 86400");
    }
    if let Some(tag) = &req.tag {
        check_tag(tag)?;
    }
    if let Some(cwd) = &req.cwd {
        check_path(cwd)?;
    }
    if let Some(e) = &req.envs {
        check_env(e)?;
    }
    Ok(())
}

/// A fresh process tag: `prefix-` and 8 hex digits.
pub fn new_tag(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// What [`exec`] did.
#[derive(Debug)]
pub enum Executed {
    Foreground(ExecResponse),
    Background(BackgroundExecResponse),
}

impl Session {
    /// `(cmd, args)` for a request: a bare command string runs through the
    /// template's shell; with `args` it runs as given.
    pub fn command(&self, cmd: &str, args: Option<Vec<String>>) -> (String, Vec<String>) {
        match args {
            Some(a) if !a.is_empty() => (cmd.to_string(), a),
            _ => {
                let mut argv = self.shell.clone();
                argv.push(cmd.to_string());
                let head = argv.remove(0);
                (head, argv)
            }
        }
    }

    /// Starts a command (its envs checked), streaming its events.
    pub async fn start(
        &self,
        cmd: &str,
        args: Option<Vec<String>>,
        envs: Option<HashMap<String, String>>,
        cwd: Option<String>,
        tag: Option<String>,
    ) -> Result<MessageStream<pr::StartResponse>> {
        if let Some(e) = &envs {
            check_env(e)?;
        }
        let (cmd, args) = self.command(cmd, args);
        let req = pr::StartRequest {
            process: Some(pr::ProcessConfig {
                cmd,
                args,
                envs: envs.unwrap_or_default(),
                cwd,
            }),
            pty: None,
            tag,
            stdin: Some(false),
        };
        Ok(self.envd.start(req).await?)
    }

    /// Starts `cmd` (default: the template's shell) in a terminal of
    /// `cols`×`rows`, tagged `tag`.
    pub async fn start_pty(
        &self,
        cmd: Option<String>,
        args: Vec<String>,
        mut envs: HashMap<String, String>,
        cwd: Option<String>,
        (cols, rows): (u32, u32),
        tag: &str,
    ) -> Result<MessageStream<pr::StartResponse>> {
        check_env(&envs)?;
        envs.entry("TERM".into())
            .or_insert_with(|| "xterm-256color".into());
        let cmd = cmd.filter(|c| !c.is_empty()).unwrap_or_else(|| {
            self.shell
                .first()
                .cloned()
                .unwrap_or_else(|| "/bin/sh".into())
        });
        let req = pr::StartRequest {
            process: Some(pr::ProcessConfig {
                cmd,
                args,
                envs,
                cwd,
            }),
            pty: Some(pr::Pty {
                size: Some(pr::pty::Size { cols, rows }),
            }),
            tag: Some(tag.to_string()),
            stdin: Some(true),
        };
        Ok(self.envd.start(req).await?)
    }

    /// Re-attaches to a running process by pid or tag.
    pub async fn connect(&self, sel: &str) -> Result<MessageStream<pr::ConnectResponse>> {
        Ok(self.envd.connect(selector(sel)).await?)
    }

    /// Signals a process by pid or tag.
    pub async fn signal(&self, sel: &str, signal: pr::Signal) -> Result<()> {
        Ok(self.envd.signal(selector(sel), signal).await?)
    }

    /// Keystrokes for the terminal of process `sel`.
    pub async fn pty_input(&self, sel: &str, data: Bytes) -> Result<()> {
        Ok(self.envd.send_pty_input(selector(sel), data).await?)
    }

    /// Resizes the terminal of process `sel`.
    pub async fn resize(&self, sel: &str, cols: u32, rows: u32) -> Result<()> {
        Ok(self.envd.resize_pty(selector(sel), cols, rows).await?)
    }

    /// Streams `data` into `path` inside the capsule.
    pub async fn upload<S>(&self, path: &str, data: S) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, BoxError>> + Send + 'static,
    {
        Ok(self.envd.upload(path, data).await?)
    }
}

/// The pid of a just-started process (its first event).
async fn await_start(stream: &mut MessageStream<pr::StartResponse>) -> Result<u32> {
    loop {
        match stream.next().await {
            Some(Ok(pr::StartResponse { event: Some(ev) })) => match ev.event {
                Some(pr::process_event::Event::Start(s)) => return Ok(s.pid),
                Some(pr::process_event::Event::End(e)) => {
                    return invalid(format!(
                        "process ended before starting: {}",
                        e.error.unwrap_or(e.status)
                    ));
                }
                _ => {}
            },
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(CapsuleError::Protocol(
                    "envd closed the stream before the process started".into(),
                ));
            }
        }
    }
}

fn append(buf: &mut Vec<u8>, b: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(buf.len());
    buf.extend_from_slice(&b[..b.len().min(room)]);
}

/// Runs a command in the caller's capsule `id`: to its end (its output
/// collected, killed past its time limit), or in the background.
pub async fn exec(app: &AppState, p: &Principal, id: &str, req: ExecRequest) -> Result<Executed> {
    check_exec(&req)?;
    let s = open(app, p, id).await?;
    let shown = req.cmd.clone();
    if req.background {
        let tag = req.tag.unwrap_or_else(|| new_tag("proc"));
        let mut stream = s
            .start(&req.cmd, req.args, req.envs, req.cwd, Some(tag.clone()))
            .await?;
        let pid = await_start(&mut stream).await?;
        // envd keeps the process when this stream closes; it is re-attached
        // through processes/{pid|tag}/stream.
        drop(stream);
        return Ok(Executed::Background(BackgroundExecResponse {
            sandbox_id: id.to_string(),
            cmd: shown,
            pid,
            tag,
        }));
    }
    let timeout = Duration::from_secs(u64::from(req.timeout_sec.unwrap_or(30)));
    let started = Instant::now();
    let mut stream = s.start(&req.cmd, req.args, req.envs, req.cwd, None).await?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut pid = None;
    let collect = async {
        use pr::process_event::Event;
        use pr::process_event::data_event::Output;
        while let Some(item) = stream.next().await {
            match item?.event.and_then(|e| e.event) {
                Some(Event::Start(st)) => pid = Some(st.pid),
                Some(Event::Data(d)) => match d.output {
                    Some(Output::Stdout(b)) => append(&mut out, &b),
                    Some(Output::Stderr(b)) => append(&mut err, &b),
                    _ => {}
                },
                Some(Event::End(e)) => return Ok(e.exit_code),
                _ => {}
            }
        }
        Err(CapsuleError::Protocol(
            "envd closed the stream before the process ended".into(),
        ))
    };
    let exit_code = match tokio::time::timeout(timeout, collect).await {
        Ok(r) => r?,
        Err(_) => {
            if let Some(pid) = pid {
                let _ = s.signal(&pid.to_string(), pr::Signal::Sigkill).await;
            }
            return Err(CapsuleError::Timeout(format!(
                "command did not finish within {}s and was killed",
                timeout.as_secs()
            )));
        }
    };
    let (stdout, stderr, encoding) = match (String::from_utf8(out), String::from_utf8(err)) {
        (Ok(o), Ok(e)) => (o, e, "utf-8"),
        (o, e) => {
            let b64 = base64::engine::general_purpose::STANDARD;
            let raw = |r: std::result::Result<String, std::string::FromUtf8Error>| match r {
                Ok(s) => s.into_bytes(),
                Err(e) => e.into_bytes(),
            };
            (b64.encode(raw(o)), b64.encode(raw(e)), "base64")
        }
    };
    Ok(Executed::Foreground(ExecResponse {
        sandbox_id: id.to_string(),
        cmd: shown,
        stdout,
        stderr,
        exit_code,
        duration_ms: started.elapsed().as_millis() as u64,
        encoding: encoding.into(),
    }))
}

/// Processes envd started (background ones, PTYs, the template's).
pub async fn processes(app: &AppState, p: &Principal, id: &str) -> Result<ProcessList> {
    let s = open(app, p, id).await?;
    let procs = s.envd.list().await?;
    Ok(ProcessList {
        processes: procs
            .into_iter()
            .map(|p| {
                let cfg = p.config.unwrap_or_default();
                ProcessEntry {
                    pid: p.pid,
                    tag: p.tag,
                    cmd: cfg.cmd,
                    args: cfg.args,
                }
            })
            .collect(),
    })
}

/// Signals a process by pid or tag: SIGKILL, or `SIGTERM` when asked.
pub async fn kill(
    app: &AppState,
    p: &Principal,
    id: &str,
    sel: &str,
    signal: Option<&str>,
) -> Result<()> {
    let signal = match signal {
        None | Some("SIGKILL") => pr::Signal::Sigkill,
        Some("SIGTERM") => pr::Signal::Sigterm,
        Some(_) => return invalid("signal must be SIGKILL or SIGTERM"),
    };
    if sel.parse::<u32>().is_err() {
        check_tag(sel)?;
    }
    open(app, p, id).await?.signal(sel, signal).await
}

fn entry(e: fs::EntryInfo) -> FileEntry {
    let kind = match fs::FileType::try_from(e.r#type).unwrap_or(fs::FileType::Unspecified) {
        fs::FileType::Directory => "directory",
        fs::FileType::Symlink => "symlink",
        _ if e.is_symlink => "symlink",
        _ => "file",
    };
    FileEntry {
        name: e.name,
        path: e.path,
        kind: kind.into(),
        size: e.size,
        mode: e.mode,
        permissions: e.permissions,
        owner: e.owner,
        group: e.group,
        modified_at: e.modified_time.map_or(0, |t| t.seconds),
        symlink_target: e.symlink_target,
    }
}

/// Lists a directory, `depth` levels deep (1 to 32; default 1).
pub async fn list_dir(
    app: &AppState,
    p: &Principal,
    id: &str,
    path: &str,
    depth: Option<u32>,
) -> Result<ListResponse> {
    check_path(path)?;
    let depth = depth.unwrap_or(1).max(1);
    if depth > 32 {
        return invalid("depth must be at most 32");
    }
    let entries = open(app, p, id).await?.envd.list_dir(path, depth).await?;
    Ok(ListResponse {
        entries: entries.into_iter().map(entry).collect(),
    })
}

/// Creates a directory and its parents; fails (envd's `already_exists`)
/// if it is there.
pub async fn make_dir(app: &AppState, p: &Principal, id: &str, path: &str) -> Result<FileEntry> {
    check_path(path)?;
    let s = open(app, p, id).await?;
    let info = match s.envd.make_dir(path).await? {
        Some(e) => e,
        None => s
            .envd
            .stat(path)
            .await?
            .ok_or_else(|| CapsuleError::Protocol("envd returned no entry".into()))?,
    };
    Ok(entry(info))
}

/// Renames or moves a file or directory (the destination must not exist).
pub async fn rename(
    app: &AppState,
    p: &Principal,
    id: &str,
    from: &str,
    to: &str,
) -> Result<FileEntry> {
    check_path(from)?;
    check_path(to)?;
    let s = open(app, p, id).await?;
    let moved = s
        .envd
        .rename(from, to)
        .await?
        .ok_or_else(|| CapsuleError::Protocol("envd returned no entry".into()))?;
    Ok(entry(moved))
}

/// Removes a file or a directory tree.
pub async fn remove(app: &AppState, p: &Principal, id: &str, path: &str) -> Result<()> {
    check_path(path)?;
    Ok(open(app, p, id).await?.envd.remove(path).await?)
}

/// Streams a file out of the capsule.
pub async fn download(
    app: &AppState,
    p: &Principal,
    id: &str,
    path: &str,
) -> Result<hyper::body::Incoming> {
    check_path(path)?;
    Ok(open(app, p, id).await?.envd.download(path).await?)
}
