//! Writes the seed corpus of every target under `fuzz/seeds/<target>/`:
//! the in-memory seed files, the small `.uw` files of `testdata/` (if any),
//! and for targets that take a leading flag byte, each file behind flags 0,
//! 1 and 3. Run from `fuzz/`: `cargo run --example write_seeds`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let mut files: Vec<(String, Vec<u8>)> = uw_fuzz_harness::seed_files()
        .into_iter()
        .map(|(n, b)| (n.to_owned(), b))
        .collect();
    if let Ok(dir) = std::fs::read_dir("../testdata") {
        for entry in dir.flatten() {
            let path = entry.path();
            let small = entry.metadata().is_ok_and(|m| m.len() <= 64 << 10);
            if path.extension().is_some_and(|e| e == "uw") && small {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                files.push((format!("testdata-{name}"), std::fs::read(&path)?));
            }
        }
    }
    let out = Path::new("seeds");
    for target in ["open", "mutate_valid"] {
        std::fs::create_dir_all(out.join(target))?;
        for (name, bytes) in &files {
            std::fs::write(out.join(target).join(name), bytes)?;
        }
    }
    for target in ["decode", "decode_fill"] {
        std::fs::create_dir_all(out.join(target))?;
        for (name, bytes) in &files {
            for flags in [0u8, 1, 3] {
                let mut prefixed = vec![flags];
                prefixed.extend_from_slice(bytes);
                std::fs::write(
                    out.join(target).join(format!("{name}.flags{flags}")),
                    prefixed,
                )?;
            }
        }
    }
    for target in ["huffman", "roundtrip"] {
        std::fs::create_dir_all(out.join(target))?;
    }
    // roundtrip: every exponent-shaping mode over the same few words.
    for mode in 0..4u8 {
        let mut input = vec![3, 1, 0x1A, mode];
        input.extend(
            (0..600u32).flat_map(|i| ((i.wrapping_mul(2_654_435_761) >> 16) as u16).to_le_bytes()),
        );
        std::fs::write(out.join("roundtrip").join(format!("mode{mode}")), input)?;
    }
    // huffman: a 2-symbol table [1, 1], 101 values in chunks of 64 and 37
    // (8 and 5 bytes of zero bits), so the first symbol throughout.
    let mut input = vec![11, 0, 1, 0, 1, 1, 120, 100, 0, 0, 0, 0, 8, 0];
    input.extend([0u8; 13]);
    std::fs::write(out.join("huffman").join("two-symbols"), input)?;
    // The same code over 2^15 + 101 values (top bit of the size): 514 chunks
    // of 8 bytes (the last 5), through the decoder's multi-symbol tables.
    let mut input = vec![11, 0, 1, 0, 1, 1, 120, 100, 0x80, 0, 0, 0];
    for c in 1..514u16 {
        input.extend((8 * c).to_le_bytes());
    }
    input.extend(vec![0u8; 513 * 8 + 5]);
    std::fs::write(out.join("huffman").join("two-symbols-large"), input)?;
    Ok(())
}
