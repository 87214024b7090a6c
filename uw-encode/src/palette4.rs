//! Encoder for the bf16-palette4 inference form (spec: "bf16-palette4").
//!
//! One pass counts exponents (and takes the CRC of the raw bytes when asked);
//! a second writes, piece by piece in parallel, the sign+mantissa plane, the
//! nibbles and the list of exceptions of each piece, straight into place.

use crc32fast::Hasher;
use rayon::prelude::*;
use uw_format::layout::{Palette4Header, Palette4Parts, limits};
use zerocopy::IntoBytes;

use crate::bf16_split::{exponent_histogram_serial, exponent_of, palette, sign_mantissa_serial};

/// Values per piece of the parallel passes (even, so that pieces start on a
/// nibble-byte boundary).
const PIECE_VALUES: usize = 1 << 16;

/// Encodes little-endian BF16 `bytes` as a bf16-palette4 data section, or
/// `None` when the form cannot hold it (no values, or more than 2^32-1).
pub fn encode(bytes: &[u8]) -> Option<Vec<u8>> {
    encode_impl(bytes, false).0
}

/// [`encode`], and the CRC-32 of `bytes` taken in the same pass over them.
pub fn encode_with_crc(bytes: &[u8]) -> (Option<Vec<u8>>, u32) {
    let (section, crc) = encode_impl(bytes, true);
    (section, crc.unwrap_or_else(|| crc32fast::hash(bytes)))
}

/// Exponent histogram and, when asked, CRC of `bytes`, pieces in parallel.
fn histogram_and_crc(bytes: &[u8], want_crc: bool) -> ([u64; 256], Option<u32>) {
    let pieces: Vec<([u64; 256], Option<Hasher>)> = bytes
        .par_chunks(2 * PIECE_VALUES)
        .map(|piece| {
            let crc = want_crc.then(|| {
                let mut h = Hasher::new();
                h.update(piece);
                h
            });
            (exponent_histogram_serial(piece), crc)
        })
        .collect();
    let mut hist = [0u64; 256];
    let mut crc: Option<Hasher> = None;
    for (h, c) in pieces {
        for (a, b) in hist.iter_mut().zip(h) {
            *a += b;
        }
        match (&mut crc, c) {
            (Some(all), Some(piece)) => all.combine(&piece),
            (all, piece) => *all = all.take().or(piece),
        }
    }
    (hist, crc.map(Hasher::finalize))
}

fn encode_impl(bytes: &[u8], want_crc: bool) -> (Option<Vec<u8>>, Option<u32>) {
    let n = bytes.len() / 2;
    if n == 0 || n as u64 > limits::MAX_ENCODED_ELEMENTS {
        return (None, None);
    }
    let (hist, crc) = histogram_and_crc(bytes, want_crc);
    let (pal, index) = palette(&hist);
    let exceptions: u64 = hist
        .iter()
        .zip(&index)
        .filter(|(_, i)| i.is_none())
        .map(|(&c, _)| c)
        .sum();
    let Some(parts) = Palette4Parts::compute(n as u64, exceptions) else {
        return (None, crc);
    };
    let mut header = Palette4Header {
        element_count: (n as u64).into(),
        palette_len: pal.len() as u8,
        reserved0: [0; 7],
        palette: [0; 16],
        exception_count: exceptions.into(),
        reserved1: [0; 24],
    };
    header.palette[..pal.len()].copy_from_slice(&pal);
    // Exponent -> nibble, with bit 7 set for exceptions (which keep nibble 0
    // and are patched from the exception list): one lookup and one rarely
    // taken branch per pair of values.
    const EXCEPTION: u8 = 0x80;
    let nibble: [u8; 256] = std::array::from_fn(|e| index[e].unwrap_or(EXCEPTION));

    let mut out = vec![0u8; parts.end as usize];
    let (head, rest) = out.split_at_mut(parts.sign_mantissa as usize);
    head[..size_of::<Palette4Header>()].copy_from_slice(header.as_bytes());
    let (sm_plane, rest) = rest.split_at_mut(n);
    let (_, rest) = rest.split_at_mut((parts.nibbles - parts.sign_mantissa) as usize - n);
    let (nibbles, rest) = rest.split_at_mut(n.div_ceil(2));
    let (_, exceptions_part) =
        rest.split_at_mut((parts.exception_positions - parts.nibbles) as usize - n.div_ceil(2));

    // Per piece: its plane bytes, its nibbles, and its exceptions in order.
    let found: Vec<Vec<(u32, u8)>> = bytes
        .par_chunks(2 * PIECE_VALUES)
        .zip(sm_plane.par_chunks_mut(PIECE_VALUES))
        .zip(nibbles.par_chunks_mut(PIECE_VALUES / 2))
        .enumerate()
        .map(|(k, ((piece, sm), nib))| {
            sign_mantissa_serial(piece, sm);
            let first = (k * PIECE_VALUES) as u32;
            let mut found = Vec::new();
            let mut quads = piece.chunks_exact(4);
            for (i, (q, dst)) in (&mut quads).zip(nib.iter_mut()).enumerate() {
                let (e0, e1) = (exponent_of(q[0], q[1]), exponent_of(q[2], q[3]));
                let (n0, n1) = (nibble[usize::from(e0)], nibble[usize::from(e1)]);
                *dst = (n0 & 0xF) | (n1 & 0xF) << 4;
                if (n0 | n1) & EXCEPTION != 0 {
                    for (j, (nj, ej)) in [(n0, e0), (n1, e1)].into_iter().enumerate() {
                        if nj & EXCEPTION != 0 {
                            found.push((first + (2 * i + j) as u32, ej));
                        }
                    }
                }
            }
            if let [lo, hi, ..] = *quads.remainder() {
                let e = exponent_of(lo, hi);
                let n0 = nibble[usize::from(e)];
                nib[piece.len() / 4] = n0 & 0xF;
                if n0 & EXCEPTION != 0 {
                    found.push((first + (piece.len() / 2 - 1) as u32, e));
                }
            }
            found
        })
        .collect();
    let (positions, exponents) = exceptions_part.split_at_mut(4 * exceptions as usize);
    let mut k = 0;
    for (pos, e) in found.into_iter().flatten() {
        positions[4 * k..4 * k + 4].copy_from_slice(&pos.to_le_bytes());
        exponents[k] = e;
        k += 1;
    }
    debug_assert_eq!(k as u64, exceptions);
    (Some(out), crc)
}
