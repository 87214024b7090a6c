//! Fuzz target `mutate_valid`: see `uw_fuzz_harness::mutate_valid`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| uw_fuzz_harness::mutate_valid(data));
