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

/// LSB-first bit writer state for writing into a slice with slack: a
/// 64-bit register of pending bits and the position of the next whole byte.
///
/// [`RegisterBits::flush`] stores all 8 register bytes at once and advances
/// by the whole bytes written, so there is no branch on how many bits are
/// pending. The state is `Copy` and separate from the slice, so a hot loop
/// can hold it in registers (taken by value, returned by value); a writer
/// that held `&mut [u8]` inside was kept in memory by the compiler.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegisterBits {
    /// Pending bits, the first at bit 0.
    acc: u64,
    /// How many bits of `acc` are pending (at most 7 after a flush).
    nbits: u64,
    /// Where the next whole byte goes.
    pos: usize,
}

impl RegisterBits {
    /// Appends the low `len` bits of `bits` (higher bits zero); at most 56
    /// bits may be put between two flushes.
    #[inline(always)]
    pub fn put(&mut self, (bits, len): (u64, u64)) {
        debug_assert!(len <= 64 && (len == 64 || bits >> len == 0) && self.nbits + len <= 63);
        self.acc |= bits << self.nbits;
        self.nbits += len;
    }

    /// Stores the register at the current position and moves on by its
    /// whole bytes. `out` must have 8 bytes past the last byte that will
    /// be written (the store is a whole register); else this panics.
    #[inline(always)]
    pub fn flush(&mut self, out: &mut [u8]) {
        out[self.pos..self.pos + 8].copy_from_slice(&self.acc.to_le_bytes());
        let whole = self.nbits >> 3;
        self.pos += whole as usize;
        // whole <= 7, so the shift is below 64.
        self.acc >>= 8 * whole;
        self.nbits &= 7;
    }

    /// Bytes written so far once the last flush is done, the last partial
    /// byte (its padding bits zero, already stored by the flush) included.
    pub fn len(&self) -> usize {
        self.pos + usize::from(self.nbits > 0)
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    #[test]
    fn register_writer_matches_vec_writer() {
        let fields: Vec<(u64, u32)> = (0..500u64)
            .map(|i| {
                let len = (i * 7 % 20 + 1) as u32;
                ((i * 2_654_435_761) & ((1 << len) - 1), len)
            })
            .collect();
        let mut v = BitWriter::default();
        for &(x, l) in &fields {
            v.write(x, l);
        }
        let want = v.finish();
        let mut out = vec![0u8; want.len() + 8];
        let mut w = RegisterBits::default();
        for pair in fields.chunks(2) {
            for &(x, l) in pair {
                w.put((x, u64::from(l)));
            }
            w.flush(&mut out);
        }
        assert_eq!(w.len(), want.len());
        assert_eq!(&out[..want.len()], &want[..]);
        assert!(
            out[want.len()..].iter().all(|&b| b == 0),
            "slack stays zero"
        );
    }
}
