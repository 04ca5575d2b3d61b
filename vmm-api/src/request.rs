//! The table of every call the agent makes to Firecracker: for each one its
//! method, path and JSON body. [`Client`](crate::Client) sends these; the
//! spec-conformance test walks every variant, so a new endpoint cannot be
//! added without its bodies being checked against Firecracker's spec.

use http::Method;

use crate::error::InvalidInput;
use crate::model::*;

/// One API call. Device ids in paths are taken from the body, so the two
/// can never disagree (Firecracker refuses a mismatch).
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// `GET /`
    DescribeInstance,
    /// `GET /version`
    GetVersion,
    /// `GET /machine-config`
    GetMachineConfig,
    /// `PUT /machine-config`
    PutMachineConfig(&'a MachineConfig),
    /// `PUT /boot-source`
    PutBootSource(&'a BootSource),
    /// `PUT /drives/{drive_id}`
    PutDrive(&'a Drive),
    /// `PATCH /drives/{drive_id}`
    PatchDrive(&'a PartialDrive),
    /// `PUT /network-interfaces/{iface_id}`
    PutNetworkInterface(&'a NetworkInterface),
    /// `PATCH /network-interfaces/{iface_id}`
    PatchNetworkInterface(&'a PartialNetworkInterface),
    /// `PUT /mmds/config`
    PutMmdsConfig(&'a MmdsConfig),
    /// `PUT /mmds`
    PutMmds(&'a MmdsContents),
    /// `PATCH /mmds`
    PatchMmds(&'a MmdsContents),
    /// `GET /mmds`
    GetMmds,
    /// `PUT /actions`
    Action(&'a InstanceAction),
    /// `PATCH /vm`
    PatchVm(&'a Vm),
    /// `PUT /snapshot/create`
    CreateSnapshot(&'a SnapshotCreate),
    /// `PUT /snapshot/load`
    LoadSnapshot(&'a SnapshotLoad),
    /// `PUT /balloon`
    PutBalloon(&'a Balloon),
    /// `PATCH /balloon`
    PatchBalloon(&'a BalloonUpdate),
    /// `GET /balloon`
    GetBalloon,
    /// `GET /balloon/statistics`
    GetBalloonStats,
    /// `PATCH /balloon/statistics`
    PatchBalloonStats(&'a BalloonStatsUpdate),
    /// `PUT /metrics`
    PutMetrics(&'a Metrics),
    /// `PUT /logger`
    PutLogger(&'a Logger),
    /// `PUT /entropy`
    PutEntropy(&'a EntropyDevice),
    /// `PUT /vsock`
    PutVsock(&'a Vsock),
}

impl Request<'_> {
    /// HTTP method.
    pub fn method(&self) -> Method {
        use Request::*;
        match self {
            DescribeInstance | GetVersion | GetMachineConfig | GetMmds | GetBalloon
            | GetBalloonStats => Method::GET,
            PatchDrive(_)
            | PatchNetworkInterface(_)
            | PatchMmds(_)
            | PatchVm(_)
            | PatchBalloon(_)
            | PatchBalloonStats(_) => Method::PATCH,
            PutMachineConfig(_)
            | PutBootSource(_)
            | PutDrive(_)
            | PutNetworkInterface(_)
            | PutMmdsConfig(_)
            | PutMmds(_)
            | Action(_)
            | CreateSnapshot(_)
            | LoadSnapshot(_)
            | PutBalloon(_)
            | PutMetrics(_)
            | PutLogger(_)
            | PutEntropy(_)
            | PutVsock(_) => Method::PUT,
        }
    }

    /// URL path. Ids are validated (`[A-Za-z0-9_]`) before a request is
    /// sent, so they need no escaping.
    pub fn path(&self) -> String {
        use Request::*;
        match self {
            DescribeInstance => "/".into(),
            GetVersion => "/version".into(),
            GetMachineConfig | PutMachineConfig(_) => "/machine-config".into(),
            PutBootSource(_) => "/boot-source".into(),
            PutDrive(d) => format!("/drives/{}", d.drive_id),
            PatchDrive(d) => format!("/drives/{}", d.drive_id),
            PutNetworkInterface(n) => format!("/network-interfaces/{}", n.iface_id),
            PatchNetworkInterface(n) => format!("/network-interfaces/{}", n.iface_id),
            PutMmdsConfig(_) => "/mmds/config".into(),
            PutMmds(_) | PatchMmds(_) | GetMmds => "/mmds".into(),
            Action(_) => "/actions".into(),
            PatchVm(_) => "/vm".into(),
            CreateSnapshot(_) => "/snapshot/create".into(),
            LoadSnapshot(_) => "/snapshot/load".into(),
            PutBalloon(_) | PatchBalloon(_) | GetBalloon => "/balloon".into(),
            GetBalloonStats | PatchBalloonStats(_) => "/balloon/statistics".into(),
            PutMetrics(_) => "/metrics".into(),
            PutLogger(_) => "/logger".into(),
            PutEntropy(_) => "/entropy".into(),
            PutVsock(_) => "/vsock".into(),
        }
    }

    /// JSON body, `None` for GETs.
    pub fn body(&self) -> Option<serde_json::Value> {
        use Request::*;
        let value = match self {
            DescribeInstance | GetVersion | GetMachineConfig | GetMmds | GetBalloon
            | GetBalloonStats => return None,
            PutMachineConfig(b) => serde_json::to_value(b),
            PutBootSource(b) => serde_json::to_value(b),
            PutDrive(b) => serde_json::to_value(b),
            PatchDrive(b) => serde_json::to_value(b),
            PutNetworkInterface(b) => serde_json::to_value(b),
            PatchNetworkInterface(b) => serde_json::to_value(b),
            PutMmdsConfig(b) => serde_json::to_value(b),
            PutMmds(b) | PatchMmds(b) => Ok(serde_json::Value::Object((*b).clone())),
            Action(b) => serde_json::to_value(b),
            PatchVm(b) => serde_json::to_value(b),
            CreateSnapshot(b) => serde_json::to_value(b),
            LoadSnapshot(b) => serde_json::to_value(b),
            PutBalloon(b) => serde_json::to_value(b),
            PatchBalloon(b) => serde_json::to_value(b),
            PatchBalloonStats(b) => serde_json::to_value(b),
            PutMetrics(b) => serde_json::to_value(b),
            PutLogger(b) => serde_json::to_value(b),
            PutEntropy(b) => serde_json::to_value(b),
            PutVsock(b) => serde_json::to_value(b),
        };
        // Invariant: these models are plain structs of strings, numbers,
        // booleans, unit enums and string-keyed maps; serialising them to a
        // `Value` cannot fail.
        Some(value.expect("models serialise to JSON"))
    }

    /// Checks what Firecracker would refuse, before anything is sent.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        use Request::*;
        match self {
            DescribeInstance | GetVersion | GetMachineConfig | GetMmds | GetBalloon
            | GetBalloonStats | Action(_) | PatchVm(_) | PutBalloon(_) | PatchBalloon(_)
            | PutMmds(_) | PatchMmds(_) => Ok(()),
            PutMachineConfig(b) => b.validate(),
            PutBootSource(b) => b.validate(),
            PutDrive(b) => b.validate(),
            PatchDrive(b) => b.validate(),
            PutNetworkInterface(b) => b.validate(),
            PatchNetworkInterface(b) => b.validate(),
            PutMmdsConfig(b) => b.validate(),
            CreateSnapshot(b) => b.validate(),
            LoadSnapshot(b) => b.validate(),
            PatchBalloonStats(b) => b.validate(),
            PutMetrics(b) => b.validate(),
            PutLogger(b) => b.validate(),
            PutEntropy(b) => b.validate(),
            PutVsock(b) => b.validate(),
        }
    }

    /// `"PUT /drives/rootfs"`, for errors and logs.
    pub fn describe(&self) -> String {
        format!("{} {}", self.method(), self.path())
    }
}
