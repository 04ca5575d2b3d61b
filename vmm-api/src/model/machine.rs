//! Machine configuration (vCPUs, memory, dirty-page tracking) and the boot
//! source (kernel, initrd, command line). Both are pre-boot only.

use serde::{Deserialize, Serialize};

use super::validate_path;
use crate::error::InvalidInput;

/// `MachineConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfig {
    /// 1 to 32; with SMT, 1 or even.
    pub vcpu_count: u8,
    /// Guest memory in MiB.
    pub mem_size_mib: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// Needed for diff snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
    /// Deprecated by Firecracker; kept for hosts that still use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
}

impl MachineConfig {
    /// The given size, every optional setting left at Firecracker's default.
    pub fn new(vcpu_count: u8, mem_size_mib: u64) -> Self {
        Self {
            vcpu_count,
            mem_size_mib,
            smt: None,
            track_dirty_pages: None,
            huge_pages: None,
            cpu_template: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidInput> {
        if !(1..=32).contains(&self.vcpu_count) {
            return Err(InvalidInput::new(
                "machine-config.vcpu_count",
                format!("{} is outside 1..=32", self.vcpu_count),
            ));
        }
        if self.smt == Some(true) && self.vcpu_count > 1 && self.vcpu_count % 2 == 1 {
            return Err(InvalidInput::new(
                "machine-config.vcpu_count",
                "with SMT it must be 1 or even",
            ));
        }
        if self.mem_size_mib == 0 {
            return Err(InvalidInput::new("machine-config.mem_size_mib", "is 0"));
        }
        if self.huge_pages == Some(HugePages::Hugetlbfs2M) && self.mem_size_mib % 2 == 1 {
            return Err(InvalidInput::new(
                "machine-config.mem_size_mib",
                "must be a multiple of 2 with 2M huge pages",
            ));
        }
        Ok(())
    }
}

/// Huge page backing of guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    None,
    Transparent,
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

impl HugePages {
    pub const ALL: [HugePages; 3] = [Self::None, Self::Transparent, Self::Hugetlbfs2M];
}

/// CPU templates (deprecated by Firecracker in favour of `/cpu-config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CpuTemplate {
    C3,
    T2,
    T2S,
    T2CL,
    T2A,
    V1N1,
    None,
}

impl CpuTemplate {
    pub const ALL: [CpuTemplate; 7] = [
        Self::C3,
        Self::T2,
        Self::T2S,
        Self::T2CL,
        Self::T2A,
        Self::V1N1,
        Self::None,
    ];
}

/// `BootSource`: the guest kernel and its command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSource {
    pub kernel_image_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
}

impl BootSource {
    pub(crate) fn validate(&self) -> Result<(), InvalidInput> {
        validate_path("boot-source.kernel_image_path", &self.kernel_image_path)?;
        if let Some(initrd) = &self.initrd_path {
            validate_path("boot-source.initrd_path", initrd)?;
        }
        if self.boot_args.as_deref().is_some_and(|a| a.contains('\0')) {
            return Err(InvalidInput::new(
                "boot-source.boot_args",
                "contains a NUL byte",
            ));
        }
        Ok(())
    }
}
