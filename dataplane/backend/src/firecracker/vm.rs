//! The Firecracker API calls that make, restore and adjust one microVM, as
//! sequences over a [`vmm_api::Client`]: what the guest is booted with, what
//! is loaded from a snapshot, and what must be put again after a restore
//! (the metadata store, which a snapshot does not carry).

use std::path::Path;

use vmm_api::Client;
use vmm_api::model::{
    BootSource, Drive, MachineConfig, MemoryBackend, MmdsConfig, MmdsContents, NetworkInterface,
    PartialNetworkInterface, RateLimiter, SnapshotLoad, TokenBucket,
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
