//! Canonical, length-limited prefix codes (spec: "Canonical Huffman codes").
//!
//! Codes are given by their lengths alone and assigned as DEFLATE assigns
//! them: in order of (length, symbol), each code the next value of its length.
//! The bit stream is LSB-first and a code's first bit lands at the lowest bit
//! position, so decoders index their table with the bit-reversed code.

/// Most symbols in one table: 16 palette exponents plus the escape symbol.
pub const MAX_SYMBOLS: usize = 17;

/// Checks that `lengths` describe a usable canonical code with codes of at
/// most `max_len` bits: either exactly one symbol with length 1, or a complete
/// prefix code (Kraft sum exactly 1). Length 0 means "symbol not in table".
pub fn validate_lengths(lengths: &[u8], max_len: u8) -> Result<(), &'static str> {
    if lengths.len() > MAX_SYMBOLS {
        return Err("more symbols than a table can hold");
    }
    if max_len == 0 || max_len > 15 {
        return Err("maximum code length out of range");
    }
    let mut used = 0usize;
    let mut kraft: u32 = 0; // in units of 2^-max_len
    for &len in lengths {
        if len == 0 {
            continue;
        }
        if len > max_len {
            return Err("code length above the maximum");
        }
        used += 1;
        kraft += 1 << (max_len - len);
    }
    match used {
        0 => Err("no symbol has a code"),
        1 if kraft == 1 << (max_len - 1) => Ok(()),
        1 => Err("a single-symbol table must use a 1-bit code"),
        _ if kraft == 1 << max_len => Ok(()),
        _ if kraft > 1 << max_len => Err("code lengths over-subscribe the code space"),
        _ => Err("code lengths leave part of the code space unused"),
    }
}

/// Canonical code values (most significant bit first) for valid `lengths`.
pub fn canonical_codes(lengths: &[u8]) -> [u16; MAX_SYMBOLS] {
    let mut codes = [0u16; MAX_SYMBOLS];
    let mut count = [0u16; 16];
    for &l in lengths {
        count[usize::from(l)] += 1;
    }
    count[0] = 0;
    let mut next = [0u16; 16];
    let mut code = 0u16;
    for len in 1..16 {
        code = (code + count[len - 1]) << 1;
        next[len] = code;
    }
    for (sym, &l) in lengths.iter().enumerate() {
        if l != 0 {
            codes[sym] = next[usize::from(l)];
            next[usize::from(l)] += 1;
        }
    }
    codes
}

/// Reverses the low `len` bits of `code`: the form written to an LSB-first
/// stream and used to index decode tables.
#[inline]
pub fn reverse_bits(code: u16, len: u8) -> u16 {
    if len == 0 {
        0
    } else {
        code.reverse_bits() >> (16 - u32::from(len))
    }
}

/// A decode table entry: `exponent | code_len << 8 | escape << 12`; 0 marks a
/// bit pattern that starts no code (only possible in a single-symbol table).
pub type Entry = u32;

/// Entry field: the exponent a non-escape code decodes to.
#[inline(always)]
pub fn entry_exponent(e: Entry) -> u8 {
    e as u8
}
/// Entry field: the code length in bits (0 = invalid pattern).
#[inline(always)]
pub fn entry_len(e: Entry) -> u32 {
    (e >> 8) & 0xF
}
/// Entry field: 1 when the code is the escape symbol.
#[inline(always)]
pub fn entry_escape(e: Entry) -> u32 {
    (e >> 12) & 1
}

/// Fills `table` (2^max_len entries) for validated `lengths`. Symbol `s` decodes
/// to `palette[s]`; symbol `escape`, when `Some`, is the escape symbol.
pub fn build_decode_table(
    lengths: &[u8],
    palette: &[u8],
    escape: Option<usize>,
    max_len: u8,
    table: &mut [Entry],
) {
    debug_assert_eq!(table.len(), 1 << max_len);
    table.fill(0);
    let codes = canonical_codes(lengths);
    for (sym, &len) in lengths.iter().enumerate() {
        if len == 0 {
            continue;
        }
        let is_escape = escape == Some(sym);
        let exponent = if is_escape {
            0
        } else {
            u32::from(palette[sym])
        };
        let entry = exponent | u32::from(len) << 8 | u32::from(is_escape) << 12;
        let first = usize::from(reverse_bits(codes[sym], len));
        // Every index whose low `len` bits are the reversed code decodes to it.
        for idx in (first..table.len()).step_by(1 << len) {
            table[idx] = entry;
        }
    }
}

/// Bits a multi-symbol table entry looks at. 11 bits keep one table at
/// 16 KiB, so the two tables a tensor usually has fit in a 48 KiB L1 cache;
/// with typical exponent codes of 2 to 3 bits an entry still yields about 4
/// exponents.
pub const MULTI_BITS: u32 = 11;
/// Entries of a multi-symbol table.
pub const MULTI_SIZE: usize = 1 << MULTI_BITS;
/// Most exponents one multi-symbol entry holds (bytes 0..7 of the entry).
pub const MULTI_MAX_SYMBOLS: u32 = 7;

/// A multi-symbol decode table entry: the exponents of the codes that lie
/// whole within the next [`MULTI_BITS`] bits, first decoded in byte 0, up to
/// [`MULTI_MAX_SYMBOLS`]; byte 7 is `count | bits << 3` (`bits` = their total
/// code length). `count == 0` means the first code is an escape, longer than
/// [`MULTI_BITS`], or invalid: decode it with the one-symbol table.
///
/// Decoding with these entries yields exactly what one-symbol decoding does;
/// the entry only batches the lookups.
pub type MultiEntry = u64;

/// A multi-symbol decode table, indexed by the next [`MULTI_BITS`] stream bits.
pub type MultiTable = [MultiEntry; MULTI_SIZE];

/// Exponents held by a multi-symbol entry.
#[inline(always)]
pub fn multi_count(e: MultiEntry) -> u32 {
    (e >> 56) as u32 & 7
}

/// Bits consumed by the exponents of a multi-symbol entry.
#[inline(always)]
pub fn multi_bits(e: MultiEntry) -> u32 {
    (e >> 59) as u32
}

/// The first code's length in an entry that the decoder marked as an
/// escape or a long code (0 in every other entry with `count == 0`).
#[inline(always)]
pub fn marked_len(e: MultiEntry) -> u32 {
    (e >> 24) as u32 & 0xF
}

/// Builds the multi-symbol table for validated `lengths` (symbols and escape
/// as in [`build_decode_table`]).
pub fn build_multi_table(lengths: &[u8], palette: &[u8], escape: Option<usize>) -> Box<MultiTable> {
    let codes = canonical_codes(lengths);
    let mut fits = Vec::new();
    let mut stops = Vec::new();
    let mut kraft = 0u32; // in units of 2^-15
    for (sym, &len) in lengths.iter().enumerate() {
        if len == 0 {
            continue;
        }
        kraft += 1 << (15 - len);
        let code = usize::from(reverse_bits(codes[sym], len));
        // Escapes never enter an entry: their literal is decoded on its own.
        if u32::from(len) <= MULTI_BITS && escape != Some(sym) {
            fits.push(Code {
                code,
                len: u32::from(len),
                exp: u64::from(palette[sym]),
            });
        } else {
            stops.push(Code {
                code,
                len: u32::from(len),
                exp: 0,
            });
        }
    }
    fits.sort_by_key(|c| c.len);
    let mut table: Box<MultiTable> = vec![0; MULTI_SIZE]
        .into_boxed_slice()
        .try_into()
        .expect("the vector has MULTI_SIZE entries");
    let mut fill = MultiFill {
        table: &mut table,
        fits: &fits,
        stops: &stops,
        complete: kraft == 1 << 15,
    };
    fill.node(0, 0, 0, 0);
    table
}

/// Fills in, for the decoder's own use, the entries of a table from
/// [`build_multi_table`] whose first code is an escape of at most
/// [`MULTI_BITS`] bits or a code of `MULTI_BITS + 1` bits (the longest the
/// format allows is one more than `MULTI_BITS`). Such an entry keeps
/// `count == 0` and `bits == 0` (so that code reading only those fields sees
/// an entry with no values), with the first code's length in bits 24..28
/// ([`marked_len`]): a decoder
/// then reads the value without the one-symbol table, which is large and
/// rarely used, so mostly out of the L1 cache (perf: these lookups were
/// cache misses; marking them cut single-thread decode time of the MiniLM
/// weights by about 8% in a scratch benchmark, not kept). Bytes 0 and 1 are the exponents for bit `MULTI_BITS` of the
/// stream being 0 and 1, bits 16 and 17 their escape flags (a code of at most
/// `MULTI_BITS` bits has both the same). As every code is at most
/// `MULTI_BITS + 1` bits, an entry with `count == 0` and `marked_len == 0`
/// is bits that start no code.
pub(crate) fn mark_long_codes(
    table: &mut MultiTable,
    lengths: &[u8],
    palette: &[u8],
    escape: Option<usize>,
) {
    let codes = canonical_codes(lengths);
    for (sym, &len) in lengths.iter().enumerate() {
        let len = u32::from(len);
        let is_escape = escape == Some(sym);
        if len == 0 || len > MULTI_BITS + 1 || (len <= MULTI_BITS && !is_escape) {
            continue;
        }
        let code = usize::from(reverse_bits(codes[sym], len as u8));
        let exp = if is_escape {
            0
        } else {
            u64::from(palette[sym])
        };
        let (first, sels) = if len <= MULTI_BITS {
            (code, 0..2)
        } else {
            let sel = code >> MULTI_BITS;
            (code & (MULTI_SIZE - 1), sel..sel + 1)
        };
        let mut entry = u64::from(len) << 24;
        for sel in sels {
            entry |= exp << (8 * sel) | u64::from(is_escape) << (16 + sel);
        }
        for idx in (first..MULTI_SIZE).step_by(1 << len.min(MULTI_BITS)) {
            debug_assert_eq!(multi_count(table[idx]), 0);
            // The two codes of `MULTI_BITS + 1` bits under one index both
            // land here: their fields do not overlap.
            table[idx] |= entry;
        }
    }
}

/// A code of a multi-symbol table under construction: reversed code,
/// length, exponent.
struct Code {
    code: usize,
    len: u32,
    exp: u64,
}

/// Fills a multi-symbol table by walking the code sequences that fit in
/// [`MULTI_BITS`] bits, writing each index once, at the sequence it ends
/// with, where possible.
struct MultiFill<'t> {
    table: &'t mut MultiTable,
    /// Codes that may join an entry, shortest first.
    fits: &'t [Code],
    /// Codes that end an entry before them (escapes, codes over MULTI_BITS).
    stops: &'t [Code],
    /// Whether the codes cover every bit pattern (all but a lone 1-bit code).
    complete: bool,
}

impl MultiFill<'_> {
    /// Writes `entry` to every index whose low `bits` bits are `pattern`.
    fn write(&mut self, pattern: usize, bits: u32, entry: MultiEntry) {
        let mut idx = pattern;
        while idx < MULTI_SIZE {
            self.table[idx] = entry;
            idx += 1 << bits;
        }
    }

    /// The node of the sequence read so far: `count` exponents in `exps`,
    /// `used` bits, bit pattern `prefix`. Its entry goes where the next code
    /// cannot join it (it is a stop code, or does not fit, or there are
    /// already [`MULTI_MAX_SYMBOLS`]); the codes that fit extend it.
    fn node(&mut self, prefix: usize, used: u32, count: u32, exps: u64) {
        let entry = if count == 0 {
            0 // the table starts zeroed
        } else {
            exps | u64::from(count | used << 3) << 56
        };
        let room = MULTI_BITS - used;
        // Near the end of the window writing all 2^room indices is cheaper
        // than finding the patterns the children leave.
        if count == MULTI_MAX_SYMBOLS || !self.complete || room <= 4 {
            // Everywhere: children, if any, overwrite their share; patterns
            // no code covers keep this entry.
            if entry != 0 {
                self.write(prefix, used, entry);
            }
            if count == MULTI_MAX_SYMBOLS {
                return;
            }
        } else if entry != 0 {
            let stop_patterns = self
                .stops
                .iter()
                .chain(self.fits.iter().filter(|c| c.len > room));
            for c in stop_patterns {
                // The window holds only the first `room` bits of such a code.
                let bits = c.len.min(room);
                let pattern = prefix | (c.code & ((1 << bits) - 1)) << used;
                let mut idx = pattern;
                while idx < MULTI_SIZE {
                    self.table[idx] = entry;
                    idx += 1 << (used + bits);
                }
            }
        }
        for i in 0..self.fits.len() {
            let c = &self.fits[i];
            if used + c.len > MULTI_BITS {
                break;
            }
            let (code, len, exp) = (c.code, c.len, c.exp);
            self.node(
                prefix | code << used,
                used + len,
                count + 1,
                exps | exp << (8 * count),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deflate_example_codes() {
        // RFC 1951 section 3.2.2 example: lengths (3,3,3,3,3,2,4,4).
        let lengths = [3, 3, 3, 3, 3, 2, 4, 4];
        let codes = canonical_codes(&lengths);
        assert_eq!(
            &codes[..8],
            &[0b010, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111]
        );
        assert!(validate_lengths(&lengths, 12).is_ok());
    }

    #[test]
    fn rejects_bad_length_sets() {
        assert!(validate_lengths(&[0, 0], 12).is_err());
        assert!(validate_lengths(&[1, 1, 1], 12).is_err()); // over-subscribed
        assert!(validate_lengths(&[1, 2], 12).is_err()); // incomplete
        assert!(validate_lengths(&[2], 12).is_err()); // lone symbol needs length 1
        assert!(validate_lengths(&[13, 1], 12).is_err());
        assert!(validate_lengths(&[1], 12).is_ok());
        assert!(validate_lengths(&[1, 1], 12).is_ok());
    }

    #[test]
    fn table_decodes_each_code() {
        let lengths = [2, 1, 3, 3];
        let palette = [120, 121, 122, 0];
        let mut table = vec![0; 1 << 4];
        build_decode_table(&lengths, &palette, Some(3), 4, &mut table);
        let codes = canonical_codes(&lengths);
        for (sym, &len) in lengths.iter().enumerate() {
            let idx = usize::from(reverse_bits(codes[sym], len));
            let e = table[idx | 0b1000];
            assert_eq!(entry_len(e), u32::from(len));
            assert_eq!(entry_escape(e), u32::from(sym == 3));
            if sym != 3 {
                assert_eq!(entry_exponent(e), palette[sym]);
            }
        }
        assert!(table.iter().all(|&e| entry_len(e) != 0));
    }

    /// Complete codes made by splitting random leaves, with random escapes.
    fn random_codes(count: usize) -> Vec<(Vec<u8>, Option<usize>)> {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        (0..count)
            .map(|_| {
                let target = 2 + (next() % 16) as usize;
                let mut lengths = vec![1u8, 1];
                while lengths.len() < target {
                    let i = (next() % lengths.len() as u64) as usize;
                    if lengths[i] < 12 {
                        lengths[i] += 1;
                        lengths.push(lengths[i]);
                    }
                }
                let escape = (next() % 2 == 0).then(|| (next() % target as u64) as usize);
                (lengths, escape)
            })
            .collect()
    }

    #[test]
    fn multi_table_matches_one_symbol_decoding() {
        let fixed: [(&[u8], Option<usize>); 4] = [
            (&[2, 1, 3, 3], Some(3)),
            (&[1], None),
            (&[1, 2, 4, 4, 4, 5, 6, 7, 8, 9, 10, 11, 12, 12], Some(13)),
            (&[1, 1], None),
        ];
        let random = random_codes(300);
        let cases = fixed
            .iter()
            .map(|&(l, e)| (l, e))
            .chain(random.iter().map(|(l, e)| (&l[..], *e)));
        for (lengths, escape) in cases {
            assert!(validate_lengths(lengths, 12).is_ok(), "{lengths:?}");
            let palette: Vec<u8> = (100..100 + lengths.len() as u8).collect();
            let mut single = vec![0; 1 << 12];
            build_decode_table(lengths, &palette, escape, 12, &mut single);
            let multi = build_multi_table(lengths, &palette, escape);
            for (idx, &m) in multi.iter().enumerate() {
                // Decode greedily with the one-symbol table, as a reference.
                let (mut bits, mut used, mut exps) = (idx as u64, 0, Vec::new());
                while exps.len() < MULTI_MAX_SYMBOLS as usize {
                    let e = single[(bits & 0xFFF) as usize];
                    let len = entry_len(e);
                    if len == 0 || entry_escape(e) == 1 || used + len > MULTI_BITS {
                        break;
                    }
                    exps.push(entry_exponent(e));
                    bits >>= len;
                    used += len;
                }
                assert_eq!(multi_count(m) as usize, exps.len(), "index {idx:#x}");
                assert_eq!(multi_bits(m), if exps.is_empty() { 0 } else { used });
                assert_eq!(&m.to_le_bytes()[..exps.len()], &exps[..]);
            }
            // Marked entries decode their first code as the one-symbol
            // table does, for both values of the bit past the window.
            let mut marked = multi.clone();
            mark_long_codes(&mut marked, lengths, &palette, escape);
            for (idx, (&m, &k)) in multi.iter().zip(marked.iter()).enumerate() {
                if multi_count(m) != 0 {
                    assert_eq!(m, k);
                    continue;
                }
                for sel in 0..2u32 {
                    let e = single[idx | (sel as usize) << MULTI_BITS];
                    // Marked entries still take no bits and give no values
                    // to a loop that does not look at the mark.
                    assert_eq!((multi_count(k), multi_bits(k)), (0, 0));
                    let len = marked_len(k);
                    let want_marked =
                        entry_len(e) != 0 && (entry_escape(e) == 1 || entry_len(e) > MULTI_BITS);
                    assert_eq!(len != 0, want_marked, "index {idx:#x}");
                    if len == 0 {
                        continue;
                    }
                    let sel = sel & u32::from(len > MULTI_BITS);
                    assert_eq!(len, entry_len(e));
                    assert_eq!((k >> (16 + sel)) as u32 & 1, entry_escape(e));
                    if entry_escape(e) == 0 {
                        assert_eq!((k >> (8 * sel)) as u8, entry_exponent(e));
                    }
                }
            }
        }
    }
}
