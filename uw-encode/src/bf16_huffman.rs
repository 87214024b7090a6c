//! Encoder for the bf16-huffman form (spec: "bf16-huffman").
//!
//! Planning looks at a sample: up to [`CHOICE_SAMPLE_BLOCKS`] blocks, in
//! evenly spaced runs of consecutive blocks, give the palette and up to four
//! code tables (every block of a small tensor is counted, and the plan is
//! then exact). Then one pass over the input, chunk by chunk, does
//! everything else while the chunk is in L1: the CRC of the
//! raw bytes, each block's cost under every table (one table lookup and
//! one add per value, giving the block's table and its exact bit count),
//! the sign+mantissa bytes, and the codes. Reading the input once instead
//! of twice, and costing blocks with packed lengths instead of counting
//! symbols, took encoding MiniLM-L6 from 0.63 to about 1.0 GB/s on one
//! thread (with the writer below; `uw bench` measures it).
//!
//! When the plan comes from a sample, every table codes every symbol,
//! escape included (counts of the sample plus one), so any block can use
//! any table, whatever exponents the unsampled blocks hold; it costs a few
//! bytes per tensor.
//!
//! The thread that encodes a tensor takes its chunks from the front and
//! writes their codes in place in the section; a thread with nothing else
//! to do takes groups of chunks from the back, each with a stream of its
//! own that is copied in after (see [`write_planned`]). So a tensor is cut
//! up only as far as idle threads call for. Cutting every tensor four ways
//! per thread, as before, cost 7% on one thread (1.148 against 1.229 GB/s
//! whole) and more on two (2.14 against 2.43; a scratch harness on
//! MiniLM-L6, best of 40 runs each); `uw bench` on two threads went from
//! 1.62-1.76x one thread's speed to 1.88-2.00x (docs/benchmarks.md).
//!
//! The output is a pure function of the input bytes and the parameters.

use rayon::prelude::*;
use uw_format::huffman::{self, MAX_SYMBOLS};
use uw_format::layout::{HuffmanHeader, HuffmanParts, limits, selector_bits_for};
use zerocopy::IntoBytes;

use crc32fast::Hasher;
use std::ops::Range;

use crate::work_split::{Claims, Unclaimed, share};

use crate::bf16_split::{ExponentCounts, exponent_of, palette, sign_mantissa_serial};
use crate::bitwriter::RegisterBits;
use crate::buffers::BufferPool;
use crate::stream_copy::prefetch_range;

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

/// Symbol counts of one block (palette symbols, then the escape).
pub type Counts = [u32; MAX_SYMBOLS];

/// Symbol counts of one block of little-endian BF16 bytes. Four interleaved
/// count tables keep increments of the same (frequent) symbol independent.
pub fn block_counts(block: &[u8], symbol_of: &[u8; 256]) -> Counts {
    let mut c = [[0u32; 32]; 4];
    let sym = |lo: u8, hi: u8| usize::from(symbol_of[usize::from(exponent_of(lo, hi))]) & 31;
    let mut quads = block.chunks_exact(8);
    for q in &mut quads {
        c[0][sym(q[0], q[1])] += 1;
        c[1][sym(q[2], q[3])] += 1;
        c[2][sym(q[4], q[5])] += 1;
        c[3][sym(q[6], q[7])] += 1;
    }
    for w in quads.remainder().chunks_exact(2) {
        c[0][sym(w[0], w[1])] += 1;
    }
    std::array::from_fn(|s| c[0][s] + c[1][s] + c[2][s] + c[3][s])
}

/// A choice of code tables and of the table each block uses.
#[derive(Debug, Clone)]
pub struct TableChoice {
    /// Code lengths of each table.
    pub tables: Vec<[u8; MAX_SYMBOLS]>,
    /// Table of each block.
    pub assignment: Vec<u8>,
    /// Bits of codes (escape literals excluded) plus selectors and tables.
    pub cost_bits: u64,
}

/// Optimal length-limited code lengths by package-merge: the same result
/// as [`crate::huffman_build::code_lengths`] (a test checks), computed on
/// the stack, since table choice calls it for every table in every round.
///
/// Each level's list is kept as (weight, leaf symbol or package) in merge
/// order; a symbol's length is the number of times it appears among the
/// 2n - 2 cheapest items of the last level, expanded down the levels. The
/// packages chosen at a level are always a prefix of that level's packages,
/// and package `k` is items `2k, 2k + 1` of the level below, so the
/// expansion walks prefixes: O(levels x symbols), without per-item symbol
/// counts copied at every merge. (Replacing the item-carrying version was
/// not measurably faster end to end; the cost of table choice was in
/// passes over every block, since removed.)
fn package_merge(freqs: &[u64], max_len: u8) -> [u8; MAX_SYMBOLS] {
    /// Items at one level: at most the leaves plus half the previous list.
    const CAP: usize = 2 * MAX_SYMBOLS;
    /// Marks a package in a level's list.
    const PACKAGE: u8 = u8::MAX;
    let mut lengths = [0u8; MAX_SYMBOLS];
    let mut leaves = [(0u64, 0u8); MAX_SYMBOLS];
    let mut n = 0;
    for (s, &f) in freqs.iter().enumerate().take(MAX_SYMBOLS) {
        if f > 0 {
            leaves[n] = (f, s as u8);
            n += 1;
        }
    }
    match n {
        0 => return lengths,
        1 => {
            lengths[usize::from(leaves[0].1)] = 1;
            return lengths;
        }
        _ => {}
    }
    let leaves = &mut leaves[..n];
    leaves.sort_unstable();
    let levels_n = usize::from(max_len.max(1));
    let mut levels = [[(0u64, 0u8); CAP]; 16];
    let mut level_len = [0usize; 16];
    levels[0][..n].copy_from_slice(leaves);
    level_len[0] = n;
    for l in 1..levels_n.min(16) {
        let (below, here) = levels.split_at_mut(l);
        let (prev, prev_len) = (&below[l - 1], level_len[l - 1]);
        let list = &mut here[0];
        // Packages of consecutive pairs are in weight order; a stable merge
        // with the leaves first among equal weights matches a stable sort of
        // leaves followed by packages.
        let np = prev_len / 2;
        let package = |k: usize| prev[2 * k].0 + prev[2 * k + 1].0;
        let (mut i, mut j, mut k) = (0, 0, 0);
        while i < n || j < np {
            let take_leaf = j == np || (i < n && leaves[i].0 <= package(j));
            list[k] = if take_leaf {
                i += 1;
                leaves[i - 1]
            } else {
                j += 1;
                (package(j - 1), PACKAGE)
            };
            k += 1;
        }
        level_len[l] = k;
    }
    let mut take = 2 * n - 2;
    for l in (0..levels_n.min(16)).rev() {
        let mut packages = 0;
        for &(_, what) in &levels[l][..take] {
            if what == PACKAGE {
                packages += 1;
            } else {
                lengths[usize::from(what)] += 1;
            }
        }
        take = 2 * packages;
    }
    lengths
}

/// Per table, the symbol totals of its blocks: what its code is fitted to,
/// and what its cost is computed from.
type TableSums = [[u64; MAX_SYMBOLS]; 4];

/// Symbol totals per table of `assignment`.
fn sums_for(blocks: &[Counts], assignment: &[u8]) -> TableSums {
    let mut sums = [[0u64; MAX_SYMBOLS]; 4];
    for (c, &a) in blocks.iter().zip(assignment) {
        for (s, &v) in sums[usize::from(a)].iter_mut().zip(c) {
            *s += u64::from(v);
        }
    }
    sums
}

/// Optimal codes for the first `t` tables' totals.
fn fit_tables(sums: &TableSums, t: usize, max_len: u8) -> Vec<[u8; MAX_SYMBOLS]> {
    sums[..t]
        .iter()
        .map(|f| package_merge(f, max_len))
        .collect()
}

/// Blocks [`plan`] counts, at most: a larger tensor is planned from a
/// sample of its blocks (runs of [`SAMPLE_RUN_BLOCKS`], evenly spaced).
/// Counting every block, and choosing tables over all of them, took about
/// half of encoding MiniLM-L6 on one thread (37-39 ms of 69-71 ms, timed
/// with a scratch harness, not kept); from the sample, the file is smaller
/// by 0.004% (30,193,624 bytes against 30,194,776: the sample's k-means
/// rounds happen to end in a slightly better optimum; 256 blocks gave
/// 30,195,480).
pub const CHOICE_SAMPLE_BLOCKS: usize = 128;

/// Clusters blocks into `t` tables: start from quantiles of the mean symbol
/// index, then alternate "best table per block" and "best code per table"
/// (each step can only lower the cost), at most 8 rounds. Deterministic.
pub fn choose_tables(blocks: &[Counts], t: usize, symbols: usize, max_len: u8) -> TableChoice {
    let nb = blocks.len();
    let t = t.min(nb).max(1);
    let mut assignment = vec![0u8; nb];
    if t > 1 {
        initial_assignment(blocks, t, &mut assignment);
    }
    let mut sums = sums_for(blocks, &assignment);
    let mut tables = fit_tables(&sums, t, max_len);
    // With one table every block already has the only choice.
    for _ in 0..if t > 1 { 8 } else { 0 } {
        let (next, next_sums) = assign_round(blocks, t, &RoundCosts::new(&tables), &assignment);
        if next == assignment {
            break;
        }
        assignment = next;
        sums = next_sums;
        tables = fit_tables(&sums, t, max_len);
    }
    finish_choice(t, symbols, assignment, tables, &sums)
}

/// Moves every block to its cheapest table (ties keep it where it is):
/// the new assignment, and per table the symbol totals of its blocks, in
/// one pass.
fn assign_round(
    blocks: &[Counts],
    t: usize,
    cost: &RoundCosts,
    current: &[u8],
) -> (Vec<u8>, TableSums) {
    let pieces: Vec<(Vec<u8>, TableSums)> = blocks
        .par_chunks(4096)
        .zip(current.par_chunks(4096))
        .map(|(blocks, current)| {
            let mut next = Vec::with_capacity(blocks.len());
            let mut sums = [[0u64; MAX_SYMBOLS]; 4];
            for (c, &current) in blocks.iter().zip(current) {
                let best = best_table(&cost.costs(&c.map(|x| x as f32)), t, current);
                next.push(best);
                for (sum, &x) in sums[usize::from(best)].iter_mut().zip(c) {
                    *sum += u64::from(x);
                }
            }
            (next, sums)
        })
        .collect();
    let mut next = Vec::with_capacity(current.len());
    let mut sums = [[0u64; MAX_SYMBOLS]; 4];
    for (n, s) in pieces {
        next.extend_from_slice(&n);
        for (total, part) in sums.iter_mut().flatten().zip(s.iter().flatten()) {
            *total += part;
        }
    }
    (next, sums)
}

/// The current table first, then the first strictly cheaper valid one:
/// ties keep the block where it is.
#[inline]
fn best_table(costs: &[f32; 4], t: usize, current: u8) -> u8 {
    let mut best = (
        Some(costs[usize::from(current)])
            .filter(|&c| c < RoundCosts::ABSENT)
            .unwrap_or(f32::INFINITY),
        current,
    );
    for (k, &c) in costs[..t].iter().enumerate() {
        if c < RoundCosts::ABSENT && c < best.0 {
            best = (c, k as u8);
        }
    }
    best.1
}

/// Quantiles of the mean symbol index: the starting point of the rounds.
fn initial_assignment(blocks: &[Counts], t: usize, assignment: &mut [u8]) {
    let nb = blocks.len();
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
    for (rank, &(_, i)) in order.iter().enumerate() {
        assignment[i] = (rank * t / nb) as u8;
    }
}

/// Block costs in `f32` for the rounds of table choice, where every
/// block is costed under every table: four tables are one vector of `f32`,
/// multiplied and added without any widening.
///
/// Exact: counts (<= 2^16) and lengths (<= 15) are integers, so valid costs
/// are integers below 2^20 and every product and partial sum is exact in
/// `f32` (24-bit mantissa); comparisons give what integer ones would. A
/// length the table lacks weighs [`RoundCosts::ABSENT`], so any use of it
/// makes the cost at least that (sums of non-negative terms round
/// monotonically).
struct RoundCosts {
    by_symbol: [[f32; 4]; MAX_SYMBOLS],
}

impl RoundCosts {
    const ABSENT: f32 = (1u32 << 24) as f32;

    fn new(tables: &[[u8; MAX_SYMBOLS]]) -> Self {
        let mut by_symbol = [[Self::ABSENT; 4]; MAX_SYMBOLS];
        for (t, lengths) in tables.iter().enumerate() {
            for (s, &l) in lengths.iter().enumerate() {
                by_symbol[s][t] = if l == 0 { Self::ABSENT } else { f32::from(l) };
            }
        }
        Self { by_symbol }
    }

    #[inline]
    fn costs(&self, counts: &[f32; MAX_SYMBOLS]) -> [f32; 4] {
        let mut acc = [0f32; 4];
        for (&c, lengths) in counts.iter().zip(&self.by_symbol) {
            for t in 0..4 {
                acc[t] += c * lengths[t];
            }
        }
        acc
    }
}

/// Drops tables no block uses and totals the cost, from each table's
/// symbol totals (every table was fitted to its totals, so it has a code
/// for every symbol its blocks use).
fn finish_choice(
    t: usize,
    symbols: usize,
    mut assignment: Vec<u8>,
    tables: Vec<[u8; MAX_SYMBOLS]>,
    sums: &TableSums,
) -> TableChoice {
    let nb = assignment.len();
    // Drop tables no block uses, keeping the order of the rest.
    let mut used = [false; 4];
    for &a in &assignment {
        used[usize::from(a)] = true;
    }
    let mut remap = [0u8; 4];
    let mut kept = Vec::new();
    let mut code_bits = 0u64;
    for k in 0..t {
        if used[k] {
            remap[k] = kept.len() as u8;
            kept.push(tables[k]);
            code_bits += sums[k]
                .iter()
                .zip(&tables[k])
                .map(|(&n, &len)| {
                    debug_assert!(n == 0 || len > 0, "tables cover their blocks");
                    n * u64::from(len)
                })
                .sum::<u64>();
        }
    }
    for a in &mut assignment {
        *a = remap[usize::from(*a)];
    }
    let sel_bits = u64::from(selector_bits_for(kept.len() as u8)) * nb as u64;
    let table_bits = 8 * symbols as u64 * kept.len() as u64;
    TableChoice {
        tables: kept,
        assignment,
        cost_bits: code_bits + sel_bits + table_bits,
    }
}

/// Per table, exponent -> `code | bits << 32` (escapes: code then the
/// 8-bit exponent literal): one load, and both halves come out with one
/// shift or none.
type CodeLut = [u64; 256];

/// The code bits and bit count of two consecutive codes, the first in the
/// low bits: joined before they meet the writer, so pairs (and pairs of
/// pairs) of codes are built independently of each other and of the
/// writer's state, and only one shift by the writer's bit count remains per
/// group of four codes.
#[inline(always)]
fn join2(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (a.0 | b.0 << a.1, a.1 + b.1)
}

/// Code bits and bit count of exponent `e` under `lut`.
#[inline(always)]
fn code(lut: &CodeLut, e: u64) -> (u64, u64) {
    let v = lut[(e & 0xFF) as usize];
    (v & 0xFFFF_FFFF, v >> 32)
}

/// Exponents a [`PairLut`] covers: a window of this many from its base.
const PAIR_WINDOW: usize = 32;

/// Codes of two consecutive values at once, for both exponents inside a
/// window of [`PAIR_WINDOW`] (which trained weights' palettes fit in): entry
/// `i0 | i1 << 5` holds the joined bits of exponents `base + i0`, then
/// `base + i1` (at most 2 x (12 + 8) = 40 bits), with the bit count in the
/// top byte. Finding four values' entries takes a few word-wide operations
/// on the four BF16 values at once instead of per-value extraction, and two
/// loads instead of four. (Alone it measured within noise; with the
/// writer's state kept in registers, see [`write_codes`], encoding went
/// from about 0.90 to 0.97 GB/s on one thread.)
struct PairLut {
    base: u8,
    entries: Box<[u64; PAIR_WINDOW * PAIR_WINDOW]>,
}

impl PairLut {
    fn new(lut: &CodeLut, palette: &[u8]) -> Self {
        let base = palette.iter().copied().min().unwrap_or(0);
        let base = base.min((256 - PAIR_WINDOW) as u8);
        let entries = Box::new(std::array::from_fn(|i| {
            let e0 = u64::from(base) + (i % PAIR_WINDOW) as u64;
            let e1 = u64::from(base) + (i / PAIR_WINDOW) as u64;
            let (bits, len) = join2(code(lut, e0), code(lut, e1));
            bits | len << 56
        }));
        Self { base, entries }
    }
}

/// Writes the codes of `words` (little-endian BF16 bytes of one block) with
/// `lut` (and `pairs`, made from it) into `out` from `bits` on: four codes
/// at a time when they fit the 56 bits a flush leaves free (always, unless
/// escapes with their 8-bit literals come together), else two and two.
// Out of line, with the writer's state in locals: inlined into the chunk
// loop, that state and the tables' addresses were spilled to the stack and
// reloaded on every iteration.
#[inline(never)]
fn write_codes(
    out: &mut [u8],
    start: RegisterBits,
    words: &[u8],
    lut: &CodeLut,
    pairs: &PairLut,
) -> RegisterBits {
    // A local copy: the argument and the result live in memory (the ABI
    // passes them by address), and stores into `out` might alias them.
    let mut b = start;
    const LANES: u64 = 0x0001_0001_0001_0001;
    // In 16-bit lanes: exponent + 0x100 - base, which is 0x100..0x120 for an
    // exponent inside the window and outside that range for any other.
    let offset = (0x100 - u64::from(pairs.base)) * LANES;
    let entries = &*pairs.entries;
    // The codes of four values, as two pairs (each at most 40 bits).
    let quad = |x: u64| -> ((u64, u64), (u64, u64)) {
        let t = ((x >> 7) & (0xFF * LANES)) + offset;
        if t & (0xFFE0 * LANES) == 0x100 * LANES {
            let i = t & (0x1F * LANES);
            // Window indices i0 | i1 << 5 in bits 0..10, i2 | i3 << 5 at 32.
            let u = i | i >> 11;
            let a = entries[(u & 0x3FF) as usize];
            let c = entries[((u >> 32) & 0x3FF) as usize];
            let bits = (1u64 << 56) - 1;
            ((a & bits, a >> 56), (c & bits, c >> 56))
        } else {
            (
                join2(code(lut, x >> 7), code(lut, x >> 23)),
                join2(code(lut, x >> 39), code(lut, x >> 55)),
            )
        }
    };
    // Eight values per flush when their codes fit the 56 bits a flush
    // leaves free (nearly always: about 21 bits on MiniLM-L6), else pair by
    // pair: half the flushes of four values per flush, and half the steps
    // through the writer's state, which each depend on the one before.
    let mut octets = words.chunks_exact(16);
    for o in &mut octets {
        let x0 = u64::from_le_bytes(o[..8].try_into().expect("8 bytes"));
        let x1 = u64::from_le_bytes(o[8..].try_into().expect("8 bytes"));
        let (p0, p1) = quad(x0);
        let (p2, p3) = quad(x1);
        if p0.1 + p1.1 + p2.1 + p3.1 <= 56 {
            b.put(join2(join2(p0, p1), join2(p2, p3)));
            b.flush(out);
        } else {
            for p in [p0, p1, p2, p3] {
                b.put(p);
                b.flush(out);
            }
        }
    }
    let mut quads = octets.remainder().chunks_exact(8);
    for q in &mut quads {
        let x = u64::from_le_bytes(q.try_into().expect("8 bytes"));
        let (low, high) = quad(x);
        if low.1 + high.1 <= 56 {
            b.put(join2(low, high));
        } else {
            // A pair is at most 2 x (12 + 8) = 40 bits.
            b.put(low);
            b.flush(out);
            b.put(high);
        }
        b.flush(out);
    }
    for x in quads.remainder().chunks_exact(2) {
        b.put(code(lut, u64::from(exponent_of(x[0], x[1]))));
        b.flush(out);
    }
    b
}

/// Encodes little-endian BF16 `bytes` as a bf16-huffman data section, or
/// returns `None` when the form cannot hold it (no values, more than 2^32-1
/// values, or an exponent stream over 4 GiB).
pub fn encode(bytes: &[u8], params: &HuffmanParams) -> Option<Vec<u8>> {
    plan(bytes, params)
        .and_then(|p| write_planned(bytes, params, &p, false, &BufferPool::default()).section)
}

/// [`encode`] with the section's CRC-32, and the CRC-32 of `bytes`, both
/// taken in the same pass (see [`WrittenSection`]). The section's buffer
/// comes from `buffers`; give it back there once written.
pub fn encode_with_crc(
    bytes: &[u8],
    params: &HuffmanParams,
    buffers: &BufferPool,
) -> (Option<(Vec<u8>, u32)>, u32) {
    match plan(bytes, params) {
        Some(p) => {
            let w = write_planned(bytes, params, &p, true, buffers);
            let raw_crc = w.raw_crc.unwrap_or_else(|| crc32fast::hash(bytes));
            (w.section.zip(w.section_crc), raw_crc)
        }
        None => (None, crc32fast::hash(bytes)),
    }
}

/// Everything the encoder decides before writing a section: the palette
/// and the code tables. What [`write_planned`] needs; made by [`plan`].
#[derive(Debug, Clone)]
pub struct Plan {
    /// Palette exponents, most frequent first.
    pub palette: Vec<u8>,
    /// Exponent -> symbol (palette index, or the escape `palette.len()`).
    pub symbol_of: [u8; 256],
    /// Whether the escape symbol is coded.
    pub has_escape: bool,
    /// Code lengths of each table.
    pub tables: Vec<[u8; MAX_SYMBOLS]>,
    /// The table of every block when every block was counted (the choice's
    /// own assignment; tables then need not code every symbol). `None`
    /// after a sample: every table codes every symbol, and each block
    /// takes its cheapest table while it is written (or keeps the one of
    /// the block before, see [`SWITCH_PENALTY_BITS`]).
    pub assignment: Option<Vec<u8>>,
    /// Expected size of the exponent stream, from the sample: what the
    /// writer reserves, so that its buffers rarely grow.
    pub stream_bytes_estimate: usize,
}

/// Bytes of file that each table beyond the first must save (over the
/// whole tensor, as the sample estimates it) for [`plan`] to take it. A
/// decoder builds a lookup table per code table, about 9 µs each on the
/// 2-core CI-class machine, as long as decoding some 13,000 values: on
/// MiniLM-L6's tensors of 150,000 to 600,000 values, tables that saved a
/// few hundred bytes cost up to a quarter of their decode time. With 256,
/// the file grows by 3 KB (0.01%); one-thread decoding of the whole file got
/// 0-8% faster (three alternating runs of a scratch decode harness, twice:
/// 2.37-2.43 -> 2.48-2.53 GB/s, then 2.40-2.57 -> 2.49-2.58; not kept).
pub const TABLE_MIN_SAVING_BYTES: f64 = 256.0;

/// Tensors with fewer values take the smallest table count whatever it
/// saves: `uw-format` decodes them without the per-table lookup builds that
/// [`TABLE_MIN_SAVING_BYTES`] pays for (it builds them from 2^15 values
/// on).
pub const TABLE_COST_MIN_VALUES: u64 = 1 << 15;

/// Consecutive blocks per run of the sample [`plan`] takes.
pub const SAMPLE_RUN_BLOCKS: usize = 8;

/// Chooses the palette and the code tables of `bytes` from a sample of
/// their blocks (see the module docs), or `None` when the form cannot hold
/// the bytes (see [`encode`]).
pub fn plan(bytes: &[u8], params: &HuffmanParams) -> Option<Plan> {
    let n = bytes.len() / 2;
    if n == 0
        || n as u64 > limits::MAX_ENCODED_ELEMENTS
        || !limits::BLOCK_LOG2.contains(&params.block_log2)
        || params.chunk_log2 < params.block_log2
        || params.chunk_log2 > limits::MAX_CHUNK_LOG2
        || params.max_code_len == 0
        || params.max_code_len > limits::MAX_CODE_LEN
    {
        return None;
    }
    let block_bytes = 2usize << params.block_log2;
    let words = &bytes[..2 * n];
    let nb = n.div_ceil(block_bytes / 2);
    let step = nb.div_ceil(CHOICE_SAMPLE_BLOCKS);
    let exact = step == 1;
    // Runs of consecutive blocks: read in sequence, they are fetched ahead
    // by the hardware, where lone blocks a page or more apart each wait for
    // memory (scratch timers on MiniLM-L6: 6.7 ms with lone blocks, 3.4 ms
    // with runs).
    let sample: Vec<&[u8]> = words
        .chunks(SAMPLE_RUN_BLOCKS * block_bytes)
        .step_by(step)
        .flat_map(|run| run.chunks(block_bytes))
        .collect();
    let mut counts = ExponentCounts::default();
    for b in &sample {
        counts.add(b);
    }
    let hist = counts.histogram();
    let (pal, index) = palette(&hist);
    let p = pal.len();
    let has_escape = !exact || hist.iter().zip(&index).any(|(&c, i)| c > 0 && i.is_none());
    let symbols = p + usize::from(has_escape);
    let max_len = params.max_code_len;
    if symbols > 1usize << max_len {
        return None;
    }
    let symbol_of: [u8; 256] = std::array::from_fn(|e| index[e].unwrap_or(p as u8));
    let blocks: Vec<Counts> = sample.iter().map(|b| block_counts(b, &symbol_of)).collect();
    let sample_values: usize = sample.iter().map(|b| b.len() / 2).sum();
    // More tables are taken only when they pay for their decode cost (see
    // TABLE_MIN_SAVING_BYTES), savings scaled from the sample to the tensor.
    let scale = n as f64 / sample_values as f64;
    let min_saving = if n as u64 >= TABLE_COST_MIN_VALUES {
        TABLE_MIN_SAVING_BYTES
    } else {
        0.0
    };
    let mut choice = choose_tables(&blocks, 1, symbols, max_len);
    let mut t = 2;
    while t <= usize::from(params.max_tables.min(limits::MAX_TABLES)) {
        let c = choose_tables(&blocks, t, symbols, max_len);
        let saved_bytes = (choice.cost_bits as f64 - c.cost_bits as f64) * scale / 8.0;
        let added = (t - choice.tables.len()) as f64;
        if saved_bytes > min_saving * added {
            choice = c;
        }
        t *= 2;
    }
    // Escape literals are not in the choice's cost.
    let escapes: u64 = if has_escape {
        blocks.iter().map(|c| u64::from(c[p])).sum()
    } else {
        0
    };
    let sample_bits = choice.cost_bits + 8 * escapes;
    let stream_bytes_estimate =
        (sample_bits as f64 / sample_values as f64 * n as f64 / 8.0) as usize;
    if exact {
        return Some(Plan {
            stream_bytes_estimate,
            palette: pal,
            symbol_of,
            has_escape,
            tables: choice.tables,
            assignment: Some(choice.assignment),
        });
    }
    // Refit every table to its sample blocks' counts plus one of every
    // symbol, so that it codes them all.
    let mut sums = sums_for(&blocks, &choice.assignment);
    for row in &mut sums {
        for c in &mut row[..symbols] {
            *c += 1;
        }
    }
    Some(Plan {
        stream_bytes_estimate,
        palette: pal,
        symbol_of,
        has_escape,
        tables: fit_tables(&sums, choice.tables.len(), max_len),
        assignment: None,
    })
}

/// Per exponent, its bits (code, plus the 8-bit literal for an escape)
/// under each of up to four tables, in 16-bit lanes: summed over a block
/// they give the block's bits under every table at once. Used only when
/// every table codes every symbol, and only for blocks small enough that
/// no lane can overflow into the next (see `packed_costs_fit`).
type CostLut = [u64; 256];

fn cost_lut(luts: &[CodeLut]) -> CostLut {
    std::array::from_fn(|e| {
        luts.iter()
            .enumerate()
            .map(|(t, lut)| code(lut, e as u64).1 << (16 * t))
            .sum()
    })
}

/// Bits of a block under each table, from [`CostLut`].
#[inline(always)]
fn block_costs(words: &[u8], lut: &CostLut) -> u64 {
    let mut acc = [0u64; 2];
    let mut quads = words.chunks_exact(8);
    for q in &mut quads {
        let x = u64::from_le_bytes(q.try_into().expect("8 bytes"));
        // Two accumulators: the adds of one quad do not wait on each other.
        acc[0] += lut[usize::from((x >> 7) as u8)] + lut[usize::from((x >> 39) as u8)];
        acc[1] += lut[usize::from((x >> 23) as u8)] + lut[usize::from((x >> 55) as u8)];
    }
    for w in quads.remainder().chunks_exact(2) {
        acc[0] += lut[usize::from(exponent_of(w[0], w[1]))];
    }
    acc[0] + acc[1]
}

/// Bits a block must save under another table before it leaves the table
/// of the block before it (in the same chunk). A decoder pays for every
/// change of table: on MiniLM-L6, 16 bits cut the table changes from 17,489
/// to about 4,300 for 10 KB (0.03%) more file, and one-thread decoding got
/// about 7% faster (2.15-2.23 -> 2.33-2.39 GB/s, three alternating runs of
/// a scratch decode harness, not kept).
pub const SWITCH_PENALTY_BITS: u64 = 16;

/// The table a block takes, and its bits, from its bits `costs` under each
/// of the first `t` tables: the cheapest (the first among equals), unless
/// the table of the block before, `prev`, costs at most
/// [`SWITCH_PENALTY_BITS`] more.
#[inline(always)]
fn choose_table(costs: &[u64; 4], t: usize, prev: Option<u8>) -> (u8, u64) {
    let mut best = (0u8, costs[0]);
    for (k, &c) in costs.iter().enumerate().take(t).skip(1) {
        if c < best.1 {
            best = (k as u8, c);
        }
    }
    match prev {
        Some(p) if costs[usize::from(p)] <= best.1 + SWITCH_PENALTY_BITS => {
            (p, costs[usize::from(p)])
        }
        _ => best,
    }
}

/// Unpacks the 16-bit block costs of [`block_costs`].
#[inline(always)]
fn unpack_costs(packed: u64) -> [u64; 4] {
    std::array::from_fn(|k| (packed >> (16 * k)) & 0xFFFF)
}

/// A block's bits under each table, costed table by table: for blocks too
/// large for [`block_costs`].
fn costs_exact(words: &[u8], luts: &[CodeLut]) -> [u64; 4] {
    let mut costs = [u64::MAX; 4];
    for (c, lut) in costs.iter_mut().zip(luts) {
        *c = block_bits_exact(words, lut);
    }
    costs
}

/// Consecutive chunks written by one thread: their exponent stream (unless
/// written in place, see [`SectionJob::front`]), the byte length of each
/// chunk's codes, the table of each block, and the CRCs of their bytes.
struct Part {
    /// Its exponent stream, when it has one of its own; `None` for the
    /// part written in place at the start of the section's stream.
    stream: Option<Vec<u8>>,
    /// Bytes of exponent stream the part wrote.
    stream_len: usize,
    chunk_bytes: Vec<u64>,
    tables: Vec<u8>,
    /// CRCs, when asked for: of the raw bytes, and of the part's pieces of
    /// the section's sign+mantissa plane and exponent stream.
    crcs: Option<PartCrcs>,
}

impl Part {
    /// Takes the codes of one more chunk, `bytes`, written into its stream.
    fn record_stream(&mut self, bytes: &[u8]) {
        if let Some(crcs) = &mut self.crcs {
            crcs.stream.update(bytes);
        }
        self.chunk_bytes.push(bytes.len() as u64);
        self.stream_len += bytes.len();
    }

    fn new(stream: Option<Vec<u8>>, want_crc: bool) -> Self {
        Self {
            stream,
            stream_len: 0,
            chunk_bytes: Vec::new(),
            tables: Vec::new(),
            crcs: want_crc.then(PartCrcs::default),
        }
    }
}

#[derive(Default)]
struct PartCrcs {
    raw: Hasher,
    sign_mantissa: Hasher,
    stream: Hasher,
}

/// What [`write_planned`] yields.
#[derive(Debug, Clone)]
pub struct WrittenSection {
    /// The section, or `None` when its exponent stream would pass 4 GiB.
    pub section: Option<Vec<u8>>,
    /// When asked for: the CRC-32 of the raw bytes.
    pub raw_crc: Option<u32>,
    /// When asked for and there is a section: its CRC-32 (the record's
    /// `data_crc`), put together from CRCs of its parts taken while each
    /// was in cache, so that the section needs no pass of its own.
    pub section_crc: Option<u32>,
}

/// What every part of [`write_planned`] shares.
struct SectionJob<'a> {
    /// The tensor's raw words.
    words: &'a [u8],
    plan: &'a Plan,
    luts: &'a [CodeLut],
    pair_luts: &'a [PairLut],
    costs: &'a CostLut,
    packed_costs_fit: bool,
    t: usize,
    block: usize,
    chunk: usize,
    blocks_per_chunk: usize,
    chunk_count: usize,
    want_crc: bool,
}

impl SectionJob<'_> {
    /// The raw words of chunk `c`.
    fn piece(&self, c: usize) -> &[u8] {
        let start = c * 2 * self.chunk;
        &self.words[start..self.words.len().min(start + 2 * self.chunk)]
    }

    /// Writes the sign+mantissa bytes of chunk `c` into `sm` and takes each
    /// block's table (onto `part.tables`) and exact bits (into
    /// `block_bits`): the chunk's bytes of exponent stream.
    fn cost_chunk(
        &self,
        c: usize,
        sm: &mut [u8],
        part: &mut Part,
        block_bits: &mut Vec<u64>,
    ) -> usize {
        let piece = self.piece(c);
        sign_mantissa_serial(piece, sm);
        if let Some(crcs) = &mut part.crcs {
            crcs.raw.update(piece);
            crcs.sign_mantissa.update(sm);
        }
        // The next chunk's bytes are prefetched a block's worth per block
        // costed, so that reading them from memory overlaps this chunk's
        // work instead of stalling the CRC above.
        let next = if c + 1 < self.chunk_count {
            self.piece(c + 1)
        } else {
            &[]
        };
        let mut next_blocks = next.chunks(2 * self.block);
        block_bits.clear();
        let first_block = c * self.blocks_per_chunk;
        for (b, words) in piece.chunks(2 * self.block).enumerate() {
            if let Some(nb) = next_blocks.next() {
                prefetch_range(nb);
            }
            let (table, bits) = match &self.plan.assignment {
                Some(a) => {
                    let table = a[first_block + b];
                    (
                        table,
                        block_bits_exact(words, &self.luts[usize::from(table)]),
                    )
                }
                None => {
                    let costs = if self.packed_costs_fit {
                        unpack_costs(block_costs(words, self.costs))
                    } else {
                        costs_exact(words, self.luts)
                    };
                    // Within the chunk only: which chunks a thread takes
                    // depends on the thread count and on timing, and the
                    // output must not.
                    let prev = (b > 0).then(|| part.tables[part.tables.len() - 1]);
                    choose_table(&costs, self.t, prev)
                }
            };
            part.tables.push(table);
            block_bits.push(bits);
        }
        block_bits.iter().sum::<u64>().div_ceil(8) as usize
    }

    /// Writes the codes of chunk `c`, whose blocks take `tables`, costed
    /// by [`SectionJob::cost_chunk`] at `len` bytes, into `dst` (`len` bytes,
    /// and 8 of slack for the writer's whole-register stores).
    fn code_chunk(&self, c: usize, tables: &[u8], len: usize, dst: &mut [u8]) {
        let mut bits = RegisterBits::default();
        for (words, &table) in self.piece(c).chunks(2 * self.block).zip(tables) {
            let table = usize::from(table);
            bits = write_codes(dst, bits, words, &self.luts[table], &self.pair_luts[table]);
        }
        debug_assert_eq!(bits.len(), len, "chunk size");
    }

    /// Writes chunk `c` into `part`, which has a stream of its own.
    fn chunk_to_part(&self, c: usize, sm: &mut [u8], part: &mut Part, block_bits: &mut Vec<u64>) {
        let len = self.cost_chunk(c, sm, part, block_bits);
        let mut stream = part.stream.take().unwrap_or_default();
        let start = stream.len();
        stream.resize(start + len + 8, 0);
        let tables = &part.tables[part.tables.len() - block_bits.len()..];
        self.code_chunk(c, tables, len, &mut stream[start..]);
        stream.truncate(start + len);
        part.record_stream(&stream[start..]);
        part.stream = Some(stream);
    }

    /// The encoding thread's share: chunks from the front, one at a time,
    /// their codes written in place into `area` (the section's room for its
    /// stream) while they fit, then into a part of their own. Yields the
    /// part written in place, and that other part if there is one.
    fn front(
        &self,
        unclaimed: &Claims<'_>,
        area: &mut [u8],
        buffers: &BufferPool,
    ) -> (Part, Option<Part>) {
        let mut here = Part::new(None, self.want_crc);
        let mut spilled: Option<Part> = None;
        let mut block_bits = Vec::with_capacity(self.blocks_per_chunk);
        while let Some((chunks, sm)) = unclaimed.take_front() {
            let c = chunks.start;
            if let Some(part) = &mut spilled {
                self.chunk_to_part(c, sm, part, &mut block_bits);
                continue;
            }
            let len = self.cost_chunk(c, sm, &mut here, &mut block_bits);
            let tables = &here.tables[here.tables.len() - block_bits.len()..];
            let at = here.stream_len;
            if at + len + 8 <= area.len() {
                self.code_chunk(c, tables, len, &mut area[at..]);
                here.record_stream(&area[at..at + len]);
            } else {
                // The estimate fell short: this chunk's codes and those of
                // the chunks after it go to a stream of their own. (Its
                // tables and its raw and plane CRCs stay with `here`: each
                // kind of record is put together part after part, in
                // order, so where the cut falls does not matter.)
                let mut stream = buffers.take(reserve(len));
                stream.resize(len + 8, 0);
                self.code_chunk(c, tables, len, &mut stream);
                stream.truncate(len);
                let mut part = Part::new(None, self.want_crc);
                part.record_stream(&stream);
                part.stream = Some(stream);
                spilled = Some(part);
            }
        }
        (here, spilled)
    }

    /// A group of chunks taken from the back by an idle thread (see
    /// `work_split::share`), with their plane bytes: written into a part
    /// with a stream of its own.
    fn group(&self, chunks: Range<usize>, sm: &mut [u8], buffers: &BufferPool) -> Part {
        let estimate = self.plan.stream_bytes_estimate * chunks.len() / self.chunk_count;
        let mut part = Part::new(Some(buffers.take(reserve(estimate))), self.want_crc);
        let mut block_bits = Vec::with_capacity(self.blocks_per_chunk);
        for (c, sm) in chunks.zip(sm.chunks_mut(self.chunk)) {
            self.chunk_to_part(c, sm, &mut part, &mut block_bits);
        }
        part
    }
}

/// Room for an estimated stream of `bytes`, with a margin: a buffer that
/// grows is copied, and its new pages are faulted in again.
fn reserve(bytes: usize) -> usize {
    bytes + bytes / 8 + 4096
}

/// Writes the section [`plan`] chose for `bytes`, and when asked
/// (`want_crc`), the CRCs of `bytes` and of the section, taken in the same
/// pass. The section and the scratch streams are taken from `buffers`;
/// the scratch streams go back before this returns.
pub fn write_planned(
    bytes: &[u8],
    params: &HuffmanParams,
    plan: &Plan,
    want_crc: bool,
    buffers: &BufferPool,
) -> WrittenSection {
    let n = bytes.len() / 2;
    let words = &bytes[..2 * n];
    let p = plan.palette.len();
    let symbols = p + usize::from(plan.has_escape);
    let max_len = params.max_code_len;
    let block = 1usize << params.block_log2;
    let chunk = 1usize << params.chunk_log2;
    let blocks_per_chunk = chunk / block;
    let chunk_count = n.div_ceil(chunk);
    let t = plan.tables.len();
    // Per table, exponent -> (bits to write, bit count), escapes included.
    let luts: Vec<CodeLut> = plan
        .tables
        .iter()
        .map(|lengths| {
            let codes = huffman::canonical_codes(&lengths[..symbols]);
            std::array::from_fn(|e| {
                let s = usize::from(plan.symbol_of[e]);
                let len = u64::from(lengths[s]);
                let rev = u64::from(huffman::reverse_bits(codes[s], lengths[s]));
                if s == p {
                    (rev | (e as u64) << len) | (len + 8) << 32
                } else {
                    rev | len << 32
                }
            })
        })
        .collect();
    let pair_luts: Vec<PairLut> = luts
        .iter()
        .map(|l| PairLut::new(l, &plan.palette))
        .collect();
    let costs = cost_lut(&luts);
    // Packed 16-bit costs hold a block's bits only while the largest
    // possible (every value an escape: `max_len + 8` bits) fits: blocks of
    // up to 2^11 values. Larger blocks are costed table by table.
    let packed_costs_fit = (u64::from(max_len) + 8) << params.block_log2 < 1 << 16;

    // The header, the sign+mantissa plane, the chunk index and the
    // selectors have sizes known now; the exponent stream, last, is appended
    // after the pass.
    let selector_bits = selector_bits_for(t as u8);
    let Some(prefix) = HuffmanParts::compute(
        n as u64,
        chunk_count as u64,
        params.block_log2,
        selector_bits,
        0,
    ) else {
        return WrittenSection {
            section: None,
            raw_crc: None,
            section_crc: None,
        };
    };
    // Room for the stream too, as estimated (see `reserve`): the encoding
    // thread writes its codes there in place.
    let stream_at = prefix.exp_stream as usize;
    let sm_at = prefix.sign_mantissa as usize;
    // Every byte of the section is written below but the padding, the
    // selectors (set bit by bit) and the chunk index: those are zeroed
    // here, not the whole buffer, which may hold an earlier section's bytes
    // (see `BufferPool::take_len`). Zeroing all of it had been about 6% of
    // one-thread encoding (perf, MiniLM-L6).
    let mut out = buffers.take_len(stream_at + reserve(plan.stream_bytes_estimate));
    out[..sm_at].fill(0);
    out[sm_at + n..stream_at].fill(0);
    let job = SectionJob {
        words,
        plan,
        luts: &luts,
        pair_luts: &pair_luts,
        costs: &costs,
        packed_costs_fit,
        t,
        block,
        chunk,
        blocks_per_chunk,
        chunk_count,
        want_crc,
    };
    let (head, area) = out.split_at_mut(stream_at);
    let unclaimed = Claims::new(Unclaimed::new(
        0..chunk_count,
        &mut head[sm_at..][..n],
        chunk,
        1,
    ));
    // Other threads take chunks only when they are idle: a part of its own
    // costs a buffer and a copy of its stream into the section, which cut
    // encoding on two threads to 1.62-1.76x one thread's speed when every
    // tensor was split four ways per thread.
    let ((here, spilled), taken) = share(
        &unclaimed,
        || job.front(&unclaimed, area, buffers),
        |chunks, sm| job.group(chunks, sm, buffers),
    );
    out.truncate(stream_at + here.stream_len);
    // In chunk order: the part in place, the one it spilled into, the
    // groups taken from the back.
    let others = spilled.into_iter().chain(taken);
    let written: Vec<Part> = std::iter::once(here).chain(others).collect();

    // Folds the parts' CRCs of one kind into `all`, in order.
    let fold = |mut all: Hasher, part: fn(&PartCrcs) -> &Hasher| {
        for c in written.iter().filter_map(|w| w.crcs.as_ref()) {
            all.combine(part(c));
        }
        all
    };
    let raw_crc = want_crc.then(|| fold(Hasher::new(), |c| &c.raw).finalize());
    let exp_stream_len: u64 = written.iter().map(|w| w.stream_len as u64).sum();
    if exp_stream_len > u64::from(u32::MAX) {
        return WrittenSection {
            section: None,
            raw_crc,
            section_crc: None,
        };
    }
    let header = HuffmanHeader {
        element_count: (n as u64).into(),
        palette_len: p as u8,
        has_escape: u8::from(plan.has_escape),
        table_count: t as u8,
        selector_bits,
        block_log2: params.block_log2,
        chunk_log2: params.chunk_log2,
        max_code_len: max_len,
        reserved0: 0,
        palette: std::array::from_fn(|i| plan.palette.get(i).copied().unwrap_or(0)),
        code_lengths: std::array::from_fn(|k| {
            std::array::from_fn(|s| match plan.tables.get(k) {
                Some(lengths) if s < symbols => lengths[s],
                _ => 0,
            })
        }),
        reserved1: [0; 4],
        chunk_count: (chunk_count as u32).into(),
        reserved2: 0.into(),
        exp_stream_len: exp_stream_len.into(),
        reserved3: 0.into(),
    };
    out[..size_of::<HuffmanHeader>()].copy_from_slice(header.as_bytes());
    let index_at = prefix.chunk_index as usize;
    let mut offset = 0u64;
    let chunk_bytes = written.iter().flat_map(|w| &w.chunk_bytes);
    for (dst, &len) in out[index_at..index_at + 4 * chunk_count]
        .chunks_exact_mut(4)
        .zip(chunk_bytes)
    {
        dst.copy_from_slice(&(offset as u32).to_le_bytes());
        offset += len;
    }
    if selector_bits > 0 {
        let selectors = &mut out[prefix.selectors as usize..];
        let tables = written.iter().flat_map(|w| &w.tables);
        for (b, &a) in tables.enumerate() {
            let bit = b * usize::from(selector_bits);
            selectors[bit / 8] |= a << (bit % 8);
        }
    }
    // The section's CRC from its parts: header, the plane (from the parts),
    // the index and selectors with their padding, the stream (from the
    // parts).
    let section_crc = want_crc.then(|| {
        let mut all = Hasher::new();
        all.update(&out[..sm_at]);
        let mut all = fold(all, |c| &c.sign_mantissa);
        all.update(&out[sm_at + n..stream_at]);
        fold(all, |c| &c.stream).finalize()
    });
    let parts: Vec<Vec<u8>> = written.into_iter().filter_map(|w| w.stream).collect();
    out.reserve_exact(parts.iter().map(Vec::len).sum());
    for stream in parts {
        out.extend_from_slice(&stream);
        buffers.give(stream);
    }
    debug_assert!(section_crc.is_none_or(|c| c == crc32fast::hash(&out)));
    WrittenSection {
        section: Some(out),
        raw_crc,
        section_crc,
    }
}

/// Bits of a block under one table (escape literals included): for exact
/// plans, whose tables need not code every symbol.
#[inline(always)]
fn block_bits_exact(words: &[u8], lut: &CodeLut) -> u64 {
    let mut bits = 0u64;
    for w in words.chunks_exact(2) {
        bits += lut[usize::from(exponent_of(w[0], w[1]))] >> 32;
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::work_split::tests::HELP_FIRST;

    /// `n` BF16 values of a Gaussian-like spread, with some outliers.
    fn weights(n: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut out = Vec::with_capacity(2 * n);
        for _ in 0..n {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let r = x >> 32;
            // Exponents around 120, more often near it; an outlier now and then.
            let e = match r % 1000 {
                0 => (r >> 10) as u16 & 0xFF,
                k => 118 + (k.trailing_zeros() as u16).min(6),
            };
            let v = ((r >> 20) as u16 & 0x807F) | e << 7;
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn one_thread(bytes: &[u8], plan: &Plan) -> WrittenSection {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| {
                write_planned(
                    bytes,
                    &HuffmanParams::default(),
                    plan,
                    true,
                    &BufferPool::default(),
                )
            })
    }

    fn assert_same(a: &WrittenSection, b: &WrittenSection, what: &str) {
        assert_eq!(a.section, b.section, "{what}: section");
        assert_eq!(a.raw_crc, b.raw_crc, "{what}: raw CRC");
        assert_eq!(a.section_crc, b.section_crc, "{what}: section CRC");
        let section = a.section.as_deref().expect("a section");
        assert_eq!(a.section_crc, Some(crc32fast::hash(section)), "{what}");
    }

    #[test]
    fn parts_taken_from_the_back_join_into_the_same_section() {
        let bytes = weights(40 << 14);
        let params = HuffmanParams::default();
        let plan = plan(&bytes, &params).expect("a plan");
        let alone = one_thread(&bytes, &plan);
        HELP_FIRST.set(true);
        let helped = write_planned(&bytes, &params, &plan, true, &BufferPool::new(1 << 20));
        HELP_FIRST.set(false);
        assert_same(&helped, &alone, "helped");
    }

    #[test]
    fn an_earlier_sections_bytes_in_a_reused_buffer_do_not_leak() {
        let bytes = weights((40 << 14) + 77);
        let params = HuffmanParams::default();
        let plan = plan(&bytes, &params).expect("a plan");
        let fresh = one_thread(&bytes, &plan);
        let len = fresh.section.as_ref().expect("a section").len();
        for junk in [0x00, 0xFF, 0xA5] {
            // A kept buffer longer than the section, full of junk.
            let pool = BufferPool::new(1 << 30);
            pool.give(vec![junk; 2 * len]);
            let again = write_planned(&bytes, &params, &plan, true, &pool);
            assert_same(&again, &fresh, "reused buffer");
        }
    }

    #[test]
    fn a_stream_longer_than_estimated_goes_on_in_a_part_of_its_own() {
        let bytes = weights((40 << 14) + 123);
        let params = HuffmanParams::default();
        let mut plan = plan(&bytes, &params).expect("a plan");
        let alone = one_thread(&bytes, &plan);
        // Room for about 4 KiB in place: the rest spills, in order.
        plan.stream_bytes_estimate = 0;
        let spilled = one_thread(&bytes, &plan);
        assert_same(&spilled, &alone, "spilled");
        HELP_FIRST.set(true);
        let both = write_planned(&bytes, &params, &plan, true, &BufferPool::default());
        HELP_FIRST.set(false);
        assert_same(&both, &alone, "spilled and helped");
    }
}
