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

/// The bytes of `word` that fit in `out` at `pos`: the last stores of a
/// slice. A free function, so that the writer's fields can stay in
/// registers in the hot loop rather than being kept in memory for it.
#[cold]
fn store_tail(out: &mut [u8], pos: usize, word: &[u8; 8]) {
    let rest = out.len().saturating_sub(pos).min(8);
    out[pos..pos + rest].copy_from_slice(&word[..rest]);
}

/// LSB-first bit writer into a slice whose exact final length is known.
///
/// Codes accumulate in a 64-bit register; [`SliceBitWriter::flush`] stores
/// all 8 register bytes at once and advances by the whole bytes written, so
/// there is no branch on how many bits are pending. Near the end of the
/// slice the store is cut to the bytes that remain.
#[derive(Debug)]
pub struct SliceBitWriter<'a> {
    out: &'a mut [u8],
    pos: usize,
    acc: u64,
    nbits: u32,
}

impl<'a> SliceBitWriter<'a> {
    /// A writer at the start of `out`.
    pub fn new(out: &'a mut [u8]) -> Self {
        Self {
            out,
            pos: 0,
            acc: 0,
            nbits: 0,
        }
    }

    /// Appends the low `len` bits of `value` (higher bits zero). At most 56
    /// bits may be put between two flushes.
    #[inline(always)]
    pub fn put(&mut self, value: u64, len: u32) {
        debug_assert!(value >> len == 0 && self.nbits + len <= 63);
        self.acc |= value << self.nbits;
        self.nbits += len;
    }

    /// Moves the whole bytes of the register to the slice.
    #[inline(always)]
    pub fn flush(&mut self) {
        let word = self.acc.to_le_bytes();
        match self.out.get_mut(self.pos..self.pos + 8) {
            Some(dst) => dst.copy_from_slice(&word),
            None => store_tail(self.out, self.pos, &word),
        }
        let whole = self.nbits >> 3;
        self.pos += whole as usize;
        // whole <= 7, so the shift is below 64.
        self.acc >>= 8 * whole;
        self.nbits &= 7;
    }

    /// Writes the last partial byte (zero padding bits) and returns the
    /// number of bytes written in all.
    pub fn finish(mut self) -> usize {
        self.flush();
        if self.nbits > 0 {
            self.out[self.pos] = self.acc as u8;
            self.pos += 1;
        }
        self.pos
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
    fn slice_writer_matches_vec_writer() {
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
        let mut out = vec![0u8; want.len()];
        let mut w = SliceBitWriter::new(&mut out);
        for pair in fields.chunks(2) {
            for &(x, l) in pair {
                w.put(x, l);
            }
            w.flush();
        }
        assert_eq!(w.finish(), want.len());
        assert_eq!(out, want);
    }
}
