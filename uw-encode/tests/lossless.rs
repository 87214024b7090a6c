//! Losslessness: every BF16 bit pattern, random files of every dtype and
//! shape, and real weights go through encode -> `.uw` -> decode unchanged.

mod common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use uw_encode::bf16_huffman::{self, HuffmanParams};
use uw_encode::container::ContainerWriter;
use uw_encode::restore::decode_tensor_parallel;
use uw_encode::{ConvertOptions, Target, palette4};
use uw_format::{Dtype, Encoded, Encoding, UwFile};

use common::{
    HeaderStyle, Rng, SourceTensor, byte_len, convert_bytes, realistic_bf16, restore_bytes,
    safetensors_bytes, weights_file, words_to_bytes,
};

/// A `.uw` file (alignment 64, no metadata) holding one rank-1 BF16 tensor per
/// `(name, encoding, section, decoded bytes)`, written with the container
/// writer so any section can be stored whatever its size.
fn container(sections: &[(String, Encoding, Vec<u8>, &[u8])]) -> Vec<u8> {
    let mut w = ContainerWriter::new(Vec::new(), 64).expect("valid alignment");
    for (name, encoding, section, raw) in sections {
        w.add_tensor(
            name,
            Dtype::BF16,
            &[raw.len() as u64 / 2],
            *encoding,
            section,
            raw.len() as u64,
            crc32fast::hash(raw),
        )
        .expect("tensor accepted");
    }
    w.finish(&[], None).expect("directory written").0
}

/// Encodes `raw` (little-endian BF16) with both encoders and `params`, puts
/// both sections in one file, and checks the file verifies and each tensor
/// decodes to `raw` with the sequential and the parallel decoder.
fn assert_sections_round_trip(raw: &[u8], params: &HuffmanParams) -> Vec<u8> {
    let huffman = bf16_huffman::encode(raw, params).expect("huffman encodes any non-empty BF16");
    let palette = palette4::encode(raw).expect("palette4 encodes any non-empty BF16");
    let bytes = container(&[
        ("huffman".into(), Encoding::Bf16Huffman, huffman, raw),
        ("palette4".into(), Encoding::Bf16Palette4, palette, raw),
    ]);
    let file = UwFile::from_bytes(&bytes).expect("encoder output opens");
    file.verify(|_| {}).expect("encoder output verifies");
    for t in file.tensors() {
        assert_eq!(t.decode_to_vec().expect("decodes"), raw, "{}", t.name());
        let mut parallel = vec![0u8; raw.len()];
        decode_tensor_parallel(&t, &mut parallel).expect("decodes in parallel");
        assert!(parallel == raw, "{}: parallel decode differs", t.name());
    }
    bytes
}

/// Every one of the 65,536 BF16 bit patterns: in order, shuffled, and
/// scattered through a million realistic weights.
fn all_pattern_tensors() -> Vec<(String, Vec<u16>)> {
    let in_order: Vec<u16> = (0..=u16::MAX).collect();
    let mut shuffled = in_order.clone();
    Rng::new(7).shuffle(&mut shuffled);
    let mut mixed = realistic_bf16(1 << 20, 11, 0.02, 0.0);
    let mut positions: Vec<usize> = (0..mixed.len()).collect();
    Rng::new(13).shuffle(&mut positions);
    for (&p, w) in positions.iter().zip(0..=u16::MAX) {
        mixed[p] = w;
    }
    vec![
        ("all_patterns.in_order".into(), in_order),
        ("all_patterns.shuffled".into(), shuffled),
        ("all_patterns.mixed".into(), mixed),
    ]
}

#[test]
fn every_bf16_bit_pattern_round_trips_through_both_encoders() {
    let params = [
        HuffmanParams::default(),
        // Many small chunks and blocks: many chunk-index entries and selectors.
        HuffmanParams {
            block_log2: 6,
            chunk_log2: 8,
            max_code_len: 12,
            max_tables: 4,
        },
        // The shortest limit that fits 17 symbols: forces length limiting.
        HuffmanParams {
            block_log2: 10,
            chunk_log2: 10,
            max_code_len: 5,
            max_tables: 2,
        },
    ];
    for (name, words) in all_pattern_tensors() {
        let raw = words_to_bytes(&words);
        for p in &params {
            let bytes = assert_sections_round_trip(&raw, p);
            let file = UwFile::from_bytes(&bytes).expect("opens");
            let Encoded::Huffman(view) = file.tensor("huffman").unwrap().encoded().unwrap() else {
                panic!("{name}: not a Huffman section");
            };
            // All 256 exponents occur: 16 in the palette, the rest escaped.
            assert_eq!(view.palette().len(), 16, "{name}");
            assert_eq!(view.header().has_escape, 1, "{name}");
            let Encoded::Palette4(pal) = file.tensor("palette4").unwrap().encoded().unwrap() else {
                panic!("{name}: not a palette-4 section");
            };
            assert!(pal.header().exception_count.get() >= 240 * 256, "{name}");
        }
    }
}

#[test]
fn every_bf16_bit_pattern_survives_convert_and_restore() {
    let mut tensors: Vec<SourceTensor> = all_pattern_tensors()
        .into_iter()
        .map(|(name, words)| SourceTensor {
            name,
            dtype: Dtype::BF16,
            shape: vec![words.len() as u64],
            bytes: words_to_bytes(&words),
        })
        .collect();
    // The same patterns as a 2-D tensor, and a non-BF16 neighbour.
    tensors.push(SourceTensor {
        name: "all_patterns.matrix".into(),
        dtype: Dtype::BF16,
        shape: vec![256, 256],
        bytes: tensors[1].bytes.clone(),
    });
    tensors.push(SourceTensor {
        name: "f32.neighbour".into(),
        dtype: Dtype::F32,
        shape: vec![3, 7],
        bytes: (0..84).collect(),
    });
    let metadata = vec![("format".to_string(), "pt".to_string())];
    let input = safetensors_bytes(&tensors, &metadata, HeaderStyle::default());
    for target in [Target::Huffman, Target::Palette4, Target::Raw] {
        let opts = ConvertOptions {
            target,
            ..ConvertOptions::default()
        };
        let uw = convert_bytes(&input, &opts);
        let file = UwFile::from_bytes(&uw).expect("opens");
        file.verify(|_| {}).expect("verifies");
        let mixed = file.tensor("all_patterns.mixed").unwrap().encoding();
        let expected = match target {
            Target::Huffman => Encoding::Bf16Huffman,
            Target::Palette4 => Encoding::Bf16Palette4,
            Target::Raw => Encoding::Raw,
        };
        assert_eq!(
            mixed, expected,
            "{target:?}: mostly realistic data is encoded"
        );
        assert!(
            restore_bytes(&uw) == input,
            "{target:?}: restored file differs from the input"
        );
    }
}

#[test]
fn multi_table_multi_chunk_and_escape_paths_are_exercised() {
    // Blocks alternate between very different scales, so one table per
    // scale pays for itself; rare values force escapes.
    let mut words = Vec::new();
    for (segment, sigma) in [1e-3, 0.02, 0.5, 20.0].iter().cycle().take(64).enumerate() {
        words.extend(realistic_bf16(512, segment as u64, *sigma, 0.003));
    }
    let raw = words_to_bytes(&words);
    let params = HuffmanParams {
        block_log2: 9,
        chunk_log2: 11,
        max_code_len: 12,
        max_tables: 4,
    };
    let bytes = assert_sections_round_trip(&raw, &params);
    let file = UwFile::from_bytes(&bytes).unwrap();
    let Encoded::Huffman(view) = file.tensor("huffman").unwrap().encoded().unwrap() else {
        panic!("not a Huffman section");
    };
    assert!(view.header().table_count > 1, "several tables chosen");
    assert_eq!(view.chunk_count(), words.len() >> 11);
    assert_eq!(view.header().has_escape, 1);
    // Each chunk decodes on its own, in any order.
    let decoder = view.decoder();
    for c in (0..view.chunk_count()).rev() {
        let range = view.chunk_range(c);
        let mut out = vec![0u8; 2 * range.len()];
        decoder.decode_chunk(c, &mut out).unwrap();
        assert!(out == raw[2 * range.start..2 * range.end], "chunk {c}");
    }
}

/// Checks that `words` are planned from a sample (more than 128 blocks)
/// and that both encoders' sections decode back to them.
fn assert_sampled_round_trip(words: &[u16], params: &HuffmanParams) {
    let raw = words_to_bytes(words);
    let plan = bf16_huffman::plan(&raw, params).expect("plans");
    assert!(plan.assignment.is_none(), "planned from a sample");
    assert_sections_round_trip(&raw, params);
}

/// Parameters outside the spec's ranges give no section (the caller stores
/// the tensor raw) rather than a file that readers reject.
#[test]
fn out_of_range_parameters_give_no_section() {
    let raw = words_to_bytes(&realistic_bf16(10_000, 2, 0.02, 0.0));
    let ok = HuffmanParams::default();
    for bad in [
        HuffmanParams {
            block_log2: 5,
            chunk_log2: 9,
            ..ok
        },
        HuffmanParams {
            block_log2: 17,
            chunk_log2: 17,
            ..ok
        },
        HuffmanParams {
            chunk_log2: 8,
            ..ok
        },
        HuffmanParams {
            chunk_log2: 25,
            ..ok
        },
        HuffmanParams {
            max_code_len: 0,
            ..ok
        },
        HuffmanParams {
            max_code_len: 13,
            ..ok
        },
    ] {
        assert!(bf16_huffman::encode(&raw, &bad).is_none(), "{bad:?}");
    }
    assert!(bf16_huffman::encode(&raw, &ok).is_some());
}

/// A tensor of more than 128 blocks is planned from a sample of its blocks
/// (spec: "Reference encoder choices"). Exponents that only unsampled
/// blocks hold must still come back: every table codes every symbol, the
/// escape included.
#[test]
fn sampled_plans_cover_exponents_the_sample_missed() {
    let params = HuffmanParams::default();
    let block = 1usize << params.block_log2;
    let blocks = 512;
    let mut words = realistic_bf16(blocks * block, 21, 0.02, 0.0);
    // With 512 blocks the sample is every 4th run of 8 blocks, starting
    // with the first: blocks 8..32 are never sampled.
    let odd = [
        0x0000, 0x8000, 0x0001, 0x7F80, 0xFF80, 0x7FC0, 0xFFFF, 0x6400, 0x3F80,
    ];
    for (i, &w) in odd.iter().enumerate() {
        for k in 0..40 {
            words[(9 + i) * block + 7 * k] = w;
        }
    }
    let raw = words_to_bytes(&words);
    let plan = bf16_huffman::plan(&raw, &params).expect("plans");
    assert!(plan.assignment.is_none(), "planned from a sample");
    assert!(plan.has_escape);
    assert!(
        odd.iter().all(|&w| {
            let e = (w >> 7) as u8;
            !plan.palette.contains(&e)
        }),
        "the sample did not see the odd exponents"
    );
    for (t, lengths) in plan.tables.iter().enumerate() {
        let symbols = plan.palette.len() + 1;
        assert!(
            lengths[..symbols].iter().all(|&l| l > 0),
            "table {t} codes every symbol"
        );
    }
    assert_sections_round_trip(&raw, &params);
}

/// Blocks of 2^12 values and more are too large for the encoder's packed
/// 16-bit block costs (a block of escapes would overflow a lane) and are
/// costed table by table; sampled plans with such blocks must still pick
/// exact sizes.
#[test]
fn sampled_plans_with_large_blocks_round_trip() {
    for block_log2 in [11u8, 12, 14] {
        let params = HuffmanParams {
            block_log2,
            chunk_log2: block_log2 + 1,
            max_code_len: 12,
            max_tables: 4,
        };
        let n = 130usize << block_log2;
        // Scales that change every block, and many escapes, so tables differ
        // and blocks are expensive.
        let mut words = Vec::with_capacity(n);
        for b in 0..130u64 {
            let sigma = [1e-3, 0.02, 0.5, 20.0][(b % 4) as usize];
            words.extend(realistic_bf16(1 << block_log2, b, sigma, 0.05));
        }
        assert_sampled_round_trip(&words, &params);
    }
}

/// The encoder looks up two codes at once for exponents inside a 32-wide
/// window at the palette's lowest exponent (clamped so the window ends at
/// 255): palettes at the bottom and at the top of the exponent range, with
/// values outside the window mixed in.
#[test]
fn sampled_plans_round_trip_at_both_ends_of_the_exponent_range() {
    let params = HuffmanParams::default();
    for (lo, span) in [(0u16, 16u16), (230, 16), (240, 16), (200, 56)] {
        let mut rng = Rng::new(u64::from(lo) + 5);
        let words: Vec<u16> = (0..300 * 512)
            .map(|i| {
                // Geometric-ish: low offsets most frequent.
                let off = (rng.below(u64::from(span)) * rng.below(u64::from(span))) as u16 / span;
                let e = if i % 997 == 0 {
                    rng.below(256) as u16
                } else {
                    lo + off
                };
                (rng.below(2) as u16) << 15 | e.min(255) << 7 | rng.below(128) as u16
            })
            .collect();
        assert_sampled_round_trip(&words, &params);
    }
}

#[test]
fn encoding_is_deterministic() {
    let raw = words_to_bytes(&realistic_bf16(100_000, 3, 0.02, 0.003));
    let p = HuffmanParams::default();
    assert_eq!(
        bf16_huffman::encode(&raw, &p),
        bf16_huffman::encode(&raw, &p)
    );
    assert_eq!(palette4::encode(&raw), palette4::encode(&raw));
}

#[test]
fn sections_do_not_depend_on_the_thread_count() {
    // One thread writes every chunk with its stream in the section in
    // place; with more, idle threads may take groups of chunks from the back
    // whose streams are joined on after. The bytes, and both CRCs, must be
    // the same, and decode to the input. (Unit tests in `bf16_huffman`
    // force the groups and a stream that outgrows its room.)
    let raw = words_to_bytes(&realistic_bf16(700_000, 5, 0.02, 0.003));
    let p = HuffmanParams::default();
    let encode = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let pool = uw_encode::buffers::BufferPool::new(0);
                bf16_huffman::encode_with_crc(&raw, &p, &pool)
            })
    };
    let one = encode(1);
    let (section, section_crc) = one.0.clone().expect("a section");
    assert_eq!(one.1, crc32fast::hash(&raw));
    assert_eq!(section_crc, crc32fast::hash(&section));
    for threads in [2, 3, 8] {
        assert_eq!(encode(threads), one, "{threads} threads");
    }
    assert_sections_round_trip(&raw, &p);
}

// ---------------------------------------------------------------------------
// Random files.

/// How a BF16 tensor's values are drawn.
#[derive(Debug, Clone, Copy)]
enum Bf16Values {
    /// Uniformly random bit patterns (every exponent, NaNs, infinities).
    Arbitrary,
    /// Gaussian weights with this fraction of far-out exponents.
    Realistic { rare: f64 },
    /// Gaussian weights whose scale changes every `2^segment_log2` values.
    Piecewise { segment_log2: u32 },
    /// One repeated pattern (a single-symbol code).
    Constant(u16),
    /// A few distinct patterns.
    Few,
}

fn bf16_values() -> impl Strategy<Value = Bf16Values> {
    prop_oneof![
        Just(Bf16Values::Arbitrary),
        prop::sample::select(vec![0.0, 0.003, 0.05])
            .prop_map(|rare| Bf16Values::Realistic { rare }),
        (6u32..=11).prop_map(|segment_log2| Bf16Values::Piecewise { segment_log2 }),
        any::<u16>().prop_map(Bf16Values::Constant),
        Just(Bf16Values::Few),
    ]
}

fn bf16_words(kind: Bf16Values, n: usize, seed: u64) -> Vec<u16> {
    let mut rng = Rng::new(seed);
    match kind {
        Bf16Values::Arbitrary => (0..n).map(|_| rng.next_u64() as u16).collect(),
        Bf16Values::Realistic { rare } => realistic_bf16(n, seed, 0.02, rare),
        Bf16Values::Piecewise { segment_log2 } => {
            let scales = [1e-4, 3e-3, 0.05, 1.0, 300.0];
            let mut words = Vec::with_capacity(n);
            let mut segment = 0u64;
            while words.len() < n {
                let len = (1usize << segment_log2).min(n - words.len());
                let sigma = scales[rng.below(scales.len() as u64) as usize];
                words.extend(realistic_bf16(len, seed ^ segment, sigma, 0.003));
                segment += 1;
            }
            words
        }
        Bf16Values::Constant(w) => vec![w; n],
        Bf16Values::Few => {
            let set = [rng.next_u64() as u16, rng.next_u64() as u16, 0x3F80];
            (0..n).map(|_| set[rng.below(3) as usize]).collect()
        }
    }
}

/// A tensor to generate: name suffix, dtype, shape, how BF16 values are drawn, seed.
#[derive(Debug, Clone)]
struct TensorSpec {
    suffix: String,
    dtype: Dtype,
    shape: Vec<u64>,
    values: Bf16Values,
    seed: u64,
}

/// Shapes of rank 0..=8 (0-d scalars and empty tensors included), small
/// enough that a case stays fast.
fn small_shape() -> impl Strategy<Value = Vec<u64>> {
    (0usize..=8).prop_flat_map(|rank| {
        let max: u64 = match rank {
            0 | 1 => 300,
            2 => 40,
            3 => 12,
            4 => 6,
            5 => 4,
            _ => 3,
        };
        prop::collection::vec(0..=max, rank)
    })
}

/// Larger BF16 shapes, to reach several chunks, blocks and tables.
fn bf16_shape() -> impl Strategy<Value = Vec<u64>> {
    prop_oneof![
        (1u64..=20_000).prop_map(|n| vec![n]),
        (1u64..=160, 1u64..=160).prop_map(|(a, b)| vec![a, b]),
    ]
}

fn tensor_spec() -> impl Strategy<Value = TensorSpec> {
    let any_dtype = (prop::sample::select(Dtype::ALL.to_vec()), small_shape());
    let big_bf16 = (Just(Dtype::BF16), bf16_shape());
    (
        prop_oneof![any_dtype, big_bf16],
        "\\PC{0,6}",
        bf16_values(),
        any::<u64>(),
    )
        .prop_map(|((dtype, shape), suffix, values, seed)| TensorSpec {
            suffix,
            dtype,
            shape,
            values,
            seed,
        })
        // Sub-byte dtypes (F4, F6) need a whole number of bytes.
        .prop_filter("whole bytes", |t| {
            t.shape.iter().product::<u64>() * t.dtype.bits() % 8 == 0
        })
}

fn build_tensor(i: usize, spec: &TensorSpec) -> SourceTensor {
    let len = byte_len(spec.dtype, &spec.shape) as usize;
    let bytes = if spec.dtype == Dtype::BF16 {
        words_to_bytes(&bf16_words(spec.values, len / 2, spec.seed))
    } else {
        let mut b = vec![0u8; len];
        Rng::new(spec.seed).fill_bytes(&mut b);
        b
    };
    SourceTensor {
        // The index keeps names unique whatever the random suffix.
        name: format!("t{i}{}", spec.suffix),
        dtype: spec.dtype,
        shape: spec.shape.clone(),
        bytes,
    }
}

fn huffman_params() -> impl Strategy<Value = HuffmanParams> {
    (6u8..=10, 0u8..=4, 1u8..=4, 5u8..=12).prop_map(|(block_log2, extra, max_tables, len)| {
        HuffmanParams {
            block_log2,
            chunk_log2: block_log2 + extra,
            max_code_len: len,
            max_tables,
        }
    })
}

fn header_style() -> impl Strategy<Value = HeaderStyle> {
    (any::<bool>(), prop::option::of(any::<u64>()), any::<bool>()).prop_map(
        |(metadata_last, shuffle_seed, pad_to_8)| HeaderStyle {
            metadata_last,
            shuffle_seed,
            pad_to_8,
        },
    )
}

/// 128 cases (fast enough for CI), or `PROPTEST_CASES` for a longer run;
/// no regression files, since a failing case prints its inputs.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// safetensors -> `.uw` (each target) -> safetensors is the identity, the
    /// file verifies, its directory describes the input, and converting twice
    /// gives the same bytes.
    #[test]
    fn random_files_round_trip(
        specs in prop::collection::vec(tensor_spec(), 0..6),
        metadata in prop::collection::btree_map("\\PC{0,8}", "\\PC{0,12}", 0..4),
        style in header_style(),
        huffman in huffman_params(),
        alignment in prop::sample::select(vec![64u32, 128, 4096]),
    ) {
        let tensors: Vec<SourceTensor> =
            specs.iter().enumerate().map(|(i, s)| build_tensor(i, s)).collect();
        let metadata: Vec<(String, String)> = metadata.into_iter().collect();
        let input = safetensors_bytes(&tensors, &metadata, style);
        for target in [Target::Huffman, Target::Palette4, Target::Raw] {
            let opts = ConvertOptions { target, alignment, huffman, ..ConvertOptions::default() };
            let uw = convert_bytes(&input, &opts);
            prop_assert!(convert_bytes(&input, &opts) == uw, "{:?}: not deterministic", target);
            let file = UwFile::from_bytes(&uw).expect("converted file opens");
            file.verify(|_| {}).expect("converted file verifies");
            prop_assert_eq!(file.alignment(), alignment);
            prop_assert_eq!(file.len(), tensors.len());
            for (t, src) in file.tensors().zip(&tensors) {
                prop_assert_eq!(t.name(), src.name.as_str());
                prop_assert_eq!(t.dtype(), src.dtype);
                prop_assert_eq!(t.shape(), &src.shape[..]);
                prop_assert!(t.data_offset() % u64::from(alignment) == 0);
                if target == Target::Raw || src.dtype != Dtype::BF16 {
                    prop_assert_eq!(t.encoding(), Encoding::Raw);
                }
                if t.encoding() != Encoding::Raw {
                    prop_assert!(t.stored_len() < t.decoded_len(), "encoded only when smaller");
                }
            }
            let stored: Vec<(&str, &str)> = file.metadata().collect();
            let expected: Vec<(&str, &str)> =
                metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            prop_assert_eq!(stored, expected);
            prop_assert!(restore_bytes(&uw) == input, "{:?}: restored bytes differ", target);
        }
    }

    /// Both encoders, forced (whatever the section size), with random
    /// parameters: the sections decode to the input and encoding is a pure
    /// function of the input.
    #[test]
    fn bf16_sections_round_trip(
        values in bf16_values(),
        // Up to 150,000 values: beyond 128 blocks of every block size drawn,
        // so sampled plans (spec: "Reference encoder choices") are covered.
        n in prop_oneof![1usize..=64, 1usize..=20_000, 20_000usize..=150_000],
        seed in any::<u64>(),
        params in huffman_params(),
    ) {
        let raw = words_to_bytes(&bf16_words(values, n, seed));
        let first = assert_sections_round_trip(&raw, &params);
        prop_assert!(assert_sections_round_trip(&raw, &params) == first, "not deterministic");
    }
}

#[test]
fn scalars_empty_tensors_and_sub_byte_dtypes_round_trip() {
    let tensors = vec![
        SourceTensor {
            name: "scalar.bf16".into(),
            dtype: Dtype::BF16,
            shape: vec![],
            bytes: vec![0x80, 0x3F],
        },
        SourceTensor {
            name: "empty.bf16".into(),
            dtype: Dtype::BF16,
            shape: vec![4, 0, 3],
            bytes: vec![],
        },
        SourceTensor {
            name: "empty.f32".into(),
            dtype: Dtype::F32,
            shape: vec![0],
            bytes: vec![],
        },
        SourceTensor {
            name: "f4".into(),
            dtype: Dtype::F4,
            shape: vec![3, 2],
            bytes: vec![0x12, 0x34, 0x56],
        },
        SourceTensor {
            name: "f6".into(),
            dtype: Dtype::F6_E3M2,
            shape: vec![4],
            bytes: vec![0xAB, 0xCD, 0xEF],
        },
        SourceTensor {
            name: "rank8".into(),
            dtype: Dtype::BF16,
            shape: vec![1, 2, 1, 2, 1, 2, 1, 2],
            bytes: words_to_bytes(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]),
        },
    ];
    let metadata = vec![
        (String::new(), "empty key".to_string()),
        (
            "ключ \"quoted\"".to_string(),
            "\\ value \u{1F600}".to_string(),
        ),
    ];
    let input = safetensors_bytes(&tensors, &metadata, HeaderStyle::default());
    for target in [Target::Huffman, Target::Palette4, Target::Raw] {
        let opts = ConvertOptions {
            target,
            ..ConvertOptions::default()
        };
        let uw = convert_bytes(&input, &opts);
        let file = UwFile::from_bytes(&uw).unwrap();
        file.verify(|_| {}).unwrap();
        assert_eq!(file.tensor("scalar.bf16").unwrap().shape(), &[] as &[u64]);
        assert_eq!(file.tensor("scalar.bf16").unwrap().element_count(), 1);
        assert_eq!(file.tensor("empty.bf16").unwrap().decoded_len(), 0);
        assert!(restore_bytes(&uw) == input, "{target:?}");
    }
}

// ---------------------------------------------------------------------------
// Real weights.

/// Converts the file at `name` with `opts`, checks the result verifies and
/// restores byte for byte, and returns (input length, output length).
fn real_weights_round_trip(name: &str, opts: &ConvertOptions) -> Option<(usize, usize)> {
    let Some(path) = weights_file(name) else {
        println!("skipped: {name} not found in testdata/ or the shared weights directory");
        return None;
    };
    let input = std::fs::read(&path).expect("weights readable");
    let uw = convert_bytes(&input, opts);
    let file = UwFile::from_bytes(&uw).expect("opens");
    file.verify(|_| {}).expect("verifies");
    assert!(
        file.tensors().any(|t| t.encoding() != Encoding::Raw),
        "{name}: real weights are encoded"
    );
    assert!(restore_bytes(&uw) == input, "{name}: restored bytes differ");
    Some((input.len(), uw.len()))
}

#[test]
fn mlp_sample_round_trips() {
    let name = "all-minilm-l6-v2-mlp-sample.safetensors";
    for target in [Target::Huffman, Target::Palette4] {
        let opts = ConvertOptions {
            target,
            ..ConvertOptions::default()
        };
        if let Some((input, output)) = real_weights_round_trip(name, &opts) {
            println!(
                "{name} {target:?}: {input} -> {output} bytes, ratio {:.4}",
                output as f64 / input as f64
            );
        }
    }
}

#[test]
fn full_minilm_round_trips_within_the_ratio_bar() {
    let name = "all-minilm-l6-v2-full.safetensors";
    if let Some((input, output)) = real_weights_round_trip(name, &ConvertOptions::default()) {
        let ratio = output as f64 / input as f64;
        println!("{name}: {input} -> {output} bytes, ratio {ratio:.4}");
        assert!(ratio <= 0.6650, "ratio {ratio:.5} above the 0.6650 bar");
    }
}

/// The metadata survives with its keys sorted by bytes, whatever their order
/// in the source header.
#[test]
fn metadata_is_stored_sorted() {
    let tensors = vec![SourceTensor {
        name: "w".into(),
        dtype: Dtype::U8,
        shape: vec![2],
        bytes: vec![1, 2],
    }];
    let metadata: Vec<(String, String)> = ["b", "a", "\u{e9}", "B"]
        .iter()
        .map(|k| (k.to_string(), format!("value of {k}")))
        .collect();
    let input = safetensors_bytes(
        &tensors,
        &metadata,
        HeaderStyle {
            metadata_last: true,
            ..HeaderStyle::default()
        },
    );
    let uw = convert_bytes(&input, &ConvertOptions::default());
    let file = UwFile::from_bytes(&uw).unwrap();
    let sorted: BTreeMap<&str, String> = metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let stored: Vec<(&str, &str)> = file.metadata().collect();
    let expected: Vec<(&str, &str)> = sorted.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(stored, expected);
    assert!(restore_bytes(&uw) == input);
}
