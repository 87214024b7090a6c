//! Fuzz target `decode_fill`: see `uw_fuzz_harness::decode_fill`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| uw_fuzz_harness::decode_fill(data));
