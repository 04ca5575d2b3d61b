//! The states of a build and of each of its steps, as stored in Postgres
//! and shown by the API.

use serde::Serialize;
use utoipa::ToSchema;

/// A build's state. `queued → running → succeeded | failed | cancelled`;
/// a queued build may also be cancelled directly, and a running one whose
/// worker died is taken over (it stays `running` under a new lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl BuildStatus {
    pub const ALL: [BuildStatus; 5] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// A step's state. `pending → running → done | failed | cancelled`, or
/// `pending → cached` (its result came from the layer cache), or
/// `pending → skipped` (an earlier step failed or the build was cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Pending,
    Running,
    Cached,
    Done,
    Failed,
    Cancelled,
    Skipped,
}

impl StepStatus {
    pub const ALL: [StepStatus; 7] = [
        Self::Pending,
        Self::Running,
        Self::Cached,
        Self::Done,
        Self::Failed,
        Self::Cancelled,
        Self::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Cached => "cached",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in BuildStatus::ALL {
            assert_eq!(BuildStatus::parse(s.as_str()), Some(s));
        }
        for s in StepStatus::ALL {
            assert_eq!(StepStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(BuildStatus::parse("bogus"), None);
        assert!(BuildStatus::Cancelled.is_terminal());
        assert!(!BuildStatus::Running.is_terminal());
    }
}
