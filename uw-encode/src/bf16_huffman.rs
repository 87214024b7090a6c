//! Encoder for the bf16-huffman form (spec: "bf16-huffman").
//!
//! Three passes over the tensor: an exponent histogram (gives the palette),
//! per-block symbol counts (give up to four code tables and the table each
//! block uses), then the bit stream, chunk by chunk in parallel.

use rayon::prelude::*;
use uw_format::huffman::{self, MAX_SYMBOLS};
use uw_format::layout::{HuffmanHeader, HuffmanParts, limits, selector_bits_for};
use zerocopy::IntoBytes;

use crate::bf16_split::{exponent_histogram, palette, sign_mantissa_plane};
use crate::bitwriter::BitWriter;
use crate::huffman_build::code_lengths;

/// Tunable choices of the reference encoder; the defaults are what the spec's
/// rationale measured.
#[derive(Debug, Clone, Copy)]
pub struct HuffmanParams {
    /// log2 of values per block (one table selector per block).
    pub block_log2: u8,
    /// log2 of values per chunk (one chunk-index entry per chunk).
    pub chunk_log2: u8,
    /// Longest code.
    pub max_code_len: u8,
    /// Most tables per tensor (1..=4).
    pub max_tables: u8,
}

impl Default for HuffmanParams {
    fn default() -> Self {
        Self {
            block_log2: 9,
            chunk_log2: 14,
            max_code_len: 12,
            max_tables: 4,
        }
    }
}

type Counts = [u32; MAX_SYMBOLS];

/// A choice of code tables and of the table each block uses.
struct TableChoice {
    tables: Vec<[u8; MAX_SYMBOLS]>,
    assignment: Vec<u8>,
    /// Bits of codes (escape literals excluded) plus selectors and tables.
    cost_bits: u64,
}

fn block_cost(counts: &Counts, lengths: &[u8; MAX_SYMBOLS]) -> Option<u64> {
    let mut bits = 0u64;
    for (&c, &l) in counts.iter().zip(lengths) {
        if c > 0 {
            if l == 0 {
                return None;
            }
            bits += u64::from(c) * u64::from(l);
        }
    }
    Some(bits)
}

fn tables_for(
    blocks: &[Counts],
    assignment: &[u8],
    t: usize,
    max_len: u8,
) -> Vec<[u8; MAX_SYMBOLS]> {
    let mut sums = vec![[0u64; MAX_SYMBOLS]; t];
    for (c, &a) in blocks.iter().zip(assignment) {
        for (s, &v) in sums[usize::from(a)].iter_mut().zip(c) {
            *s += u64::from(v);
        }
    }
    sums.iter().map(|f| code_lengths(f, max_len)).collect()
}

/// Clusters blocks into `t` tables: start from quantiles of the mean symbol
/// index, then alternate "best table per block" and "best code per table"
/// (each step can only lower the cost), at most 8 rounds. Deterministic.
fn choose_tables(blocks: &[Counts], t: usize, symbols: usize, max_len: u8) -> TableChoice {
    let nb = blocks.len();
    let t = t.min(nb).max(1);
    let mut order: Vec<(u64, usize)> = blocks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let total: u64 = c.iter().map(|&x| u64::from(x)).sum();
            let weighted: u64 = c
                .iter()
                .enumerate()
                .map(|(s, &x)| s as u64 * u64::from(x))
                .sum();
            ((weighted << 16) / total.max(1), i)
        })
        .collect();
    order.sort_unstable();
    let mut assignment = vec![0u8; nb];
    for (rank, &(_, i)) in order.iter().enumerate() {
        assignment[i] = (rank * t / nb) as u8;
    }
    let mut tables = tables_for(blocks, &assignment, t, max_len);
    for _ in 0..8 {
        let next: Vec<u8> = blocks
            .par_iter()
            .zip(&assignment)
            .map(|(c, &current)| {
                let mut best = (
                    block_cost(c, &tables[usize::from(current)]).unwrap_or(u64::MAX),
                    current,
                );
                for (k, table) in tables.iter().enumerate() {
                    if let Some(cost) = block_cost(c, table) {
                        if cost < best.0 {
                            best = (cost, k as u8);
                        }
                    }
                }
                best.1
            })
            .collect();
        if next == assignment {
            break;
        }
        assignment = next;
        tables = tables_for(blocks, &assignment, t, max_len);
    }
    // Drop tables no block uses, keeping the order of the rest.
    let mut used = vec![false; t];
    for &a in &assignment {
        used[usize::from(a)] = true;
    }
    let mut remap = vec![0u8; t];
    let mut kept = Vec::new();
    for k in 0..t {
        if used[k] {
            remap[k] = kept.len() as u8;
            kept.push(tables[k]);
        }
    }
    for a in &mut assignment {
        *a = remap[usize::from(*a)];
    }
    let code_bits: u64 = blocks
        .iter()
        .zip(&assignment)
        .map(|(c, &a)| block_cost(c, &kept[usize::from(a)]).expect("tables cover their blocks"))
        .sum();
    let sel_bits = u64::from(selector_bits_for(kept.len() as u8)) * nb as u64;
    let table_bits = 8 * symbols as u64 * kept.len() as u64;
    TableChoice {
        tables: kept,
        assignment,
        cost_bits: code_bits + sel_bits + table_bits,
    }
}

/// Encodes little-endian BF16 `bytes` as a bf16-huffman data section, or
/// returns `None` when the form cannot hold it (no values, more than 2^32-1
/// values, or an exponent stream over 4 GiB).
pub fn encode(bytes: &[u8], params: &HuffmanParams) -> Option<Vec<u8>> {
    let n = bytes.len() / 2;
    if n == 0 || n as u64 > limits::MAX_ENCODED_ELEMENTS {
        return None;
    }
    let hist = exponent_histogram(bytes);
    let (pal, index) = palette(&hist);
    let p = pal.len();
    let has_escape = hist.iter().zip(&index).any(|(&c, i)| c > 0 && i.is_none());
    let symbols = p + usize::from(has_escape);
    let symbol_of: [u8; 256] = std::array::from_fn(|e| index[e].unwrap_or(p as u8));

    let block = 1usize << params.block_log2;
    let blocks: Vec<Counts> = bytes
        .par_chunks(2 * block)
        .map(|b| {
            let mut c = [0u32; MAX_SYMBOLS];
            for w in b.chunks_exact(2) {
                c[usize::from(symbol_of[usize::from(w[1] << 1 | w[0] >> 7)])] += 1;
            }
            c
        })
        .collect();
    let max_len = params.max_code_len;
    let mut choice = choose_tables(&blocks, 1, symbols, max_len);
    let mut t = 2;
    while t <= usize::from(params.max_tables.min(limits::MAX_TABLES)) {
        let c = choose_tables(&blocks, t, symbols, max_len);
        if c.cost_bits < choice.cost_bits {
            choice = c;
        }
        t *= 2;
    }
    drop(blocks);

    // Per table, exponent -> (bits to write, bit count), escapes included.
    let luts: Vec<[(u32, u8); 256]> = choice
        .tables
        .iter()
        .map(|lengths| {
            let codes = huffman::canonical_codes(&lengths[..symbols]);
            std::array::from_fn(|e| {
                let s = usize::from(symbol_of[e]);
                let len = lengths[s];
                let rev = u32::from(huffman::reverse_bits(codes[s], len));
                if s == p {
                    (rev | (e as u32) << len, len + 8)
                } else {
                    (rev, len)
                }
            })
        })
        .collect();

    let chunk = 1usize << params.chunk_log2;
    let per_block_shift = params.block_log2;
    let streams: Vec<Vec<u8>> = bytes
        .par_chunks(2 * chunk)
        .enumerate()
        .map(|(c, piece)| {
            let mut w = BitWriter::with_capacity(piece.len() / 5);
            let first = c * chunk;
            for (blk, b) in piece.chunks(2 * block).enumerate() {
                let table = choice.assignment[(first >> per_block_shift) + blk];
                let lut = &luts[usize::from(table)];
                for x in b.chunks_exact(2) {
                    let (code, len) = lut[usize::from(x[1] << 1 | x[0] >> 7)];
                    w.write(u64::from(code), u32::from(len));
                }
            }
            w.finish()
        })
        .collect();
    let chunk_count = streams.len();
    let exp_stream_len: u64 = streams.iter().map(|s| s.len() as u64).sum();
    if exp_stream_len > u64::from(u32::MAX) {
        return None;
    }

    let table_count = choice.tables.len() as u8;
    let selector_bits = selector_bits_for(table_count);
    let parts = HuffmanParts::compute(
        n as u64,
        chunk_count as u64,
        params.block_log2,
        selector_bits,
        exp_stream_len,
    )?;
    let mut header = HuffmanHeader {
        element_count: (n as u64).into(),
        palette_len: p as u8,
        has_escape: u8::from(has_escape),
        table_count,
        selector_bits,
        block_log2: params.block_log2,
        chunk_log2: params.chunk_log2,
        max_code_len: max_len,
        reserved0: 0,
        palette: [0; 16],
        code_lengths: [[0; 17]; 4],
        reserved1: [0; 4],
        chunk_count: (chunk_count as u32).into(),
        reserved2: 0.into(),
        exp_stream_len: exp_stream_len.into(),
        reserved3: 0.into(),
    };
    header.palette[..p].copy_from_slice(&pal);
    for (dst, src) in header.code_lengths.iter_mut().zip(&choice.tables) {
        dst[..symbols].copy_from_slice(&src[..symbols]);
    }

    let mut out = vec![0u8; parts.end as usize];
    out[..size_of::<HuffmanHeader>()].copy_from_slice(header.as_bytes());
    let sm = parts.sign_mantissa as usize;
    sign_mantissa_plane(bytes, &mut out[sm..sm + n]);
    let mut at = parts.chunk_index as usize;
    let mut offset = 0u32;
    for s in &streams {
        out[at..at + 4].copy_from_slice(&offset.to_le_bytes());
        at += 4;
        offset += s.len() as u32;
    }
    let sel = &mut out[parts.selectors as usize..(parts.selectors + parts.selectors_len) as usize];
    for (b, &a) in choice.assignment.iter().enumerate() {
        let bit = b * usize::from(selector_bits);
        if selector_bits > 0 {
            sel[bit / 8] |= a << (bit % 8);
        }
    }
    let mut at = parts.exp_stream as usize;
    for s in &streams {
        out[at..at + s.len()].copy_from_slice(s);
        at += s.len();
    }
    Some(out)
}
