//! Directory watches over inotify, optionally recursive: new subdirectories
//! are watched as they appear. Events carry the path relative to the watched
//! directory, mapped to E2B's event types.

use std::{
    collections::HashMap,
    ffi::OsString,
    path::{Path, PathBuf},
};

use futures_util::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tokio::sync::mpsc;
use warren_proto::filesystem::EventType;

/// One change under the watched directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Relative to the watched directory.
    pub name: String,
    pub kind: EventType,
}

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MODIFY
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::DONT_FOLLOW
}

fn kind(mask: EventMask) -> Option<EventType> {
    if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
        Some(EventType::Create)
    } else if mask.contains(EventMask::MODIFY) {
        Some(EventType::Write)
    } else if mask.contains(EventMask::DELETE) {
        Some(EventType::Remove)
    } else if mask.contains(EventMask::MOVED_FROM) {
        Some(EventType::Rename)
    } else if mask.contains(EventMask::ATTRIB) {
        Some(EventType::Chmod)
    } else {
        None
    }
}

struct Watcher {
    inotify_watches: inotify::Watches,
    root: PathBuf,
    recursive: bool,
    dirs: HashMap<WatchDescriptor, PathBuf>,
}

impl Watcher {
    /// Watches `rel` (relative to the root) and, when recursive, every
    /// directory below it.
    fn add_tree(&mut self, rel: PathBuf) {
        let abs = self.root.join(&rel);
        match self.inotify_watches.add(&abs, mask()) {
            Ok(wd) => {
                self.dirs.insert(wd, rel.clone());
            }
            Err(e) => {
                tracing::debug!(path = %abs.display(), error = %e, "cannot watch directory");
                return;
            }
        }
        if !self.recursive {
            return;
        }
        if let Ok(entries) = std::fs::read_dir(&abs) {
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    self.add_tree(rel.join(entry.file_name()));
                }
            }
        }
    }
}

/// Starts watching `root`. Changes arrive on the returned channel until it
/// is dropped.
pub fn watch(root: &Path, recursive: bool) -> std::io::Result<mpsc::Receiver<Change>> {
    let inotify = Inotify::init()?;
    let mut watcher = Watcher {
        inotify_watches: inotify.watches(),
        root: root.to_path_buf(),
        recursive,
        dirs: HashMap::new(),
    };
    watcher.add_tree(PathBuf::new());
    if watcher.dirs.is_empty() {
        return Err(std::io::Error::other(format!(
            "cannot watch {}",
            root.display()
        )));
    }
    let mut events = inotify.into_event_stream(vec![0u8; 64 * 1024])?;
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                () = tx.closed() => return,
            };
            let Some(Ok(event)) = event else { return };
            let Some(dir) = watcher.dirs.get(&event.wd).cloned() else {
                continue;
            };
            if event.mask.contains(EventMask::IGNORED) {
                watcher.dirs.remove(&event.wd);
                continue;
            }
            let Some(name): Option<OsString> = event.name else {
                continue;
            };
            let rel = dir.join(&name);
            if recursive
                && event.mask.contains(EventMask::ISDIR)
                && event
                    .mask
                    .intersects(EventMask::CREATE | EventMask::MOVED_TO)
            {
                watcher.add_tree(rel.clone());
            }
            let Some(kind) = kind(event.mask) else {
                continue;
            };
            let change = Change {
                name: rel.to_string_lossy().into_owned(),
                kind,
            };
            if tx.send(change).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
