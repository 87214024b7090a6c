//! Byte buffers handed from the encoder to the writer and back, so that
//! sections reuse memory that is already mapped.
//!
//! A fresh buffer of more than a few hundred KiB is a fresh anonymous map:
//! every 4 KiB page of it faults once (the kernel zeroes and charges it),
//! and freeing it unmaps it again (with a TLB shootdown on every core the
//! process runs on). For `uw convert --threads 1` on MiniLM-L6 that was
//! about a fifth of the encoding thread's time. The buffers of a section are
//! allocated on a worker and freed on the writing thread, so the allocator's
//! per-thread caches do not help either; a [`BufferPool`] shared by both
//! does, from the third batch of a conversion on. (On MiniLM-L6, whose
//! sections are mostly first uses, it measured no difference; it pays on
//! models with many large tensors, whose conversions run for many
//! batches.)
//!
//! The pool keeps at most [`BufferPool::new`]'s `max_bytes` of capacity, so
//! it holds on to no more memory than the pipeline that fills it already
//! has in flight.

use std::sync::Mutex;

/// Empty byte buffers with capacity, given back after use and taken again.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    max_bytes: usize,
}

impl BufferPool {
    /// A pool that keeps buffers of at most `max_bytes` of capacity in all.
    /// `BufferPool::new(0)` (or `default()`) keeps nothing: taking from it
    /// allocates, giving to it frees.
    pub const fn new(max_bytes: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            max_bytes,
        }
    }

    /// An empty buffer with room for at least `capacity` bytes: the
    /// smallest kept buffer that is large enough, or a new one. (A kept
    /// buffer that is too small is not grown: growing copies, and its pages
    /// beyond the old end would fault all the same.)
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        match self.take_kept(capacity) {
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// The smallest kept buffer with room for `capacity` bytes, as it was
    /// given back.
    fn take_kept(&self, capacity: usize) -> Option<Vec<u8>> {
        let mut free = self.lock();
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= capacity)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(k, _)| k);
        best.map(|k| free.swap_remove(k))
    }

    /// A buffer of `len` bytes whose contents are unspecified: a kept one
    /// holds what its last user left there (so the caller must write every
    /// byte it keeps), a new one is zeroed the cheap way (fresh pages come
    /// zeroed from the kernel; `vec![0; n]` asks for them instead of
    /// writing zeros over the pages of `Vec::with_capacity` and faulting
    /// them in twice over). Only bytes beyond a kept buffer's old length
    /// are zeroed.
    pub fn take_len(&self, len: usize) -> Vec<u8> {
        let mut buf = match self.take_kept(len) {
            Some(buf) => buf,
            None => return vec![0; len],
        };
        buf.resize(len, 0);
        buf
    }

    /// Gives `buf` back for a later [`BufferPool::take`]. When keeping it
    /// would pass the pool's limit, the smallest kept buffers make room
    /// for it if that is enough (larger buffers serve more requests), or
    /// else it is freed.
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() > self.max_bytes {
            return;
        }
        let mut free = self.lock();
        let mut kept: usize = free.iter().map(Vec::capacity).sum();
        free.sort_unstable_by_key(|b| std::cmp::Reverse(b.capacity()));
        while kept + buf.capacity() > self.max_bytes {
            match free.last() {
                Some(small) if small.capacity() < buf.capacity() => {
                    kept -= small.capacity();
                    free.pop();
                }
                _ => return,
            }
        }
        free.push(buf);
    }

    /// Capacity kept, in bytes.
    pub fn kept_bytes(&self) -> usize {
        self.lock().iter().map(Vec::capacity).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A panic elsewhere while holding the lock leaves a valid list.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_empty() {
        let pool = BufferPool::new(1 << 20);
        let mut b = pool.take(1000);
        b.extend_from_slice(&[7; 1000]);
        let at = b.as_ptr();
        pool.give(b);
        let again = pool.take(900);
        assert_eq!(again.as_ptr(), at);
        assert!(again.is_empty());
        assert!(again.capacity() >= 1000);
    }

    #[test]
    fn take_len_gives_the_length_asked_for() {
        let pool = BufferPool::new(1 << 20);
        assert_eq!(pool.take_len(1000), vec![0; 1000]);
        let mut kept = Vec::with_capacity(1000);
        kept.extend_from_slice(&[9; 500]);
        pool.give(kept);
        // Kept bytes stay, bytes beyond them are zero.
        let b = pool.take_len(800);
        assert_eq!(b.len(), 800);
        assert!(b[..500].iter().all(|&x| x == 9) && b[500..].iter().all(|&x| x == 0));
        pool.give(b);
        assert_eq!(pool.take_len(100).len(), 100);
        // A plain take is empty whatever was given back.
        pool.give(vec![9; 700]);
        assert!(pool.take(10).is_empty());
    }

    #[test]
    fn the_smallest_large_enough_buffer_is_taken() {
        let pool = BufferPool::new(1 << 20);
        for cap in [4000, 1000, 2000] {
            pool.give(Vec::with_capacity(cap));
        }
        assert!((2000..4000).contains(&pool.take(1500).capacity()));
        // None large enough: a new one, and the kept ones stay.
        let kept = pool.kept_bytes();
        assert!(pool.take(10_000).capacity() >= 10_000);
        assert_eq!(pool.kept_bytes(), kept);
    }

    #[test]
    fn the_limit_holds() {
        let pool = BufferPool::new(5000);
        pool.give(Vec::with_capacity(6000));
        assert_eq!(pool.kept_bytes(), 0);
        pool.give(Vec::with_capacity(1000));
        pool.give(Vec::with_capacity(2000));
        assert!(pool.kept_bytes() <= 5000);
        // A larger buffer pushes out smaller ones to fit.
        pool.give(Vec::with_capacity(4000));
        assert!(pool.kept_bytes() <= 5000);
        assert!(pool.take(3500).capacity() >= 4000);
        // Nothing kept with no room at all.
        let none = BufferPool::default();
        none.give(Vec::with_capacity(10));
        assert_eq!(none.kept_bytes(), 0);
    }
}
