//! Small valid `.uw` files, built in memory: seeds for the fuzz corpora and
//! inputs for tests that need a file of every kind without a model at hand.

use uw_encode::bf16_huffman::{self, HuffmanParams};
use uw_encode::container::{ContainerWriter, header_bytes};
use uw_encode::palette4;
use uw_format::{Dtype, Encoding};

/// Deterministic weight-like BF16 values: roughly normal with standard
/// deviation `scale`, and every 61st value an outlier (a rare exponent, so
/// the encoders need their escape / exception paths).
fn weights(count: usize, scale: f32, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..count)
        .flat_map(|i| {
            let normal = (0..4).map(|_| uniform()).sum::<f32>() - 2.0;
            let x = if i % 61 == 60 {
                normal * 3e4
            } else {
                normal * scale
            };
            ((x.to_bits() >> 16) as u16).to_le_bytes()
        })
        .collect()
}

/// Small chunks and blocks so that a few hundred values span several chunks
/// and several table selectors.
const SMALL: HuffmanParams = HuffmanParams {
    block_log2: 6,
    chunk_log2: 7,
    max_code_len: 12,
    max_tables: 4,
};

#[allow(clippy::too_many_arguments)]
fn add(
    w: &mut ContainerWriter<Vec<u8>>,
    name: &str,
    dtype: Dtype,
    shape: &[u64],
    encoding: Encoding,
    section: &[u8],
    decoded: &[u8],
) {
    w.add_tensor(
        name,
        dtype,
        shape,
        encoding,
        section,
        decoded.len() as u64,
        crc32fast::hash(decoded),
    )
    .expect("seed tensors are writable");
}

/// Valid files of every kind, each a few KiB: `(file name, bytes)`.
///
/// - `mixed.uw`: bf16-huffman over several chunks and tables, bf16-palette4
///   with exceptions, raw BF16, F32, an odd-length U8, a scalar, an empty
///   tensor, metadata and a source header; header patched (seekable writer).
/// - `streamed.uw`: alignment 128, header directory fields left 0, no
///   source header, a Huffman tensor with a single exponent (one-symbol code).
/// - `palette_only.uw`: palette-4 tensors of odd and even length.
/// - `large.uw`: one Huffman tensor of 2^15 + 37 values in 257 chunks, large
///   enough for the decoder's multi-symbol tables and interleaved chunks.
pub fn seed_files() -> Vec<(&'static str, Vec<u8>)> {
    let mut files = Vec::new();

    let big = weights(600, 0.02, 1);
    let mid = weights(301, 0.5, 2);
    let small = weights(8, 1.0, 3);
    let f32s: Vec<u8> = (0..12u32)
        .flat_map(|i| (i as f32 * 0.25).to_le_bytes())
        .collect();
    let u8s: Vec<u8> = (0..7u8).map(|i| i * 37).collect();
    let mut w = ContainerWriter::new(Vec::new(), 64).expect("alignment 64");
    let h = bf16_huffman::encode(&big, &SMALL).expect("encodes");
    add(
        &mut w,
        "layers.0.mlp.weight",
        Dtype::BF16,
        &[20, 30],
        Encoding::Bf16Huffman,
        &h,
        &big,
    );
    let p = palette4::encode(&mid).expect("encodes");
    add(
        &mut w,
        "layers.0.norm.weight",
        Dtype::BF16,
        &[301],
        Encoding::Bf16Palette4,
        &p,
        &mid,
    );
    add(
        &mut w,
        "bias",
        Dtype::BF16,
        &[2, 4],
        Encoding::Raw,
        &small,
        &small,
    );
    add(
        &mut w,
        "scale",
        Dtype::F32,
        &[3, 4],
        Encoding::Raw,
        &f32s,
        &f32s,
    );
    add(&mut w, "ids", Dtype::U8, &[7], Encoding::Raw, &u8s, &u8s);
    add(&mut w, "flag", Dtype::BOOL, &[], Encoding::Raw, &[1], &[1]);
    add(
        &mut w,
        "empty",
        Dtype::BF16,
        &[0, 3],
        Encoding::Raw,
        &[],
        &[],
    );
    let metadata = [
        ("format".to_owned(), "pt".to_owned()),
        ("note".to_owned(), "seed \u{e9}".to_owned()),
    ];
    let source = r#"{"__metadata__":{"format":"pt","note":"seed é"},"layers.0.mlp.weight":{"dtype":"BF16","shape":[20,30],"data_offsets":[0,1200]}}"#;
    let (mut bytes, fin) = w.finish(&metadata, Some(source)).expect("finishes");
    bytes[..64].copy_from_slice(&header_bytes(
        64,
        Some((fin.directory_offset, fin.directory_len)),
    ));
    files.push(("mixed.uw", bytes));

    let flat: Vec<u8> = weights(200, 0.01, 4)
        .chunks_exact(2)
        .flat_map(|w| (u16::from_le_bytes([w[0], w[1]]) & 0x807F | 120 << 7).to_le_bytes())
        .collect();
    let mut w = ContainerWriter::new(Vec::new(), 128).expect("alignment 128");
    let h = bf16_huffman::encode(&flat, &SMALL).expect("encodes");
    add(
        &mut w,
        "flat",
        Dtype::BF16,
        &[200],
        Encoding::Bf16Huffman,
        &h,
        &flat,
    );
    let (bytes, _) = w.finish(&[], None).expect("finishes");
    files.push(("streamed.uw", bytes));

    let odd = weights(33, 0.1, 5);
    let even = weights(64, 3.0, 6);
    let mut w = ContainerWriter::new(Vec::new(), 64).expect("alignment 64");
    for (name, data) in [("odd", &odd), ("even", &even)] {
        let p = palette4::encode(data).expect("encodes");
        add(
            &mut w,
            name,
            Dtype::BF16,
            &[data.len() as u64 / 2],
            Encoding::Bf16Palette4,
            &p,
            data,
        );
    }
    let (bytes, _) = w.finish(&[], None).expect("finishes");
    files.push(("palette_only.uw", bytes));

    // 2^15 + 37 values: decoders switch to multi-symbol tables at 2^15.
    let large = weights((1 << 15) + 37, 0.03, 7);
    let mut w = ContainerWriter::new(Vec::new(), 64).expect("alignment 64");
    let h = bf16_huffman::encode(&large, &SMALL).expect("encodes");
    let n = large.len() as u64 / 2;
    add(
        &mut w,
        "large",
        Dtype::BF16,
        &[n],
        Encoding::Bf16Huffman,
        &h,
        &large,
    );
    let (bytes, _) = w.finish(&[], None).expect("finishes");
    files.push(("large.uw", bytes));
    files
}
