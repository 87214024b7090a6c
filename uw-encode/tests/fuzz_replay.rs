//! Replays the committed fuzz corpus and every crash artifact through the
//! fuzz harnesses, on stable, as part of `cargo test`.
//!
//! `fuzz/corpus/<target>/` holds the minimized corpus of each target
//! (`cargo fuzz cmin`), `fuzz/artifacts/<target>/` every input that once
//! crashed it. Each file is fed to the same function the libFuzzer target
//! calls (`uw_fuzz_harness::TARGETS`), so a fixed bug stays fixed. See
//! docs/security.md for how the corpus was made.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Files directly under `dir`, sorted; none if it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, harness: uw_fuzz_harness::Harness) -> (usize, usize) {
    let corpus = inputs(&fuzz_dir().join("corpus").join(target));
    let artifacts = inputs(&fuzz_dir().join("artifacts").join(target));
    for path in corpus.iter().chain(&artifacts) {
        let data = std::fs::read(path).expect("readable corpus file");
        // A panic names the file, so it can be rerun with `cargo fuzz run`.
        eprintln!("replay {target}: {}", path.display());
        harness(&data);
    }
    (corpus.len(), artifacts.len())
}

#[test]
fn corpus_and_artifacts_replay_without_failure() {
    let mut total = 0;
    for &(target, harness) in uw_fuzz_harness::TARGETS {
        let (corpus, artifacts) = replay(target, harness);
        println!("{target}: {corpus} corpus inputs, {artifacts} artifacts replayed");
        assert!(
            corpus > 0,
            "fuzz/corpus/{target}/ is empty: the committed corpus is missing"
        );
        total += corpus + artifacts;
    }
    println!("{total} inputs replayed");
}

/// The seed files are valid: they open, verify, and survive every harness
/// (each harness is given the file with the prefix byte it expects).
#[test]
fn seed_files_are_valid_and_pass_every_harness() {
    for (name, bytes) in uw_fuzz_harness::seed_files() {
        let file = uw_format::UwFile::from_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        file.verify(|_| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        uw_fuzz_harness::open(&bytes);
        uw_fuzz_harness::mutate_valid(&bytes);
        for flags in [0u8, 1, 3] {
            let mut prefixed = vec![flags];
            prefixed.extend_from_slice(&bytes);
            uw_fuzz_harness::decode(&prefixed);
            uw_fuzz_harness::decode_fill(&prefixed);
        }
    }
}

/// Checksum repair turns a file with a flipped data byte back into one that
/// opens; it is what lets the fuzzer past the CRCs.
#[test]
fn checksum_repair_reaches_past_the_crcs() {
    let (_, mut bytes) = uw_fuzz_harness::seed_files().remove(0);
    let file = uw_format::UwFile::from_bytes(&bytes).expect("seed opens");
    let at = file.tensor_at(3).expect("F32 tensor").data_offset() as usize;
    drop(file);
    bytes[at] ^= 0x40;
    bytes[60] ^= 1;
    assert!(uw_format::UwFile::from_bytes(&bytes).is_err());
    uw_fuzz_harness::repair_checksums(&mut bytes);
    let file = uw_format::UwFile::from_bytes(&bytes).expect("repaired file opens");
    file.verify(|_| {})
        .expect("a raw tensor's new bytes are consistent again");
}
