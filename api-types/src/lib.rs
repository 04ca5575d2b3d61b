//! `warren-api-types`: the request and response types of Warren's REST API
//! (Wrenn-compatible, `/v1/...`), shared by the control plane that serves
//! them (`control/src/api/`) and the `warren` CLI that calls them
//! (`cli/`), so both sides agree on every field by construction. Also the
//! states the API reports (capsules with their state machine, hosts,
//! builds), which the control plane's database rows hold as enums (feature
//! `sqlx`). No HTTP, no database access: just data.
//!
//! One module per route family; timestamps are RFC 3339 strings
//! ([`time`]); errors are `{"error":{"code","message"}}` ([`error`]).

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod builds;
pub mod capsules;
pub mod error;
pub mod files;
pub mod hosts;
pub mod process;
pub mod status;
pub mod teams;
pub mod templates;
pub mod time;

pub use status::{
    BuildStatus, CapsuleStatus, HostKind, HostStatus, LogStream, Role, StepStatus, TemplateKind,
    UserStatus,
};
