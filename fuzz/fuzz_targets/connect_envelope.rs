#![no_main]
//! Placeholder until the Connect envelope decoder lands.
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {});
