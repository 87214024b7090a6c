//! LSB-first bit writer, the mirror of the reader in spec "Bit order".

/// Appends bit fields to a byte vector, first bit at the lowest position.
#[derive(Debug, Default)]
pub struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    nbits: u32,
}

impl BitWriter {
    /// A writer with room for about `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(capacity),
            acc: 0,
            nbits: 0,
        }
    }

    /// Writes the low `len` bits of `value` (`len <= 32`, higher bits zero).
    #[inline(always)]
    pub fn write(&mut self, value: u64, len: u32) {
        debug_assert!(len <= 32 && value >> len == 0);
        self.acc |= value << self.nbits;
        self.nbits += len;
        if self.nbits >= 32 {
            self.bytes
                .extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.nbits -= 32;
        }
    }

    /// Flushes the last partial byte (padding with zero bits) and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let tail = self.nbits.div_ceil(8) as usize;
        self.bytes
            .extend_from_slice(&self.acc.to_le_bytes()[..tail]);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_lsb_first() {
        let mut w = BitWriter::default();
        w.write(0b1, 1);
        w.write(0b10, 2);
        w.write(0xABCDE, 20);
        w.write(0x7FFF_FFFF, 31);
        let b = w.finish();
        let mut v = 0u128;
        for (i, &x) in b.iter().enumerate() {
            v |= u128::from(x) << (8 * i);
        }
        assert_eq!(b.len(), 7); // 54 bits
        assert_eq!(v & 1, 1);
        assert_eq!((v >> 1) & 3, 0b10);
        assert_eq!((v >> 3) & 0xFFFFF, 0xABCDE);
        assert_eq!((v >> 23) & 0x7FFF_FFFF, 0x7FFF_FFFF);
    }
}
