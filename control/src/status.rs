//! Capsule status: the states a capsule row can be in and the transitions
//! between them. Transitional states (`starting`, `pausing`, `resuming`,
//! `snapshotting`, `stopping`) are written before the agent is asked and
//! carry a lease; the final state is written after it answered.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CapsuleStatus {
    Starting,
    Running,
    Pausing,
    Paused,
    Resuming,
    Snapshotting,
    Stopping,
    Stopped,
    Missing,
    Error,
}

impl CapsuleStatus {
    pub const ALL: [CapsuleStatus; 10] = [
        Self::Starting,
        Self::Running,
        Self::Pausing,
        Self::Paused,
        Self::Resuming,
        Self::Snapshotting,
        Self::Stopping,
        Self::Stopped,
        Self::Missing,
        Self::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Pausing => "pausing",
            Self::Paused => "paused",
            Self::Resuming => "resuming",
            Self::Snapshotting => "snapshotting",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Missing => "missing",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Terminal states: the capsule no longer exists on any host.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Stopped | Self::Error)
    }

    /// States whose capsule holds vCPUs and memory on its host (what the
    /// scheduler counts).
    pub fn holds_resources(self) -> bool {
        matches!(
            self,
            Self::Starting | Self::Running | Self::Pausing | Self::Resuming | Self::Snapshotting
        )
    }

    /// States a lifecycle operation leaves behind while it talks to the
    /// agent; the reconciler completes them when their lease runs out.
    pub fn is_transitional(self) -> bool {
        matches!(
            self,
            Self::Starting | Self::Pausing | Self::Resuming | Self::Snapshotting | Self::Stopping
        )
    }

    /// Whether `self -> to` is a legal transition.
    pub fn can_become(self, to: Self) -> bool {
        use CapsuleStatus::*;
        if self == to {
            return false;
        }
        match (self, to) {
            // Anything not yet gone can be destroyed or lost with its host.
            (from, Stopping | Missing | Error) => !from.is_terminal(),
            (Stopping, Stopped) => true,
            (Starting, Running) => true,
            (Running, Pausing | Snapshotting | Paused) => true,
            (Pausing, Paused | Running) => true,
            (Paused, Resuming | Snapshotting | Running) => true,
            (Resuming, Running | Paused) => true,
            (Snapshotting, Running | Paused) => true,
            // A host that comes back reports where its capsules are.
            (Missing, Running | Paused | Stopped) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CapsuleStatus::*;
    use super::*;

    #[test]
    fn round_trips_every_status() {
        for st in CapsuleStatus::ALL {
            assert_eq!(CapsuleStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(CapsuleStatus::parse("bogus"), None);
    }

    #[test]
    fn transitions() {
        assert!(Starting.can_become(Running));
        assert!(Running.can_become(Pausing));
        assert!(Pausing.can_become(Paused));
        assert!(Paused.can_become(Resuming));
        assert!(Running.can_become(Stopping));
        assert!(Stopping.can_become(Stopped));
        assert!(Missing.can_become(Running));
        assert!(!Stopped.can_become(Running));
        assert!(!Stopped.can_become(Stopping));
        assert!(!Error.can_become(Missing));
        assert!(!Paused.can_become(Pausing));
        assert!(!Starting.can_become(Paused));
        assert!(!Running.can_become(Running));
    }

    #[test]
    fn resource_holding_states() {
        assert!(Running.holds_resources());
        assert!(Starting.holds_resources());
        assert!(!Paused.holds_resources());
        assert!(!Stopped.holds_resources());
        assert!(!Missing.holds_resources());
    }
}
