//! Criterion benchmarks of the encoder's and decoders' hot loops, one thread,
//! on real BF16 weights: the largest tensor (1536 x 384) of
//! `testdata/all-minilm-l6-v2-mlp-sample.safetensors`, or synthetic
//! weight-like values when that file is absent.
//!
//! Run: `cargo bench -p uw-encode --bench hot_loops`. Throughput is raw BF16
//! bytes per second. Whole-file figures (with CRCs, next to memcpy and zstd)
//! come from `uw bench FILE`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use uw_encode::bf16_huffman::{self, HuffmanParams};
use uw_encode::bf16_split::{exponent_histogram_serial, palette, sign_mantissa_serial};
use uw_encode::buffers::BufferPool;
use uw_encode::palette4;
use uw_format::{HuffmanView, Palette4View};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/all-minilm-l6-v2-mlp-sample.safetensors"
);

/// Little-endian BF16 bytes to measure on.
fn weights() -> Vec<u8> {
    if let Ok(file) = std::fs::read(SAMPLE) {
        if let Ok(source) = uw_encode::parse_safetensors(&file) {
            if let Some(t) = source.tensors.iter().max_by_key(|t| t.bytes.len()) {
                return t.bytes.to_vec();
            }
        }
    }
    eprintln!("{SAMPLE} not found: using synthetic weights");
    // Roughly normal values of scale 0.05 from a fixed generator.
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    (0..589_824)
        .flat_map(|_| {
            let mut sum = 0.0f32;
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                sum += (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            let bits = (sum * 0.05).to_bits();
            ((bits >> 16) as u16).to_le_bytes()
        })
        .collect()
}

/// Makes the global pool one thread: the encoders' parallel loops then run
/// on one core, as the per-core targets assume. (Only the first call takes
/// effect; later ones find the pool built.)
fn one_thread() {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
}

fn encoder(c: &mut Criterion) {
    one_thread();
    let bytes = weights();
    let params = HuffmanParams::default();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(bytes.len() as u64));

    g.bench_function("histogram", |b| {
        b.iter(|| exponent_histogram_serial(black_box(&bytes)))
    });
    let mut plane = vec![0u8; bytes.len() / 2];
    g.bench_function("sign_mantissa_plane", |b| {
        b.iter(|| sign_mantissa_serial(black_box(&bytes), &mut plane))
    });

    let hist = exponent_histogram_serial(&bytes);
    let (pal, index) = palette(&hist);
    let symbol_of: [u8; 256] = std::array::from_fn(|e| index[e].unwrap_or(pal.len() as u8));
    let symbols = pal.len() + 1;
    g.bench_function("block_counts", |b| {
        b.iter(|| {
            black_box(&bytes)
                .chunks(2 << params.block_log2)
                .map(|blk| bf16_huffman::block_counts(blk, &symbol_of))
                .collect::<Vec<_>>()
        })
    });
    let blocks: Vec<_> = bytes
        .chunks(2 << params.block_log2)
        .map(|blk| bf16_huffman::block_counts(blk, &symbol_of))
        .collect();
    for t in [1, 2, 4] {
        g.bench_with_input(BenchmarkId::new("table_choice", t), &t, |b, &t| {
            b.iter(|| bf16_huffman::choose_tables(black_box(&blocks), t, symbols, 12))
        });
    }

    g.bench_function("plan (sample counts + table choice)", |b| {
        b.iter(|| bf16_huffman::plan(black_box(&bytes), &params))
    });
    let plan = bf16_huffman::plan(&bytes, &params).expect("the sample encodes");
    g.bench_function("single pass (write_planned)", |b| {
        b.iter(|| {
            bf16_huffman::write_planned(
                black_box(&bytes),
                &params,
                &plan,
                true,
                &BufferPool::default(),
            )
        })
    });
    g.bench_function("huffman_encode_with_crc", |b| {
        b.iter(|| bf16_huffman::encode_with_crc(black_box(&bytes), &params, &BufferPool::default()))
    });
    g.bench_function("palette4_encode_with_crc", |b| {
        b.iter(|| palette4::encode_with_crc(black_box(&bytes)))
    });
    g.finish();
}

fn decoder(c: &mut Criterion) {
    one_thread();
    let bytes = weights();
    let n = (bytes.len() / 2) as u64;
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    let mut out = vec![0u8; bytes.len()];

    let section = bf16_huffman::encode(&bytes, &HuffmanParams::default()).expect("encodes");
    let view = HuffmanView::parse(0, &section, 0, n).expect("valid section");
    g.bench_function("huffman_tables", |b| b.iter(|| black_box(&view).decoder()));
    let decoder = view.decoder();
    g.bench_function("huffman_chunk_by_chunk", |b| {
        b.iter(|| {
            for (c, piece) in out.chunks_mut(2 * view.chunk_len()).enumerate() {
                decoder.decode_chunk(c, piece).expect("valid chunk");
            }
        })
    });
    g.bench_function("huffman_chunks_interleaved", |b| {
        b.iter(|| decoder.decode_all(&mut out).expect("valid stream"))
    });
    // Decoded once more here: a filter may have skipped the benches above.
    out.fill(0);
    decoder.decode_all(&mut out).expect("valid stream");
    assert_eq!(out, bytes, "the Huffman decoder must give the input back");

    let section = palette4::encode(&bytes).expect("encodes");
    let view = Palette4View::parse(0, &section, 0, n).expect("valid section");
    g.bench_function("palette4", |b| {
        b.iter(|| view.decode_into(&mut out).expect("valid section"))
    });
    out.fill(0);
    view.decode_into(&mut out).expect("valid section");
    assert_eq!(out, bytes, "the palette-4 decoder must give the input back");
    g.finish();
}

criterion_group!(benches, encoder, decoder);
criterion_main!(benches);
