//! Names every process agrees on: envd's port and how a host name names a
//! capsule port (`{port}-{capsule id}.{domain}`). The edge routes by it, the
//! control plane builds URLs with it, SDKs compose it from an API address.

/// envd's port inside every capsule.
pub const ENVD_PORT: u16 = 49983;

/// Longest capsule id accepted anywhere.
pub const MAX_CAPSULE_ID_LEN: usize = 128;

/// True for a capsule id: 1..=128 of `[A-Za-z0-9_-]`.
pub fn valid_capsule_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CAPSULE_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// A capsule port named by a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsuleHost<'a> {
    /// Port inside the capsule.
    pub port: u16,
    /// Capsule id (checked with [`valid_capsule_id`]).
    pub id: &'a str,
}

/// A host that is shaped like a capsule host but names one badly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The part before the first `-` is not a port in 1..=65535.
    #[error("invalid capsule port")]
    BadPort,
    /// The part after the first `-` is not a capsule id.
    #[error("invalid capsule id")]
    BadId,
}

/// A port number in 1..=65535, digits only.
pub fn parse_port(port: &[u8]) -> Option<u16> {
    if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Digits only: ASCII, so from_utf8 cannot fail; parse fails above 65535.
    let port: u16 = std::str::from_utf8(port).ok()?.parse().ok()?;
    (port != 0).then_some(port)
}

/// The host without a trailing `:port` (IPv6 literals keep their brackets).
pub fn strip_port(host: &[u8]) -> &[u8] {
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) if !host.contains(&b']') || (colon > 0 && host[colon - 1] == b']') => {
            &host[..colon]
        }
        _ => host,
    }
}

/// Reads `{port}-{id}.{domain}[:port]`.
///
/// With `domain`, only hosts exactly one label under it (case-insensitive)
/// are capsule hosts; without, any host whose first label has the shape is
/// one (the address an SDK composes from the API's own `host:port`).
/// `Ok(None)`: not a capsule host at all.
pub fn capsule_host<'a>(
    host: &'a [u8],
    domain: Option<&str>,
) -> Result<Option<CapsuleHost<'a>>, HostError> {
    let host = strip_port(host);
    let label = match domain {
        Some(domain) => {
            let domain = domain.trim_start_matches('.').as_bytes();
            if host.len() <= domain.len() + 1 {
                return Ok(None);
            }
            let (label, suffix) = host.split_at(host.len() - domain.len());
            if !suffix.eq_ignore_ascii_case(domain) || label.last() != Some(&b'.') {
                return Ok(None);
            }
            let label = &label[..label.len() - 1];
            if label.contains(&b'.') {
                // Deeper names are not capsule hosts.
                return Ok(None);
            }
            label
        }
        None => match host.iter().position(|&b| b == b'.') {
            Some(dot) if dot + 1 < host.len() => &host[..dot],
            _ => return Ok(None),
        },
    };
    let Some(dash) = label.iter().position(|&b| b == b'-') else {
        return Ok(None);
    };
    let (port, id) = (&label[..dash], &label[dash + 1..]);
    let port = parse_port(port).ok_or(HostError::BadPort)?;
    if !valid_capsule_id(id) {
        return Err(HostError::BadId);
    }
    // valid_capsule_id admits ASCII only.
    let id = std::str::from_utf8(id).map_err(|_| HostError::BadId)?;
    Ok(Some(CapsuleHost { port, id }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<'a>(host: &'a str, domain: Option<&str>) -> Result<Option<(u16, &'a str)>, HostError> {
        capsule_host(host.as_bytes(), domain).map(|h| h.map(|h| (h.port, h.id)))
    }

    #[test]
    fn under_a_domain() {
        assert_eq!(
            parse("8080-abc-def.W.dev:443", Some("w.dev")),
            Ok(Some((8080, "abc-def")))
        );
        assert_eq!(parse("8080-abc.other.dev", Some("w.dev")), Ok(None));
        assert_eq!(parse("a.8080-abc.w.dev", Some("w.dev")), Ok(None));
        assert_eq!(parse("w.dev", Some("w.dev")), Ok(None));
        assert_eq!(parse("x-abc.w.dev", Some("w.dev")), Err(HostError::BadPort));
        assert_eq!(parse("0-abc.w.dev", Some("w.dev")), Err(HostError::BadPort));
        assert_eq!(parse("80-a%b.w.dev", Some("w.dev")), Err(HostError::BadId));
    }

    #[test]
    fn any_domain() {
        assert_eq!(
            parse("8000-cap-abc.127.0.0.1:7000", None),
            Ok(Some((8000, "cap-abc")))
        );
        assert_eq!(parse("localhost:7000", None), Ok(None));
        assert_eq!(parse("api.example.com", None), Ok(None));
        assert_eq!(parse("8000-x.", None), Ok(None));
        assert_eq!(parse("99999-x.a", None), Err(HostError::BadPort));
        assert_eq!(parse("+80-x.a", None), Err(HostError::BadPort));
    }

    #[test]
    fn strips_ports_but_not_ipv6() {
        assert_eq!(strip_port(b"a.b:80"), b"a.b");
        assert_eq!(strip_port(b"[::1]:80"), b"[::1]");
        assert_eq!(strip_port(b"[::1]"), b"[::1]");
        assert_eq!(strip_port(b":80"), b"");
    }
}
