//! The BF16 split shared by both BF16 encodings (spec: "BF16 split").
//!
//! A BF16 value `w` is `s eeeeeeee mmmmmmm`. The exponent byte carries nearly
//! all the redundancy of trained weights; sign and mantissa are close to
//! uniform, so they are kept together as one byte stored as is.

/// The exponent field of a BF16 bit pattern.
#[inline(always)]
pub fn exponent(w: u16) -> u8 {
    (w >> 7) as u8
}

/// The sign bit (bit 7) and the 7 mantissa bits (bits 0..7) as one byte.
#[inline(always)]
pub fn sign_mantissa(w: u16) -> u8 {
    (((w >> 8) & 0x80) | (w & 0x7F)) as u8
}

/// Rebuilds the BF16 bit pattern from its exponent and sign+mantissa byte.
#[inline(always)]
pub fn join(exponent: u8, sign_mantissa: u8) -> u16 {
    let sm = u16::from(sign_mantissa);
    ((sm & 0x80) << 8) | (u16::from(exponent) << 7) | (sm & 0x7F)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bf16_pattern_splits_and_joins_back() {
        for w in 0..=u16::MAX {
            assert_eq!(join(exponent(w), sign_mantissa(w)), w, "pattern {w:#06x}");
        }
    }
}
