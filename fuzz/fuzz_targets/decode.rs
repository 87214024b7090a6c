//! Fuzz target `decode`: see `uw_fuzz_harness::decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| uw_fuzz_harness::decode(data));
