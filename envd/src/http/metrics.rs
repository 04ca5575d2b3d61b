//! `GET /metrics`: CPU, memory and disk use as envd's clients read them.
//! Memory comes from the capsule's cgroup when one is visible (the capsule's
//! limit, not the host's RAM), else from `/proc/meminfo`.

use std::sync::Mutex;

use http::{Response, StatusCode};
use warren_proto::connect::ResponseBody;

use super::json;

/// The previous CPU sample, so each call reports use since the last one.
#[derive(Debug, Default)]
pub struct CpuSampler {
    last: Mutex<Option<(u64, u64)>>,
}

fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some((total, idle))
}

impl CpuSampler {
    /// Percent of all CPUs busy since the previous call (or over 100 ms).
    pub async fn percent(&self) -> f64 {
        let previous = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        let previous = match previous {
            Some(p) => Some(p),
            None => {
                let first = cpu_times();
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                first
            }
        };
        let Some(now) = cpu_times() else { return 0.0 };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        let Some((t0, i0)) = previous else { return 0.0 };
        let (dt, di) = (now.0.saturating_sub(t0), now.1.saturating_sub(i0));
        if dt == 0 {
            0.0
        } else {
            100.0 * (dt - di.min(dt)) as f64 / dt as f64
        }
    }
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// (total, used) memory in bytes.
fn memory() -> (u64, u64) {
    // cgroup v2, then v1, when the capsule's own cgroup is mounted.
    for (limit, usage) in [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ] {
        if let (Some(total), Some(used)) = (read_u64(limit), read_u64(usage)) {
            if total < (1 << 60) {
                return (total, used);
            }
        }
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let total = field("MemTotal:");
    (total, total.saturating_sub(field("MemAvailable:")))
}

/// (total, used) bytes of the root filesystem.
fn disk() -> (u64, u64) {
    match nix::sys::statvfs::statvfs("/") {
        Ok(s) => {
            let frag = s.fragment_size();
            let total = s.blocks() * frag;
            (total, total.saturating_sub(s.blocks_free() * frag))
        }
        Err(_) => (0, 0),
    }
}

pub async fn metrics(sampler: &CpuSampler) -> Response<ResponseBody> {
    let cpu = sampler.percent().await;
    let (mem_total, mem_used) = memory();
    let (disk_total, disk_used) = disk();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json(
        StatusCode::OK,
        &serde_json::json!({
            "ts": ts,
            "cpu_count": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "cpu_used_pct": (cpu * 100.0).round() / 100.0,
            "mem_total": mem_total,
            "mem_used": mem_used,
            "mem_total_mib": mem_total >> 20,
            "mem_used_mib": mem_used >> 20,
            "disk_total": disk_total,
            "disk_used": disk_used,
        }),
    )
}
