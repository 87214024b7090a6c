//! CPU decoders for the two BF16 encodings (spec: "bf16-huffman", "bf16-palette4").
//!
//! Views are parsed from a tensor's data section with O(1) checks (header
//! fields, part sizes); the per-chunk structures are checked as they are
//! decoded, so a hostile stream yields [`Error::CorruptStream`], never a panic.

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, IntoBytes};

use crate::bf16;
use crate::bits::BitReader;
use crate::error::{Error, Result};
use crate::huffman::{self, Entry, MultiTable, entry_escape, entry_exponent, entry_len};
use crate::layout::{
    HuffmanHeader, HuffmanParts, Palette4Header, Palette4Parts, limits, selector_bits_for,
};

fn bad(field: &'static str, offset: u64, value: u64, reason: &'static str) -> Error {
    Error::BadField {
        field,
        offset,
        value,
        reason,
    }
}

fn check_palette(palette: &[u8], offset: u64) -> Result<()> {
    let mut seen = [false; 256];
    for &p in palette {
        if std::mem::replace(&mut seen[usize::from(p)], true) {
            return Err(bad(
                "palette",
                offset,
                u64::from(p),
                "exponent repeated in palette",
            ));
        }
    }
    Ok(())
}

/// Palette entries past `palette_len` must be 0 (spec S3/S15: BadPalette).
fn check_unused_palette(unused: &[u8], offset: u64) -> Result<()> {
    match unused.iter().position(|&b| b != 0) {
        Some(i) => Err(bad(
            "palette",
            offset + i as u64,
            u64::from(unused[i]),
            "entry past palette_len is not 0",
        )),
        None => Ok(()),
    }
}

fn check_zero(bytes: &[u8], what: &'static str, offset: u64) -> Result<()> {
    match bytes.iter().position(|&b| b != 0) {
        Some(i) => Err(Error::NonZeroReserved {
            what,
            offset: offset + i as u64,
        }),
        None => Ok(()),
    }
}

/// Steps S2/S14 and the encoded-size limit, shared by both section headers:
/// the stored count must be the shape's, non-zero and within 2^32 - 1.
fn check_element_count(stored: u64, from_shape: u64, offset: u64) -> Result<()> {
    if stored != from_shape || stored == 0 {
        return Err(bad(
            "element_count",
            offset,
            stored,
            "does not match the tensor shape",
        ));
    }
    if stored > limits::MAX_ENCODED_ELEMENTS {
        return Err(Error::LimitExceeded {
            what: "elements in an encoded tensor",
            value: stored,
            limit: limits::MAX_ENCODED_ELEMENTS,
        });
    }
    Ok(())
}

/// A validated bf16-huffman data section.
#[derive(Debug, Clone, Copy)]
pub struct HuffmanView<'a> {
    tensor: usize,
    offset: u64,
    header: HuffmanHeader,
    parts: HuffmanParts,
    sign_mantissa: &'a [u8],
    chunk_index: &'a [U32],
    selectors: &'a [u8],
    exp_stream: &'a [u8],
}

impl<'a> HuffmanView<'a> {
    /// Parses `section` (the data section of tensor `tensor`, at absolute file
    /// offset `offset`) and checks its header against `element_count`.
    pub fn parse(
        tensor: usize,
        section: &'a [u8],
        offset: u64,
        element_count: u64,
    ) -> Result<Self> {
        let (header, _) =
            HuffmanHeader::read_from_prefix(section).map_err(|_| Error::Truncated {
                what: "Huffman header",
                needed: size_of::<HuffmanHeader>() as u64,
                len: section.len() as u64,
            })?;
        let h = &header;
        let n = h.element_count.get();
        check_element_count(n, element_count, offset)?;
        let p = h.palette_len;
        if p == 0 || p > limits::MAX_PALETTE {
            return Err(bad("palette_len", offset + 8, p.into(), "must be 1..=16"));
        }
        if h.has_escape > 1 {
            return Err(bad(
                "has_escape",
                offset + 9,
                h.has_escape.into(),
                "must be 0 or 1",
            ));
        }
        let t = h.table_count;
        if t == 0 || t > limits::MAX_TABLES {
            return Err(bad("table_count", offset + 10, t.into(), "must be 1..=4"));
        }
        if h.selector_bits != selector_bits_for(t) {
            return Err(bad(
                "selector_bits",
                offset + 11,
                h.selector_bits.into(),
                "wrong for table_count",
            ));
        }
        if !limits::BLOCK_LOG2.contains(&h.block_log2) {
            return Err(bad(
                "block_log2",
                offset + 12,
                h.block_log2.into(),
                "must be 6..=16",
            ));
        }
        if h.chunk_log2 < h.block_log2 || h.chunk_log2 > limits::MAX_CHUNK_LOG2 {
            return Err(bad(
                "chunk_log2",
                offset + 13,
                h.chunk_log2.into(),
                "must be block_log2..=24",
            ));
        }
        if h.max_code_len == 0 || h.max_code_len > limits::MAX_CODE_LEN {
            return Err(bad(
                "max_code_len",
                offset + 14,
                h.max_code_len.into(),
                "must be 1..=12",
            ));
        }
        check_zero(&[h.reserved0], "Huffman header reserved byte", offset + 15)?;
        check_palette(&h.palette[..usize::from(p)], offset + 16)?;
        check_unused_palette(&h.palette[usize::from(p)..], offset + 16 + u64::from(p))?;
        let symbols = usize::from(p) + usize::from(h.has_escape);
        for (ti, lengths) in h.code_lengths.iter().enumerate() {
            // Spec S8: lengths of tables >= T and symbols >= K are 0 (BadHuffmanTable).
            let unused = |reason| Error::BadHuffmanTable {
                tensor,
                table: ti,
                reason,
            };
            if ti >= usize::from(t) {
                if lengths.iter().any(|&l| l != 0) {
                    return Err(unused("a table past table_count has code lengths"));
                }
                continue;
            }
            if lengths[symbols..].iter().any(|&l| l != 0) {
                return Err(unused("a symbol past the alphabet has a code length"));
            }
            huffman::validate_lengths(&lengths[..symbols], h.max_code_len).map_err(|reason| {
                Error::BadHuffmanTable {
                    tensor,
                    table: ti,
                    reason,
                }
            })?;
        }
        check_zero(&h.reserved1, "Huffman header reserved bytes", offset + 100)?;
        check_zero(
            h.reserved2.as_bytes(),
            "Huffman header reserved bytes",
            offset + 108,
        )?;
        check_zero(
            h.reserved3.as_bytes(),
            "Huffman header reserved bytes",
            offset + 120,
        )?;
        let chunk_count = n.div_ceil(1 << h.chunk_log2);
        if u64::from(h.chunk_count.get()) != chunk_count {
            return Err(bad(
                "chunk_count",
                offset + 104,
                h.chunk_count.get().into(),
                "must be ceil(n / chunk)",
            ));
        }
        // S11 before S12: chunk offsets are u32.
        if h.exp_stream_len.get() > u64::from(u32::MAX) {
            return Err(Error::LimitExceeded {
                what: "exponent stream length",
                value: h.exp_stream_len.get(),
                limit: u32::MAX.into(),
            });
        }
        let parts = HuffmanParts::compute(
            n,
            chunk_count,
            h.block_log2,
            h.selector_bits,
            h.exp_stream_len.get(),
        )
        .ok_or(Error::LimitExceeded {
            what: "Huffman section size",
            value: u64::MAX,
            limit: u64::MAX,
        })?;
        if parts.end != section.len() as u64 {
            return Err(Error::BadTensor {
                condition: crate::error::Condition::BadLength,
                tensor,
                offset,
                reason: format!(
                    "data_len is {} but the Huffman parts end at {}",
                    section.len(),
                    parts.end
                ),
            });
        }
        // All ranges below lie inside `section` since parts.end == section.len().
        let r = |a: u64, b: u64| &section[a as usize..b as usize];
        let sign_mantissa = r(parts.sign_mantissa, parts.sign_mantissa + n);
        let chunk_index = <[U32]>::ref_from_bytes(r(parts.chunk_index, parts.selectors))
            .expect("u32 LE slices have alignment 1 and the length is a multiple of 4");
        let selectors = r(parts.selectors, parts.selectors + parts.selectors_len);
        let exp_stream = r(parts.exp_stream, parts.end);
        Ok(Self {
            tensor,
            offset,
            header,
            parts,
            sign_mantissa,
            chunk_index,
            selectors,
            exp_stream,
        })
    }

    /// The section header.
    pub fn header(&self) -> &HuffmanHeader {
        &self.header
    }
    /// Part offsets inside the section.
    pub fn parts(&self) -> &HuffmanParts {
        &self.parts
    }
    /// Number of values.
    pub fn element_count(&self) -> u64 {
        self.header.element_count.get()
    }
    /// Number of chunks (units of independent decoding).
    pub fn chunk_count(&self) -> usize {
        self.chunk_index.len()
    }
    /// Values per chunk (the last chunk may hold fewer).
    pub fn chunk_len(&self) -> usize {
        1 << self.header.chunk_log2
    }
    /// The element range `[start, end)` of chunk `c`.
    pub fn chunk_range(&self, c: usize) -> core::ops::Range<usize> {
        let start = c << self.header.chunk_log2;
        start..(start + self.chunk_len()).min(self.element_count() as usize)
    }
    /// The palette exponents.
    pub fn palette(&self) -> &[u8] {
        &self.header.palette[..usize::from(self.header.palette_len)]
    }
    /// The sign+mantissa plane.
    pub fn sign_mantissa(&self) -> &'a [u8] {
        self.sign_mantissa
    }
    /// The packed block selectors.
    pub fn selectors(&self) -> &'a [u8] {
        self.selectors
    }
    /// The exponent bit stream.
    pub fn exp_stream(&self) -> &'a [u8] {
        self.exp_stream
    }
    /// The chunk index: byte offset of each chunk in the exponent stream.
    pub fn chunk_offsets(&self) -> impl ExactSizeIterator<Item = u32> + '_ {
        self.chunk_index.iter().map(|v| v.get())
    }

    /// Builds the decode tables. Do this once per tensor, then decode chunks.
    pub fn decoder(&self) -> HuffmanDecoder<'a> {
        let h = &self.header;
        let size = 1usize << h.max_code_len;
        let symbols = usize::from(h.palette_len) + usize::from(h.has_escape);
        let escape = (h.has_escape == 1).then_some(usize::from(h.palette_len));
        let lengths = |t: usize| &h.code_lengths[t][..symbols];
        let table_count = usize::from(h.table_count);
        // A multi-symbol table costs about as much to build as decoding a few
        // thousand values one at a time: only worth it on larger tensors.
        let use_multi = self.element_count() >= MULTI_MIN_ELEMENTS;
        // With multi-symbol tables, one-symbol ones are not needed: every
        // code is in an entry or marked (`huffman::mark_long_codes`), so an
        // entry with neither is bits that start no code.
        let mut tables = vec![0; if use_multi { 0 } else { size * table_count }];
        for (t, table) in tables.chunks_exact_mut(size).enumerate() {
            huffman::build_decode_table(lengths(t), self.palette(), escape, h.max_code_len, table);
        }
        // Tables with the same code lengths decode alike (the reference
        // encoder can emit such twins): each distinct one is built once and
        // copied, not shared; lanes reading one shared copy measured slower.
        let mut multi: Vec<Box<MultiTable>> = Vec::new();
        if use_multi {
            for t in 0..table_count {
                let table = match (0..t).find(|&u| lengths(u) == lengths(t)) {
                    Some(u) => multi[u].clone(),
                    None => {
                        let mut m = huffman::build_multi_table(lengths(t), self.palette(), escape);
                        huffman::mark_long_codes(&mut m, lengths(t), self.palette(), escape);
                        m
                    }
                };
                multi.push(table);
            }
        }
        // Palette exponents are distinct, so an exponent names its symbol.
        let exp_lens = (0..table_count)
            .map(|t| {
                let mut lens = [0u8; 256];
                for (&exp, &len) in self.palette().iter().zip(lengths(t)) {
                    lens[usize::from(exp)] = len;
                }
                lens
            })
            .collect();
        HuffmanDecoder {
            view: *self,
            tables,
            multi,
            exp_lens,
        }
    }
}

/// Tensors with fewer values are decoded without multi-symbol tables.
const MULTI_MIN_ELEMENTS: u64 = 1 << 15;
/// Values decoded into a stack buffer before they are joined with the
/// sign+mantissa plane: small enough to stay in L1.
const PIECE: usize = 4096;
/// Room for the 8-byte store of the multi-symbol entry at the piece end.
const SLACK: usize = 8;
/// Lookups per refill: a refill (`BitReader::peek_at`) leaves at least 57
/// valid bits, each lookup takes at most `MULTI_BITS` (11).
const LOOKUPS_PER_REFILL: usize = (57 / huffman::MULTI_BITS) as usize;

/// Decodes exactly one exponent into `dst` with the one-symbol `table`
/// (escapes included). On a bit pattern that starts no code, returns the bit
/// position where it starts.
#[inline(always)]
fn decode_one(
    r: &mut BitReader<'_>,
    table: &[Entry],
    mask: u64,
    dst: &mut u8,
) -> core::result::Result<(), u64> {
    r.refill();
    let bits = r.bits();
    let e = table[(bits & mask) as usize];
    let len = entry_len(e);
    if len == 0 {
        return Err(r.consumed());
    }
    let esc = entry_escape(e);
    // Escape: the 8 bits after the code are the exponent itself.
    *dst = if esc != 0 {
        (bits >> len) as u8
    } else {
        entry_exponent(e)
    };
    r.consume(len + 8 * esc);
    Ok(())
}

/// The value and bit count of the code that a multi-symbol entry marked by
/// [`huffman::mark_long_codes`] stands for, given the stream bits from it
/// on; `None` for an entry with no mark (bits that start no code).
#[inline(always)]
fn marked_value(e: huffman::MultiEntry, bits: u64) -> Option<(u8, u32)> {
    let len = huffman::marked_len(e);
    if len == 0 {
        return None;
    }
    // A code of MULTI_BITS + 1 bits: its last bit picks byte 0 or 1.
    let sel = (bits >> huffman::MULTI_BITS) as u32 & u32::from(len > huffman::MULTI_BITS);
    let esc = (e >> (16 + sel)) as u32 & 1;
    let exp = if esc != 0 {
        // Escape: the 8 bits after the code are the exponent itself.
        (bits >> len) as u8
    } else {
        (e >> (8 * sel)) as u8
    };
    Some((exp, len + 8 * esc))
}

/// What a caller of [`HuffmanDecoder::decode_chunks_with`] may supply.
pub trait DecodeHooks {
    /// Writes `out` (`2 * exps.len()` bytes) as the BF16 little-endian words
    /// joined from `exps` and `sm` (spec: "BF16 split"). The default is this
    /// crate's portable join; a caller may bring a faster one (a wrong one
    /// is caught by the decoded CRC, which callers check).
    #[inline]
    fn join(&mut self, exps: &[u8], sm: &[u8], out: &mut [u8]) {
        join_into(exps, sm, out);
    }

    /// Called every few dozen values decoded: work that waits on memory
    /// (streaming earlier output out, prefetching later input) can run here
    /// in small slices, overlapped with decoding, instead of in bursts that
    /// stall the core. The default does nothing.
    #[inline]
    fn background(&mut self) {}
}

/// The default [`DecodeHooks`]: this crate's join, nothing in between.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainJoin;

impl DecodeHooks for PlainJoin {}

/// Writes BF16 little-endian words joined from exponents and sign+mantissa
/// bytes (spec: "BF16 split"). Fixed-size groups let the compiler vectorize.
#[inline]
fn join_into(exps: &[u8], sm: &[u8], out: &mut [u8]) {
    const G: usize = 16;
    let mut o = out.chunks_exact_mut(2 * G);
    let mut e = exps.chunks_exact(G);
    let mut s = sm.chunks_exact(G);
    for ((o, e), s) in (&mut o).zip(&mut e).zip(&mut s) {
        let o: &mut [u8; 2 * G] = o.try_into().expect("group size");
        let e: &[u8; G] = e.try_into().expect("group size");
        let s: &[u8; G] = s.try_into().expect("group size");
        for i in 0..G {
            // In 16-bit lanes: SSE2 has 16-bit shifts but no 8-bit ones.
            let (e, s) = (u16::from(e[i]), u16::from(s[i]));
            let w = e << 7 | (s & 0x7F) | (s & 0x80) << 8;
            o[2 * i..2 * i + 2].copy_from_slice(&w.to_le_bytes());
        }
    }
    let tail = o.into_remainder();
    for ((o, &e), &s) in tail
        .chunks_exact_mut(2)
        .zip(e.remainder())
        .zip(s.remainder())
    {
        o.copy_from_slice(&bf16::join(e, s).to_le_bytes());
    }
}

/// A multi-symbol table whose entries all defer to the one-symbol table:
/// stands in where building real ones would not pay.
static NO_MULTI: MultiTable = [0; huffman::MULTI_SIZE];

/// Chunks decoded together, interleaved in one loop. A Huffman decoder is a
/// chain of dependent steps (bits -> table entry -> bits consumed -> next
/// bits); chunks are independent streams, so interleaving several lets the
/// CPU overlap their chains.
const LANES: usize = 4;

/// One chunk being decoded, possibly interleaved with others.
struct Lane<'t, 'd> {
    reader: BitReader<'d>,
    /// Offset of the chunk's bits in the exponent stream (for errors).
    data_start: u64,
    /// Next value of the current piece to decode.
    k: usize,
    /// End of the current run of values that share one table (in the piece).
    seg_end: usize,
    multi: &'t MultiTable,
    table: &'t [Entry],
    /// The code length of each exponent of the current table.
    exp_len: &'t [u8; 256],
    /// First value of the current piece, as an element index of the tensor.
    piece_start: usize,
    piece_len: usize,
    done: bool,
}

impl Lane<'_, '_> {
    /// Whether the lane's next multi-symbol entry is one the table defers
    /// (on which the lockstep loop stops).
    fn stalled(&self) -> bool {
        const MULTI_MASK: u64 = huffman::MULTI_SIZE as u64 - 1;
        huffman::multi_count(self.multi[(self.reader.bits() & MULTI_MASK) as usize]) == 0
    }
}

/// Decode tables for one bf16-huffman tensor.
#[derive(Debug, Clone)]
pub struct HuffmanDecoder<'a> {
    view: HuffmanView<'a>,
    /// One-symbol tables, `2^max_code_len` entries each, table after table;
    /// empty when there are multi-symbol tables.
    tables: Vec<Entry>,
    /// Multi-symbol tables, one per code table, with
    /// [`huffman::mark_long_codes`] applied; empty for small tensors.
    multi: Vec<Box<MultiTable>>,
    /// Per code table: the code length of each palette exponent.
    exp_lens: Vec<[u8; 256]>,
}

impl<'a> HuffmanDecoder<'a> {
    /// The view this decoder reads.
    pub fn view(&self) -> &HuffmanView<'a> {
        &self.view
    }

    fn corrupt(&self, reason: &'static str, at: u64) -> Error {
        Error::CorruptStream {
            tensor: self.view.tensor,
            offset: self.view.offset + self.view.parts.exp_stream + at,
            reason,
        }
    }

    /// The exponent bytes of chunk `c`, checked against the chunk index.
    fn chunk_stream(&self, c: usize) -> Result<(&'a [u8], u64)> {
        let v = &self.view;
        let Some(start) = v.chunk_index.get(c) else {
            return Err(Error::LimitExceeded {
                what: "chunk number (chunks in the tensor)",
                value: c as u64,
                limit: v.chunk_index.len() as u64,
            });
        };
        let start = u64::from(start.get());
        let end = match v.chunk_index.get(c + 1) {
            Some(next) => u64::from(next.get()),
            None => v.exp_stream.len() as u64,
        };
        if c == 0 && start != 0 {
            return Err(self.corrupt("chunk index does not start at 0", 0));
        }
        if start > end || end > v.exp_stream.len() as u64 {
            return Err(self.corrupt("chunk index entry out of order or past the stream", start));
        }
        Ok((&v.exp_stream[start as usize..end as usize], start))
    }

    /// The table block `block` uses, checked against the table count.
    fn table_of(&self, block: usize) -> Result<usize> {
        let v = &self.view;
        let h = &v.header;
        let sel_bits = usize::from(h.selector_bits);
        if sel_bits == 0 {
            return Ok(0);
        }
        let bit = block * sel_bits;
        let id = (v.selectors[bit / 8] >> (bit % 8)) as usize & ((1 << sel_bits) - 1);
        if id >= usize::from(h.table_count) {
            return Err(Error::CorruptStream {
                tensor: v.tensor,
                offset: v.offset + v.parts.selectors + (bit / 8) as u64,
                reason: "block selector names a table that does not exist",
            });
        }
        Ok(id)
    }

    fn no_code(&self, data_start: u64, bitpos: u64) -> Error {
        self.corrupt("bits match no code", data_start + bitpos / 8)
    }

    /// Moves `lane` on until the multi-symbol loop can take a whole entry
    /// again: decodes one at a time the last values of a run of blocks that
    /// share a table, then starts the next run, or marks the piece done.
    // Kept out of line: inlined into the lane loop it costs that loop
    // registers (measured: about 12% slower decoding).
    #[inline(never)]
    fn lane_boundary<'t>(
        &'t self,
        lane: &mut Lane<'t, '_>,
        out: &mut [u8; PIECE + SLACK],
    ) -> Result<()> {
        const MAX: usize = huffman::MULTI_MAX_SYMBOLS as usize;
        let h = &self.view.header;
        let size = 1usize << h.max_code_len;
        let mask = size as u64 - 1;
        loop {
            if lane.k < lane.seg_end {
                lane.reader.refill();
                let e =
                    lane.multi[(lane.reader.bits() & (huffman::MULTI_SIZE as u64 - 1)) as usize];
                let count = huffman::multi_count(e) as usize;
                if count != 0 && lane.k + MAX <= lane.seg_end {
                    return Ok(());
                }
                // As much of an entry as lies inside the run: its first
                // values' lengths come from their exponents.
                if count != 0 {
                    let take = count.min(lane.seg_end - lane.k);
                    let bits = if take == count {
                        huffman::multi_bits(e)
                    } else {
                        e.to_le_bytes()[..take]
                            .iter()
                            .map(|&x| u32::from(lane.exp_len[usize::from(x)]))
                            .sum()
                    };
                    out[lane.k..lane.k + 8].copy_from_slice(&e.to_le_bytes());
                    lane.k += take;
                    lane.reader.consume(bits);
                } else {
                    self.step_one(
                        &mut lane.reader,
                        e,
                        lane.table,
                        mask,
                        &mut out[lane.k],
                        lane.data_start,
                    )?;
                    lane.k += 1;
                }
                continue;
            }
            if lane.seg_end == lane.piece_len {
                lane.done = true;
                return Ok(());
            }
            let at = lane.piece_start + lane.seg_end;
            let block = at >> h.block_log2;
            let t = self.table_of(block)?;
            // Later blocks with the same code (or a twin) join the run; a bad
            // selector ends it, to be reported when its block is reached.
            let piece_end = lane.piece_start + lane.piece_len;
            let mut end = (block + 1) << h.block_log2;
            while end < piece_end
                && self.table_of(end >> h.block_log2).is_ok_and(|u| {
                    self.view.header.code_lengths[u] == self.view.header.code_lengths[t]
                })
            {
                end += 1 << h.block_log2;
            }
            lane.seg_end = end.min(piece_end) - lane.piece_start;
            lane.table = self.tables.get(t * size..(t + 1) * size).unwrap_or(&[]);
            lane.multi = self.multi.get(t).map_or(&NO_MULTI, |m| m);
            lane.exp_len = &self.exp_lens[t];
        }
    }

    /// One value at an entry the multi-symbol table defers (`e`, with no
    /// values: an escape or long code, marked, or bits that start no code),
    /// for [`Self::lane_boundary`]; the lockstep loop decodes marked entries
    /// inline with [`marked_value`].
    fn step_one(
        &self,
        rd: &mut BitReader<'_>,
        e: huffman::MultiEntry,
        table: &[Entry],
        mask: u64,
        dst: &mut u8,
        data_start: u64,
    ) -> Result<()> {
        rd.refill();
        match marked_value(e, rd.bits()) {
            Some((exp, bits)) => {
                *dst = exp;
                rd.consume(bits);
            }
            None if table.is_empty() => {
                // A multi-symbol entry with no values and no mark.
                return Err(self.no_code(data_start, rd.consumed()));
            }
            None => decode_one(rd, table, mask, dst).map_err(|b| self.no_code(data_start, b))?,
        }
        Ok(())
    }

    /// Decodes whole multi-symbol entries in all `S` lanes in lockstep, for
    /// as long as every lane has room for one more entry in its run; returns
    /// when some lane is within [`huffman::MULTI_MAX_SYMBOLS`] values of its
    /// run end, or stands at bits that start no code, for
    /// [`Self::lane_boundary`] to move it on.
    ///
    /// An entry yields at most `MAX` values, so `(seg_end - k) / MAX` entries
    /// are safe for a lane without a check; each round takes the smallest of
    /// these over the lanes, up to one refill's worth, then looks again, so
    /// the lanes stay in the loop until one is truly at its run end. The
    /// lane state is copied into local arrays that the compiler keeps in
    /// registers; each lane keeps only its bit position and a buffer
    /// reloaded from it every round (`BitReader::peek_at`), as whole
    /// readers took more registers than there are and spilled.
    #[inline(always)]
    fn lockstep<const S: usize>(
        &self,
        lanes: &mut [Lane<'_, '_>; S],
        outs: &mut [[u8; PIECE + SLACK]; S],
        hooks: &mut impl DecodeHooks,
    ) {
        const MAX: usize = huffman::MULTI_MAX_SYMBOLS as usize;
        const MULTI_MASK: u64 = huffman::MULTI_SIZE as u64 - 1;
        const { assert!(S <= 4, "step! below is spelled out for 4 lanes") };
        let data: [&[u8]; S] = std::array::from_fn(|s| lanes[s].reader.data());
        let mut pos: [usize; S] = std::array::from_fn(|s| lanes[s].reader.consumed() as usize);
        let mut buf = [0u64; S];
        let mut k: [usize; S] = std::array::from_fn(|s| lanes[s].k);
        let seg_end: [usize; S] = std::array::from_fn(|s| lanes[s].seg_end);
        let multi: [&MultiTable; S] = std::array::from_fn(|s| lanes[s].multi);
        let mut stuck = false;
        loop {
            let mut room = usize::MAX;
            for s in 0..S {
                room = room.min(seg_end[s] - k[s]);
            }
            let n = (room / MAX).min(LOOKUPS_PER_REFILL);
            if n == 0 || stuck {
                break;
            }
            for s in 0..S {
                buf[s] = BitReader::peek_at(data[s], pos[s]);
            }
            for _ in 0..n {
                // Spelled out per lane so that each lane's state has fixed
                // registers; a loop over the lanes was not unrolled.
                macro_rules! step {
                    ($s:literal) => {
                        if $s < S {
                            // k + MAX <= seg_end <= PIECE here, so the mask
                            // changes nothing but lets the compiler see the
                            // store is in bounds.
                            let at = k[$s] & (PIECE - 1);
                            let e = multi[$s][(buf[$s] & MULTI_MASK) as usize];
                            let count = huffman::multi_count(e) as usize;
                            if count != 0 {
                                // All 8 bytes are stored; the ones past
                                // `count` are overwritten next or lie in the
                                // slack.
                                outs[$s][at..at + 8].copy_from_slice(&e.to_le_bytes());
                                k[$s] += count;
                                let bits = huffman::multi_bits(e);
                                buf[$s] >>= bits;
                                pos[$s] += bits as usize;
                            } else if let Some((exp, bits)) =
                                // An escape needs up to 20 bits, more than
                                // may be left in `buf`: read afresh.
                                marked_value(e, BitReader::peek_at(data[$s], pos[$s]))
                            {
                                // Inline, not a call, so that no lane's state
                                // has to be saved around it.
                                outs[$s][at] = exp;
                                k[$s] += 1;
                                pos[$s] += bits as usize;
                                buf[$s] = BitReader::peek_at(data[$s], pos[$s]);
                            } else {
                                // Bits that start no code: the lane stays in
                                // place, for `lane_boundary` to report.
                                stuck = true;
                            }
                        }
                    };
                }
                step!(0);
                step!(1);
                step!(2);
                step!(3);
            }
            hooks.background();
        }
        for (s, lane) in lanes.iter_mut().enumerate() {
            lane.reader = BitReader::at_bit(data[s], pos[s] as u64);
            lane.k = k[s];
        }
    }

    /// Decodes chunks `first..first + S` (all of the same length), their
    /// exponents in pieces of at most [`PIECE`] values, calling
    /// `emit(hooks, lane, offset_in_chunk, exponents)` for each piece of each
    /// chunk.
    #[inline(always)]
    fn decode_lanes<const S: usize, H: DecodeHooks>(
        &self,
        first: usize,
        hooks: &mut H,
        mut emit: impl FnMut(&mut H, usize, usize, &[u8]),
    ) -> Result<()> {
        const MAX: usize = huffman::MULTI_MAX_SYMBOLS as usize;
        let v = &self.view;
        let size = 1usize << v.header.max_code_len;
        let mut streams = [(&[][..], 0u64); S];
        for (s, stream) in streams.iter_mut().enumerate() {
            *stream = self.chunk_stream(first + s)?;
        }
        let len = v.chunk_range(first).len();
        let mut lanes: [Lane<'_, 'a>; S] = std::array::from_fn(|s| Lane {
            reader: BitReader::new(streams[s].0),
            data_start: streams[s].1,
            k: 0,
            seg_end: 0,
            multi: &NO_MULTI,
            table: self.tables.get(..size).unwrap_or(&[]),
            exp_len: &self.exp_lens[0],
            piece_start: v.chunk_range(first + s).start,
            piece_len: 0,
            done: false,
        });
        let mut scratch = [[0u8; PIECE + SLACK]; S];
        let mut off = 0;
        while off < len {
            let piece_len = PIECE.min(len - off);
            for (s, lane) in lanes.iter_mut().enumerate() {
                lane.piece_start = v.chunk_range(first + s).start + off;
                lane.piece_len = piece_len;
                lane.k = 0;
                lane.seg_end = 0;
                lane.done = false;
            }
            loop {
                self.lockstep(&mut lanes, &mut scratch, hooks);
                let mut active = 0;
                for (lane, out) in lanes.iter_mut().zip(scratch.iter_mut()) {
                    if !lane.done && (lane.k + MAX > lane.seg_end || lane.stalled()) {
                        self.lane_boundary(lane, out)?;
                    }
                    active += usize::from(!lane.done);
                }
                if active == S {
                    continue;
                }
                // Once one lane has finished the piece, the others finish it
                // one by one. (Letting each lane go on to its next piece at
                // once, so that lanes fall out of step only at chunk ends,
                // measured no faster.)
                for (lane, out) in lanes.iter_mut().zip(scratch.iter_mut()) {
                    while !lane.done {
                        self.lockstep::<1>(
                            std::array::from_mut(lane),
                            std::array::from_mut(out),
                            hooks,
                        );
                        self.lane_boundary(lane, out)?;
                    }
                }
                break;
            }
            for (s, out) in scratch.iter().enumerate() {
                emit(hooks, s, off, &out[..piece_len]);
            }
            off += piece_len;
        }
        for (lane, &(data, data_start)) in lanes.iter().zip(&streams) {
            self.check_chunk_end(data, data_start, lane.reader.consumed())?;
        }
        Ok(())
    }

    /// The checks after a chunk's last value: its bits end in its last byte,
    /// with zero padding.
    fn check_chunk_end(&self, data: &[u8], data_start: u64, bitpos: u64) -> Result<()> {
        let total_bits = data.len() as u64 * 8;
        if bitpos > total_bits {
            return Err(self.corrupt(
                "chunk ends in the middle of a code",
                data_start + data.len() as u64,
            ));
        }
        if bitpos.div_ceil(8) != data.len() as u64 {
            return Err(self.corrupt(
                "chunk has bytes after its last code",
                data_start + bitpos.div_ceil(8),
            ));
        }
        if bitpos % 8 != 0 && data[data.len() - 1] >> (bitpos % 8) != 0 {
            // Spec 8.3.5: NonZeroPadding, not CorruptStream.
            return Err(Error::NonZeroPadding {
                what: "padding bits after the last code of a chunk",
                offset: self.view.offset
                    + self.view.parts.exp_stream
                    + data_start
                    + data.len() as u64
                    - 1,
            });
        }
        Ok(())
    }

    /// Decodes chunk `c` into `out`: BF16 little-endian bytes of the chunk's
    /// elements (2 bytes each, `out.len() == 2 * chunk_range(c).len()`).
    pub fn decode_chunk(&self, c: usize, out: &mut [u8]) -> Result<()> {
        self.decode_chunk_with(c, out, &mut PlainJoin)
    }

    fn decode_chunk_with(
        &self,
        c: usize,
        out: &mut [u8],
        hooks: &mut impl DecodeHooks,
    ) -> Result<()> {
        if c >= self.view.chunk_count() {
            return self.chunk_stream(c).map(drop);
        }
        let range = self.view.chunk_range(c);
        check_out(out, 2 * range.len() as u64)?;
        let sm = &self.view.sign_mantissa[range];
        self.decode_lanes::<1, _>(c, hooks, |hooks, _, at, exps| {
            let n = exps.len();
            hooks.join(exps, &sm[at..at + n], &mut out[2 * at..2 * (at + n)]);
        })
    }

    /// Decodes chunks `first..first + count` into `out` (2 bytes per
    /// element of those chunks, in order). Full-size chunks are decoded
    /// several at a time, interleaved, which is faster than one by one; the
    /// bytes and any error are the same as [`Self::decode_chunk`]'s, chunk
    /// after chunk.
    pub fn decode_chunks(&self, first: usize, count: usize, out: &mut [u8]) -> Result<()> {
        self.decode_chunks_with(first, count, out, &mut PlainJoin)
    }

    /// [`Self::decode_chunks`] with the caller's [`DecodeHooks`]: its own
    /// join of exponents with the sign+mantissa plane, and work run between
    /// decoding rounds.
    pub fn decode_chunks_with(
        &self,
        first: usize,
        count: usize,
        out: &mut [u8],
        hooks: &mut impl DecodeHooks,
    ) -> Result<()> {
        let v = &self.view;
        let end = first.saturating_add(count);
        if count == 0 {
            return check_out(out, 0);
        }
        if end > v.chunk_count() {
            return self.chunk_stream(end - 1).map(drop);
        }
        let base = v.chunk_range(first).start;
        check_out(out, 2 * (v.chunk_range(end - 1).end - base) as u64)?;
        let chunk_len = v.chunk_len();
        // Only full-size chunks share the piece layout that lanes need.
        let full_end = if v.chunk_range(end - 1).len() == chunk_len {
            end
        } else {
            end - 1
        };
        let mut c = first;
        while c + LANES <= full_end {
            let sm = &v.sign_mantissa[c * chunk_len..(c + LANES) * chunk_len];
            let dst = &mut out[2 * (c * chunk_len - base)..2 * ((c + LANES) * chunk_len - base)];
            let interleaved = self.decode_lanes::<LANES, _>(c, hooks, |hooks, lane, at, exps| {
                let i = lane * chunk_len + at;
                let n = exps.len();
                hooks.join(exps, &sm[i..i + n], &mut dst[2 * i..2 * (i + n)]);
            });
            if let Err(e) = interleaved {
                // Report the error chunk by chunk, as a one-by-one decode would.
                for (k, piece) in dst.chunks_mut(2 * chunk_len).enumerate() {
                    self.decode_chunk(c + k, piece)?;
                }
                return Err(e);
            }
            c += LANES;
        }
        while c < end {
            let r = v.chunk_range(c);
            self.decode_chunk_with(c, &mut out[2 * (r.start - base)..2 * (r.end - base)], hooks)?;
            c += 1;
        }
        Ok(())
    }

    /// Decodes the exponents only of chunk `c` into `out` (one byte per element).
    pub fn decode_chunk_exponents(&self, c: usize, out: &mut [u8]) -> Result<()> {
        if c >= self.view.chunk_count() {
            return self.chunk_stream(c).map(drop);
        }
        let range = self.view.chunk_range(c);
        check_out(out, range.len() as u64)?;
        self.decode_lanes::<1, _>(c, &mut PlainJoin, |_, _, at, exps| {
            out[at..at + exps.len()].copy_from_slice(exps);
        })
    }

    /// Decodes every chunk into `out` (2 bytes per element).
    pub fn decode_all(&self, out: &mut [u8]) -> Result<()> {
        check_out(out, 2 * self.view.element_count())?;
        self.decode_chunks(0, self.view.chunk_count(), out)
    }
}

fn check_out(out: &[u8], expected: u64) -> Result<()> {
    if out.len() as u64 != expected {
        return Err(Error::OutputSize {
            expected,
            actual: out.len() as u64,
        });
    }
    Ok(())
}

/// A validated bf16-palette4 data section.
#[derive(Debug, Clone, Copy)]
pub struct Palette4View<'a> {
    tensor: usize,
    offset: u64,
    header: Palette4Header,
    parts: Palette4Parts,
    sign_mantissa: &'a [u8],
    nibbles: &'a [u8],
    positions: &'a [U32],
    exponents: &'a [u8],
}

impl<'a> Palette4View<'a> {
    /// Parses `section` (tensor `tensor`, at file offset `offset`).
    pub fn parse(
        tensor: usize,
        section: &'a [u8],
        offset: u64,
        element_count: u64,
    ) -> Result<Self> {
        let (header, _) =
            Palette4Header::read_from_prefix(section).map_err(|_| Error::Truncated {
                what: "palette-4 header",
                needed: size_of::<Palette4Header>() as u64,
                len: section.len() as u64,
            })?;
        let h = &header;
        let n = h.element_count.get();
        check_element_count(n, element_count, offset)?;
        let p = h.palette_len;
        if p == 0 || p > limits::MAX_PALETTE {
            return Err(bad("palette_len", offset + 8, p.into(), "must be 1..=16"));
        }
        check_zero(&h.reserved0, "palette-4 header reserved bytes", offset + 9)?;
        check_palette(&h.palette[..usize::from(p)], offset + 16)?;
        check_unused_palette(&h.palette[usize::from(p)..], offset + 16 + u64::from(p))?;
        check_zero(&h.reserved1, "palette-4 header reserved bytes", offset + 40)?;
        let e = h.exception_count.get();
        if e > n {
            return Err(bad(
                "exception_count",
                offset + 32,
                e,
                "more exceptions than elements",
            ));
        }
        let parts = Palette4Parts::compute(n, e).ok_or(Error::LimitExceeded {
            what: "palette-4 section size",
            value: u64::MAX,
            limit: u64::MAX,
        })?;
        if parts.end != section.len() as u64 {
            return Err(Error::BadTensor {
                condition: crate::error::Condition::BadLength,
                tensor,
                offset,
                reason: format!(
                    "data_len is {} but the palette-4 parts end at {}",
                    section.len(),
                    parts.end
                ),
            });
        }
        let r = |a: u64, b: u64| &section[a as usize..b as usize];
        Ok(Self {
            tensor,
            offset,
            header,
            parts,
            sign_mantissa: r(parts.sign_mantissa, parts.sign_mantissa + n),
            nibbles: r(parts.nibbles, parts.nibbles + n.div_ceil(2)),
            positions: <[U32]>::ref_from_bytes(r(
                parts.exception_positions,
                parts.exception_exponents,
            ))
            .expect("u32 LE slices have alignment 1 and the length is a multiple of 4"),
            exponents: r(parts.exception_exponents, parts.end),
        })
    }

    /// The section header.
    pub fn header(&self) -> &Palette4Header {
        &self.header
    }
    /// Part offsets inside the section.
    pub fn parts(&self) -> &Palette4Parts {
        &self.parts
    }
    /// The palette exponents.
    pub fn palette(&self) -> &[u8] {
        &self.header.palette[..usize::from(self.header.palette_len)]
    }
    /// The sign+mantissa plane.
    pub fn sign_mantissa(&self) -> &'a [u8] {
        self.sign_mantissa
    }
    /// The nibble plane.
    pub fn nibbles(&self) -> &'a [u8] {
        self.nibbles
    }
    /// Exception positions (element indices, strictly increasing).
    pub fn exception_positions(&self) -> impl ExactSizeIterator<Item = u32> + '_ {
        self.positions.iter().map(|p| p.get())
    }
    /// Exception exponents, one per position.
    pub fn exception_exponents(&self) -> &'a [u8] {
        self.exponents
    }

    /// Decodes into `out` (BF16 little-endian, 2 bytes per element).
    pub fn decode_into(&self, out: &mut [u8]) -> Result<()> {
        let n = self.header.element_count.get() as usize;
        check_out(out, 2 * n as u64)?;
        let p = self.palette().len();
        // Every nibble in use must index the palette. One pass of maxima
        // (vectorized) checks that; the slow search for the first bad one
        // runs only on failure, to report it where a one-by-one decode would.
        if p < 16 {
            let both = &self.nibbles[..n / 2];
            let (lo, hi) = both
                .iter()
                .fold((0u8, 0u8), |(lo, hi), &b| (lo.max(b & 0xF), hi.max(b >> 4)));
            let last = if n % 2 == 1 {
                self.nibbles[n / 2] & 0xF
            } else {
                0
            };
            if usize::from(lo.max(hi).max(last)) >= p {
                let bad = (0..n)
                    .find(|&i| usize::from((self.nibbles[i / 2] >> (4 * (i % 2))) & 0xF) >= p)
                    .expect("some nibble is past the palette");
                return Err(Error::CorruptStream {
                    tensor: self.tensor,
                    offset: self.offset + self.parts.nibbles + (bad / 2) as u64,
                    reason: "palette index past the palette",
                });
            }
        }
        let mut lut = [0u8; 16];
        lut[..p].copy_from_slice(self.palette());
        // A nibble byte -> its two exponents, as one little-endian u16.
        let pairs: [u16; 256] =
            std::array::from_fn(|b| u16::from(lut[b & 0xF]) | u16::from(lut[b >> 4]) << 8);
        let mut exps = [0u8; PIECE];
        for ((nib, sm), dst) in self
            .nibbles
            .chunks(PIECE / 2)
            .zip(self.sign_mantissa.chunks(PIECE))
            .zip(out.chunks_mut(2 * PIECE))
        {
            for (e, &b) in exps.chunks_exact_mut(2).zip(nib) {
                e.copy_from_slice(&pairs[usize::from(b)].to_le_bytes());
            }
            join_into(&exps[..sm.len()], sm, dst);
        }
        if n % 2 == 1 && self.nibbles[n / 2] >> 4 != 0 {
            return Err(Error::NonZeroPadding {
                what: "unused high nibble",
                offset: self.offset + self.parts.nibbles + (n / 2) as u64,
            });
        }
        let mut next = 0u64;
        for (k, (pos, &e)) in self.exception_positions().zip(self.exponents).enumerate() {
            let pos = u64::from(pos);
            if pos < next || pos >= n as u64 {
                return Err(Error::CorruptStream {
                    tensor: self.tensor,
                    offset: self.offset + self.parts.exception_positions + 4 * k as u64,
                    reason: "exception positions not strictly increasing or past the end",
                });
            }
            next = pos + 1;
            let p = pos as usize;
            out[2 * p..2 * p + 2]
                .copy_from_slice(&bf16::join(e, self.sign_mantissa[p]).to_le_bytes());
        }
        Ok(())
    }
}
