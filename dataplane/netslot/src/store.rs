//! The allocations on disk (`<state_dir>/slots.json`): which capsule holds
//! which slot and that slot's settings, so a restarted agent re-adopts every
//! slot. Written atomically (temp file, fsync, rename, fsync of the directory):
//! a crash leaves the old or the new file, never a torn one.

use std::fs::{self, File};
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};
use crate::plan::AddressPlan;
use crate::shaper::TxLimit;

const FILE: &str = "slots.json";
const VERSION: u32 = 1;

/// One allocated slot, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SlotRecord {
    pub index: u32,
    pub capsule_id: String,
    pub egress: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<TxState>,
    /// The TAP's queue length once a TAP was enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap_txqueuelen: Option<u32>,
}

/// A slot's tx limit and whether its one-time burst is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TxState {
    pub limit: TxLimit,
    pub burst_spent: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    prefix: String,
    capsule_net: Ipv4Net,
    veth_net: Ipv4Net,
    slots: Vec<SlotRecord>,
}

/// The state file of one configuration.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    path: PathBuf,
    plan: AddressPlan,
}

impl Store {
    pub fn new(dir: &Path, plan: &AddressPlan) -> Self {
        Self {
            dir: dir.to_owned(),
            path: dir.join(FILE),
            plan: plan.clone(),
        }
    }

    /// The persisted allocations; none when the file does not exist. A file
    /// written for another prefix or other ranges is refused rather than
    /// guessed at: its capsules' addresses would change under them.
    pub fn load(&self) -> Result<Vec<SlotRecord>> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => {
                return Err(NetError::io(
                    format!("reading {}", self.path.display()),
                    err,
                ));
            }
        };
        let state: StateFile =
            serde_json::from_slice(&bytes).map_err(|err| self.bad(err.to_string()))?;
        if state.version != VERSION {
            return Err(self.bad(format!("unknown version {}", state.version)));
        }
        let plan = &self.plan;
        if state.prefix != plan.prefix()
            || state.capsule_net != plan.capsule_net()
            || state.veth_net != plan.veth_net()
        {
            return Err(self.bad(format!(
                "written for prefix {:?}, capsule_net {}, veth_net {}; configured: {:?}, {}, {}",
                state.prefix,
                state.capsule_net,
                state.veth_net,
                plan.prefix(),
                plan.capsule_net(),
                plan.veth_net()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for record in &state.slots {
            if !plan.contains(record.index) || !seen.insert(record.index) {
                return Err(self.bad(format!(
                    "slot index {} is out of range or repeated",
                    record.index
                )));
            }
        }
        Ok(state.slots)
    }

    /// Replaces the persisted allocations with `slots`.
    pub fn save(&self, slots: Vec<SlotRecord>) -> Result<()> {
        let state = StateFile {
            version: VERSION,
            prefix: self.plan.prefix().to_owned(),
            capsule_net: self.plan.capsule_net(),
            veth_net: self.plan.veth_net(),
            slots,
        };
        let context = || format!("writing {}", self.path.display());
        let json =
            serde_json::to_vec_pretty(&state).map_err(|err| NetError::io(context(), err.into()))?;
        fs::create_dir_all(&self.dir).map_err(|err| NetError::io(context(), err))?;
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|err| NetError::io(context(), err))
    }

    /// Removes the state file (purge).
    pub fn remove(&self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Err(err) if err.kind() != ErrorKind::NotFound => Err(NetError::io(
                format!("removing {}", self.path.display()),
                err,
            )),
            _ => Ok(()),
        }
    }

    fn bad(&self, reason: String) -> NetError {
        NetError::State {
            path: self.path.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(prefix: &str) -> AddressPlan {
        AddressPlan::new(
            prefix,
            "10.11.0.0/16".parse().expect("net"),
            "10.12.0.0/16".parse().expect("net"),
        )
        .expect("plan")
    }

    fn record(index: u32) -> SlotRecord {
        SlotRecord {
            index,
            capsule_id: format!("c{index}"),
            egress: index % 2 == 0,
            tx: Some(TxState {
                limit: TxLimit::default(),
                burst_spent: false,
            }),
            tap_txqueuelen: Some(5000),
        }
    }

    #[test]
    fn round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path(), &plan("wt"));
        assert_eq!(store.load().expect("empty"), Vec::new());
        store.save(vec![record(1), record(7)]).expect("save");
        assert_eq!(store.load().expect("load"), vec![record(1), record(7)]);
        store.remove().expect("remove");
        assert_eq!(store.load().expect("empty again"), Vec::new());
    }

    #[test]
    fn refuses_another_configuration_or_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        Store::new(dir.path(), &plan("wt"))
            .save(vec![record(1)])
            .expect("save");
        let err = Store::new(dir.path(), &plan("other"))
            .load()
            .expect_err("other prefix");
        assert!(matches!(err, NetError::State { .. }), "{err}");

        fs::write(dir.path().join(FILE), b"{not json").expect("write");
        let err = Store::new(dir.path(), &plan("wt"))
            .load()
            .expect_err("garbage");
        assert!(matches!(err, NetError::State { .. }), "{err}");

        Store::new(dir.path(), &plan("wt"))
            .save(vec![record(1), record(1)])
            .expect("save");
        let err = Store::new(dir.path(), &plan("wt"))
            .load()
            .expect_err("repeated index");
        assert!(err.to_string().contains("repeated"), "{err}");
    }
}
