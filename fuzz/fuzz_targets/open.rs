//! Fuzz target `open`: see `uw_fuzz_harness::open`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| uw_fuzz_harness::open(data));
