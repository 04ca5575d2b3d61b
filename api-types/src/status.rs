//! The states and kinds the API reports as lowercase strings: capsules
//! (with their state machine), hosts, builds and their steps, templates,
//! users and team roles. With the `sqlx` feature each is also a Postgres
//! `TEXT` value, so database rows hold these enums, never bare strings (a
//! value the enum does not know fails to decode).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Declares a string enum: serde and OpenAPI as lowercase names, `ALL`,
/// `as_str`, `parse`, `Display`, and (feature `sqlx`) Postgres `TEXT`.
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        #[cfg(feature = "sqlx")]
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        #[cfg(feature = "sqlx")]
        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        #[cfg(feature = "sqlx")]
        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Self::parse(s)
                    .ok_or_else(|| format!("{s:?} is not a {}", stringify!($name)).into())
            }
        }
    };
}

text_enum! {
    /// A capsule's state. Transitional states (`starting`, `pausing`,
    /// `resuming`, `snapshotting`, `stopping`) are written before the agent
    /// is asked and carry a lease; the final state is written after it
    /// answered.
    pub enum CapsuleStatus {
        Starting = "starting",
        Running = "running",
        Pausing = "pausing",
        Paused = "paused",
        Resuming = "resuming",
        Snapshotting = "snapshotting",
        Stopping = "stopping",
        Stopped = "stopped",
        Missing = "missing",
        Error = "error",
    }
}

impl CapsuleStatus {
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

    /// Every state matching `pred`.
    pub fn all_where(pred: impl Fn(Self) -> bool) -> Vec<Self> {
        Self::ALL.iter().copied().filter(|s| pred(*s)).collect()
    }
}

text_enum! {
    /// A host's state: `pending` until its agent registers, `online` while
    /// it heartbeats, `unreachable` when it stops, `offline` once removed.
    pub enum HostStatus {
        Pending = "pending",
        Online = "online",
        Unreachable = "unreachable",
        Draining = "draining",
        Offline = "offline",
    }
}

text_enum! {
    /// `regular` hosts serve every team; `byoc` hosts belong to one.
    pub enum HostKind {
        Regular = "regular",
        Byoc = "byoc",
    }
}

text_enum! {
    /// Platform `base` templates, or a team's `snapshot` ones (from a
    /// capsule or a build).
    pub enum TemplateKind {
        Base = "base",
        Snapshot = "snapshot",
    }
}

text_enum! {
    /// A build's state. `queued → running → succeeded | failed |
    /// cancelled`; a queued build may also be cancelled directly, and a
    /// running one whose worker died is taken over (it stays `running`
    /// under a new lease).
    pub enum BuildStatus {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl BuildStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

text_enum! {
    /// A build step's state. `pending → running → done | failed |
    /// cancelled`, or `pending → cached` (its result came from the layer
    /// cache), or `pending → skipped` (an earlier step failed or the build
    /// was cancelled).
    pub enum StepStatus {
        Pending = "pending",
        Running = "running",
        Cached = "cached",
        Done = "done",
        Failed = "failed",
        Cancelled = "cancelled",
        Skipped = "skipped",
    }
}

text_enum! {
    /// Where a build log line came from: the step's process, or the
    /// worker itself (`system`).
    pub enum LogStream {
        Stdout = "stdout",
        Stderr = "stderr",
        System = "system",
    }
}

text_enum! {
    /// A member's role in a team, in increasing power.
    #[derive(PartialOrd, Ord)]
    pub enum Role {
        Member = "member",
        Admin = "admin",
        Owner = "owner",
    }
}

text_enum! {
    /// Whether an account may log in.
    pub enum UserStatus {
        Active = "active",
        Disabled = "disabled",
    }
}

#[cfg(test)]
mod tests {
    use super::CapsuleStatus::*;
    use super::*;

    #[test]
    fn round_trips_every_value() {
        for st in CapsuleStatus::ALL {
            assert_eq!(CapsuleStatus::parse(st.as_str()), Some(*st));
            let json = serde_json::to_string(st).unwrap_or_default();
            assert_eq!(json, format!("\"{st}\""));
        }
        for st in BuildStatus::ALL {
            assert_eq!(BuildStatus::parse(st.as_str()), Some(*st));
        }
        for st in StepStatus::ALL {
            assert_eq!(StepStatus::parse(st.as_str()), Some(*st));
        }
        assert_eq!(CapsuleStatus::parse("bogus"), None);
        assert!(BuildStatus::Cancelled.is_terminal());
        assert!(!BuildStatus::Running.is_terminal());
        assert!(Role::Owner > Role::Admin && Role::Admin > Role::Member);
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
