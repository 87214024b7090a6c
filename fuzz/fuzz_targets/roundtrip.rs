//! Fuzz target `roundtrip`: see `uw_fuzz_harness::roundtrip`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| uw_fuzz_harness::roundtrip(data));
