//! CPU mirrors of the CUDA kernels: the same index arithmetic and bit
//! handling, thread by thread, so machines without a GPU still test the
//! kernels' algorithms against the reference decoder of `uw-format`.
//! Each function names the kernel it mirrors; keep the two in step.

use uw_format::{HuffmanView, Palette4View};

/// Error codes of kernels/common.cuh.
pub mod codes {
    /// Bits match no Huffman code.
    pub const NO_CODE: i32 = 1;
    /// Chunk index out of order or past the stream.
    pub const CHUNK_INDEX: i32 = 2;
    /// Block selector names a missing table.
    pub const SELECTOR: i32 = 3;
    /// Chunk not consumed exactly, or non-zero padding.
    pub const CHUNK_END: i32 = 4;
    /// Palette-4 nibble past the palette.
    pub const PALETTE_INDEX: i32 = 5;
    /// Exception positions unsorted or past the end.
    pub const EXCEPTION: i32 = 6;
}

fn join(e: u32, sm: u32) -> u16 {
    (((sm & 0x80) << 8) | (e << 7) | (sm & 0x7F)) as u16
}

/// Mirrors `uw_palette4_to_bf16` then `uw_palette4_exceptions`.
pub fn palette4_to_bf16(v: &Palette4View<'_>) -> Result<Vec<u16>, i32> {
    let h = v.header();
    let n = h.element_count.get() as usize;
    let (sm, nibbles) = (v.sign_mantissa(), v.nibbles());
    let lo = u64::from_le_bytes(h.palette[..8].try_into().expect("8 bytes"));
    let hi = u64::from_le_bytes(h.palette[8..].try_into().expect("8 bytes"));
    let plen = u32::from(h.palette_len);
    let lookup = |idx: u32| -> Result<u32, i32> {
        if idx >= plen {
            return Err(codes::PALETTE_INDEX);
        }
        let pal = if idx < 8 { lo } else { hi };
        Ok((pal >> (8 * (idx & 7))) as u32 & 0xFF)
    };
    let mut out = vec![0u16; n];
    for g in 0..n.div_ceil(8) {
        let i0 = g * 8;
        if i0 + 8 <= n {
            let nib = u32::from_le_bytes(nibbles[i0 / 2..i0 / 2 + 4].try_into().expect("4 bytes"));
            let smw = u64::from_le_bytes(sm[i0..i0 + 8].try_into().expect("8 bytes"));
            for k in 0..8 {
                let e = lookup((nib >> (4 * k)) & 0xF)?;
                out[i0 + k] = join(e, (smw >> (8 * k)) as u32 & 0xFF);
            }
        } else {
            for (i, o) in out.iter_mut().enumerate().skip(i0) {
                let e = lookup(u32::from(nibbles[i / 2] >> (4 * (i & 1))) & 0xF)?;
                *o = join(e, u32::from(sm[i]));
            }
        }
    }
    let positions: Vec<u32> = v.exception_positions().collect();
    for (k, (&pos, &e)) in positions.iter().zip(v.exception_exponents()).enumerate() {
        if pos as usize >= n || (k > 0 && positions[k - 1] >= pos) {
            return Err(codes::EXCEPTION);
        }
        out[pos as usize] = join(u32::from(e), u32::from(sm[pos as usize]));
    }
    Ok(out)
}

/// Mirrors `uw_huffman_to_bf16`: one "thread" per chunk, byte-wise refill.
pub fn huffman_to_bf16(v: &HuffmanView<'_>, tables: &[u32]) -> Result<Vec<u16>, i32> {
    let h = v.header();
    let n = h.element_count.get();
    let (sm, sel, exp) = (v.sign_mantissa(), v.selectors(), v.exp_stream());
    let index: Vec<u32> = v.chunk_offsets().collect();
    let chunk_count = index.len();
    let (chunk_log2, block_log2) = (u32::from(h.chunk_log2), u32::from(h.block_log2));
    let sel_bits = u32::from(h.selector_bits);
    let mask = (1u64 << h.max_code_len) - 1;
    let table_size = 1usize << h.max_code_len;
    let exp_len = exp.len() as u64;
    let mut out = vec![0u16; n as usize];
    for c in 0..chunk_count {
        let start = u64::from(index[c]);
        let end = if c + 1 < chunk_count {
            u64::from(index[c + 1])
        } else {
            exp_len
        };
        if (c == 0 && start != 0) || start > end || end > exp_len {
            return Err(codes::CHUNK_INDEX);
        }
        let first = (c as u64) << chunk_log2;
        let last = (first + (1 << chunk_log2)).min(n);
        let (mut buf, mut count, mut pos, mut consumed) = (0u64, 0u32, start, 0u64);
        let mut table = &tables[..table_size];
        for i in first..last {
            if (i - first) & ((1 << block_log2) - 1) == 0 {
                let mut t = 0u32;
                if sel_bits != 0 {
                    let bit = (i >> block_log2) * u64::from(sel_bits);
                    t = u32::from(sel[(bit / 8) as usize] >> (bit % 8)) & ((1 << sel_bits) - 1);
                }
                if t >= u32::from(h.table_count) {
                    return Err(codes::SELECTOR);
                }
                table = &tables[t as usize * table_size..][..table_size];
            }
            while count <= 56 {
                let byte = if pos < end {
                    u64::from(exp[pos as usize])
                } else {
                    0
                };
                buf |= byte << count;
                count += 8;
                pos += 1;
            }
            let e = table[(buf & mask) as usize];
            let len = (e >> 8) & 0xF;
            if len == 0 {
                return Err(codes::NO_CODE);
            }
            let esc = (e >> 12) & 1;
            let exponent = if esc != 0 {
                (buf >> len) as u32 & 0xFF
            } else {
                e & 0xFF
            };
            let used = len + 8 * esc;
            buf >>= used;
            count -= used;
            consumed += u64::from(used);
            out[i as usize] = join(exponent, u32::from(sm[i as usize]));
        }
        let bytes = end - start;
        if consumed > bytes * 8 || consumed.div_ceil(8) != bytes {
            return Err(codes::CHUNK_END);
        }
        if consumed % 8 != 0 && (exp[(end - 1) as usize] >> (consumed % 8)) != 0 {
            return Err(codes::CHUNK_END);
        }
    }
    Ok(out)
}
