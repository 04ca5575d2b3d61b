//! envd's shared state: the defaults `/init` sets (env vars, user, workdir),
//! the access token, and the services' registries.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, RwLock},
};

use crate::{conns::Connections, fs::Watchers, process::Registry, users::Accounts};

/// Defaults applied to every process and file operation that does not say
/// otherwise.
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    pub env: BTreeMap<String, String>,
    pub user: String,
    pub workdir: Option<PathBuf>,
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct Envd {
    pub accounts: Accounts,
    pub processes: Registry,
    pub watchers: Watchers,
    pub conns: Connections,
    defaults: RwLock<Defaults>,
    token: RwLock<Option<String>>,
}

impl Envd {
    /// Must be called inside the tokio runtime (it starts the reaper).
    pub fn new(accounts: Accounts, defaults: Defaults) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            accounts,
            processes: Registry::new()?,
            watchers: Watchers::default(),
            conns: Connections::default(),
            defaults: RwLock::new(defaults),
            token: RwLock::new(None),
        }))
    }

    pub fn defaults(&self) -> Defaults {
        self.defaults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn update_defaults(&self, f: impl FnOnce(&mut Defaults)) {
        f(&mut self.defaults.write().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn token(&self) -> Option<String> {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_token(&self, token: Option<String>) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = token;
    }
}
