//! `warren-logging`: the logs of Warren's daemons (`warren-agent`,
//! `warren-control`): to stderr and to a file of their own under
//! `$WARREN_DIR/logs/` (plain text without colour codes, or JSON lines), level
//! from `LOG_LEVEL` (default `info`). [`LogFile::reopen`] reopens the file in
//! place, which the daemons do on SIGHUP so logrotate can move it away.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use tracing_subscriber::{
    EnvFilter, fmt::MakeWriter, layer::SubscriberExt, util::SubscriberInitExt,
};

/// A log file that can be reopened in place.
#[derive(Clone, Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl LogFile {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Reopens the file at its path (after logrotate moved the old one).
    pub fn reopen(&self) -> std::io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = file;
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

/// Installs the global subscriber: stderr, plus `file` when given.
pub fn init(json: bool, file: Option<LogFile>) {
    let filter = || EnvFilter::try_from_env("LOG_LEVEL").unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry();
    if json {
        let stderr = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr);
        let file = file.map(|f| tracing_subscriber::fmt::layer().json().with_writer(f));
        let _ = registry.with(filter()).with(stderr).with(file).try_init();
    } else {
        let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let file = file.map(|f| {
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(f)
        });
        let _ = registry.with(filter()).with(stderr).with(file).try_init();
    }
}
