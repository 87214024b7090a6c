//! LSB-first bit access to an exponent stream (spec: "Bit order").

/// Returns at least 57 valid bits of `data` starting at bit `bitpos`, in the
/// low bits. Bits past the end of `data` read as zero, so a decoder never
/// reads out of bounds; it checks afterwards that it stayed inside `data`.
#[inline(always)]
pub fn peek(data: &[u8], bitpos: u64) -> u64 {
    let byte = (bitpos >> 3) as usize;
    let word = match data.get(byte..byte.wrapping_add(8)) {
        Some(b) => u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        None => tail_word(data, byte),
    };
    word >> (bitpos & 7)
}

#[cold]
fn tail_word(data: &[u8], byte: usize) -> u64 {
    let mut buf = [0u8; 8];
    if let Some(rest) = data.get(byte..) {
        let n = rest.len().min(8);
        buf[..n].copy_from_slice(&rest[..n]);
    }
    u64::from_le_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lsb_first_and_zero_past_end() {
        let data = [0b1010_0001u8, 0xFF];
        assert_eq!(peek(&data, 0) & 0xFFFF, 0xFFA1);
        assert_eq!(peek(&data, 1) & 0x7, 0b000);
        assert_eq!(peek(&data, 5) & 0x7, 0b101);
        assert_eq!(peek(&data, 16), 0);
        assert_eq!(peek(&data, 1 << 40), 0);
    }
}
