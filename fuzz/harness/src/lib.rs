//! Fuzz harnesses of the `.uw` reader (`uw-format`) and encoder (`uw-encode`).
//!
//! Each harness takes arbitrary bytes, must never panic on them by itself,
//! and panics (`assert!`) only when the code under test breaks one of its
//! promises: a panic inside the reader, a decoder that disagrees with a
//! reference, an encoder whose output does not decode back, a decode whose
//! result depends on what the output buffer held before.
//!
//! The same functions run under libFuzzer (`fuzz/fuzz_targets/*.rs`, nightly
//! features via `cargo fuzz`) and on stable in the workspace's
//! `uw-encode/tests/fuzz_replay.rs`, which replays the committed corpus and
//! every crash artifact through them.

#![forbid(unsafe_code)]

mod checks;
mod repair;
mod seeds;

pub use checks::{decode, decode_fill, huffman, mutate_valid, open, roundtrip};
pub use repair::{repair_checksums, repair_decoded_checksums};
pub use seeds::seed_files;

/// A harness: one call per fuzz input.
pub type Harness = fn(&[u8]);

/// Every fuzz target by name (the names of `fuzz/fuzz_targets/*.rs` and of
/// the `fuzz/corpus/` and `fuzz/artifacts/` folders).
pub const TARGETS: &[(&str, Harness)] = &[
    ("open", open),
    ("decode", decode),
    ("huffman", huffman),
    ("roundtrip", roundtrip),
    ("mutate_valid", mutate_valid),
    ("decode_fill", decode_fill),
];
