//! Fuzz target `huffman`: see `uw_fuzz_harness::huffman`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| uw_fuzz_harness::huffman(data));
