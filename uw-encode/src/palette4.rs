//! Encoder for the bf16-palette4 inference form (spec: "bf16-palette4").

use uw_format::bf16;
use uw_format::layout::{Palette4Header, Palette4Parts, limits};
use zerocopy::IntoBytes;

use crate::bf16_split::{exponent_histogram, palette, sign_mantissa_plane, word};

/// Encodes little-endian BF16 `bytes` as a bf16-palette4 data section, or
/// `None` when the form cannot hold it (no values, or more than 2^32-1).
pub fn encode(bytes: &[u8]) -> Option<Vec<u8>> {
    let n = bytes.len() / 2;
    if n == 0 || n as u64 > limits::MAX_ENCODED_ELEMENTS {
        return None;
    }
    let hist = exponent_histogram(bytes);
    let (pal, index) = palette(&hist);
    let exceptions: u64 = hist
        .iter()
        .zip(&index)
        .filter(|(_, i)| i.is_none())
        .map(|(&c, _)| c)
        .sum();
    let parts = Palette4Parts::compute(n as u64, exceptions)?;
    let mut header = Palette4Header {
        element_count: (n as u64).into(),
        palette_len: pal.len() as u8,
        reserved0: [0; 7],
        palette: [0; 16],
        exception_count: exceptions.into(),
        reserved1: [0; 24],
    };
    header.palette[..pal.len()].copy_from_slice(&pal);
    let mut out = vec![0u8; parts.end as usize];
    out[..size_of::<Palette4Header>()].copy_from_slice(header.as_bytes());
    let sm = parts.sign_mantissa as usize;
    sign_mantissa_plane(bytes, &mut out[sm..sm + n]);
    let (nib_off, pos_off, exp_off) = (
        parts.nibbles as usize,
        parts.exception_positions as usize,
        parts.exception_exponents as usize,
    );
    let mut k = 0usize;
    for i in 0..n {
        let e = bf16::exponent(word(bytes, i));
        // Exceptions keep nibble 0 and are patched from the exception list.
        let nib = match index[usize::from(e)] {
            Some(ix) => ix,
            None => {
                out[pos_off + 4 * k..pos_off + 4 * k + 4]
                    .copy_from_slice(&(i as u32).to_le_bytes());
                out[exp_off + k] = e;
                k += 1;
                0
            }
        };
        out[nib_off + i / 2] |= nib << (4 * (i % 2));
    }
    debug_assert_eq!(k as u64, exceptions);
    Some(out)
}
