//! Copies into memory that will not be read again soon, bypassing the
//! caches (non-temporal stores).
//!
//! Decoding a large tensor writes its bytes once and moves on: with ordinary
//! stores every destination cache line is first read from memory (a
//! "read for ownership"), then written back, and it pushes data the decoder
//! still needs out of the caches. Non-temporal stores write whole lines
//! straight to memory. On the 2-core CI-class machine writing 45 MB this way
//! ran at about 19 GB/s against 7 GB/s for ordinary stores (a one-off
//! microbenchmark, not kept); end to end, `uw bench` decode went from about
//! 1.58 to 1.80 GB/s on one thread with this copy.
//!
//! The decoder also streams in slices ([`SlicedCopy`]) between decoding
//! rounds, and prefetches its next input the same way ([`prefetch_line`]):
//! memory then works while the core decodes, instead of in bursts that
//! stall it.
//!
//! It also holds the decoder's join of exponents with sign+mantissa bytes
//! in SSE2 registers ([`join_bf16`]), which safe code, compiled for
//! baseline x86-64, does at half the width.
//!
//! Unsafe policy: this module and [`crate::huge_pages`] (an opt-in global
//! allocator) are the only ones in the library that use `unsafe`; here it
//! is for SSE/SSE2 intrinsics (part of every x86-64 CPU, so no
//! run-time detection is needed): streaming and unaligned loads and stores,
//! a store fence, a prefetch, and byte logic for the join. Every store is
//! to an address inside its destination slice, every load from inside its
//! source slice, both given by exact chunks of those slices (the streaming
//! stores' 16-byte alignment by the slice arithmetic before the loop); a
//! prefetch is of a byte of a live slice (and could not fault anyway). On
//! other architectures these are a plain copy, nothing, and the portable
//! join. The join is tested against the portable one on all 65,536 BF16
//! bit patterns.

/// Copies `src` into `dst` (same length) with non-temporal stores where the
/// CPU has them. The bytes are the same as `dst.copy_from_slice(src)`;
/// afterwards `dst` is likely not in cache.
///
/// # Panics
/// If the lengths differ, as `copy_from_slice` does.
pub fn copy_nontemporal(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_nontemporal: lengths differ");
    #[cfg(target_arch = "x86_64")]
    {
        x86::copy(dst, src);
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

/// A non-temporal copy done slice by slice, in between other work: each
/// slice is small enough for the CPU's store buffer, so it drains to memory
/// while the work goes on instead of stalling it, as one large copy does.
pub struct SlicedCopy<'a> {
    dst: &'a mut [u8],
    src: &'a [u8],
    done: usize,
}

impl<'a> SlicedCopy<'a> {
    /// A copy of `src` into `dst` (same length), nothing copied yet.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn new(dst: &'a mut [u8], src: &'a [u8]) -> Self {
        assert_eq!(dst.len(), src.len(), "SlicedCopy: lengths differ");
        Self { dst, src, done: 0 }
    }

    /// Copies about `bytes` more. Slices end at 64-byte-aligned destination
    /// addresses: a cache line written in two slices could leave the CPU's
    /// write-combining buffer half full, and a partial line costs a
    /// read-modify-write in memory.
    #[inline]
    pub fn advance(&mut self, bytes: usize) {
        if self.done == self.dst.len() {
            return;
        }
        let want = (self.done + bytes).min(self.dst.len());
        let base = self.dst.as_ptr() as usize;
        let end = if want == self.dst.len() {
            want
        } else {
            ((base + want) & !63).saturating_sub(base).max(self.done)
        };
        stream(&mut self.dst[self.done..end], &self.src[self.done..end]);
        self.done = end;
    }

    /// Copies the rest and orders the streamed stores before whatever the
    /// thread does next (see [`copy_nontemporal`]).
    pub fn finish(mut self) {
        let len = self.dst.len();
        self.advance(len);
        fence();
    }
}

/// Asks the CPU to start loading `bytes[at..at + 64]` into its caches; no
/// effect past the end of `bytes`. Reading input a step ahead this way, a
/// line at a time between decoding rounds, overlaps the wait for memory with
/// decoding.
#[inline(always)]
pub fn prefetch_line(bytes: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(b) = bytes.get(at) {
        x86::prefetch(b);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, at);
}

/// [`prefetch_line`] for every cache line of `bytes`.
#[inline]
pub fn prefetch_range(bytes: &[u8]) {
    for at in (0..bytes.len()).step_by(64) {
        prefetch_line(bytes, at);
    }
}

/// Writes `out` (`2 * exps.len()` bytes) as the BF16 little-endian words
/// joined from exponent bytes `exps` and sign+mantissa bytes `sm` (spec:
/// "BF16 split"): the same bytes as `uw_format`'s portable join, 16 values
/// per SSE2 register instead of the 8 that compiled safe code gets.
///
/// # Panics
/// If the lengths do not match.
#[inline]
pub fn join_bf16(exps: &[u8], sm: &[u8], out: &mut [u8]) {
    assert!(
        sm.len() == exps.len() && out.len() == 2 * exps.len(),
        "join_bf16: lengths do not match"
    );
    #[cfg(target_arch = "x86_64")]
    let done = x86::join(exps, sm, out);
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for ((o, &e), &s) in out[2 * done..]
        .chunks_exact_mut(2)
        .zip(&exps[done..])
        .zip(&sm[done..])
    {
        o.copy_from_slice(&uw_format::bf16::join(e, s).to_le_bytes());
    }
}

/// Streams `src` into `dst` without the closing fence.
#[inline]
fn stream(dst: &mut [u8], src: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    x86::stream(dst, src);
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

/// Orders earlier streaming stores before later stores.
fn fence() {
    #[cfg(target_arch = "x86_64")]
    x86::fence();
}

/// Below this many bytes the fence and the alignment work cost more than
/// the stores save.
const MIN_BYTES: usize = 4096;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use core::arch::x86_64::{
        __m128i, _MM_HINT_T2, _mm_and_si128, _mm_loadu_si128, _mm_or_si128, _mm_prefetch,
        _mm_set1_epi8, _mm_sfence, _mm_slli_epi16, _mm_srli_epi16, _mm_storeu_si128,
        _mm_stream_si128, _mm_unpackhi_epi8, _mm_unpacklo_epi8,
    };

    pub(super) fn copy(dst: &mut [u8], src: &[u8]) {
        if dst.len() < super::MIN_BYTES {
            dst.copy_from_slice(src);
            return;
        }
        stream(dst, src);
        fence();
    }

    /// Non-temporal copy of the 16-byte-aligned middle of `dst`, ordinary
    /// stores for the ends; no fence.
    #[inline]
    pub(super) fn stream(dst: &mut [u8], src: &[u8]) {
        // Head up to the first 16-byte-aligned destination address, ordinary.
        let head = dst.as_ptr().align_offset(16).min(dst.len());
        let (dst_head, dst) = dst.split_at_mut(head);
        let (src_head, src) = src.split_at(head);
        dst_head.copy_from_slice(src_head);
        let body = dst.len() / 16 * 16;
        let (dst_body, dst_tail) = dst.split_at_mut(body);
        let (src_body, src_tail) = src.split_at(body);
        for (d, s) in dst_body.chunks_exact_mut(16).zip(src_body.chunks_exact(16)) {
            // SAFETY: `s` is 16 readable bytes (unaligned load allowed);
            // `d` is 16 writable bytes at a 16-byte-aligned address (the
            // body starts aligned and advances by 16), as the streaming
            // store requires. SSE2 is baseline on x86-64.
            unsafe {
                let v = _mm_loadu_si128(s.as_ptr().cast::<__m128i>());
                _mm_stream_si128(d.as_mut_ptr().cast::<__m128i>(), v);
            }
        }
        dst_tail.copy_from_slice(src_tail);
    }

    /// Joins the first whole 16-value groups of `exps` and `sm` into `out`
    /// (lengths checked by the caller); returns how many values it did.
    #[inline]
    pub(super) fn join(exps: &[u8], sm: &[u8], out: &mut [u8]) -> usize {
        let groups = exps.len() / 16;
        // Byte-wise: the low byte of a BF16 word is the exponent's last bit
        // and 7 mantissa bits, the high byte the sign and the exponent's
        // first 7 bits. SSE2 has no byte shifts; 16-bit shifts do, as the
        // masks drop the bits they carry across a byte boundary.
        for ((e, s), o) in exps
            .chunks_exact(16)
            .zip(sm.chunks_exact(16))
            .zip(out.chunks_exact_mut(32))
            .take(groups)
        {
            // SAFETY: `e` and `s` are 16 readable bytes and `o` 32 writable
            // ones (exact chunks), loads and stores unaligned. SSE2 is
            // baseline on x86-64.
            unsafe {
                let e = _mm_loadu_si128(e.as_ptr().cast::<__m128i>());
                let s = _mm_loadu_si128(s.as_ptr().cast::<__m128i>());
                let high_bits = _mm_set1_epi8(0x80u8 as i8);
                let low_bits = _mm_set1_epi8(0x7F);
                let lo = _mm_or_si128(
                    _mm_and_si128(_mm_slli_epi16::<7>(e), high_bits),
                    _mm_and_si128(s, low_bits),
                );
                let hi = _mm_or_si128(
                    _mm_and_si128(s, high_bits),
                    _mm_and_si128(_mm_srli_epi16::<1>(e), low_bits),
                );
                let p = o.as_mut_ptr().cast::<__m128i>();
                _mm_storeu_si128(p, _mm_unpacklo_epi8(lo, hi));
                _mm_storeu_si128(p.add(1), _mm_unpackhi_epi8(lo, hi));
            }
        }
        16 * groups
    }

    /// Non-temporal stores are weakly ordered: fence them before anyone
    /// (another thread, after this one signals it is done) reads the bytes.
    #[inline]
    pub(super) fn fence() {
        // SAFETY: a fence has no memory-safety preconditions.
        unsafe { _mm_sfence() };
    }

    /// Prefetch of the cache line holding `byte` into the second-level
    /// cache and beyond (`T2`; against `T0`, three alternating runs of a
    /// scratch decode harness gave 2.19-2.39 against 2.15-2.27 GB/s).
    #[inline(always)]
    pub(super) fn prefetch(byte: &u8) {
        // SAFETY: a prefetch is a hint with no memory-safety preconditions
        // (it never faults); the address is that of a live byte. SSE is
        // baseline on x86-64.
        unsafe { _mm_prefetch::<_MM_HINT_T2>((byte as *const u8).cast::<i8>()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliced_copies_match_whatever_the_slices() {
        let src: Vec<u8> = (0..3 * MIN_BYTES as u32)
            .map(|i| (i * 13 + 5) as u8)
            .collect();
        for len in [0, 1, 63, 64, 65, 1000, 3 * MIN_BYTES - 17] {
            for shift in [0, 1, 2, 15, 16, 63] {
                for slice in [1, 16, 17, 64, 192, 5000] {
                    let mut buf = vec![0u8; len + 64];
                    let s = &src[..len];
                    let mut copy = SlicedCopy::new(&mut buf[shift..shift + len], s);
                    for _ in 0..3 {
                        copy.advance(slice);
                    }
                    copy.finish();
                    assert_eq!(&buf[shift..shift + len], s, "len {len} shift {shift}");
                    assert!(buf[..shift].iter().all(|&b| b == 0));
                    assert!(buf[shift + len..].iter().all(|&b| b == 0));
                }
            }
        }
        // Prefetching past the end (or of nothing) does nothing.
        prefetch_line(&src, src.len() + 4096);
        prefetch_line(&[], 0);
    }

    #[test]
    fn join_matches_the_portable_one_on_every_bf16_pattern() {
        // Every (exponent, sign+mantissa) pair: all 65,536 BF16 bit
        // patterns, at every offset into the 16-value groups.
        let exps: Vec<u8> = (0..=255u8).flat_map(|e| [e; 256]).collect();
        let sm: Vec<u8> = (0..=255u8).cycle().take(65_536).collect();
        for skip in [0, 1, 7, 15, 16, 17] {
            let (e, s) = (&exps[skip..], &sm[skip..]);
            let mut fast = vec![0u8; 2 * e.len()];
            join_bf16(e, s, &mut fast);
            for (k, w) in fast.chunks_exact(2).enumerate() {
                let want = uw_format::bf16::join(e[k], s[k]).to_le_bytes();
                assert_eq!(w, want, "value {k} after skipping {skip}");
            }
        }
    }

    #[test]
    fn copies_every_length_and_alignment() {
        let src: Vec<u8> = (0..3 * MIN_BYTES as u32)
            .map(|i| (i * 7 + 3) as u8)
            .collect();
        for len in [0, 1, 15, 16, 17, MIN_BYTES - 1, MIN_BYTES, MIN_BYTES + 33] {
            for shift in 0..17 {
                for src_shift in [0, 1, 8] {
                    let mut buf = vec![0u8; len + 32];
                    let s = &src[src_shift..src_shift + len];
                    copy_nontemporal(&mut buf[shift..shift + len], s);
                    assert_eq!(&buf[shift..shift + len], s, "len {len} shift {shift}");
                    assert!(buf[..shift].iter().all(|&b| b == 0));
                    assert!(buf[shift + len..].iter().all(|&b| b == 0));
                }
            }
        }
    }
}
