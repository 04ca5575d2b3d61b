//! Shared state of one control replica: the database pool, configuration,
//! JWT keys, the RPC client pools, the event fan-out and the extensions'
//! capsule hooks. Everything that matters lives in Postgres; this is only
//! handles to it and to the agents.

use std::ops::Deref;
use std::sync::Arc;

use sqlx::PgPool;
use warren_api_types::status::HostStatus;

use crate::agent_client::{AgentClient, Unreachable};
use crate::auth::jwt::JwtKeys;
use crate::config::ControlConfig;
use crate::db::hosts::HostConn;
use crate::envd_client::{EnvdClient, EnvdError};
use crate::events::EventHub;
use crate::extension::Hooks;
use crate::rpc::RpcClients;
use crate::transfer::{self, HttpClient};

#[derive(Debug)]
pub struct Inner {
    pub db: PgPool,
    pub cfg: ControlConfig,
    pub jwt: JwtKeys,
    pub rpc: RpcClients,
    /// envd `/files` transfers.
    pub files: HttpClient,
    /// Users' traffic to capsule ports (its own pool: never behind the API's).
    pub user_traffic: HttpClient,
    pub events: EventHub,
    /// Extensions' hooks on capsule events.
    pub hooks: Hooks,
}

#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(db: PgPool, cfg: ControlConfig, jwt_secret: &str, hooks: Hooks) -> Self {
        let jwt = JwtKeys::new(jwt_secret, cfg.jwt_ttl_secs);
        let rpc = RpcClients::new(cfg.agent_timeout());
        Self(Arc::new(Inner {
            db,
            cfg,
            jwt,
            rpc,
            files: transfer::http_client(),
            user_traffic: transfer::http_client(),
            events: EventHub::new(),
            hooks,
        }))
    }

    /// The lifecycle client of `host`.
    pub fn agent(&self, host: &HostConn) -> Result<AgentClient, Unreachable> {
        let (addr, token) = host.rpc()?;
        AgentClient::new(&self.rpc, addr, token)
    }

    /// envd of `capsule_id` on `host`, acting as `user`.
    pub fn envd(
        &self,
        host: &HostConn,
        capsule_id: &str,
        user: &str,
    ) -> Result<EnvdClient, EnvdError> {
        let (_, token) = host.rpc()?;
        let proxy = host
            .proxy_address
            .as_deref()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Unreachable("host has not reported its proxy address yet".into()))?;
        EnvdClient::via_relay(
            &self.rpc,
            self.files.clone(),
            proxy,
            capsule_id,
            token,
            user,
        )
    }
}

impl HostConn {
    /// The agent's RPC address and token, once it registered.
    pub fn rpc(&self) -> Result<(&str, &str), Unreachable> {
        match (&self.address, &self.agent_token) {
            (Some(a), Some(t)) if self.status != HostStatus::Pending => Ok((a, t)),
            _ => Err(Unreachable(format!("host {} has not registered", self.id))),
        }
    }

    pub fn require_online(&self) -> Result<(), Unreachable> {
        if self.status == HostStatus::Online {
            Ok(())
        } else {
            Err(Unreachable(format!(
                "capsule host {} is {}",
                self.id, self.status
            )))
        }
    }
}
