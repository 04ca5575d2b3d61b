//! A capsule's lifecycle as an enum with explicit transitions: every change
//! of state goes through [`State::on`], and an event that makes no sense in
//! the current state is an error, never a silent overwrite.

use serde::{Deserialize, Serialize};

/// Where a capsule is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Creating,
    Running,
    Pausing,
    Paused,
    Resuming,
    Stopping,
    Stopped,
    /// Something failed; only destroy is possible.
    Error,
}

/// What happens to a capsule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Created,
    Pause,
    Paused,
    /// The pause did not happen; the capsule still runs.
    PauseFailed,
    Resume,
    Resumed,
    /// The resume did not happen; the capsule is still paused.
    ResumeFailed,
    Stop,
    Stopped,
    Failed,
}

/// An event that does not apply to the state the capsule is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a capsule that is {from} cannot take {event:?}")]
pub struct InvalidTransition {
    pub from: State,
    pub event: Event,
}

impl State {
    /// The state after `event`.
    pub fn on(self, event: Event) -> Result<State, InvalidTransition> {
        use Event as E;
        use State as S;
        let next = match (self, event) {
            (S::Creating, E::Created) => S::Running,
            (S::Running, E::Pause) => S::Pausing,
            (S::Pausing, E::Paused) => S::Paused,
            (S::Pausing, E::PauseFailed) => S::Running,
            (S::Paused, E::Resume) => S::Resuming,
            (S::Resuming, E::Resumed) => S::Running,
            (S::Resuming, E::ResumeFailed) => S::Paused,
            (S::Creating | S::Running | S::Paused | S::Error, E::Stop) => S::Stopping,
            (S::Stopping, E::Stopped) => S::Stopped,
            (
                S::Creating | S::Pausing | S::Resuming | S::Stopping | S::Running | S::Paused,
                E::Failed,
            ) => S::Error,
            (from, event) => return Err(InvalidTransition { from, event }),
        };
        Ok(next)
    }

    /// States in which an operation is under way and others must wait or be refused.
    pub fn is_transitional(self) -> bool {
        matches!(
            self,
            State::Creating | State::Pausing | State::Resuming | State::Stopping
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Creating => "creating",
            State::Running => "running",
            State::Pausing => "pausing",
            State::Paused => "paused",
            State::Resuming => "resuming",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Error => "error",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::{Event as E, State as S};

    #[test]
    fn the_happy_paths() {
        let s = S::Creating.on(E::Created).unwrap();
        let s = s.on(E::Pause).unwrap().on(E::Paused).unwrap();
        assert_eq!(s, S::Paused);
        let s = s.on(E::Resume).unwrap().on(E::Resumed).unwrap();
        assert_eq!(s.on(E::Stop).unwrap().on(E::Stopped).unwrap(), S::Stopped);
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(S::Paused.on(E::Pause).is_err());
        assert!(S::Running.on(E::Resume).is_err());
        assert!(S::Stopped.on(E::Stop).is_err());
        assert!(S::Pausing.on(E::Stop).is_err());
        assert!(S::Stopped.on(E::Failed).is_err());
        assert_eq!(S::Error.on(E::Stop).unwrap(), S::Stopping);
        assert!(S::Running.on(E::PauseFailed).is_err());
        assert!(S::Paused.on(E::ResumeFailed).is_err());
    }

    #[test]
    fn failed_pauses_and_resumes_go_back() {
        assert_eq!(S::Pausing.on(E::PauseFailed).unwrap(), S::Running);
        assert_eq!(S::Resuming.on(E::ResumeFailed).unwrap(), S::Paused);
    }
}
