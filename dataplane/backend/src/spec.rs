//! What a capsule is made from: its id, template, resources, network
//! namespace and environment, validated before anything touches the host.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use warren_netslot::TxLimit;

/// A rejected spec field, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct SpecError {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError {
        field,
        reason: reason.into(),
    }
}

/// A capsule id: 1-64 of `[A-Za-z0-9_-]`, so it is safe as a file, cgroup
/// and host name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CapsuleId(String);

impl CapsuleId {
    pub fn new(id: impl Into<String>) -> Result<Self, SpecError> {
        let id = id.into();
        if !(1..=64).contains(&id.len()) {
            return Err(invalid("id", "must be 1-64 characters"));
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid("id", format!("{id:?} may only hold [A-Za-z0-9_-]")));
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CapsuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for CapsuleId {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        Self::new(s)
    }
}

impl From<CapsuleId> for String {
    fn from(id: CapsuleId) -> String {
        id.0
    }
}

/// Resources of one capsule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub vcpus: u32,
    pub memory_mb: u32,
    /// Size of the capsule's private writable disk.
    pub disk_mb: u32,
    /// Most tasks (processes and threads) the capsule may have at once.
    pub max_pids: u32,
}

impl Resources {
    pub const MAX_VCPUS: u32 = 64;
    pub const MIN_MEMORY_MB: u32 = 16;
    pub const MIN_DISK_MB: u32 = 16;
    pub const MAX_DISK_MB: u32 = 1024 * 1024;
    pub const MIN_PIDS: u32 = 8;
    pub const DEFAULT_MAX_PIDS: u32 = 1024;

    fn validate(&self) -> Result<(), SpecError> {
        if !(1..=Self::MAX_VCPUS).contains(&self.vcpus) {
            return Err(invalid("vcpus", format!("must be 1-{}", Self::MAX_VCPUS)));
        }
        if self.memory_mb < Self::MIN_MEMORY_MB {
            return Err(invalid(
                "memory_mb",
                format!("must be at least {}", Self::MIN_MEMORY_MB),
            ));
        }
        if !(Self::MIN_DISK_MB..=Self::MAX_DISK_MB).contains(&self.disk_mb) {
            return Err(invalid(
                "disk_mb",
                format!("must be {}-{}", Self::MIN_DISK_MB, Self::MAX_DISK_MB),
            ));
        }
        if self.max_pids < Self::MIN_PIDS {
            return Err(invalid(
                "max_pids",
                format!("must be at least {}", Self::MIN_PIDS),
            ));
        }
        Ok(())
    }
}

/// Everything a backend needs to make a capsule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapsuleSpec {
    pub id: CapsuleId,
    /// Template name (see `warren_template`).
    pub template: String,
    pub resources: Resources,
    /// The capsule's network namespace, made by the network slot module
    /// (e.g. `/run/netns/warren-ns-3`).
    pub netns: PathBuf,
    /// Hostname inside the capsule (default: the id).
    pub hostname: Option<String>,
    /// Environment of the capsule's init.
    pub env: BTreeMap<String, String>,
    /// The capsule's metadata (microVMs read it from their metadata service).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Limit on what the capsule sends, for backends that shape egress
    /// themselves ([`super::Backend::shapes_egress`]); the others leave it
    /// to the network slot.
    #[serde(default)]
    pub tx_limit: Option<TxLimit>,
}

impl CapsuleSpec {
    /// Checks every field; called by backends before they touch the host.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.resources.validate()?;
        if self.template.is_empty() {
            return Err(invalid("template", "must not be empty"));
        }
        if !self.netns.is_absolute() {
            return Err(invalid("netns", "must be an absolute path"));
        }
        let hostname = self.hostname();
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if hostname.len() > 64 || !hostname.split('.').all(label_ok) {
            return Err(invalid(
                "hostname",
                format!("{hostname:?} is not a valid host name"),
            ));
        }
        for (k, v) in &self.env {
            let key_ok = !k.is_empty()
                && !k.as_bytes()[0].is_ascii_digit()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !key_ok {
                return Err(invalid("env", format!("{k:?} is not a variable name")));
            }
            if v.contains('\0') {
                return Err(invalid("env", format!("value of {k} holds a NUL byte")));
            }
        }
        if let Some(limit) = &self.tx_limit {
            limit
                .validate()
                .map_err(|e| invalid("tx_limit", e.to_string()))?;
        }
        Ok(())
    }

    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(self.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CapsuleSpec {
        CapsuleSpec {
            id: CapsuleId::new("c1").expect("id"),
            template: "tiny".into(),
            resources: Resources {
                vcpus: 1,
                memory_mb: 128,
                disk_mb: 64,
                max_pids: 64,
            },
            netns: "/run/netns/x".into(),
            hostname: None,
            env: BTreeMap::new(),
            metadata: BTreeMap::new(),
            tx_limit: None,
        }
    }

    #[test]
    fn ids_are_checked() {
        for bad in ["", "../x", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(CapsuleId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(CapsuleId::new("Ab-1_z").is_ok());
        assert!(serde_json::from_str::<CapsuleId>("\"../x\"").is_err());
    }

    #[test]
    fn spec_fields_are_checked() {
        assert!(spec().validate().is_ok());
        type Mutation = Box<dyn Fn(&mut CapsuleSpec)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("vcpus", Box::new(|s| s.resources.vcpus = 0)),
            ("memory_mb", Box::new(|s| s.resources.memory_mb = 0)),
            ("disk_mb", Box::new(|s| s.resources.disk_mb = 1)),
            ("max_pids", Box::new(|s| s.resources.max_pids = 1)),
            ("template", Box::new(|s| s.template.clear())),
            ("netns", Box::new(|s| s.netns = "relative".into())),
            ("hostname", Box::new(|s| s.hostname = Some("-bad".into()))),
            (
                "env",
                Box::new(|s| {
                    s.env.insert("A=B".into(), "x".into());
                }),
            ),
            (
                "env",
                Box::new(|s| {
                    s.env.insert("A".into(), "x\0y".into());
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut s = spec();
            mutate(&mut s);
            assert_eq!(s.validate().map_err(|e| e.field), Err(field));
        }
    }
}
