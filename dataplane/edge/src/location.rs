//! `Location` rewriting for path-prefix routes (`/proxy/{id}/{port}/…`): an
//! upstream that redirects to `/login` means `/proxy/{id}/{port}/login` to
//! the browser. Root-relative locations and absolute ones that point at the
//! upstream get the prefix; everything else (relative references, other
//! hosts) is left alone. Paths are never normalised: `dir/` stays `dir/`.

/// Rewrites `location` for a route with `prefix` (`/proxy/{id}/{port}`).
/// `upstream_hosts` are the authorities that mean "the upstream" (the Host the
/// request carried, the capsule address with its port, `localhost:{port}`…).
/// Returns `None` when the value stays as it is.
pub fn rewrite(location: &[u8], prefix: &str, upstream_hosts: &[&[u8]]) -> Option<Vec<u8>> {
    let path = if location.starts_with(b"//") {
        // Scheme-relative: //host/path.
        upstream_path(&location[2..], upstream_hosts)?
    } else if location.starts_with(b"/") {
        location
    } else {
        let rest = strip_scheme(location)?;
        upstream_path(rest, upstream_hosts)?
    };
    let prefix = prefix.as_bytes();
    if path.starts_with(prefix) && matches!(path.get(prefix.len()), None | Some(b'/' | b'?' | b'#'))
    {
        // Already under the prefix (the app knows X-Forwarded-Prefix).
        return (path.len() != location.len()).then(|| path.to_vec());
    }
    let mut out = Vec::with_capacity(prefix.len() + path.len() + 1);
    out.extend_from_slice(prefix);
    if !path.starts_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(path);
    Some(out)
}

/// `http://rest` / `https://rest` (any case) → `rest`; anything else is not absolute.
fn strip_scheme(location: &[u8]) -> Option<&[u8]> {
    for scheme in [&b"http://"[..], b"https://", b"ws://", b"wss://"] {
        if location.len() >= scheme.len() && location[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(&location[scheme.len()..]);
        }
    }
    None
}

/// `authority/path…` → `/path…` when the authority is the upstream's.
fn upstream_path<'a>(rest: &'a [u8], upstream_hosts: &[&[u8]]) -> Option<&'a [u8]> {
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let ours = upstream_hosts
        .iter()
        .any(|h| authority.eq_ignore_ascii_case(h));
    ours.then_some(if path.is_empty() {
        b"/".as_slice()
    } else {
        path
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/proxy/abc/8080";
    const HOSTS: [&[u8]; 2] = [b"10.11.0.2:8080", b"localhost:8080"];

    fn rw(loc: &str) -> Option<String> {
        rewrite(loc.as_bytes(), P, &HOSTS).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn root_relative_gets_prefix_with_slashes_kept() {
        assert_eq!(rw("/login").as_deref(), Some("/proxy/abc/8080/login"));
        assert_eq!(rw("/dir/").as_deref(), Some("/proxy/abc/8080/dir/"));
        assert_eq!(rw("/").as_deref(), Some("/proxy/abc/8080/"));
        assert_eq!(
            rw("/a?next=/b#f").as_deref(),
            Some("/proxy/abc/8080/a?next=/b#f")
        );
    }

    #[test]
    fn absolute_to_upstream_becomes_prefixed_path() {
        assert_eq!(
            rw("http://10.11.0.2:8080/x/").as_deref(),
            Some("/proxy/abc/8080/x/")
        );
        assert_eq!(
            rw("HTTP://LOCALHOST:8080").as_deref(),
            Some("/proxy/abc/8080/")
        );
        assert_eq!(
            rw("http://localhost:8080?a=1").as_deref(),
            Some("/proxy/abc/8080/?a=1")
        );
        assert_eq!(
            rw("//localhost:8080/y").as_deref(),
            Some("/proxy/abc/8080/y")
        );
    }

    #[test]
    fn others_untouched() {
        assert_eq!(rw("relative/path/"), None);
        assert_eq!(rw("../up"), None);
        assert_eq!(rw("https://example.com/x"), None);
        assert_eq!(rw("http://localhost:9090/x"), None);
        assert_eq!(rw("/proxy/abc/8080/already"), None);
        assert_eq!(
            rw("http://localhost:8080/proxy/abc/8080/x").as_deref(),
            Some("/proxy/abc/8080/x")
        );
        assert_eq!(
            rw("/proxy/abc/80800").as_deref(),
            Some("/proxy/abc/8080/proxy/abc/80800")
        );
    }
}
