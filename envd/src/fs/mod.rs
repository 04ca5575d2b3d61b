//! envd's `filesystem.Filesystem` service: stat, list, create, move and
//! remove paths, and watch directories (streaming or polled).

mod entry;
mod watch;

use std::{
    collections::HashMap,
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::stream;
use tokio::sync::mpsc;
use warren_proto::{
    connect::{Code, ConnectError, MessageStream, RequestContext},
    filesystem::{
        CreateWatcherRequest, CreateWatcherResponse, EntryInfo, FilesystemEvent, FilesystemService,
        GetWatcherEventsRequest, GetWatcherEventsResponse, ListDirRequest, ListDirResponse,
        MakeDirRequest, MakeDirResponse, MoveRequest, MoveResponse, RemoveRequest, RemoveResponse,
        RemoveWatcherRequest, RemoveWatcherResponse, StatRequest, StatResponse, WatchDirRequest,
        WatchDirResponse, watch_dir_response,
    },
};

pub use entry::{METADATA_XATTR_PREFIX, entry_info};

use crate::{auth, paths, state::Envd, users::User};

/// Polled watchers keep at most this many undelivered events.
const MAX_BUFFERED_EVENTS: usize = 10_000;

/// Maps an I/O error on `path` to a Connect error.
pub fn io_error(path: &Path, e: &std::io::Error) -> ConnectError {
    let code = match e.kind() {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::NotADirectory | ErrorKind::IsADirectory | ErrorKind::InvalidInput => {
            Code::InvalidArgument
        }
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Code::ResourceExhausted,
        _ => Code::Internal,
    };
    ConnectError::new(code, format!("{}: {e}", path.display()))
}

/// Creates `dir` and its missing parents, owned by `user`.
pub fn ensure_dirs(dir: &Path, user: &User) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(p) = cur {
        if p.exists() {
            break;
        }
        missing.push(p.to_path_buf());
        cur = p.parent();
    }
    for p in missing.iter().rev() {
        match std::fs::create_dir(p) {
            Ok(()) => {
                std::os::unix::fs::chown(p, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Polled watchers (`CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher`).
#[derive(Debug, Default)]
pub struct Watchers {
    watchers: Mutex<HashMap<String, PollWatcher>>,
}

/// A polled watcher: the events not fetched yet, and the task collecting
/// them (stopped when the watcher is removed).
#[derive(Debug)]
struct PollWatcher {
    events: Arc<Mutex<Vec<FilesystemEvent>>>,
    task: tokio::task::AbortHandle,
}

impl Drop for PollWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn random_id() -> String {
    let mut bytes = [0u8; 12];
    // /dev/urandom never fails to read once opened; a failure leaves zeros
    // and the id is still unique enough thanks to the counter below.
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}{n:x}")
}

/// The service, bound to envd's state.
#[derive(Clone, Debug)]
pub struct Service {
    envd: Arc<Envd>,
}

impl Service {
    pub fn new(envd: Arc<Envd>) -> Self {
        Self { envd }
    }

    fn user_and_path(
        &self,
        ctx: &RequestContext,
        path: &str,
    ) -> Result<(User, PathBuf), ConnectError> {
        let user = auth::rpc_user(&self.envd, &ctx.headers)?;
        let workdir = self.envd.defaults().workdir;
        let resolved = paths::resolve(path, &user, workdir.as_deref());
        Ok((user, resolved))
    }

    fn entry(&self, path: &Path) -> Result<EntryInfo, ConnectError> {
        entry_info(path, &self.envd.accounts).map_err(|e| io_error(path, &e))
    }

    /// Resolves a directory to watch and checks it may be watched.
    fn watch_target(
        &self,
        ctx: &RequestContext,
        path: &str,
        allow_network: bool,
    ) -> Result<PathBuf, ConnectError> {
        let (_, dir) = self.user_and_path(ctx, path)?;
        let meta = std::fs::metadata(&dir).map_err(|e| io_error(&dir, &e))?;
        if !meta.is_dir() {
            return Err(ConnectError::invalid_argument(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        if !allow_network && on_network_mount(&dir) {
            return Err(ConnectError::new(
                Code::FailedPrecondition,
                format!(
                    "{} is on a network mount: set allow_network_mounts to watch it",
                    dir.display()
                ),
            ));
        }
        Ok(dir)
    }

    fn to_event(&self, root: &Path, change: watch::Change, include_entry: bool) -> FilesystemEvent {
        let entry = include_entry
            .then(|| entry_info(&root.join(&change.name), &self.envd.accounts).ok())
            .flatten();
        FilesystemEvent {
            name: change.name,
            r#type: change.kind as i32,
            entry,
        }
    }
}

fn on_network_mount(path: &Path) -> bool {
    const NETWORK: [i64; 5] = [0x6969, 0xFF534D42, 0x517B, 0xFE534D42, 0x65735546];
    nix::sys::statfs::statfs(path)
        .map(|s| NETWORK.contains(&{ s.filesystem_type().0 }))
        .unwrap_or(false)
}

/// Walks `dir` depth-first in name order, up to `depth` levels, without
/// following symlinks; entries are reported under `shown` (the path the
/// caller asked for).
fn walk(
    dir: &Path,
    shown: &Path,
    depth: u32,
    envd: &Envd,
    out: &mut Vec<EntryInfo>,
) -> Result<(), ConnectError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io_error(dir, &e))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let shown_path = shown.join(e.file_name());
        let mut info = match entry_info(&e.path(), &envd.accounts) {
            Ok(info) => info,
            // Vanished while listing.
            Err(err) if err.kind() == ErrorKind::NotFound => continue,
            Err(err) => return Err(io_error(&e.path(), &err)),
        };
        info.path = shown_path.display().to_string();
        out.push(info);
        if depth > 1 && e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&e.path(), &shown_path, depth - 1, envd, out)?;
        }
    }
    Ok(())
}

/// Moves `from` to `to`, copying across filesystems.
fn move_path(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy_tree(from, to)?;
            let meta = std::fs::symlink_metadata(from)?;
            if meta.is_dir() {
                std::fs::remove_dir_all(from)
            } else {
                std::fs::remove_file(from)
            }
        }
        other => other,
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
    } else if meta.is_dir() {
        std::fs::create_dir(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        std::fs::set_permissions(to, meta.permissions())?;
    } else {
        std::fs::copy(from, to)?;
    }
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
}

impl FilesystemService for Service {
    async fn stat(
        &self,
        ctx: RequestContext,
        req: StatRequest,
    ) -> Result<StatResponse, ConnectError> {
        let (_, path) = self.user_and_path(&ctx, &req.path)?;
        Ok(StatResponse {
            entry: Some(self.entry(&path)?),
        })
    }

    async fn make_dir(
        &self,
        ctx: RequestContext,
        req: MakeDirRequest,
    ) -> Result<MakeDirResponse, ConnectError> {
        let (user, path) = self.user_and_path(&ctx, &req.path)?;
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {
                return Err(ConnectError::new(
                    Code::AlreadyExists,
                    format!("directory already exists: {}", path.display()),
                ));
            }
            Ok(_) => {
                return Err(ConnectError::invalid_argument(format!(
                    "path already exists but it is not a directory: {}",
                    path.display()
                )));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path, &e)),
        }
        ensure_dirs(&path, &user).map_err(|e| io_error(&path, &e))?;
        Ok(MakeDirResponse {
            entry: Some(self.entry(&path)?),
        })
    }

    async fn r#move(
        &self,
        ctx: RequestContext,
        req: MoveRequest,
    ) -> Result<MoveResponse, ConnectError> {
        let (user, from) = self.user_and_path(&ctx, &req.source)?;
        let workdir = self.envd.defaults().workdir;
        let to = paths::resolve(&req.destination, &user, workdir.as_deref());
        std::fs::symlink_metadata(&from).map_err(|e| io_error(&from, &e))?;
        if let Some(parent) = to.parent() {
            ensure_dirs(parent, &user).map_err(|e| io_error(parent, &e))?;
        }
        move_path(&from, &to).map_err(|e| io_error(&to, &e))?;
        Ok(MoveResponse {
            entry: Some(self.entry(&to)?),
        })
    }

    async fn list_dir(
        &self,
        ctx: RequestContext,
        req: ListDirRequest,
    ) -> Result<ListDirResponse, ConnectError> {
        let (_, path) = self.user_and_path(&ctx, &req.path)?;
        let resolved = std::fs::canonicalize(&path).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => ConnectError::new(
                Code::FailedPrecondition,
                format!("cyclic symlink at {}", path.display()),
            ),
            _ => io_error(&path, &e),
        })?;
        if !resolved.is_dir() {
            return Err(ConnectError::invalid_argument(format!(
                "path is not a directory: {}",
                path.display()
            )));
        }
        let depth = req.depth.max(1);
        let mut entries = Vec::new();
        walk(&resolved, &path, depth, &self.envd, &mut entries)?;
        Ok(ListDirResponse { entries })
    }

    async fn remove(
        &self,
        ctx: RequestContext,
        req: RemoveRequest,
    ) -> Result<RemoveResponse, ConnectError> {
        let (_, path) = self.user_and_path(&ctx, &req.path)?;
        if path == Path::new("/") {
            return Err(ConnectError::invalid_argument("refusing to remove /"));
        }
        let result = match std::fs::symlink_metadata(&path) {
            // Removing what is not there succeeds, as in E2B's envd.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
        };
        result.map_err(|e| io_error(&path, &e))?;
        Ok(RemoveResponse {})
    }

    async fn watch_dir(
        &self,
        ctx: RequestContext,
        req: WatchDirRequest,
    ) -> Result<MessageStream<WatchDirResponse>, ConnectError> {
        let dir = self.watch_target(&ctx, &req.path, req.allow_network_mounts)?;
        let changes = watch::watch(&dir, req.recursive).map_err(|e| io_error(&dir, &e))?;
        let keepalive = ctx
            .headers
            .get("keepalive-ping-interval")
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let start = WatchDirResponse {
            event: Some(watch_dir_response::Event::Start(
                watch_dir_response::StartEvent {},
            )),
        };
        let svc = self.clone();
        let include = req.include_entry;
        let events = stream::unfold(
            changes,
            move |mut changes: mpsc::Receiver<watch::Change>| {
                let svc = svc.clone();
                let dir = dir.clone();
                async move {
                    let next = match keepalive {
                        None => changes.recv().await,
                        Some(every) => match tokio::time::timeout(every, changes.recv()).await {
                            Ok(next) => next,
                            Err(_) => {
                                let ka = WatchDirResponse {
                                    event: Some(watch_dir_response::Event::Keepalive(
                                        watch_dir_response::KeepAlive {},
                                    )),
                                };
                                return Some((Ok(ka), changes));
                            }
                        },
                    };
                    let change = next?;
                    let event = svc.to_event(&dir, change, include);
                    let resp = WatchDirResponse {
                        event: Some(watch_dir_response::Event::Filesystem(event)),
                    };
                    Some((Ok(resp), changes))
                }
            },
        );
        Ok(Box::pin(futures_util::StreamExt::chain(
            stream::iter([Ok(start)]),
            events,
        )))
    }

    async fn create_watcher(
        &self,
        ctx: RequestContext,
        req: CreateWatcherRequest,
    ) -> Result<CreateWatcherResponse, ConnectError> {
        let dir = self.watch_target(&ctx, &req.path, req.allow_network_mounts)?;
        let mut changes = watch::watch(&dir, req.recursive).map_err(|e| io_error(&dir, &e))?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let svc = self.clone();
        let include = req.include_entry;
        let sink = events.clone();
        let task = tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                let event = svc.to_event(&dir, change, include);
                let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
                if sink.len() < MAX_BUFFERED_EVENTS {
                    sink.push(event);
                }
            }
        })
        .abort_handle();
        let id = random_id();
        self.envd
            .watchers
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), PollWatcher { events, task });
        Ok(CreateWatcherResponse { watcher_id: id })
    }

    async fn get_watcher_events(
        &self,
        _ctx: RequestContext,
        req: GetWatcherEventsRequest,
    ) -> Result<GetWatcherEventsResponse, ConnectError> {
        let watchers = self
            .envd
            .watchers
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let watcher = watchers.get(&req.watcher_id).ok_or_else(|| {
            ConnectError::not_found(format!("watcher {:?} not found", req.watcher_id))
        })?;
        let events = std::mem::take(&mut *watcher.events.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(GetWatcherEventsResponse { events })
    }

    async fn remove_watcher(
        &self,
        _ctx: RequestContext,
        req: RemoveWatcherRequest,
    ) -> Result<RemoveWatcherResponse, ConnectError> {
        self.envd
            .watchers
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&req.watcher_id)
            .ok_or_else(|| {
                ConnectError::not_found(format!("watcher {:?} not found", req.watcher_id))
            })?;
        Ok(RemoveWatcherResponse {})
    }
}
