//! Histograms and the exponent palette shared by both BF16 encoders.

use rayon::prelude::*;
use uw_format::bf16;

/// Reads the `i`-th BF16 bit pattern of little-endian `bytes`.
#[inline(always)]
pub fn word(bytes: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])
}

/// Exponent histogram of little-endian BF16 `bytes`, in parallel.
pub fn exponent_histogram(bytes: &[u8]) -> [u64; 256] {
    bytes
        .par_chunks(1 << 20)
        .map(|piece| {
            let mut h = [0u64; 256];
            for w in piece.chunks_exact(2) {
                h[usize::from(bf16::exponent(u16::from_le_bytes([w[0], w[1]])))] += 1;
            }
            h
        })
        .reduce(
            || [0u64; 256],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
                a
            },
        )
}

/// The sign+mantissa plane of little-endian BF16 `bytes`, in parallel.
pub fn sign_mantissa_plane(bytes: &[u8], out: &mut [u8]) {
    out.par_chunks_mut(1 << 16)
        .zip(bytes.par_chunks(2 << 16))
        .for_each(|(o, b)| {
            for (d, w) in o.iter_mut().zip(b.chunks_exact(2)) {
                *d = bf16::sign_mantissa(u16::from_le_bytes([w[0], w[1]]));
            }
        });
}

/// The palette: up to 16 most frequent exponents, most frequent first, ties
/// to the lower exponent (spec: "Reference encoder choices"). Returns the
/// palette and a map from exponent to palette index (`None` outside it).
pub fn palette(hist: &[u64; 256]) -> (Vec<u8>, [Option<u8>; 256]) {
    let mut order: Vec<u8> = (0..=255u8).filter(|&e| hist[usize::from(e)] > 0).collect();
    order.sort_by(|&a, &b| {
        hist[usize::from(b)]
            .cmp(&hist[usize::from(a)])
            .then(a.cmp(&b))
    });
    order.truncate(16);
    let mut index = [None; 256];
    for (i, &e) in order.iter().enumerate() {
        index[usize::from(e)] = Some(i as u8);
    }
    (order, index)
}

/// Shannon entropy in bits of a histogram, times its total: the order-0
/// bound on coding those symbols.
pub fn entropy_bits(hist: &[u64]) -> f64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let t = total as f64;
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| -(c as f64) * (c as f64 / t).log2())
        .sum()
}
