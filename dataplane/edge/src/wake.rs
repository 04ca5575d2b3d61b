//! Waking paused capsules on traffic. The edge's cores only ask
//! ([`Waker::wake`]); whoever owns the capsule's lifecycle (the agent, which
//! asks the control plane to resume it so that the API, audit and quotas see
//! the same resume as any other) does the work, and the request that asked
//! waits for the route to say `running` (see `policy`).

/// Resumes capsules on request. Called from the data-plane cores: it must
/// not block (hand the work to another thread) and may be called many times
/// for one capsule (coalesce).
pub trait Waker: Send + Sync + 'static {
    /// Asks for capsule `id` to be resumed.
    fn wake(&self, id: &str);
}
