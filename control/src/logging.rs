//! `warren-control`'s logs, as the agent keeps its own
//! (`dataplane/src/agent/logging.rs`): to stderr and to
//! `$WARREN_DIR/logs/control.log` (plain text, no colour codes), level
//! from `LOG_LEVEL` (default `info`). The file is reopened on SIGHUP so
//! logrotate can move it away.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// A log file that can be reopened in place.
#[derive(Clone, Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogFile {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(open(path)?)),
        })
    }

    /// Reopens the file at its path (after logrotate moved the old one).
    pub fn reopen(&self) -> std::io::Result<()> {
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = open(&self.path)?;
        Ok(())
    }

    /// Reopens the file on every SIGHUP, for as long as the runtime runs.
    pub fn reopen_on_sighup(&self) -> std::io::Result<()> {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let file = self.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match file.reopen() {
                    Ok(()) => tracing::info!("log file reopened"),
                    Err(e) => tracing::error!(error = %e, "cannot reopen the log file"),
                }
            }
        });
        Ok(())
    }
}

/// One write to the log file.
#[derive(Debug)]
pub struct LogWriter(Arc<Mutex<File>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter(self.file.clone())
    }
}

/// Installs the global subscriber at `LOG_LEVEL` (else `default_level`):
/// stderr (coloured only on a terminal), plus `file` when given.
pub fn init(default_level: &str, file: Option<LogFile>) {
    let filter =
        EnvFilter::try_from_env("LOG_LEVEL").unwrap_or_else(|_| EnvFilter::new(default_level));
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let file = file.map(|f| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(f)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopens_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/control.log");
        let log = LogFile::open(&path).unwrap();
        log.make_writer().write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("rotated.log")).unwrap();
        log.reopen().unwrap();
        log.make_writer().write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        let rotated = std::fs::read_to_string(dir.path().join("rotated.log")).unwrap();
        assert_eq!(rotated, "one\n");
    }
}
