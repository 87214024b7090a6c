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
//! Unsafe policy: this module is the only one in the library that uses
//! `unsafe`, for two SSE2 intrinsics (SSE2 is part of every x86-64 CPU, so
//! no run-time detection is needed). Every store is to a 16-byte-aligned
//! address inside `dst`, every load from inside `src`, both checked by the
//! slice arithmetic below before the loop. On other architectures it is a
//! plain copy.

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

/// Below this many bytes the fence and the alignment work cost more than
/// the stores save.
const MIN_BYTES: usize = 4096;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use core::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};

    pub(super) fn copy(dst: &mut [u8], src: &[u8]) {
        if dst.len() < super::MIN_BYTES {
            dst.copy_from_slice(src);
            return;
        }
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
        // Non-temporal stores are weakly ordered: fence them before anyone
        // (another thread, after this one signals it is done) reads `dst`.
        // SAFETY: a fence has no memory-safety preconditions.
        unsafe { _mm_sfence() };
        dst_tail.copy_from_slice(src_tail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
