//! Known answers of `testdata/` (see testdata/README.md): guards the format
//! and the reference encoder's output against unintended change.
//!
//! For every case of `testdata/known-answers.json`: the reader decodes the
//! `.uw` file back to its source byte for byte and finds the recorded
//! per-tensor facts; the encoder (library and `uw` binary) run on the source
//! with the recorded options reproduces the `.uw` file byte for byte; every
//! file matches `SHA256SUMS`; and `examples/make_testdata.rs` regenerates
//! every file unchanged. After a deliberate change of the encoder's output,
//! regenerate with `cargo run -p uw-encode --example make_testdata -- testdata`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use serde_json::Value;
use sha2::{Digest, Sha256};
use uw_encode::convert::{ConvertOptions, Target, convert_to_vec, parse_safetensors};
use uw_format::UwFile;

// The generator itself, so the test can check it still writes these files.
#[allow(dead_code)]
#[path = "../examples/make_testdata.rs"]
mod make_testdata;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

fn read(name: &str) -> Vec<u8> {
    let path = testdata().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Where two byte strings first differ, for a readable failure.
fn difference(actual: &[u8], expected: &[u8]) -> Option<String> {
    if actual == expected {
        return None;
    }
    let at = actual
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(actual.len().min(expected.len()));
    Some(format!(
        "lengths {} vs {} expected; first difference at byte {at} ({:02x?} vs {:02x?})",
        actual.len(),
        expected.len(),
        actual.get(at),
        expected.get(at)
    ))
}

/// One case of known-answers.json.
struct Case {
    json: Value,
}

impl Case {
    fn str(&self, key: &str) -> &str {
        self.json[key]
            .as_str()
            .unwrap_or_else(|| panic!("case field {key} is not a string"))
    }
    fn u64(&self, key: &str) -> u64 {
        self.json[key]
            .as_u64()
            .unwrap_or_else(|| panic!("case field {key} is not a number"))
    }
    fn uw(&self) -> &str {
        self.str("uw")
    }
    fn options(&self) -> ConvertOptions {
        ConvertOptions {
            target: match self.str("encoding") {
                "huffman" => Target::Huffman,
                "palette4" => Target::Palette4,
                "raw" => Target::Raw,
                other => panic!("{}: unknown encoding {other}", self.uw()),
            },
            alignment: self.u64("alignment") as u32,
            ..Default::default()
        }
    }
}

fn cases() -> Vec<Case> {
    let json: Value =
        serde_json::from_slice(&read("known-answers.json")).expect("known-answers.json parses");
    let cases: Vec<Case> = json["cases"]
        .as_array()
        .expect("a cases array")
        .iter()
        .map(|c| Case { json: c.clone() })
        .collect();
    assert!(cases.len() >= 10, "known-answers.json lists its cases");
    cases
}

#[test]
fn every_file_matches_sha256sums() {
    let sums = String::from_utf8(read("SHA256SUMS")).expect("UTF-8");
    let mut listed = Vec::new();
    for line in sums.lines() {
        let (hash, name) = line.split_once("  ").expect("`HASH  NAME` lines");
        assert_eq!(sha256_hex(&read(name)), hash, "sha256 of testdata/{name}");
        listed.push(name.to_owned());
    }
    // Every file at the top of testdata/ is covered (sub-folders may hold
    // other tests' data).
    for entry in std::fs::read_dir(testdata()).expect("testdata/ exists") {
        let entry = entry.expect("readable entry");
        let name = entry.file_name().into_string().expect("UTF-8 name");
        if entry.file_type().expect("file type").is_file() && name != "SHA256SUMS" {
            assert!(
                listed.contains(&name),
                "testdata/{name} is not in SHA256SUMS"
            );
        }
    }
}

#[test]
fn every_uw_file_decodes_to_its_source() {
    for case in cases() {
        let uw_name = case.uw();
        let uw = read(uw_name);
        let source = read(case.str("source"));
        assert_eq!(uw.len() as u64, case.u64("uw_len"), "{uw_name}: length");
        assert_eq!(sha256_hex(&uw), case.str("uw_sha256"), "{uw_name}: sha256");

        let file = UwFile::from_bytes(&uw).unwrap_or_else(|e| panic!("{uw_name}: {e}"));
        assert_eq!(
            u64::from(file.alignment()),
            case.u64("alignment"),
            "{uw_name}: alignment"
        );
        file.verify(|_| {})
            .unwrap_or_else(|e| panic!("{uw_name}: verify: {e}"));
        let expected = case.json["tensors"].as_array().expect("a tensors array");
        assert_eq!(file.len(), expected.len(), "{uw_name}: tensor count");
        for (t, want) in file.tensors().zip(expected) {
            let what = format!("{uw_name}: tensor {}", t.name());
            assert_eq!(t.name(), want["name"], "{what}: name");
            assert_eq!(t.dtype().name(), want["dtype"], "{what}: dtype");
            let shape: Vec<u64> = want["shape"]
                .as_array()
                .expect("shape array")
                .iter()
                .map(|d| d.as_u64().expect("dimension"))
                .collect();
            assert_eq!(t.shape(), shape.as_slice(), "{what}: shape");
            assert_eq!(t.encoding().name(), want["encoding"], "{what}: encoding");
            assert_eq!(
                u64::from(t.encoding().code()),
                want["encoding_code"],
                "{what}: encoding code"
            );
            assert_eq!(t.data_offset(), want["data_offset"], "{what}: data offset");
            assert_eq!(t.stored_len(), want["data_len"], "{what}: stored length");
            let decoded = t.decode_to_vec().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(
                decoded.len() as u64,
                want["decoded_len"],
                "{what}: decoded length"
            );
            assert_eq!(
                u64::from(crc32fast::hash(&decoded)),
                want["decoded_crc32"],
                "{what}: CRC-32 of the decoded bytes"
            );
        }

        let rebuilt = uw_encode::write_safetensors(
            &file,
            Vec::new(),
            64 << 20,
            &|_| {},
            &AtomicBool::new(false),
        )
        .unwrap_or_else(|e| panic!("{uw_name}: decode: {e:?}"));
        if let Some(d) = difference(&rebuilt, &source) {
            panic!(
                "{uw_name}: decoded safetensors != {}: {d}",
                case.str("source")
            );
        }
        assert_eq!(
            sha256_hex(&rebuilt),
            case.str("decoded_sha256"),
            "{uw_name}: sha256 of the decoded safetensors"
        );
        assert_eq!(rebuilt.len() as u64, case.u64("decoded_len"));
    }
}

#[test]
fn encoder_reproduces_every_uw_file() {
    for case in cases() {
        let source_bytes = read(case.str("source"));
        let source = parse_safetensors(&source_bytes).expect("source parses");
        let (uw, _) = convert_to_vec(&source, &case.options()).expect("converts");
        if let Some(d) = difference(&uw, &read(case.uw())) {
            panic!(
                "encoder output for {} changed ({d}); if on purpose, regenerate testdata/ \
                 (see testdata/README.md)",
                case.uw()
            );
        }
    }
}

/// With one thread (on a machine of two cores or more: one worker, and the
/// output written from a thread of its own) and with two, `uw convert`
/// writes the known-answer bytes and `uw decode` gives the source back.
#[test]
fn uw_binary_reproduces_every_uw_file() {
    let tmp = tempfile::tempdir().expect("temporary folder");
    for threads in ["1", "2"] {
        for case in cases() {
            let out = tmp.path().join(format!("{threads}-{}", case.uw()));
            let status = Command::new(env!("CARGO_BIN_EXE_uw"))
                .arg("convert")
                .arg(testdata().join(case.str("source")))
                .arg(&out)
                .args(["--encoding", case.str("encoding")])
                .args(["--align", &case.u64("alignment").to_string()])
                .args(["--threads", threads, "--quiet"])
                .status()
                .expect("runs uw");
            assert!(status.success(), "uw convert for {} failed", case.uw());
            let written = std::fs::read(&out).expect("uw wrote its output");
            if let Some(d) = difference(&written, &read(case.uw())) {
                panic!(
                    "`uw convert --threads {threads}` output for {} differs: {d}",
                    case.uw()
                );
            }
            let back = out.with_extension("safetensors");
            let status = Command::new(env!("CARGO_BIN_EXE_uw"))
                .arg("decode")
                .arg(&out)
                .arg(&back)
                .args(["--threads", threads, "--quiet"])
                .status()
                .expect("runs uw");
            assert!(status.success(), "uw decode for {} failed", case.uw());
            let restored = std::fs::read(&back).expect("uw wrote its output");
            if let Some(d) = difference(&restored, &read(case.str("source"))) {
                panic!(
                    "`uw decode --threads {threads}` of {} differs from its source: {d}",
                    case.uw()
                );
            }
        }
    }
}

#[test]
fn generator_reproduces_testdata() {
    let files = make_testdata::generate(&read(make_testdata::SAMPLE_NAME));
    let sums = String::from_utf8(read("SHA256SUMS")).expect("UTF-8");
    let listed: Vec<&str> = sums
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(_, n)| n))
        .chain(["SHA256SUMS"])
        .collect();
    let mut made: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    made.sort_unstable();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort_unstable();
    assert_eq!(made, listed_sorted, "the generator makes the listed files");
    for (name, bytes) in &files {
        if let Some(d) = difference(bytes, &read(name)) {
            panic!(
                "make_testdata now writes a different testdata/{name} ({d}); if on purpose, \
                 regenerate testdata/ (see testdata/README.md)"
            );
        }
    }
}
