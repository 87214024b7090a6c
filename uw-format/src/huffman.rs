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
}
