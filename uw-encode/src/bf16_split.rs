//! Histograms and the exponent palette shared by both BF16 encoders.

use rayon::prelude::*;
use zerocopy::FromBytes;
use zerocopy::little_endian::U16;

/// Reads the `i`-th BF16 bit pattern of little-endian `bytes`.
#[inline(always)]
pub fn word(bytes: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])
}

/// The exponent byte of the BF16 value whose little-endian bytes are `lo, hi`.
#[inline(always)]
pub fn exponent_of(lo: u8, hi: u8) -> u8 {
    hi << 1 | lo >> 7
}

/// Counts of each exponent, kept in four tables used in turn: weights use
/// a handful of exponents, so one table would make most increments wait for
/// the previous store to the same counter; four keep four increments in
/// flight. [`ExponentCounts::add`] can be called on many pieces.
pub struct ExponentCounts([[u64; 256]; 4]);

impl Default for ExponentCounts {
    fn default() -> Self {
        Self([[0; 256]; 4])
    }
}

impl ExponentCounts {
    /// Counts the exponents of little-endian BF16 `bytes`.
    pub fn add(&mut self, bytes: &[u8]) {
        let h = &mut self.0;
        let mut quads = bytes.chunks_exact(8);
        for q in &mut quads {
            h[0][usize::from(exponent_of(q[0], q[1]))] += 1;
            h[1][usize::from(exponent_of(q[2], q[3]))] += 1;
            h[2][usize::from(exponent_of(q[4], q[5]))] += 1;
            h[3][usize::from(exponent_of(q[6], q[7]))] += 1;
        }
        for w in quads.remainder().chunks_exact(2) {
            h[0][usize::from(exponent_of(w[0], w[1]))] += 1;
        }
    }

    /// The histogram of everything added.
    pub fn histogram(&self) -> [u64; 256] {
        let h = &self.0;
        std::array::from_fn(|e| h[0][e] + h[1][e] + h[2][e] + h[3][e])
    }
}

/// Exponent histogram of little-endian BF16 `bytes` (one thread).
pub fn exponent_histogram_serial(bytes: &[u8]) -> [u64; 256] {
    let mut counts = ExponentCounts::default();
    counts.add(bytes);
    counts.histogram()
}

/// Exponent histogram of little-endian BF16 `bytes`, in parallel.
pub fn exponent_histogram(bytes: &[u8]) -> [u64; 256] {
    bytes
        .par_chunks(1 << 20)
        .map(exponent_histogram_serial)
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

/// Writes the sign+mantissa bytes of little-endian BF16 `bytes` to `out`
/// (one per value, `out.len() == bytes.len() / 2`), on this thread.
///
/// The bytes are viewed as 16-bit words so the compiler emits plain vector
/// code (mask, 16-bit shift, pack); written on byte pairs it shuffles.
pub fn sign_mantissa_serial(bytes: &[u8], out: &mut [u8]) {
    const G: usize = 16;
    let words = <[U16]>::ref_from_bytes(&bytes[..bytes.len() / 2 * 2])
        .expect("U16 has alignment 1 and the length is even");
    let mut o = out.chunks_exact_mut(G);
    let mut w = words.chunks_exact(G);
    for (o, w) in (&mut o).zip(&mut w) {
        for (d, w) in o.iter_mut().zip(w) {
            let w = w.get();
            *d = (w & 0x7F | (w >> 8) & 0x80) as u8;
        }
    }
    for (d, w) in o.into_remainder().iter_mut().zip(w.remainder()) {
        let w = w.get();
        *d = (w & 0x7F | (w >> 8) & 0x80) as u8;
    }
}

/// The sign+mantissa plane of little-endian BF16 `bytes`, in parallel.
pub fn sign_mantissa_plane(bytes: &[u8], out: &mut [u8]) {
    out.par_chunks_mut(1 << 16)
        .zip(bytes.par_chunks(2 << 16))
        .for_each(|(o, b)| sign_mantissa_serial(b, o));
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

#[cfg(test)]
mod tests {
    use super::*;
    use uw_format::bf16;

    fn sample(n: usize) -> Vec<u8> {
        (0..n as u32)
            .flat_map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) as u16).to_le_bytes())
            .collect()
    }

    #[test]
    fn histogram_and_plane_match_the_definitions() {
        for n in [0, 1, 3, 4, 17, 1000] {
            let bytes = sample(n);
            let mut want = [0u64; 256];
            let mut plane = Vec::new();
            for w in bytes.chunks_exact(2) {
                let v = u16::from_le_bytes([w[0], w[1]]);
                want[usize::from(bf16::exponent(v))] += 1;
                plane.push(bf16::sign_mantissa(v));
            }
            assert_eq!(exponent_histogram(&bytes), want);
            let mut got = vec![0u8; n];
            sign_mantissa_plane(&bytes, &mut got);
            assert_eq!(got, plane);
        }
    }
}
