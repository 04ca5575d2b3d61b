//! The Firecracker API calls that make, restore and adjust one microVM, as
//! sequences over a [`vmm_api::Client`]: what the guest is booted with, what
//! is loaded from a snapshot, what must be put again after a restore
//! (the metadata store, which a snapshot does not carry), and the balloon
//! that keeps snapshots lean (inflated before one, deflated after resume).

use std::path::Path;
use std::time::Duration;

use vmm_api::Client;
use vmm_api::model::{
    Balloon, BalloonUpdate, BootSource, Drive, MachineConfig, MemoryBackend, MmdsConfig,
    MmdsContents, NetworkInterface, PartialNetworkInterface, RateLimiter, SnapshotLoad,
    TokenBucket,
};

use super::snapshot::path_string;
use crate::CapsuleSpec;
use warren_netslot::{TAP_NAME, TxLimit};

/// The guest's network interface (and Firecracker's id for it).
pub const IFACE: &str = "eth0";
/// The root drive's id.
pub const ROOT_DRIVE: &str = "rootfs";
/// Every guest has the same MAC (each sits alone behind its own TAP), so a
/// snapshot resumes in any network slot.
pub const GUEST_MAC: &str = "06:00:a9:fe:00:15";

/// A failed call: which step, and Firecracker's answer.
pub type StepError = (&'static str, vmm_api::Error);

fn step(name: &'static str) -> impl FnOnce(vmm_api::Error) -> StepError {
    move |e| (name, e)
}

/// Everything a microVM boots with.
#[derive(Debug, Clone)]
pub struct BootPlan<'a> {
    pub vcpus: u8,
    pub memory_mib: u64,
    pub kernel: &'a Path,
    pub boot_args: String,
    pub disk: &'a Path,
    pub tx_limit: Option<TxLimit>,
    pub metadata: MmdsContents,
}

/// Configures a fresh Firecracker process and boots the guest.
pub async fn boot(client: &Client, plan: &BootPlan<'_>) -> Result<(), StepError> {
    client
        .put_machine_config(&MachineConfig::new(plan.vcpus, plan.memory_mib))
        .await
        .map_err(step("machine configuration"))?;
    client
        .put_boot_source(&BootSource {
            kernel_image_path: path_string(plan.kernel),
            boot_args: Some(plan.boot_args.clone()),
            initrd_path: None,
        })
        .await
        .map_err(step("boot source"))?;
    client
        .put_drive(&Drive::root(ROOT_DRIVE, path_string(plan.disk)))
        .await
        .map_err(step("root drive"))?;
    client
        .put_network_interface(&NetworkInterface {
            guest_mac: Some(GUEST_MAC.into()),
            tx_rate_limiter: plan.tx_limit.map(tx_rate_limiter),
            ..NetworkInterface::new(IFACE, TAP_NAME)
        })
        .await
        .map_err(step("network interface"))?;
    client
        .put_balloon(&balloon())
        .await
        .map_err(step("balloon"))?;
    client
        .put_mmds_config(&MmdsConfig::v2(vec![IFACE.into()]))
        .await
        .map_err(step("metadata service configuration"))?;
    client
        .put_mmds(&plan.metadata)
        .await
        .map_err(step("metadata"))?;
    client.start().await.map_err(step("start"))
}

/// Loads `vmstate` into a fresh process, not resumed, with its memory
/// served by the page server listening at `uffd_socket` and its dirty pages
/// tracked from now on (so the next snapshot can be a diff). Returns once
/// the page server has served the first fault.
pub async fn load(client: &Client, vmstate: &Path, uffd_socket: &Path) -> Result<(), StepError> {
    client
        .load_snapshot(&SnapshotLoad {
            resume_vm: Some(false),
            track_dirty_pages: Some(true),
            ..SnapshotLoad::new(
                path_string(vmstate),
                MemoryBackend::uffd(path_string(uffd_socket)),
            )
        })
        .await
        .map_err(step("snapshot load"))
}

/// After a load: the metadata store again (not part of a snapshot), then
/// the vCPUs.
pub async fn resume_restored(client: &Client, metadata: &MmdsContents) -> Result<(), StepError> {
    client.put_mmds(metadata).await.map_err(step("metadata"))?;
    client.resume().await.map_err(step("resume"))
}

/// The balloon every guest boots with: empty, deflated by the guest itself
/// when it runs short of memory, reporting statistics every second (the
/// pause reads the guest's free memory from them).
pub fn balloon() -> Balloon {
    Balloon {
        amount_mib: 0,
        deflate_on_oom: true,
        stats_polling_interval_s: Some(1),
        free_page_hinting: None,
        free_page_reporting: None,
    }
}

/// Memory an inflated balloon leaves the guest: 1/16 of what it has, at
/// least [`BALLOON_HEADROOM_MIB`].
pub const BALLOON_HEADROOM_MIB: u64 = 8;
/// How long the pause waits for the guest to fill the balloon.
pub const BALLOON_WAIT: Duration = Duration::from_secs(2);

/// Before a snapshot (the guest's page cache dropped by then): inflates the
/// balloon over the guest's available memory less some headroom, so those
/// pages are neither written into the snapshot nor served on restore.
/// Waits until the guest has handed the pages over, stops giving more, or
/// `wait` passes. Returns the balloon's size in MiB (0 when the guest
/// reports no memory statistics: no balloon driver).
pub async fn inflate_balloon(client: &Client, wait: Duration) -> Result<u64, StepError> {
    let stats = client
        .balloon_stats()
        .await
        .map_err(step("balloon statistics"))?;
    let Some(available) = stats.available_memory.or(stats.free_memory) else {
        return Ok(0);
    };
    let headroom = (stats.total_memory.unwrap_or(0) >> 24).max(BALLOON_HEADROOM_MIB);
    let target = (available >> 20).saturating_sub(headroom);
    if target == 0 {
        return Ok(0);
    }
    client
        .patch_balloon(&BalloonUpdate { amount_mib: target })
        .await
        .map_err(step("inflate the balloon"))?;
    let deadline = tokio::time::Instant::now() + wait;
    let (mut last, mut still) = (0, 0);
    loop {
        let actual = client
            .balloon_stats()
            .await
            .map_err(step("balloon statistics"))?
            .actual_mib;
        (still, last) = if actual == last {
            (still + 1, last)
        } else {
            (0, actual)
        };
        // Done, out of time, or the guest gave nothing for 200 ms.
        if actual >= target || tokio::time::Instant::now() >= deadline || still >= 10 {
            return Ok(actual);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After a restore (or a pause that did not happen): gives the guest its
/// memory back.
pub async fn deflate_balloon(client: &Client) -> Result<(), StepError> {
    client
        .patch_balloon(&BalloonUpdate { amount_mib: 0 })
        .await
        .map_err(step("deflate the balloon"))
}

/// Changes the egress limit of a running guest (`None`: unlimited).
pub async fn set_tx_limit(client: &Client, limit: Option<TxLimit>) -> Result<(), StepError> {
    let limiter = limit.map_or(RateLimiter::bandwidth(TokenBucket::REMOVE), tx_rate_limiter);
    client
        .patch_network_interface(&PartialNetworkInterface {
            iface_id: IFACE.into(),
            rx_rate_limiter: None,
            tx_rate_limiter: Some(limiter),
        })
        .await
        .map_err(step("egress limit"))
}

/// Firecracker's bandwidth bucket for a capsule's egress limit.
pub fn tx_rate_limiter(limit: TxLimit) -> RateLimiter {
    RateLimiter::bandwidth(TokenBucket {
        size: limit.size,
        one_time_burst: (limit.one_time_burst > 0).then_some(limit.one_time_burst),
        refill_time: limit.refill_time_ms,
    })
}

/// What the guest reads from its metadata service (MMDS, 169.254.169.254).
pub fn metadata(spec: &CapsuleSpec) -> MmdsContents {
    let value = serde_json::json!({
        "warren": {
            "capsule_id": spec.id.as_str(),
            "template": spec.template,
            "metadata": spec.metadata,
        }
    });
    match value {
        serde_json::Value::Object(map) => map,
        // `json!` of an object literal is an object.
        _ => MmdsContents::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limit_is_firecrackers_default() {
        assert_eq!(tx_rate_limiter(TxLimit::default()), RateLimiter::DEFAULT_TX);
        let no_burst = TxLimit {
            one_time_burst: 0,
            ..TxLimit::default()
        };
        assert_eq!(
            tx_rate_limiter(no_burst)
                .bandwidth
                .map(|b| b.one_time_burst),
            Some(None)
        );
    }
}
