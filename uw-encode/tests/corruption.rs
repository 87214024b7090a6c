//! Accidental damage: every single-bit flip and every truncation of the
//! known-answer `.uw` files in `testdata/` (and of small generated files) is
//! rejected by open + full verification.
//!
//! v1 ignores no byte: every byte of a file is covered by a CRC (header,
//! trailer, directory, each data section) or is padding that must be zero
//! (spec §10.5 F1), so a flip must be rejected; a flip that still opens,
//! verifies and decodes identically would be a byte the spec ignores, and
//! one that decodes differently would be silent corruption. Both fail the test.
//!
//! Runtime: files up to 8 KiB get every bit of every byte flipped. Larger
//! files get every bit of the header, the directory and the trailer, of the
//! first 128 bytes of each data section (its encoding header), of up to 4 KiB
//! of padding, and of 32 evenly spaced bytes per section; truncation is tried
//! at every length up to 8 KiB, then at the last 256 lengths and 256 evenly
//! spaced ones.

use std::path::Path;

use uw_format::UwFile;

const SMALL: usize = 8 << 10;

/// Everything a reader gets out of a file, to compare a damaged one with.
#[derive(PartialEq, Debug)]
struct Contents {
    tensors: Vec<(String, String, Vec<u64>, Vec<u8>)>,
    metadata: Vec<(String, String)>,
    source_header: Option<String>,
}

fn contents(file: &UwFile<'_>) -> Contents {
    Contents {
        tensors: file
            .tensors()
            .map(|t| {
                let bytes = t.decode_to_vec().expect("verified");
                (
                    t.name().to_owned(),
                    t.dtype().to_string(),
                    t.shape().to_vec(),
                    bytes,
                )
            })
            .collect(),
        metadata: file
            .metadata()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        source_header: file.source_header().map(str::to_owned),
    }
}

/// Open + full verification, cheapest checks first (section CRCs before
/// decoding): rejects exactly what `UwFile::verify` rejects, sooner.
fn accepted(bytes: &[u8]) -> Option<UwFile<'_>> {
    let file = UwFile::from_bytes(bytes).ok()?;
    for t in file.tensors() {
        t.check_data_crc().ok()?;
    }
    file.verify(|_| {}).ok()?;
    Some(file)
}

/// Byte positions to flip: all for small files, else the sample described
/// in the module documentation.
fn positions(file: &UwFile<'_>) -> Vec<usize> {
    let len = file.as_bytes().len();
    if len <= SMALL {
        return (0..len).collect();
    }
    let mut p: Vec<usize> = (0..64).chain(len - 64..len).collect();
    p.extend(file.directory_range());
    let mut padding = 0;
    let mut previous_end = 64;
    for t in file.tensors() {
        let (start, end) = (
            t.data_offset() as usize,
            (t.data_offset() + t.stored_len()) as usize,
        );
        for q in previous_end..start {
            if padding < 4096 {
                p.push(q);
                padding += 1;
            }
        }
        previous_end = end;
        p.extend(start..end.min(start + 128));
        if end > start {
            p.extend((0..32).map(|k| start + k * (end - start) / 32));
        }
    }
    p.extend((previous_end..file.directory_range().start).take(4096 - padding.min(4096)));
    p.sort_unstable();
    p.dedup();
    p
}

fn truncation_lengths(len: usize) -> Vec<usize> {
    if len <= SMALL {
        return (0..len).collect();
    }
    let mut l: Vec<usize> = (0..SMALL).chain(len - 256..len).collect();
    l.extend((0..256).map(|k| k * len / 256));
    l.sort_unstable();
    l.dedup();
    l
}

struct Tally {
    flips: usize,
    rejected: usize,
    identical: usize,
    truncations: usize,
}

fn damage(name: &str, original: &[u8]) -> Tally {
    let file = accepted(original).unwrap_or_else(|| panic!("{name}: not a valid file"));
    let expected = contents(&file);
    let positions = positions(&file);
    drop(file);
    let mut bytes = original.to_vec();
    let mut tally = Tally {
        flips: 0,
        rejected: 0,
        identical: 0,
        truncations: 0,
    };
    let mut identical_at = Vec::new();
    for &at in &positions {
        for bit in 0..8 {
            bytes[at] ^= 1 << bit;
            tally.flips += 1;
            match accepted(&bytes) {
                None => tally.rejected += 1,
                Some(damaged) => {
                    assert!(
                        contents(&damaged) == expected,
                        "{name}: flipping bit {bit} of byte {at} silently changes the contents"
                    );
                    tally.identical += 1;
                    identical_at.push((at, bit));
                }
            }
            bytes[at] ^= 1 << bit;
        }
    }
    // No byte of a v1 file is ignored (module documentation).
    assert!(
        identical_at.is_empty(),
        "{name}: flips accepted at (byte, bit) {:?}",
        &identical_at[..identical_at.len().min(10)]
    );
    for len in truncation_lengths(original.len()) {
        tally.truncations += 1;
        let err = match UwFile::from_bytes(&original[..len]) {
            Ok(_) => panic!("{name}: truncated to {len} bytes, still opens"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("truncated"),
            "{name}: truncated to {len} bytes: unclear error {err:?}"
        );
    }
    // Growing the file is damage too.
    let mut longer = original.to_vec();
    longer.extend_from_slice(&[0; 64]);
    assert!(
        UwFile::from_bytes(&longer).is_err(),
        "{name}: appended bytes accepted"
    );
    tally
}

/// The known-answer files of testdata/ (the 3 MB sample-model file is left
/// to the sampling above), or generated files if testdata/ has none.
fn files() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "uw"))
                .map(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    (name, std::fs::read(&p).expect("readable"))
                })
                .collect()
        })
        .unwrap_or_default();
    if files.is_empty() {
        println!("testdata/ has no .uw file: using generated files only");
    }
    files.sort();
    files.extend(
        uw_fuzz_harness::seed_files()
            .into_iter()
            .map(|(n, b)| (format!("generated {n}"), b)),
    );
    files
}

#[test]
fn every_bit_flip_and_truncation_is_rejected() {
    let mut total = Tally {
        flips: 0,
        rejected: 0,
        identical: 0,
        truncations: 0,
    };
    for (name, bytes) in files() {
        let t = damage(&name, &bytes);
        println!(
            "{name} ({} bytes): {} flips tried, {} rejected, {} identical; {} truncations rejected",
            bytes.len(),
            t.flips,
            t.rejected,
            t.identical,
            t.truncations
        );
        total.flips += t.flips;
        total.rejected += t.rejected;
        total.identical += t.identical;
        total.truncations += t.truncations;
    }
    println!(
        "total: {} flips tried, {} rejected, {} identical; {} truncations rejected",
        total.flips, total.rejected, total.identical, total.truncations
    );
    assert_eq!(total.rejected, total.flips);
}
