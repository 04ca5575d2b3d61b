//! `warren-control`'s log file, as the agent keeps its own: the
//! `warren-logging` crate's stderr plus `$WARREN_DIR/logs/control.log`
//! (plain text), level from `LOG_LEVEL`; reopened on SIGHUP so logrotate
//! can move it away.

use std::path::Path;

use warren_logging::LogFile;

/// Logs to stderr and to `logs/control.log` under `dir`, and reopens the
/// file on every SIGHUP (for as long as the runtime runs).
pub fn init(dir: &Path) -> std::io::Result<()> {
    let file = LogFile::open(&dir.join("logs").join("control.log"))?;
    warren_logging::init(false, Some(file.clone()));
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
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
