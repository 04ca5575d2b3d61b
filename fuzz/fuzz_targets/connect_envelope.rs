#![no_main]
//! Feeds arbitrary bytes, split at an arbitrary point, to the Connect envelope
//! decoder: it must never panic or allocate beyond its limit, and whatever it
//! decodes must re-encode to the same bytes.

use libfuzzer_sys::fuzz_target;
use warren_proto::connect::envelope::{Decoder, encode};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = (split as usize).min(rest.len());
    let mut dec = Decoder::new(64 * 1024);
    let mut consumed = Vec::new();
    for piece in [&rest[..split], &rest[split..]] {
        dec.push(piece);
        loop {
            match dec.next() {
                Ok(Some(env)) => consumed.extend_from_slice(&encode(env.flags, &env.data)),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    assert_eq!(&rest[..consumed.len()], &consumed[..]);
    let _ = dec.finish();
});
