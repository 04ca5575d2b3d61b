//! Fuzz `Location` rewriting for path-prefix routes: whatever the upstream
//! sends, a rewritten value lives under the route's prefix, and a
//! root-relative path keeps every byte after the prefix (trailing slashes
//! included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_edge::location::rewrite;

const PREFIX: &str = "/proxy/abc/8080";

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b) % data.len().max(1));
    let (host, location) = data.split_at(split);
    if let Some(out) = rewrite(location, PREFIX, &[host, b"localhost:8080"]) {
        assert!(out.starts_with(PREFIX.as_bytes()));
        if location.starts_with(b"/") && !location.starts_with(b"//") {
            assert_eq!(&out[PREFIX.len()..], location);
        }
    }
});
