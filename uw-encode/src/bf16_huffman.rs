//! Encoder for the bf16-huffman form (spec: "bf16-huffman").
//!
//! One pass over the input counts exponents (the whole-tensor histogram gives
//! the palette; per-block counts give up to four code tables and the table
//! each block uses) and, when asked, takes the CRC of the raw bytes. The
//! counts fix the exact size of every chunk's bits, so the section is then
//! allocated once and every chunk writes its sign+mantissa bytes and its
//! exponent codes straight into place, chunks in parallel: two passes over
//! the input in all.
//!
//! The output is a pure function of the input bytes and the parameters.

use rayon::prelude::*;
use uw_format::huffman::{self, MAX_SYMBOLS};
use uw_format::layout::{HuffmanHeader, HuffmanParts, limits, selector_bits_for};
use zerocopy::IntoBytes;

use crc32fast::Hasher;

use crate::bf16_split::{exponent_histogram, exponent_of, palette, sign_mantissa_serial};
use crate::bitwriter::SliceBitWriter;

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

/// Exponent values counted per block in the input pass: a window of this
/// many consecutive values. Trained weights use a narrow range of exponents,
/// so the palette nearly always lies inside and the per-block symbol counts
/// follow from the window counts; when it does not, a second pass counts
/// symbols directly. Either way the counts are exact.
const WINDOW: usize = 32;

/// Values sampled from the start of a tensor to place the window.
const WINDOW_SAMPLE: usize = 16 << 10;

/// What the input pass over one piece (whole blocks) of a tensor yields.
struct Scan {
    /// Exponents outside the window, counted exactly.
    outside: [u64; 256],
    /// Per block: counts of exponents `lo..lo + WINDOW`.
    windows: Vec<[u16; WINDOW]>,
    /// CRC of the piece's bytes, when asked for.
    crc: Option<Hasher>,
}

/// Counts the exponents of `piece` (whole blocks of `block` values) per
/// block inside the window at `lo`, and all others in one histogram; takes
/// the CRC of each block right after counting it (still in L1).
#[inline(never)]
fn scan_piece(piece: &[u8], block: usize, lo: u8, want_crc: bool) -> Scan {
    let mut scan = Scan {
        outside: [0; 256],
        windows: Vec::with_capacity(piece.len().div_ceil(2 * block)),
        crc: want_crc.then(Hasher::new),
    };
    for b in piece.chunks(2 * block) {
        // Eight count tables in turn keep increments of the same (frequent)
        // exponent from waiting on each other's stores. u16 is enough: a
        // block has at most 2^15 values here.
        let mut c = [[0u16; WINDOW]; 8];
        let mut count =
            |c: &mut [u16; WINDOW], e: u8| match c.get_mut(usize::from(e.wrapping_sub(lo))) {
                Some(n) => *n += 1,
                None => scan.outside[usize::from(e)] += 1,
            };
        let mut octs = b.chunks_exact(16);
        for q in &mut octs {
            // Value j's exponent is bits 16j+7..16j+15 of its word.
            let (lo8, hi8) = q.split_at(8);
            let x = u64::from_le_bytes(lo8.try_into().expect("8 bytes"));
            let y = u64::from_le_bytes(hi8.try_into().expect("8 bytes"));
            let (first, second) = c.split_at_mut(4);
            for (j, (c0, c1)) in first.iter_mut().zip(second).enumerate() {
                count(c0, (x >> (16 * j + 7)) as u8);
                count(c1, (y >> (16 * j + 7)) as u8);
            }
        }
        for w in octs.remainder().chunks_exact(2) {
            count(&mut c[0], exponent_of(w[0], w[1]));
        }
        scan.windows
            .push(std::array::from_fn(|i| c.iter().map(|c| c[i]).sum()));
        if let Some(h) = &mut scan.crc {
            h.update(b);
        }
    }
    scan
}

/// Places the window over the 16 most frequent exponents of the first
/// values (centred when they span less than the window).
fn window_start(bytes: &[u8]) -> u8 {
    let sample = &bytes[..bytes.len().min(2 * WINDOW_SAMPLE)];
    let mut hist = [0u64; 256];
    for w in sample.chunks_exact(2) {
        hist[usize::from(exponent_of(w[0], w[1]))] += 1;
    }
    let (top, _) = palette(&hist);
    let (min, max) = match (top.iter().min(), top.iter().max()) {
        (Some(&a), Some(&b)) => (usize::from(a), usize::from(b)),
        _ => return 0,
    };
    let slack = (WINDOW - 1).saturating_sub(max - min);
    min.saturating_sub(slack / 2).min(256 - WINDOW) as u8
}

/// The input pass: exponent histogram, per-block window counts, and the
/// CRC of the raw bytes when asked; pieces in parallel when there are
/// several threads.
fn scan(
    bytes: &[u8],
    block: usize,
    want_crc: bool,
) -> (u8, [u64; 256], Vec<[u16; WINDOW]>, Option<u32>) {
    let lo = window_start(bytes);
    let threads = rayon::current_num_threads();
    // One piece per thread is enough for one thread; more balance the load.
    let blocks = bytes.len().div_ceil(2 * block);
    let pieces = if threads == 1 {
        1
    } else {
        (4 * threads).min(blocks.div_ceil(64)).max(1)
    };
    let piece_bytes = 2 * block * blocks.div_ceil(pieces);
    let scans: Vec<Scan> = bytes
        .par_chunks(piece_bytes.max(2 * block))
        .map(|p| scan_piece(p, block, lo, want_crc))
        .collect();
    let mut hist = [0u64; 256];
    let mut windows = Vec::with_capacity(blocks);
    let mut crc: Option<Hasher> = None;
    for s in scans {
        for (h, o) in hist.iter_mut().zip(&s.outside) {
            *h += o;
        }
        for w in &s.windows {
            for (i, &c) in w.iter().enumerate() {
                hist[usize::from(lo) + i] += u64::from(c);
            }
        }
        windows.extend_from_slice(&s.windows);
        match (&mut crc, s.crc) {
            (Some(all), Some(piece)) => all.combine(&piece),
            (all, piece) => *all = all.take().or(piece),
        }
    }
    (lo, hist, windows, crc.map(Hasher::finalize))
}

/// Weight of a length a table lacks in [`CostTables`]: large enough that
/// any use marks the block as not codable with that table (valid costs stay
/// below 2^20: counts <= 2^16, lengths <= 15), small enough that products
/// with counts fit in 64 bits and the lengths in 32 (so the compiler can use
/// 32x32->64-bit vector multiplies).
const ABSENT: u32 = 1 << 31;

/// Lengths of up to four tables laid out symbol-major, to cost a block
/// under every table at once.
struct CostTables {
    by_symbol: [[u32; 4]; MAX_SYMBOLS],
}

impl CostTables {
    fn new(tables: &[[u8; MAX_SYMBOLS]]) -> Self {
        let mut by_symbol = [[ABSENT; 4]; MAX_SYMBOLS];
        for (t, lengths) in tables.iter().enumerate() {
            for (s, &l) in lengths.iter().enumerate() {
                by_symbol[s][t] = if l == 0 { ABSENT } else { u32::from(l) };
            }
        }
        Self { by_symbol }
    }

    /// Code bits of `counts` under each table, [`valid`] only where the
    /// table has every symbol the block uses. The four sums are independent
    /// lanes, which the compiler keeps in vector registers.
    #[inline]
    fn costs(&self, counts: &Counts) -> [u64; 4] {
        let mut acc = [0u64; 4];
        for (&c, lengths) in counts.iter().zip(&self.by_symbol) {
            for t in 0..4 {
                acc[t] += u64::from(c) * u64::from(lengths[t]);
            }
        }
        acc
    }
}

fn valid(cost: u64) -> Option<u64> {
    (cost < u64::from(ABSENT)).then_some(cost)
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
/// the stack with merges instead of sorts, since table choice calls it for
/// every table in every round.
fn package_merge(freqs: &[u64], max_len: u8) -> [u8; MAX_SYMBOLS] {
    /// Items at one level: at most the leaves plus half the previous list.
    const CAP: usize = 2 * MAX_SYMBOLS;
    #[derive(Clone, Copy)]
    struct Item {
        weight: u64,
        count: [u8; MAX_SYMBOLS],
    }
    let mut lengths = [0u8; MAX_SYMBOLS];
    let mut leaves = [(0u64, 0usize); MAX_SYMBOLS];
    let mut n = 0;
    for (s, &f) in freqs.iter().enumerate().take(MAX_SYMBOLS) {
        if f > 0 {
            leaves[n] = (f, s);
            n += 1;
        }
    }
    match n {
        0 => return lengths,
        1 => {
            lengths[leaves[0].1] = 1;
            return lengths;
        }
        _ => {}
    }
    let leaves = &mut leaves[..n];
    leaves.sort_unstable();
    let empty = Item {
        weight: 0,
        count: [0; MAX_SYMBOLS],
    };
    let mut originals = [empty; MAX_SYMBOLS];
    for (o, &(f, s)) in originals.iter_mut().zip(leaves.iter()) {
        o.weight = f;
        o.count[s] = 1;
    }
    let originals = &originals[..n];
    let mut list = [empty; CAP];
    list[..n].copy_from_slice(originals);
    let mut len = n;
    for _ in 1..max_len {
        // Packages of consecutive pairs are in weight order; a stable merge
        // with the leaves first among equal weights matches a stable sort of
        // leaves followed by packages.
        let mut packages = [empty; MAX_SYMBOLS];
        let np = len / 2;
        for (k, p) in packages.iter_mut().enumerate().take(np) {
            let (a, b) = (&list[2 * k], &list[2 * k + 1]);
            p.weight = a.weight + b.weight;
            for i in 0..MAX_SYMBOLS {
                p.count[i] = a.count[i] + b.count[i];
            }
        }
        let (mut i, mut j, mut k) = (0, 0, 0);
        while i < n || j < np {
            let take_leaf = j == np || (i < n && originals[i].weight <= packages[j].weight);
            list[k] = if take_leaf {
                i += 1;
                originals[i - 1]
            } else {
                j += 1;
                packages[j - 1]
            };
            k += 1;
        }
        len = k;
    }
    for item in &list[..2 * n - 2] {
        for (l, c) in lengths.iter_mut().zip(&item.count) {
            *l += c;
        }
    }
    lengths
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
    sums.iter().map(|f| package_merge(f, max_len)).collect()
}

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
    let mut tables = tables_for(blocks, &assignment, t, max_len);
    choose_rounds(blocks, t, max_len, &mut assignment, &mut tables);
    finish_choice(blocks, t, symbols, assignment, tables)
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

/// Alternates "best table per block" and "best code per table", at most 8
/// rounds, stopping when no block moves.
fn choose_rounds(
    blocks: &[Counts],
    t: usize,
    max_len: u8,
    assignment: &mut Vec<u8>,
    tables: &mut Vec<[u8; MAX_SYMBOLS]>,
) {
    // With one table every block already has the only choice.
    if t == 1 {
        return;
    }
    let counts: Vec<[f32; MAX_SYMBOLS]> = blocks.iter().map(|c| c.map(|x| x as f32)).collect();
    for _ in 0..8 {
        let cost = RoundCosts::new(tables);
        // Each block's best table, and per table the symbol totals of its
        // blocks (for the next tables) in the same pass. Totals are integers
        // below 2^53, so f64 sums are exact in any order.
        let pieces: Vec<(Vec<u8>, [[f64; MAX_SYMBOLS]; 4])> = counts
            .par_chunks(4096)
            .zip(assignment.par_chunks(4096))
            .map(|(counts, current)| {
                let mut next = Vec::with_capacity(counts.len());
                let mut sums = [[0f64; MAX_SYMBOLS]; 4];
                for (c, &current) in counts.iter().zip(current) {
                    let costs = cost.costs(c);
                    // The current table first, then the first strictly
                    // cheaper minimum: ties keep the block where it is.
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
                    next.push(best.1);
                    for (sum, &x) in sums[usize::from(best.1)].iter_mut().zip(c) {
                        *sum += f64::from(x);
                    }
                }
                (next, sums)
            })
            .collect();
        let mut next = Vec::with_capacity(assignment.len());
        let mut sums = [[0f64; MAX_SYMBOLS]; 4];
        for (n, s) in pieces {
            next.extend_from_slice(&n);
            for (total, part) in sums.iter_mut().flatten().zip(s.iter().flatten()) {
                *total += part;
            }
        }
        if next == *assignment {
            break;
        }
        *assignment = next;
        *tables = sums[..t]
            .iter()
            .map(|f| package_merge(&f.map(|x| x as u64), max_len))
            .collect();
    }
}

/// [`CostTables`] in `f32` for the rounds of table choice, where every
/// block is costed under every table, eight times over: four tables are one
/// vector of `f32`, multiplied and added without any widening.
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

/// Drops tables no block uses and totals the cost.
fn finish_choice(
    blocks: &[Counts],
    t: usize,
    symbols: usize,
    mut assignment: Vec<u8>,
    tables: Vec<[u8; MAX_SYMBOLS]>,
) -> TableChoice {
    let nb = blocks.len();
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
    let cost = CostTables::new(&kept);
    let code_bits: u64 = blocks
        .iter()
        .zip(&assignment)
        .map(|(c, &a)| valid(cost.costs(c)[usize::from(a)]).expect("tables cover their blocks"))
        .sum();
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

/// Writes the codes of `words` (little-endian BF16 bytes of one block) with
/// `lut`, flushing the register after every `K` codes (`K` is 2 or 4, and
/// `K` codes fit the 56 free bits).
#[inline(never)]
fn write_codes<const K: usize>(w: &mut SliceBitWriter<'_>, words: &[u8], lut: &CodeLut) {
    let put = |w: &mut SliceBitWriter<'_>, e: u8| {
        let v = lut[usize::from(e)];
        w.put(v & 0xFFFF_FFFF, (v >> 32) as u32);
    };
    let mut quads = words.chunks_exact(8);
    for q in &mut quads {
        // Four values per load; value j's exponent is bits 16j+7..16j+15.
        let x = u64::from_le_bytes(q.try_into().expect("8 bytes"));
        put(w, (x >> 7) as u8);
        put(w, (x >> 23) as u8);
        if K == 2 {
            w.flush();
        }
        put(w, (x >> 39) as u8);
        put(w, (x >> 55) as u8);
        w.flush();
    }
    for x in quads.remainder().chunks_exact(2) {
        put(w, exponent_of(x[0], x[1]));
        w.flush();
    }
}

/// Encodes little-endian BF16 `bytes` as a bf16-huffman data section, or
/// returns `None` when the form cannot hold it (no values, more than 2^32-1
/// values, or an exponent stream over 4 GiB).
pub fn encode(bytes: &[u8], params: &HuffmanParams) -> Option<Vec<u8>> {
    encode_impl(bytes, params, false).0
}

/// [`encode`], and the CRC-32 of `bytes` taken in the same pass over them.
pub fn encode_with_crc(bytes: &[u8], params: &HuffmanParams) -> (Option<Vec<u8>>, u32) {
    let (section, crc) = encode_impl(bytes, params, true);
    (section, crc.unwrap_or_else(|| crc32fast::hash(bytes)))
}

/// Per-block symbol counts from the window counts of the input pass, or
/// `None` when a palette exponent lies outside the window.
fn counts_from_windows(
    bytes: &[u8],
    block: usize,
    lo: u8,
    windows: &[[u16; WINDOW]],
    palette: &[u8],
    symbol_of: &[u8; 256],
) -> Option<Vec<Counts>> {
    let lo = usize::from(lo);
    if palette
        .iter()
        .any(|&e| !(lo..lo + WINDOW).contains(&usize::from(e)))
    {
        return None;
    }
    let p = palette.len();
    let symbol: [usize; WINDOW] = std::array::from_fn(|i| usize::from(symbol_of[lo + i]));
    let n = bytes.len() / 2;
    Some(
        windows
            .iter()
            .enumerate()
            .map(|(b, w)| {
                let mut c = [0u32; MAX_SYMBOLS];
                let mut inside = 0u32;
                for (&k, &s) in w.iter().zip(&symbol) {
                    c[s] += u32::from(k);
                    inside += u32::from(k);
                }
                // Everything outside the window is an escape.
                let len = (n - b * block).min(block) as u32;
                if p < MAX_SYMBOLS {
                    c[p] += len - inside;
                }
                c
            })
            .collect(),
    )
}

/// Everything the encoder decides before writing a section: the palette,
/// the symbol counts of every block and the code tables. What
/// [`write_planned`] needs; made by [`plan`].
#[derive(Debug, Clone)]
pub struct Plan {
    /// Palette exponents, most frequent first.
    pub palette: Vec<u8>,
    /// Exponent -> symbol (palette index, or the escape `palette.len()`).
    pub symbol_of: [u8; 256],
    /// Whether some exponent is outside the palette.
    pub has_escape: bool,
    /// Symbol counts of each block.
    pub blocks: Vec<Counts>,
    /// Code tables and the table of each block.
    pub choice: TableChoice,
}

/// The first half of [`encode`]: one pass over `bytes` (counting, and the
/// CRC of `bytes` when `want_crc`), then the choice of code tables. `None`
/// when the form cannot hold the bytes (see [`encode`]).
pub fn plan(bytes: &[u8], params: &HuffmanParams, want_crc: bool) -> (Option<Plan>, Option<u32>) {
    let n = bytes.len() / 2;
    if n == 0
        || n as u64 > limits::MAX_ENCODED_ELEMENTS
        || params.chunk_log2 < params.block_log2
        || params.chunk_log2 > limits::MAX_CHUNK_LOG2
    {
        return (None, None);
    }
    let block = 1usize << params.block_log2;
    let (lo, hist, windows, crc) = if params.block_log2 <= 15 {
        let (lo, hist, windows, crc) = scan(bytes, block, want_crc);
        (lo, hist, Some(windows), crc)
    } else {
        // Blocks too large for 16-bit window counts: plain passes.
        let crc = want_crc.then(|| crc32fast::hash(bytes));
        (0, exponent_histogram(bytes), None, crc)
    };
    let (pal, index) = palette(&hist);
    let p = pal.len();
    let has_escape = hist.iter().zip(&index).any(|(&c, i)| c > 0 && i.is_none());
    let symbols = p + usize::from(has_escape);
    let symbol_of: [u8; 256] = std::array::from_fn(|e| index[e].unwrap_or(p as u8));

    let blocks: Vec<Counts> = windows
        .and_then(|w| counts_from_windows(bytes, block, lo, &w, &pal, &symbol_of))
        .unwrap_or_else(|| {
            bytes
                .par_chunks(2 * block)
                .with_min_len(64)
                .map(|b| block_counts(b, &symbol_of))
                .collect()
        });
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
    let plan = Plan {
        palette: pal,
        symbol_of,
        has_escape,
        blocks,
        choice,
    };
    (Some(plan), crc)
}

/// The second half of [`encode`]: writes the section `plan` (made by
/// [`plan`] from the same `bytes` and `params`) describes, or `None` when
/// its exponent stream would pass 4 GiB.
pub fn write_planned(bytes: &[u8], params: &HuffmanParams, plan: &Plan) -> Option<Vec<u8>> {
    write_section(
        bytes,
        params,
        &plan.palette,
        &plan.symbol_of,
        plan.has_escape,
        &plan.blocks,
        &plan.choice,
    )
}

fn encode_impl(
    bytes: &[u8],
    params: &HuffmanParams,
    want_crc: bool,
) -> (Option<Vec<u8>>, Option<u32>) {
    let (plan, crc) = plan(bytes, params, want_crc);
    (plan.and_then(|p| write_planned(bytes, params, &p)), crc)
}

/// Lays out the section for `choice` and writes it: header, chunk index and
/// selectors here, the sign+mantissa plane and the codes chunk by chunk in
/// parallel, each straight into its place.
fn write_section(
    bytes: &[u8],
    params: &HuffmanParams,
    pal: &[u8],
    symbol_of: &[u8; 256],
    has_escape: bool,
    blocks: &[Counts],
    choice: &TableChoice,
) -> Option<Vec<u8>> {
    let n = bytes.len() / 2;
    let p = pal.len();
    let symbols = p + usize::from(has_escape);
    let max_len = params.max_code_len;
    let block = 1usize << params.block_log2;
    // Per table, exponent -> (bits to write, bit count), escapes included.
    let luts: Vec<CodeLut> = choice
        .tables
        .iter()
        .map(|lengths| {
            let codes = huffman::canonical_codes(&lengths[..symbols]);
            std::array::from_fn(|e| {
                let s = usize::from(symbol_of[e]);
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

    // Exact bits of every block, hence of every chunk, before any is written.
    let costs: Vec<CostTables> = choice
        .tables
        .iter()
        .map(|t| CostTables::new(std::slice::from_ref(t)))
        .collect();
    let blocks_per_chunk = 1usize << (params.chunk_log2 - params.block_log2);
    let chunk_bytes: Vec<u64> = blocks
        .chunks(blocks_per_chunk)
        .zip(choice.assignment.chunks(blocks_per_chunk))
        .map(|(bs, ts)| {
            let bits: u64 = bs
                .iter()
                .zip(ts)
                .map(|(c, &t)| {
                    let escapes = if has_escape { 8 * u64::from(c[p]) } else { 0 };
                    costs[usize::from(t)].costs(c)[0] + escapes
                })
                .sum();
            bits.div_ceil(8)
        })
        .collect();
    let chunk_count = chunk_bytes.len();
    let exp_stream_len: u64 = chunk_bytes.iter().sum();
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
    header.palette[..p].copy_from_slice(pal);
    for (dst, src) in header.code_lengths.iter_mut().zip(&choice.tables) {
        dst[..symbols].copy_from_slice(&src[..symbols]);
    }

    let mut out = vec![0u8; parts.end as usize];
    let (head, rest) = out.split_at_mut(parts.sign_mantissa as usize);
    head[..size_of::<HuffmanHeader>()].copy_from_slice(header.as_bytes());
    let (sm_plane, rest) = rest.split_at_mut(n);
    let (middle, exp_stream) =
        rest.split_at_mut((parts.exp_stream - parts.sign_mantissa) as usize - n);
    let index_at = (parts.chunk_index - parts.sign_mantissa) as usize - n;
    let (chunk_index, selectors) = middle[index_at..].split_at_mut(4 * chunk_count);
    let mut offset = 0u64;
    for (dst, &len) in chunk_index.chunks_exact_mut(4).zip(&chunk_bytes) {
        dst.copy_from_slice(&(offset as u32).to_le_bytes());
        offset += len;
    }
    if selector_bits > 0 {
        for (b, &a) in choice.assignment.iter().enumerate() {
            let bit = b * usize::from(selector_bits);
            selectors[bit / 8] |= a << (bit % 8);
        }
    }

    // Each chunk's bits go to their own slice of the stream.
    let mut streams = Vec::with_capacity(chunk_count);
    let mut rest = exp_stream;
    for &len in &chunk_bytes {
        let (s, r) = rest.split_at_mut(len as usize);
        streams.push(s);
        rest = r;
    }
    let chunk = 1usize << params.chunk_log2;
    let assignment = &choice.assignment;
    bytes
        .par_chunks(2 * chunk)
        .zip(sm_plane.par_chunks_mut(chunk))
        .zip(streams)
        .enumerate()
        .for_each(|(c, ((piece, sm), stream))| {
            sign_mantissa_serial(piece, sm);
            let expected = stream.len();
            let mut w = SliceBitWriter::new(stream);
            let first_block = c * blocks_per_chunk;
            for (b, words) in piece.chunks(2 * block).enumerate() {
                let blk = first_block + b;
                let lut = &luts[usize::from(assignment[blk])];
                // Escapes take up to 12 + 8 bits, other codes at most 12:
                // flush after two codes, or after four without escapes.
                if max_len <= 14 && (!has_escape || blocks[blk][p] == 0) {
                    write_codes::<4>(&mut w, words, lut);
                } else {
                    write_codes::<2>(&mut w, words, lut);
                }
            }
            let written = w.finish();
            debug_assert_eq!(written, expected, "chunk {c} size");
        });
    Some(out)
}
