//! Steps executed in a build capsule through its envd (the control plane is
//! an envd client, relayed by the capsule's agent): processes with their
//! output streamed into the build log, COPY through envd's `/files`, and
//! the small root scripts behind USER and WORKDIR.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use sqlx::PgPool;
use tokio::time::Instant;
use warren_api_types::status::LogStream;
use warren_proto::filesystem as fs;
use warren_proto::process as pr;

use crate::app::AppState;
use crate::db::builds::{Fence, FenceError};
use crate::db::hosts::HostConn;
use crate::envd_client::{EnvdClient, EnvdError, selector};
use warren_recipe::contents as archive;
use warren_recipe::plan::{Action, CopyItem, CopyKind, Ctx, Health, Target, sh_quote};

/// Output is written to the log at least this often while a step runs.
const FLUSH_EVERY: Duration = Duration::from_millis(300);
/// ... or when this much is waiting.
const FLUSH_BYTES: usize = 32 << 10;
/// Limit of the small scripts behind USER, WORKDIR and COPY.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Uploads of one COPY in flight at once.
const UPLOADS: usize = 4;

/// Why a step did not complete.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The step failed; the message is for the user.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Fence(#[from] FenceError),
}

impl From<EnvdError> for StepError {
    fn from(e: EnvdError) -> Self {
        Self::Failed(e.to_string())
    }
}

/// The build log of one build, written under its fence.
#[derive(Debug, Clone)]
pub struct Log {
    pub db: PgPool,
    pub fence: Fence,
}

impl Log {
    /// A line of the worker's own.
    pub async fn system(&self, step: Option<usize>, line: &str) -> Result<(), FenceError> {
        self.fence
            .log(&self.db, step, LogStream::System, &format!("{line}\n"))
            .await
    }
}

/// Collects a process's output and writes it to the log in chunks, never
/// cutting a UTF-8 character.
struct Output<'a> {
    log: &'a Log,
    step: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    last: Instant,
}

impl<'a> Output<'a> {
    fn new(log: &'a Log, step: usize) -> Self {
        Self {
            log,
            step,
            stdout: Vec::new(),
            stderr: Vec::new(),
            last: Instant::now(),
        }
    }

    async fn push(&mut self, stream: LogStream, data: &[u8]) -> Result<(), FenceError> {
        match stream {
            LogStream::Stderr => self.stderr.extend_from_slice(data),
            _ => self.stdout.extend_from_slice(data),
        }
        if self.stdout.len() + self.stderr.len() >= FLUSH_BYTES
            || self.last.elapsed() >= FLUSH_EVERY
        {
            self.flush(false).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, all: bool) -> Result<(), FenceError> {
        self.last = Instant::now();
        for (name, buf) in [
            (LogStream::Stdout, &mut self.stdout),
            (LogStream::Stderr, &mut self.stderr),
        ] {
            let text = take_text(buf, all);
            if !text.is_empty() {
                self.log
                    .fence
                    .log(&self.log.db, Some(self.step), name, &text)
                    .await?;
            }
        }
        Ok(())
    }
}

/// The complete UTF-8 text at the head of `buf` (all of it, lossily, when
/// `all`), removed from `buf`.
fn take_text(buf: &mut Vec<u8>, all: bool) -> String {
    let valid = match std::str::from_utf8(buf) {
        Ok(_) => buf.len(),
        // An incomplete character at the end waits for its rest.
        Err(e) if e.error_len().is_none() && !all => e.valid_up_to(),
        Err(_) => buf.len(),
    };
    let head: Vec<u8> = buf.drain(..valid).collect();
    String::from_utf8_lossy(&head).into_owned()
}

/// A build capsule: where the steps run.
#[derive(Debug, Clone)]
pub struct Capsule {
    pub app: AppState,
    pub host: HostConn,
    pub id: String,
}

impl Capsule {
    fn envd(&self, user: &str) -> Result<EnvdClient, EnvdError> {
        self.app.envd(&self.host, &self.id, user)
    }

    /// Starts `argv` as `user` in `ctx`; the stream and the pid.
    async fn spawn(
        &self,
        user: &str,
        argv: &[String],
        ctx: &Ctx,
        tag: Option<String>,
    ) -> Result<
        (
            EnvdClient,
            warren_proto::connect::MessageStream<pr::StartResponse>,
        ),
        StepError,
    > {
        let (cmd, args) = argv
            .split_first()
            .ok_or_else(|| StepError::Failed("empty command".into()))?;
        let envd = self.envd(user)?;
        let req = pr::StartRequest {
            process: Some(pr::ProcessConfig {
                cmd: cmd.clone(),
                args: args.to_vec(),
                envs: ctx.env.clone().into_iter().collect(),
                cwd: Some(ctx.workdir.clone()),
            }),
            pty: None,
            tag,
            stdin: Some(false),
        };
        let stream = envd
            .start(req)
            .await
            .map_err(|e| StepError::Failed(format!("starting the command: {}", e.message)))?;
        Ok((envd, stream))
    }

    /// Runs `argv` as `ctx.user` to its end, its output going to step
    /// `step`'s log; its exit code. Past `timeout` it is killed and the step
    /// fails.
    pub async fn run(
        &self,
        log: &Log,
        step: usize,
        argv: &[String],
        ctx: &Ctx,
        timeout: Duration,
    ) -> Result<i32, StepError> {
        let (envd, mut stream) = self.spawn(&ctx.user, argv, ctx, None).await?;
        let mut out = Output::new(log, step);
        let mut pid: Option<u32> = None;
        let deadline = Instant::now() + timeout;
        let code = loop {
            let item = tokio::select! {
                item = stream.next() => item,
                () = tokio::time::sleep_until(deadline) => {
                    out.flush(true).await?;
                    if let Some(pid) = pid {
                        let _ = envd.signal(selector(&pid.to_string()), pr::Signal::Sigkill).await;
                    }
                    return Err(StepError::Failed(format!(
                        "timed out after {}s and was killed",
                        timeout.as_secs()
                    )));
                }
            };
            let ev = match item {
                Some(Ok(msg)) => msg.event.and_then(|e| e.event),
                Some(Err(e)) => {
                    out.flush(true).await?;
                    return Err(StepError::Failed(format!("envd: {}", e.message)));
                }
                None => {
                    out.flush(true).await?;
                    return Err(StepError::Failed(
                        "envd closed the stream before the command ended".into(),
                    ));
                }
            };
            use pr::process_event::Event;
            use pr::process_event::data_event::Output as Out;
            match ev {
                Some(Event::Start(s)) => pid = Some(s.pid),
                Some(Event::Data(d)) => match d.output {
                    Some(Out::Stdout(b)) | Some(Out::Pty(b)) => {
                        out.push(LogStream::Stdout, &b).await?
                    }
                    Some(Out::Stderr(b)) => out.push(LogStream::Stderr, &b).await?,
                    None => {}
                },
                Some(Event::End(e)) => break e.exit_code,
                _ => {}
            }
        };
        out.flush(true).await?;
        Ok(code)
    }

    /// [`Self::run`], failing the step on a non-zero exit.
    async fn run_ok(
        &self,
        log: &Log,
        step: usize,
        argv: &[String],
        ctx: &Ctx,
        timeout: Duration,
    ) -> Result<(), StepError> {
        match self.run(log, step, argv, ctx, timeout).await? {
            0 => Ok(()),
            code => Err(StepError::Failed(format!("exited with code {code}"))),
        }
    }

    /// A `/bin/sh` script run as root with positional `args`.
    async fn script(
        &self,
        log: &Log,
        step: usize,
        script: &str,
        args: &[&str],
    ) -> Result<(), StepError> {
        let mut argv: Vec<String> = vec!["/bin/sh".into(), "-c".into(), script.into(), "sh".into()];
        argv.extend(args.iter().map(|a| a.to_string()));
        let ctx = Ctx {
            user: "root".into(),
            env: Default::default(),
            workdir: "/".into(),
        };
        self.run_ok(log, step, &argv, &ctx, SCRIPT_TIMEOUT).await
    }

    /// Runs one step's action (COPY reads its files from `archive`).
    pub async fn step(
        &self,
        log: &Log,
        idx: usize,
        action: &Action,
        ctx: &Ctx,
        archive: &[u8],
        copy_cap: u64,
    ) -> Result<(), StepError> {
        match action {
            Action::Run { argv, timeout } => self.run_ok(log, idx, argv, ctx, *timeout).await,
            Action::User { name } => self.script(log, idx, USER_SCRIPT, &[name]).await,
            Action::Workdir { path } => {
                self.script(log, idx, WORKDIR_SCRIPT, &[path, &ctx.user])
                    .await
            }
            Action::Copy { items } => self.copy(log, idx, items, ctx, archive, copy_cap).await,
            Action::Start { argv } => self.start(log, idx, argv, ctx).await,
            Action::Env | Action::Healthcheck => Ok(()),
        }
    }

    /// COPY: each file streamed to its target through envd's `/files` as
    /// the current user (who then owns it; envd makes missing parent
    /// directories theirs too), then executable bits and symlinks set.
    async fn copy(
        &self,
        log: &Log,
        idx: usize,
        items: &[CopyItem],
        ctx: &Ctx,
        archive_bytes: &[u8],
        cap: u64,
    ) -> Result<(), StepError> {
        let wanted: BTreeSet<String> = items
            .iter()
            .filter_map(|i| match &i.kind {
                CopyKind::File { content, .. } => Some(content.clone()),
                CopyKind::Symlink { .. } => None,
            })
            .collect();
        let contents = archive::read_files(archive_bytes, &wanted, cap)
            .map_err(|e| StepError::Failed(e.to_string()))?;
        let envd = self.envd(&ctx.user)?;
        let mut resolved = Vec::with_capacity(items.len());
        for item in items {
            resolved.push((item, target_path(&envd, item).await?));
        }
        // Owned, so the uploads borrow nothing while they run together.
        let files: Vec<(String, Bytes)> = resolved
            .iter()
            .filter_map(|(item, path)| match &item.kind {
                CopyKind::File { content, .. } => Some((
                    path.clone(),
                    contents.get(content).cloned().unwrap_or_default(),
                )),
                CopyKind::Symlink { .. } => None,
            })
            .collect();
        let mut uploads = futures::stream::iter(files.into_iter().map(|(path, data)| {
            let envd = envd.clone();
            async move {
                let body = futures::stream::once(async move { Ok(data) });
                envd.upload(&path, body)
                    .await
                    .map_err(|e| StepError::Failed(format!("writing {path}: {e}")))
            }
        }))
        .buffer_unordered(UPLOADS);
        while let Some(r) = uploads.next().await {
            r?;
        }
        drop(uploads);
        // One root script for what `/files` cannot do: modes and links.
        let mut fixups = Vec::new();
        for (item, path) in &resolved {
            match &item.kind {
                CopyKind::File {
                    executable: true, ..
                } => fixups.push(format!("chmod a+rx {}", sh_quote(path))),
                CopyKind::Symlink { target } => {
                    let parent = path.rsplit_once('/').map_or("/", |(p, _)| p);
                    let dir = sh_quote(if parent.is_empty() { "/" } else { parent });
                    fixups.push(format!(
                        "[ -d {dir} ] || {{ mkdir -p {dir} && chown \"$1\" {dir}; }}\n\
                         ln -sfn {t} {p} && chown -h \"$1\" {p}",
                        t = sh_quote(target),
                        p = sh_quote(path),
                    ));
                }
                CopyKind::File { .. } => {}
            }
        }
        if !fixups.is_empty() {
            let script = format!("set -e\n{}", fixups.join("\n"));
            self.script(log, idx, &script, &[&ctx.user]).await?;
        }
        log.system(Some(idx), &format!("copied {} entries", items.len()))
            .await?;
        Ok(())
    }

    /// START: the daemon is started and left running; its output keeps
    /// flowing into this step's log while the build goes on.
    async fn start(
        &self,
        log: &Log,
        idx: usize,
        argv: &[String],
        ctx: &Ctx,
    ) -> Result<(), StepError> {
        let tag = format!("build-start-{idx}");
        let (_, mut stream) = self.spawn(&ctx.user, argv, ctx, Some(tag)).await?;
        use pr::process_event::Event;
        loop {
            match stream.next().await {
                Some(Ok(msg)) => match msg.event.and_then(|e| e.event) {
                    Some(Event::Start(s)) => {
                        log.system(Some(idx), &format!("daemon started (pid {})", s.pid))
                            .await?;
                        break;
                    }
                    Some(Event::End(e)) => {
                        return Err(StepError::Failed(format!(
                            "the daemon ended at once (exit code {})",
                            e.exit_code
                        )));
                    }
                    _ => {}
                },
                Some(Err(e)) => return Err(StepError::Failed(format!("envd: {}", e.message))),
                None => return Err(StepError::Failed("envd closed the stream".into())),
            }
        }
        let log = log.clone();
        // envd keeps the process when this stream ends; the forwarder
        // ends with the capsule (or when the worker stops).
        tokio::spawn(async move {
            let mut out = Output::new(&log, idx);
            use pr::process_event::data_event::Output as Out;
            while let Some(Ok(msg)) = stream.next().await {
                let sent = match msg.event.and_then(|e| e.event) {
                    Some(Event::Data(d)) => match d.output {
                        Some(Out::Stdout(b)) | Some(Out::Pty(b)) => {
                            out.push(LogStream::Stdout, &b).await
                        }
                        Some(Out::Stderr(b)) => out.push(LogStream::Stderr, &b).await,
                        None => Ok(()),
                    },
                    Some(Event::End(e)) => {
                        let _ = out.flush(true).await;
                        let _ = log
                            .system(Some(idx), &format!("daemon exited (code {})", e.exit_code))
                            .await;
                        return;
                    }
                    _ => Ok(()),
                };
                if sent.is_err() {
                    return;
                }
            }
            let _ = out.flush(true).await;
        });
        Ok(())
    }

    /// Polls the health check: healthy at its first success; after the
    /// start period, `retries` failures in a row fail the build.
    pub async fn health(&self, log: &Log, idx: usize, h: &Health) -> Result<(), StepError> {
        let started = Instant::now();
        let mut failures = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.run(log, idx, &h.argv, &h.ctx, h.timeout).await;
            let why = match result {
                Ok(0) => {
                    log.system(Some(idx), &format!("healthy (check {attempt})"))
                        .await?;
                    return Ok(());
                }
                Ok(code) => format!("exit code {code}"),
                Err(StepError::Failed(m)) => m,
                Err(e) => return Err(e),
            };
            let counted = started.elapsed() >= h.start_period;
            if counted {
                failures += 1;
            }
            log.system(
                Some(idx),
                &format!(
                    "check {attempt} failed ({why}){}",
                    if counted {
                        format!(", {failures} of {}", h.retries)
                    } else {
                        " in the start period".into()
                    }
                ),
            )
            .await?;
            if failures >= h.retries {
                return Err(StepError::Failed(format!(
                    "unhealthy after {failures} failed checks"
                )));
            }
            tokio::time::sleep(h.interval).await;
        }
    }
}

/// Where `item` lands: a `PathOrInto` target that is an existing
/// directory gets the file inside it.
async fn target_path(envd: &EnvdClient, item: &CopyItem) -> Result<String, StepError> {
    match &item.target {
        Target::Path(p) => Ok(p.clone()),
        Target::PathOrInto(p) => {
            let is_dir = match envd.stat(p).await {
                Ok(Some(e)) => e.r#type == fs::FileType::Directory as i32,
                Ok(None) => false,
                Err(e) if e.code == warren_proto::connect::Code::NotFound => false,
                Err(e) => return Err(StepError::Failed(format!("stat {p}: {}", e.message))),
            };
            let name = item.source.rsplit('/').next().unwrap_or(&item.source);
            Ok(if is_dir {
                format!("{}/{name}", p.trim_end_matches('/'))
            } else {
                p.clone()
            })
        }
    }
}

/// USER: creates the user if missing (useradd; busybox adduser; else an
/// `/etc/passwd` entry of its own, for templates with neither, like
/// `tiny`) and gives it passwordless sudo.
const USER_SCRIPT: &str = r#"set -e
u=$1
if ! id "$u" >/dev/null 2>&1; then
    shell=/bin/sh; [ -x /bin/bash ] && shell=/bin/bash
    if command -v useradd >/dev/null 2>&1; then
        useradd --create-home --shell "$shell" "$u"
    elif command -v adduser >/dev/null 2>&1; then
        adduser -D -s "$shell" "$u"
    else
        uid=$(awk -F: '$3 >= 1000 && $3 < 60000 && $3 > m { m = $3 } END { print (m ? m + 1 : 1000) }' /etc/passwd)
        gid=$uid
        grep -q "^$u:" /etc/group 2>/dev/null || printf '%s:x:%s:\n' "$u" "$gid" >> /etc/group
        gid=$(awk -F: -v u="$u" '$1 == u { print $3 }' /etc/group)
        printf '%s:x:%s:%s::/home/%s:%s\n' "$u" "$uid" "$gid" "$u" "$shell" >> /etc/passwd
        mkdir -p "/home/$u"
        chown "$uid:$gid" "/home/$u"
    fi
    echo "created user $u"
fi
if [ "$u" != root ]; then
    mkdir -p /etc/sudoers.d
    printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$u" > "/etc/sudoers.d/90-warren-$u"
    chmod 0440 "/etc/sudoers.d/90-warren-$u"
fi
"#;

/// WORKDIR: creates the directory, owned by the current user, if missing.
const WORKDIR_SCRIPT: &str = r#"set -e
if [ ! -d "$1" ]; then
    mkdir -p -- "$1"
    chown -- "$2" "$1"
fi
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_text_waits_for_whole_characters() {
        let mut buf = "aé".as_bytes().to_vec();
        buf.pop(); // half of "é"
        assert_eq!(take_text(&mut buf, false), "a");
        assert_eq!(buf.len(), 1);
        buf.push(0xa9);
        assert_eq!(take_text(&mut buf, false), "é");
        let mut bad = vec![b'x', 0xff, b'y'];
        assert_eq!(take_text(&mut bad, false), "x\u{fffd}y");
        let mut cut = vec![b'x', 0xc3];
        assert_eq!(take_text(&mut cut, true), "x\u{fffd}");
    }

    /// The scripts are valid `/bin/sh` (checked by the host's shell).
    #[test]
    fn scripts_parse() {
        for s in [USER_SCRIPT, WORKDIR_SCRIPT] {
            let st = std::process::Command::new("/bin/sh")
                .args(["-n", "-c", s])
                .status()
                .unwrap();
            assert!(st.success(), "{s}");
        }
    }
}
