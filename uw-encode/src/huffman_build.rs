//! Optimal length-limited prefix code lengths (package-merge), deterministic.

use uw_format::huffman::MAX_SYMBOLS;

/// Code lengths minimising `sum(freq[s] * len[s])` subject to `len <= max_len`.
///
/// Symbols with frequency 0 get length 0 (absent). A lone symbol gets length
/// 1, as the spec requires. Ties are broken by symbol index, so the result is
/// a pure function of the input. `freqs.len() <= 17` and `2^max_len >=` the
/// number of used symbols.
pub fn code_lengths(freqs: &[u64], max_len: u8) -> [u8; MAX_SYMBOLS] {
    assert!(freqs.len() <= MAX_SYMBOLS);
    let mut lengths = [0u8; MAX_SYMBOLS];
    let mut leaves: Vec<(u64, usize)> = freqs
        .iter()
        .enumerate()
        .filter(|(_, f)| **f > 0)
        .map(|(s, &f)| (f, s))
        .collect();
    assert!(
        leaves.len() <= 1 << max_len,
        "too many symbols for the length limit"
    );
    match leaves.len() {
        0 => return lengths,
        1 => {
            lengths[leaves[0].1] = 1;
            return lengths;
        }
        _ => {}
    }
    leaves.sort_unstable();
    // An item is a weight and how many times each symbol occurs in it.
    type Item = (u64, [u8; MAX_SYMBOLS]);
    let originals: Vec<Item> = leaves
        .iter()
        .map(|&(f, s)| {
            let mut count = [0u8; MAX_SYMBOLS];
            count[s] = 1;
            (f, count)
        })
        .collect();
    let mut list = originals.clone();
    for _ in 1..max_len {
        let packages = list.chunks_exact(2).map(|pair| {
            let mut count = pair[0].1;
            for (c, d) in count.iter_mut().zip(pair[1].1) {
                *c += d;
            }
            (pair[0].0 + pair[1].0, count)
        });
        // Merge keeping originals first among equal weights: a stable order.
        let mut merged: Vec<Item> = originals.iter().cloned().chain(packages).collect();
        merged.sort_by_key(|item| item.0);
        list = merged;
    }
    for (_, count) in &list[..2 * leaves.len() - 2] {
        for (l, c) in lengths.iter_mut().zip(count) {
            *l += c;
        }
    }
    lengths
}

/// Bits spent coding `freqs` with `lengths` (absent symbols must have count 0).
pub fn coded_bits(freqs: &[u64], lengths: &[u8]) -> u64 {
    freqs
        .iter()
        .zip(lengths)
        .map(|(&f, &l)| f * u64::from(l))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uw_format::huffman::validate_lengths;

    #[test]
    fn matches_plain_huffman_when_unconstrained() {
        let f = [100, 50, 25, 12, 6, 3, 2, 1, 1];
        let l = code_lengths(&f, 12);
        assert_eq!(&l[..9], &[1, 2, 3, 4, 5, 6, 7, 8, 8]);
        assert!(validate_lengths(&l[..9], 12).is_ok());
    }

    #[test]
    fn respects_the_length_limit() {
        let f = [100, 50, 25, 12, 6, 3, 2, 1, 1];
        let l = code_lengths(&f, 4);
        assert!(l.iter().all(|&x| x <= 4));
        assert!(validate_lengths(&l[..9], 4).is_ok());
        // Package-merge is optimal: no valid 4-limited code does better.
        assert_eq!(
            coded_bits(&f, &l),
            100 * 2 + 50 * 2 + 25 * 3 + (12 + 6 + 3 + 2 + 1 + 1) * 4
        );
    }

    #[test]
    fn lone_and_absent_symbols() {
        assert_eq!(&code_lengths(&[0, 7, 0], 12)[..3], &[0, 1, 0]);
        assert_eq!(&code_lengths(&[0, 0], 12)[..2], &[0, 0]);
        let l = code_lengths(&[1; 17], 12);
        assert!(validate_lengths(&l, 12).is_ok());
    }
}
