//! Fuzz the edge's request-head path: httparse parsing into `Head`, body
//! framing decisions, routing (headers, any Host value with and without a
//! domain, absolute-form targets, paths) and the internal-route check.
//! Response heads go through the same parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_edge::{access, target};
use warren_relay::head::Head;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((head, len))) = Head::parse_request(data) {
        assert!(len <= data.len());
        let _ = head.request_framing();
        let _ = head.wants_close();
        for domain in [Some("warren.test"), None] {
            if let Ok(target) = target::resolve(&head, domain) {
                assert!(target.upstream_path.starts_with(b"/"));
                let _ = access::is_internal_path(&target.upstream_path);
            }
        }
        if let Some(host) = head.header("host") {
            let _ = warren_proto::addr::capsule_host(host, None);
            let _ = warren_proto::addr::capsule_host(host, Some("warren.test"));
        }
    }
    if let Ok(Some((head, _))) = Head::parse_response(data) {
        let _ = head.response_framing(b"GET");
    }
});
