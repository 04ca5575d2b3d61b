#![no_main]
//! Arbitrary bytes through the JSON and protobuf codecs of envd's and the
//! agent's request messages: decoding must fail cleanly or round-trip.

use libfuzzer_sys::fuzz_target;
use warren_proto::{
    agent::v1::CreateCapsuleRequest,
    connect::{Codec, Message},
    filesystem::ListDirRequest,
    process::StartRequest,
};

fn round_trip<M: Message + PartialEq + std::fmt::Debug>(data: &[u8]) {
    for codec in [Codec::Json, Codec::Proto] {
        if let Ok(msg) = codec.decode::<M>(data) {
            let again: M = codec.decode(&codec.encode(&msg)).expect("re-decoding our own encoding");
            assert_eq!(again, msg);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<StartRequest>(data);
    round_trip::<ListDirRequest>(data);
    round_trip::<CreateCapsuleRequest>(data);
});
