//! Placement: which host a new (or resumed) capsule goes to.
//!
//! A pure function over a snapshot of the hosts, so it is unit-tested
//! without a database. Callers take the snapshot inside a transaction that
//! locks the candidate hosts' rows, which keeps concurrent creates on
//! several replicas from overfilling a host.
//!
//! Rules: a host must be online and have room for the request on every
//! resource (admission control: no fit, no placement, a clean refusal);
//! hosts that already hold the template come first (snapshot templates
//! exist only where they were taken, so there they are required); among
//! the rest the least loaded wins, load being the tightest resource's
//! share after placement.

#[derive(Debug, Clone, PartialEq)]
pub struct HostLoad {
    pub id: String,
    pub online: bool,
    /// Schedulable vCPUs (cores × overcommit).
    pub vcpu_capacity: f64,
    /// Schedulable memory in MiB (memory × overcommit).
    pub memory_capacity_mb: f64,
    pub vcpus_used: f64,
    pub memory_used_mb: f64,
    pub has_template: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    pub vcpus: u32,
    pub memory_mb: u32,
    /// The template lives only on hosts that have it (a snapshot).
    pub template_pinned: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoPlacement {
    #[error("no host is online")]
    NoHosts,
    #[error("no online host holds the template")]
    TemplateNowhere,
    #[error(
        "no host has room for {vcpus} vCPU and {memory_mb} MiB (largest free: {free_vcpus} vCPU, {free_memory_mb} MiB)"
    )]
    Full {
        vcpus: u32,
        memory_mb: u32,
        free_vcpus: u64,
        free_memory_mb: u64,
    },
}

/// The host's load after placing `req` on it, or `None` if it does not fit.
fn load_after(h: &HostLoad, req: &Request) -> Option<f64> {
    let cpu = h.vcpus_used + f64::from(req.vcpus);
    let mem = h.memory_used_mb + f64::from(req.memory_mb);
    if h.vcpu_capacity <= 0.0 || h.memory_capacity_mb <= 0.0 {
        return None;
    }
    if cpu > h.vcpu_capacity + 1e-9 || mem > h.memory_capacity_mb + 1e-9 {
        return None;
    }
    Some((cpu / h.vcpu_capacity).max(mem / h.memory_capacity_mb))
}

/// Picks the host for `req`.
pub fn place<'a>(hosts: &'a [HostLoad], req: &Request) -> Result<&'a HostLoad, NoPlacement> {
    let online: Vec<&HostLoad> = hosts.iter().filter(|h| h.online).collect();
    if online.is_empty() {
        return Err(NoPlacement::NoHosts);
    }
    let eligible: Vec<&HostLoad> = if req.template_pinned {
        online.into_iter().filter(|h| h.has_template).collect()
    } else {
        online
    };
    if eligible.is_empty() {
        return Err(NoPlacement::TemplateNowhere);
    }
    eligible
        .iter()
        .filter_map(|h| load_after(h, req).map(|load| (*h, load)))
        .min_by(|(a, la), (b, lb)| {
            // Template holders first, then the lightest load, then the id
            // (deterministic ties).
            (!a.has_template, *la, &a.id)
                .partial_cmp(&(!b.has_template, *lb, &b.id))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .map(|(h, _)| h)
        .ok_or_else(|| {
            let free = |h: &&HostLoad| {
                (
                    (h.vcpu_capacity - h.vcpus_used).max(0.0),
                    (h.memory_capacity_mb - h.memory_used_mb).max(0.0),
                )
            };
            let (fc, fm) = eligible
                .iter()
                .map(free)
                .fold((0.0f64, 0.0f64), |(c, m), (fc, fm)| (c.max(fc), m.max(fm)));
            NoPlacement::Full {
                vcpus: req.vcpus,
                memory_mb: req.memory_mb,
                free_vcpus: fc.floor() as u64,
                free_memory_mb: fm.floor() as u64,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, cap: (f64, f64), used: (f64, f64), has_template: bool) -> HostLoad {
        HostLoad {
            id: id.into(),
            online: true,
            vcpu_capacity: cap.0,
            memory_capacity_mb: cap.1,
            vcpus_used: used.0,
            memory_used_mb: used.1,
            has_template,
        }
    }

    const REQ: Request = Request {
        vcpus: 1,
        memory_mb: 512,
        template_pinned: false,
    };

    #[test]
    fn least_loaded_by_tightest_resource() {
        // a: cpu nearly idle but memory 75% used; b: cpu 50%, memory light.
        let hosts = [
            host("a", (8.0, 4096.0), (0.0, 3072.0), false),
            host("b", (8.0, 4096.0), (4.0, 0.0), false),
        ];
        // After placement a is at max(1/8, 3584/4096)=0.875, b at max(5/8, 512/4096)=0.625.
        assert_eq!(place(&hosts, &REQ).unwrap().id, "b");
    }

    #[test]
    fn template_holders_preferred_even_if_busier() {
        let hosts = [
            host("idle", (8.0, 8192.0), (0.0, 0.0), false),
            host("warm", (8.0, 8192.0), (6.0, 4096.0), true),
        ];
        assert_eq!(place(&hosts, &REQ).unwrap().id, "warm");
    }

    #[test]
    fn falls_back_when_template_holder_is_full() {
        let hosts = [
            host("idle", (8.0, 8192.0), (0.0, 0.0), false),
            host("warm", (8.0, 8192.0), (8.0, 4096.0), true),
        ];
        assert_eq!(place(&hosts, &REQ).unwrap().id, "idle");
    }

    #[test]
    fn pinned_templates_only_where_they_are() {
        let req = Request {
            template_pinned: true,
            ..REQ
        };
        let hosts = [
            host("idle", (8.0, 8192.0), (0.0, 0.0), false),
            host("holder", (8.0, 8192.0), (7.0, 0.0), true),
        ];
        assert_eq!(place(&hosts, &req).unwrap().id, "holder");
        let full = [
            host("idle", (8.0, 8192.0), (0.0, 0.0), false),
            host("holder", (8.0, 8192.0), (8.0, 0.0), true),
        ];
        assert!(matches!(place(&full, &req), Err(NoPlacement::Full { .. })));
        assert_eq!(place(&hosts[..1], &req), Err(NoPlacement::TemplateNowhere));
    }

    #[test]
    fn admission_control_refuses_when_full() {
        let hosts = [host("a", (2.0, 1024.0), (2.0, 0.0), false)];
        match place(&hosts, &REQ) {
            Err(NoPlacement::Full {
                free_vcpus,
                free_memory_mb,
                ..
            }) => {
                assert_eq!((free_vcpus, free_memory_mb), (0, 1024));
            }
            other => panic!("expected Full, got {other:?}"),
        }
        // Exactly filling a host is allowed.
        let hosts = [host("a", (2.0, 1024.0), (1.0, 512.0), false)];
        assert_eq!(place(&hosts, &REQ).unwrap().id, "a");
    }

    #[test]
    fn offline_and_empty() {
        assert_eq!(place(&[], &REQ), Err(NoPlacement::NoHosts));
        let mut h = host("a", (8.0, 8192.0), (0.0, 0.0), true);
        h.online = false;
        assert_eq!(place(&[h], &REQ), Err(NoPlacement::NoHosts));
        let zero = host("z", (0.0, 0.0), (0.0, 0.0), false);
        assert!(matches!(
            place(&[zero], &REQ),
            Err(NoPlacement::Full { .. })
        ));
    }

    #[test]
    fn ties_are_deterministic() {
        let hosts = [
            host("b", (8.0, 8192.0), (0.0, 0.0), false),
            host("a", (8.0, 8192.0), (0.0, 0.0), false),
        ];
        assert_eq!(place(&hosts, &REQ).unwrap().id, "a");
    }
}
