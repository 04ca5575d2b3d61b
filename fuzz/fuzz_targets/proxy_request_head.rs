//! Fuzz the proxy's request-head path: httparse parsing into `Head`, body
//! framing decisions, routing (headers, host, path) and the internal-route
//! check. Response heads go through the same parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_edge::{access, head::Head, target};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((head, len))) = Head::parse_request(data) {
        assert!(len <= data.len());
        let _ = head.request_framing();
        let _ = head.wants_close();
        if let Ok(target) = target::resolve(&head, Some("warren.test")) {
            assert!(target.upstream_path.starts_with(b"/") || target.upstream_path == head.target());
            let _ = access::is_internal_path(&target.upstream_path);
        }
    }
    if let Ok(Some((head, _))) = Head::parse_response(data) {
        let _ = head.response_framing(b"GET");
    }
});
