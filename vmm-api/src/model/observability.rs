//! Firecracker's own logger and metrics sinks. Neither survives a snapshot
//! restore: configure them again on the new process.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::validate_path;
use crate::error::InvalidInput;

/// `Logger`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logger {
    /// A file or named pipe for human-readable log lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    /// Only log messages from this module path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

impl Logger {
    pub(crate) fn validate(&self) -> Result<(), InvalidInput> {
        if let Some(p) = &self.log_path {
            validate_path("logger.log_path", p)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
    Trace,
    Off,
}

impl LogLevel {
    pub const ALL: [LogLevel; 6] = [
        Self::Error,
        Self::Warning,
        Self::Info,
        Self::Debug,
        Self::Trace,
        Self::Off,
    ];
}

/// `Metrics`: where Firecracker writes JSON metric lines (flushed every
/// 60 s and on `FlushMetrics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    pub metrics_path: String,
    /// Add the instance id as a top-level `id` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit_id: Option<bool>,
    /// Operator-defined string pairs under a top-level `properties` field.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

impl Metrics {
    pub fn new(metrics_path: impl Into<String>) -> Self {
        Self {
            metrics_path: metrics_path.into(),
            emit_id: None,
            properties: BTreeMap::new(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidInput> {
        validate_path("metrics.metrics_path", &self.metrics_path)
    }
}
