#![no_main]
//! Arbitrary bytes through the page server's handshake parser (what a process
//! connecting to the userfaultfd socket sends). The first 8 bytes pick the
//! memory file's length, the next one where the bytes are split in two reads.
//! Parsing must fail cleanly or yield regions that fit the file, are aligned
//! and disjoint, and round-trip; splitting the bytes never changes the verdict.

use std::os::fd::OwnedFd;

use libfuzzer_sys::fuzz_target;
use warren_uffd::handshake::{self, Assembler, HandshakeError, Region};

fuzz_target!(|data: &[u8]| {
    let Some((head, json)) = data.split_first_chunk::<9>() else { return };
    let memory_len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let parsed = handshake::parse(json, memory_len);
    if let Ok(regions) = &parsed {
        for r in regions {
            let ps = r.page_size.bytes();
            assert!(r.size > 0 && r.size % ps == 0 && r.base % ps == 0 && r.offset % ps == 0);
            assert!(r.offset.checked_add(r.size).is_some_and(|end| end <= memory_len));
            assert!(r.base.checked_add(r.size).is_some());
        }
        for (i, a) in regions.iter().enumerate() {
            for b in &regions[i + 1..] {
                assert!(a.base + a.size <= b.base || b.base + b.size <= a.base, "address overlap");
                assert!(a.offset + a.size <= b.offset || b.offset + b.size <= a.offset, "file overlap");
            }
        }
        let again = handshake::parse(&handshake::encode(regions), memory_len).expect("own encoding parses");
        assert_eq!(&again, regions);
    }
    // The same bytes in two reads, with no descriptor. The assembler answers
    // as soon as the JSON value is complete, so its verdict is that of the
    // bytes it had by then: a valid message is refused for the missing fd only,
    // an invalid one for the same reason as `parse` gives.
    let split = usize::from(head[8]).min(json.len());
    let mut asm = Assembler::default();
    match asm.push(&json[..split], Vec::new(), memory_len) {
        Ok(None) => agree(&parsed, asm.push(&json[split..], Vec::new(), memory_len)),
        early => agree(&handshake::parse(&json[..split], memory_len), early),
    }
});

fn agree(parsed: &Result<Vec<Region>, HandshakeError>, verdict: Result<Option<(Vec<Region>, OwnedFd)>, HandshakeError>) {
    match (parsed, verdict) {
        (Ok(_), Err(HandshakeError::MissingFd)) => {}
        (Err(HandshakeError::Json(e)), Ok(None)) if e.is_eof() => {}
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (p, v) => panic!("parse said {p:?} but the assembler said {v:?}"),
    }
}
