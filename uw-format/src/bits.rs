//! LSB-first bit access to an exponent stream (spec: "Bit order").

/// Reads 8 bytes of `data` at byte `at` as a little-endian word; bytes past
/// the end read as zero, so a decoder never reads out of bounds and checks
/// afterwards that it stayed inside `data`.
#[inline(always)]
fn load_word(data: &[u8], at: usize) -> u64 {
    match data.get(at..at.wrapping_add(8)) {
        Some(b) => u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        None => tail_word(data, at),
    }
}

#[cold]
fn tail_word(data: &[u8], at: usize) -> u64 {
    let mut buf = [0u8; 8];
    if let Some(rest) = data.get(at..) {
        let n = rest.len().min(8);
        buf[..n].copy_from_slice(&rest[..n]);
    }
    u64::from_le_bytes(buf)
}

/// A bit reader over one chunk that keeps up to 63 bits in a register.
///
/// Invariant: the stream bits `[consumed, consumed + avail)` are the low
/// `avail` bits of `buf`, and `consumed + avail == 8 * next`. Bits of `buf`
/// above `avail` may hold the following stream bits (a refill ORs in the same
/// bits again), so only the low `avail` bits may be relied on.
#[derive(Debug, Clone)]
pub struct BitReader<'d> {
    data: &'d [u8],
    next: usize,
    buf: u64,
    avail: u32,
}

impl<'d> BitReader<'d> {
    /// A reader at bit 0 of `data`.
    pub fn new(data: &'d [u8]) -> Self {
        Self {
            data,
            next: 0,
            buf: 0,
            avail: 0,
        }
    }

    /// A reader `bit` bits into `data`, its buffer filled.
    pub fn at_bit(data: &'d [u8], bit: u64) -> Self {
        let mut r = Self {
            data,
            next: (bit / 8) as usize,
            buf: 0,
            avail: 0,
        };
        r.refill();
        r.consume((bit % 8) as u32);
        r
    }

    /// The stream this reader reads.
    pub fn data(&self) -> &'d [u8] {
        self.data
    }

    /// At least 57 valid low bits of `data` from bit `bit` on (zeros past its
    /// end): the stateless form of [`Self::refill`] + [`Self::bits`], for
    /// loops that keep only a bit position, which saves the registers that
    /// `next` and `avail` would take.
    #[inline(always)]
    pub fn peek_at(data: &[u8], bit: usize) -> u64 {
        load_word(data, bit / 8) >> (bit % 8)
    }

    /// Tops the buffer up to at least 56 valid bits, branch-free: one 8-byte
    /// load, then the whole bytes that fit are counted as read.
    #[inline(always)]
    pub fn refill(&mut self) {
        self.buf |= load_word(self.data, self.next) << self.avail;
        self.next += ((63 - self.avail) >> 3) as usize;
        self.avail |= 56;
    }

    /// The buffered bits; the low `avail` (>= 56 after a refill) are valid.
    #[inline(always)]
    pub fn bits(&self) -> u64 {
        self.buf
    }

    /// Drops `n` bits (`n` at most the valid bits).
    #[inline(always)]
    pub fn consume(&mut self, n: u32) {
        debug_assert!(n <= self.avail);
        self.buf >>= n;
        self.avail -= n;
    }

    /// Bits consumed since the start of `data` (may exceed its length when a
    /// corrupt stream reads into the zeros past its end).
    #[inline(always)]
    pub fn consumed(&self) -> u64 {
        self.next as u64 * 8 - u64::from(self.avail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lsb_first_and_zero_past_end() {
        let data = [0b1010_0001u8, 0xFF];
        let mut r = BitReader::new(&data);
        r.refill();
        assert_eq!(r.bits() & 0xFFFF, 0xFFA1);
        r.consume(1);
        assert_eq!(r.bits() & 0x7, 0b000);
        r.consume(4);
        assert_eq!(r.bits() & 0x7, 0b101);
        r.consume(11);
        r.refill();
        assert_eq!(r.bits() & ((1 << 56) - 1), 0);
        assert_eq!(r.consumed(), 16);
        for _ in 0..10 {
            r.consume(50);
            r.refill();
        }
        assert_eq!(r.bits() & ((1 << 56) - 1), 0);
        assert_eq!(r.consumed(), 516);
    }

    #[test]
    fn refills_keep_the_stream_in_order() {
        let data: Vec<u8> = (0..100u32).map(|i| (i * 37 + 11) as u8).collect();
        for step in 1..=20u32 {
            let mut r = BitReader::new(&data);
            let mut pos = 0u64;
            while pos + u64::from(step) <= 800 {
                r.refill();
                let got = r.bits() & ((1 << step) - 1);
                let want = (0..u64::from(step)).fold(0u64, |acc, k| {
                    let b = pos + k;
                    acc | u64::from(data[(b / 8) as usize] >> (b % 8) & 1) << k
                });
                assert_eq!(got, want, "step {step} at bit {pos}");
                r.consume(step);
                pos += u64::from(step);
                assert_eq!(r.consumed(), pos);
            }
        }
    }
}
