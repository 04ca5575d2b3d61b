//! envd's `process.Process` service: start, attach to, list, feed and signal
//! processes in the capsule.

mod output;
mod pty;
mod reaper;
mod registry;
mod spawn;

use std::{sync::Arc, time::Duration};

use futures_util::{StreamExt, stream};
use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use warren_proto::{
    connect::{Code, ConnectError, MessageStream, RequestContext},
    process::{
        CloseStdinRequest, CloseStdinResponse, ConnectRequest, ConnectResponse, ListRequest,
        ListResponse, ProcessEvent, ProcessInfo, ProcessSelector, ProcessService, SendInputRequest,
        SendInputResponse, SendSignalRequest, SendSignalResponse, Signal as ProtoSignal,
        StartRequest, StartResponse, StreamInputRequest, StreamInputResponse, UpdateRequest,
        UpdateResponse, process_event, process_input, process_selector, stream_input_request,
    },
};

use output::{Event, Output, Subscription};
pub use registry::Registry;
use registry::{InputError, Proc, Selector};

use crate::{auth, paths, state::Envd};

/// The default `PATH` when envd itself has none (it is a capsule's init).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Clients ask for keep-alive events with this header (seconds).
const KEEPALIVE_HEADER: &str = "keepalive-ping-interval";

/// The service, bound to envd's state.
#[derive(Clone, Debug)]
pub struct Service {
    envd: Arc<Envd>,
}

impl Service {
    pub fn new(envd: Arc<Envd>) -> Self {
        Self { envd }
    }

    fn find(&self, selector: Option<ProcessSelector>) -> Result<Arc<Proc>, ConnectError> {
        let selector = match selector.and_then(|s| s.selector) {
            Some(process_selector::Selector::Pid(pid)) => Selector::Pid(pid),
            Some(process_selector::Selector::Tag(tag)) => Selector::Tag(tag),
            None => {
                return Err(ConnectError::invalid_argument(
                    "process selector (pid or tag) is required",
                ));
            }
        };
        self.envd
            .processes
            .get(&selector)
            .ok_or_else(|| ConnectError::not_found(format!("{selector} not found")))
    }
}

fn input_error(e: InputError) -> ConnectError {
    let code = match e {
        InputError::Io { .. } => Code::Internal,
        _ => Code::FailedPrecondition,
    };
    ConnectError::new(code, e.to_string())
}

fn keepalive_interval(ctx: &RequestContext) -> Option<Duration> {
    ctx.headers
        .get(KEEPALIVE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

fn event(e: process_event::Event) -> ProcessEvent {
    ProcessEvent { event: Some(e) }
}

fn data_event(out: Output) -> ProcessEvent {
    use process_event::data_event::Output as O;
    let output = match out {
        Output::Stdout(b) => O::Stdout(b),
        Output::Stderr(b) => O::Stderr(b),
        Output::Pty(b) => O::Pty(b),
    };
    event(process_event::Event::Data(process_event::DataEvent {
        output: Some(output),
    }))
}

/// The event stream of an attached process: its start event, its output,
/// keep-alives when idle for `keepalive`, and its end event.
fn event_stream<T: warren_proto::connect::Message>(
    pid: u32,
    subscription: Subscription,
    keepalive: Option<Duration>,
    wrap: fn(ProcessEvent) -> T,
) -> MessageStream<T> {
    let start = event(process_event::Event::Start(process_event::StartEvent {
        pid,
    }));
    let head = stream::iter([Ok(wrap(start))]);
    let rest = match subscription {
        Subscription::Ended(end) => {
            stream::iter([Ok(wrap(event(process_event::Event::End(end))))]).boxed()
        }
        Subscription::Live(rx) => live_events(rx, keepalive).map(move |e| Ok(wrap(e))).boxed(),
    };
    Box::pin(head.chain(rest))
}

fn live_events(
    rx: mpsc::Receiver<Event>,
    keepalive: Option<Duration>,
) -> impl futures_util::Stream<Item = ProcessEvent> + Send {
    stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        let next = match keepalive {
            None => rx.recv().await,
            Some(every) => match tokio::time::timeout(every, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    let ka = event(process_event::Event::Keepalive(process_event::KeepAlive {}));
                    return Some((ka, Some(rx)));
                }
            },
        };
        match next {
            Some(Event::Data(out)) => Some((data_event(out), Some(rx))),
            Some(Event::End(end)) => Some((event(process_event::Event::End(end)), None)),
            // The process vanished without an end event: envd is stopping.
            None => None,
        }
    })
}

impl ProcessService for Service {
    async fn list(
        &self,
        _ctx: RequestContext,
        _req: ListRequest,
    ) -> Result<ListResponse, ConnectError> {
        let processes = self
            .envd
            .processes
            .list()
            .into_iter()
            .map(|p| ProcessInfo {
                config: Some(p.config.clone()),
                pid: p.pid,
                tag: p.tag.clone(),
            })
            .collect();
        Ok(ListResponse { processes })
    }

    async fn connect(
        &self,
        ctx: RequestContext,
        req: ConnectRequest,
    ) -> Result<MessageStream<ConnectResponse>, ConnectError> {
        let proc = self.find(req.process)?;
        let subscription = proc.fanout.subscribe();
        Ok(event_stream(
            proc.pid,
            subscription,
            keepalive_interval(&ctx),
            |e| ConnectResponse { event: Some(e) },
        ))
    }

    async fn start(
        &self,
        ctx: RequestContext,
        req: StartRequest,
    ) -> Result<MessageStream<StartResponse>, ConnectError> {
        let user = auth::rpc_user(&self.envd, &ctx.headers)?;
        let config = req
            .process
            .ok_or_else(|| ConnectError::invalid_argument("process config is required"))?;
        if config.cmd.is_empty() {
            return Err(ConnectError::invalid_argument("process cmd is required"));
        }
        let terminal = match &req.pty {
            None => None,
            Some(pty) => {
                let size = pty.size.unwrap_or_default();
                Some(pty::Size::new(size.cols, size.rows).ok_or_else(|| {
                    ConnectError::invalid_argument(format!(
                        "invalid PTY size {}x{}: columns and rows must be between 1 and 65535",
                        size.cols, size.rows
                    ))
                })?)
            }
        };
        let defaults = self.envd.defaults();
        let cwd = paths::resolve(
            config.cwd.as_deref().unwrap_or_default(),
            &user,
            defaults.workdir.as_deref(),
        );
        if !cwd.is_dir() {
            return Err(ConnectError::invalid_argument(format!(
                "cwd '{}' does not exist or is not a directory",
                cwd.display()
            )));
        }
        let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_owned());
        let mut env = vec![
            ("PATH".to_owned(), path),
            ("HOME".to_owned(), user.home.display().to_string()),
            ("USER".to_owned(), user.name.clone()),
            ("LOGNAME".to_owned(), user.name.clone()),
        ];
        // Later entries win: the defaults from /init, then the request's own.
        env.extend(defaults.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(config.envs.iter().map(|(k, v)| (k.clone(), v.clone())));
        let cmd = spawn::Command {
            program: config.cmd.clone(),
            args: config.args.clone(),
            env,
            cwd,
            user,
            terminal,
            stdin: req.stdin.unwrap_or(true),
        };
        let (proc, subscription) = self
            .envd
            .processes
            .start(&cmd, config, req.tag, ctx.deadline)
            .map_err(|e| {
                let code = match e.kind() {
                    std::io::ErrorKind::PermissionDenied => Code::PermissionDenied,
                    _ => Code::InvalidArgument,
                };
                ConnectError::new(
                    code,
                    format!("error starting process '{}': {e}", cmd.program),
                )
            })?;
        tracing::debug!(pid = proc.pid, cmd = %cmd.program, "process started");
        Ok(event_stream(
            proc.pid,
            subscription,
            keepalive_interval(&ctx),
            |e| StartResponse { event: Some(e) },
        ))
    }

    async fn update(
        &self,
        _ctx: RequestContext,
        req: UpdateRequest,
    ) -> Result<UpdateResponse, ConnectError> {
        let proc = self.find(req.process)?;
        if let Some(pty) = req.pty {
            let size = pty.size.unwrap_or_default();
            let size = pty::Size::new(size.cols, size.rows).ok_or_else(|| {
                ConnectError::invalid_argument(format!(
                    "invalid PTY size {}x{}: columns and rows must be between 1 and 65535",
                    size.cols, size.rows
                ))
            })?;
            proc.resize(size).map_err(input_error)?;
        }
        Ok(UpdateResponse {})
    }

    async fn stream_input(
        &self,
        _ctx: RequestContext,
        mut requests: MessageStream<StreamInputRequest>,
    ) -> Result<StreamInputResponse, ConnectError> {
        let mut proc = None;
        while let Some(req) = requests.next().await {
            match req?.event {
                Some(stream_input_request::Event::Start(start)) => {
                    proc = Some(self.find(start.process)?)
                }
                Some(stream_input_request::Event::Data(data)) => {
                    let proc = proc.as_ref().ok_or_else(|| {
                        ConnectError::invalid_argument(
                            "the first StreamInput message must be a start event",
                        )
                    })?;
                    write_input(proc, data.input.and_then(|i| i.input)).await?;
                }
                Some(stream_input_request::Event::Keepalive(_)) | None => {}
            }
        }
        Ok(StreamInputResponse {})
    }

    async fn send_input(
        &self,
        _ctx: RequestContext,
        req: SendInputRequest,
    ) -> Result<SendInputResponse, ConnectError> {
        let proc = self.find(req.process)?;
        write_input(&proc, req.input.and_then(|i| i.input)).await?;
        Ok(SendInputResponse {})
    }

    async fn send_signal(
        &self,
        _ctx: RequestContext,
        req: SendSignalRequest,
    ) -> Result<SendSignalResponse, ConnectError> {
        let proc = self.find(req.process)?;
        let signal = match ProtoSignal::try_from(req.signal) {
            Ok(ProtoSignal::Sigkill) => Signal::SIGKILL,
            Ok(ProtoSignal::Sigterm) => Signal::SIGTERM,
            _ => {
                return Err(ConnectError::invalid_argument(format!(
                    "unsupported signal {}: use SIGNAL_SIGTERM or SIGNAL_SIGKILL",
                    req.signal
                )));
            }
        };
        proc.signal(signal)
            .map_err(|e| ConnectError::internal(format!("signalling process {}: {e}", proc.pid)))?;
        Ok(SendSignalResponse {})
    }

    async fn close_stdin(
        &self,
        _ctx: RequestContext,
        req: CloseStdinRequest,
    ) -> Result<CloseStdinResponse, ConnectError> {
        let proc = self.find(req.process)?;
        proc.close_stdin().await.map_err(input_error)?;
        Ok(CloseStdinResponse {})
    }
}

async fn write_input(proc: &Proc, input: Option<process_input::Input>) -> Result<(), ConnectError> {
    match input {
        Some(process_input::Input::Stdin(data)) => proc.write_stdin(&data).await,
        Some(process_input::Input::Pty(data)) => proc.write_terminal(&data).await,
        None => {
            return Err(ConnectError::invalid_argument(
                "input (stdin or pty) is required",
            ));
        }
    }
    .map_err(input_error)
}
