//! Connect clients (`warren_proto::connect`) per peer address, cached so
//! calls reuse connections. Each address gets two pools (the transport
//! rule in `docs/architecture.md`): unary calls (bounded by the agent
//! timeout) and long-lived streams (unbounded), so a slow stream never
//! holds up a lifecycle call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use warren_proto::connect::{Client, Code, ConnectError};

use crate::transfer::base_url;

#[derive(Debug)]
pub struct RpcClients {
    unary_timeout: Duration,
    cache: Mutex<HashMap<String, (Client, Client)>>,
}

impl RpcClients {
    pub fn new(unary_timeout: Duration) -> Self {
        Self {
            unary_timeout,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `(unary, streams)` clients of `addr` (`host:port` or URL).
    pub fn clients(&self, addr: &str) -> Result<(Client, Client), ConnectError> {
        let base = base_url(addr);
        // A poisoned lock only means another thread panicked mid-insert;
        // the map is still usable.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(&base) {
            return Ok(c.clone());
        }
        let invalid = |e: warren_proto::connect::InvalidBaseUrl| {
            ConnectError::new(Code::InvalidArgument, e.to_string())
        };
        let unary = Client::builder(base.clone())
            .timeout(self.unary_timeout)
            .build()
            .map_err(invalid)?;
        let streams = Client::builder(base.clone()).build().map_err(invalid)?;
        cache.insert(base, (unary.clone(), streams.clone()));
        Ok((unary, streams))
    }
}
