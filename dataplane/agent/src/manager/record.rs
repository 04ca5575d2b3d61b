//! What the agent persists about each capsule, in
//! `$WARREN_DIR/agent/capsules/<id>.json` (the backend keeps its own files
//! under `$WARREN_DIR/capsules/<id>/`): enough to re-adopt it after a
//! restart or crash. Written atomically (temp file, fsync, rename, fsync of
//! the directory), so a crash leaves the old or the new record, never a torn one.

use std::{
    collections::BTreeMap,
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::State;
use warren_backend::BackendKind;
use warren_netslot::TxLimit;

/// What the reaper does with an idle capsule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdlePolicy {
    Pause,
    Destroy,
}

/// Defaults envd applies to every process and file operation (`/init`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvdDefaults {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub workdir: String,
}

/// Firecracker's token bucket, applied to the capsule's egress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxLimitRecord {
    pub size: u64,
    pub one_time_burst: u64,
    pub refill_time_ms: u64,
}

impl From<TxLimitRecord> for TxLimit {
    fn from(l: TxLimitRecord) -> Self {
        Self {
            size: l.size,
            one_time_burst: l.one_time_burst,
            refill_time_ms: l.refill_time_ms,
        }
    }
}

impl From<TxLimit> for TxLimitRecord {
    fn from(l: TxLimit) -> Self {
        Self {
            size: l.size,
            one_time_burst: l.one_time_burst,
            refill_time_ms: l.refill_time_ms,
        }
    }
}

/// One capsule, as persisted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub template: String,
    pub vcpus: u32,
    pub memory_mb: u32,
    pub disk_mb: u32,
    pub timeout_sec: u32,
    pub idle_policy: IdlePolicy,
    pub defaults: EnvdDefaults,
    pub metadata: BTreeMap<String, String>,
    pub egress: bool,
    /// envd's access token (the relay injects it; SDK users present it).
    pub envd_token: Option<String>,
    /// Public traffic to a private capsule must present this token.
    pub traffic_token: Option<String>,
    pub tx_limit: Option<TxLimitRecord>,
    pub backend: BackendKind,
    pub state: State,
    pub error: Option<String>,
    pub address: Option<Ipv4Addr>,
    pub created_at_ms: i64,
    pub last_active_ms: i64,
    pub envd_version: Option<String>,
}

fn path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Writes `record` atomically into `dir`.
pub fn save(dir: &Path, record: &Record) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.json.tmp", record.id));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path(dir, &record.id))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Every record in `dir`, and the files that could not be read (name, why).
pub fn load_all(dir: &Path) -> (Vec<Record>, Vec<(String, String)>) {
    let mut records = Vec::new();
    let mut broken = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (records, broken);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".json").filter(|n| !n.starts_with('.')) else {
            continue;
        };
        match std::fs::read(entry.path())
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()))
        {
            Ok(r) if r.id == id => records.push(r),
            Ok(r) => broken.push((name, format!("record names capsule {:?}", r.id))),
            Err(e) => broken.push((name, e)),
        }
    }
    records.sort_by(|a, b| a.id.cmp(&b.id));
    (records, broken)
}

pub fn remove(dir: &Path, id: &str) -> std::io::Result<()> {
    match std::fs::remove_file(path(dir, id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(id: &str) -> Record {
        Record {
            id: id.into(),
            template: "tiny".into(),
            vcpus: 1,
            memory_mb: 128,
            disk_mb: 256,
            timeout_sec: 0,
            idle_policy: IdlePolicy::Pause,
            defaults: EnvdDefaults::default(),
            metadata: BTreeMap::new(),
            egress: true,
            envd_token: None,
            traffic_token: None,
            tx_limit: None,
            backend: BackendKind::Namespace,
            state: State::Running,
            error: None,
            address: None,
            created_at_ms: 1,
            last_active_ms: 2,
            envd_version: None,
        }
    }

    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &sample("a")).unwrap();
        save(dir.path(), &sample("b")).unwrap();
        std::fs::write(dir.path().join("c.json"), b"{torn").unwrap();
        std::fs::write(dir.path().join(".a.json.tmp"), b"junk").unwrap();
        let (records, broken) = load_all(dir.path());
        assert_eq!(
            records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(broken.len(), 1);
        remove(dir.path(), "a").unwrap();
        remove(dir.path(), "a").unwrap();
        assert_eq!(load_all(dir.path()).0.len(), 1);
    }
}
