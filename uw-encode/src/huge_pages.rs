//! A global allocator that backs large blocks with transparent huge pages:
//! section buffers, decode batches, the exponent streams.
//!
//! A large block is fresh anonymous memory, and its first touch faults once
//! per 4 KiB page: on the development machine (a KVM guest) about 2 µs a
//! page, 23 ms to touch 46 MB, against 8.5 ms with 2 MiB pages (`madvise
//! (MADV_HUGEPAGE)`, zeroing then dominates). `uw convert --threads 1`
//! spent about a fifth of its encoding thread in such faults.
//!
//! On Linux, a block of at least [`MIN_BYTES`] is a map of its own, placed
//! on a 2 MiB boundary and rounded up to whole 2 MiB pages, all advised
//! `MADV_HUGEPAGE`; freeing it unmaps it. (Through `malloc`, a block starts
//! just past the allocator's header, so only the whole 2 MiB pages inside
//! it could be huge: a 4 MiB decode batch got one, a 1 MiB section none.
//! Mapping whole pages measured 2-4 ms less system time per `uw convert`
//! or `uw decode --threads 1` of MiniLM-L6, medians of 25 alternating
//! runs, docs/benchmarks.md.) Freed, such a block is kept for reuse, up to
//! 64 MiB in all. Smaller blocks, and every block elsewhere, come
//! from the system allocator unchanged.
//!
//! Only advice: where transparent huge pages are off (`never`), or no
//! 2 MiB page is free, the kernel uses 4 KiB pages as before. With
//! `enabled` set to `madvise` (the usual default) the advice is what turns
//! them on for these blocks.
//!
//! To use it: `#[global_allocator] static A: HugePageAlloc = HugePageAlloc;`
//! (the `uw` binary does).

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, with large blocks mapped in huge pages (Linux).
#[derive(Debug, Default, Clone, Copy)]
pub struct HugePageAlloc;

/// Smallest block mapped on its own (Linux): half a huge page, where
/// rounding up at most doubles the memory a block takes.
pub const MIN_BYTES: usize = 1 << 20;

const HUGE_PAGE: usize = 2 << 20;

/// Whether a block of `layout` is mapped on its own.
fn is_mapped(layout: Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= MIN_BYTES && layout.align() <= HUGE_PAGE
}

/// Bytes mapped for a block of `size` bytes.
fn mapped_len(size: usize) -> usize {
    size.next_multiple_of(HUGE_PAGE)
}

/// A fresh zeroed map of `mapped_len(size)` bytes at a 2 MiB boundary,
/// advised for huge pages; null if the kernel refuses.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn map(size: usize) -> *mut u8 {
    let len = mapped_len(size);
    let Some(with_slack) = len.checked_add(HUGE_PAGE) else {
        return std::ptr::null_mut();
    };
    // SAFETY: a new private anonymous map at an address of the kernel's
    // choosing touches no existing memory. The slack around the aligned
    // range is unmapped again, and the advice changes only how pages are
    // backed, never what they hold; a failed advice only means small pages.
    unsafe {
        let at = libc::mmap(
            std::ptr::null_mut(),
            with_slack,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if at == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let at = at as usize;
        let start = at.next_multiple_of(HUGE_PAGE);
        if start > at {
            libc::munmap(at as *mut libc::c_void, start - at);
        }
        let end = start + len;
        if at + with_slack > end {
            libc::munmap(end as *mut libc::c_void, at + with_slack - end);
        }
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        start as *mut u8
    }
}

#[cfg(not(target_os = "linux"))]
fn map(_size: usize) -> *mut u8 {
    unreachable!("blocks are mapped on Linux only")
}

/// Unmaps a block from [`map`].
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn unmap(ptr: *mut u8, size: usize) {
    // SAFETY: `ptr` and `mapped_len(size)` are exactly a range `map`
    // returned for a block of `size` bytes, which its owner has given up.
    unsafe {
        libc::munmap(ptr.cast::<libc::c_void>(), mapped_len(size));
    }
}

#[cfg(not(target_os = "linux"))]
fn unmap(_ptr: *mut u8, _size: usize) {
    unreachable!("blocks are mapped on Linux only")
}

/// Freed mapped blocks kept for reuse, at most this many bytes: a block
/// allocated again (the next batch's buffers, the next tensor's section)
/// then comes back with its pages already in place instead of as a fresh
/// map faulted in page by page, as `malloc` reuses freed memory too.
/// Without it, `uw bench` encoding, which allocates every section anew per
/// run, was 2-6% slower than through `malloc`.
const SPARE_BYTES: usize = 64 << 20;

/// Freed mapped blocks, as (address, mapped length); length 0: a free slot.
struct Spare {
    blocks: [(usize, usize); 32],
    bytes: usize,
}

static SPARE: std::sync::Mutex<Spare> = std::sync::Mutex::new(Spare {
    blocks: [(0, 0); 32],
    bytes: 0,
});

impl Spare {
    /// A kept block of exactly `len` mapped bytes, taken off the list.
    fn take(&mut self, len: usize) -> Option<usize> {
        let slot = self.blocks.iter().position(|&(_, l)| l == len)?;
        let (at, _) = std::mem::take(&mut self.blocks[slot]);
        self.bytes -= len;
        Some(at)
    }

    /// Keeps the block at `at` of `len` mapped bytes, if there is room;
    /// false if the caller must unmap it.
    fn keep(&mut self, at: usize, len: usize) -> bool {
        if self.bytes + len > SPARE_BYTES {
            return false;
        }
        let Some(slot) = self.blocks.iter().position(|&(_, l)| l == 0) else {
            return false;
        };
        self.blocks[slot] = (at, len);
        self.bytes += len;
        true
    }
}

fn spare() -> std::sync::MutexGuard<'static, Spare> {
    // Nothing panics while holding the lock; were it poisoned, the list
    // would still be whole.
    SPARE.lock().unwrap_or_else(|e| e.into_inner())
}

fn take_spare(len: usize) -> Option<*mut u8> {
    spare().take(len).map(|at| at as *mut u8)
}

fn keep_spare(ptr: *mut u8, len: usize) -> bool {
    spare().keep(ptr as usize, len)
}

// SAFETY: a mapped block is a fresh map of at least its size, at a 2 MiB
// boundary (so aligned for any layout `is_mapped` accepts), zeroed by the
// kernel (or a freed one of the same mapped length, zeroed here when asked
// to be), and kept or unmapped only when freed with its layout; every other block
// comes from `System` with the caller's layout and goes back to it
// unchanged. Whether a block is mapped depends on its layout alone, which
// the caller passes back unchanged, so each block is freed the way it was
// made.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_mapped(layout) {
            return take_spare(mapped_len(layout.size())).unwrap_or_else(|| map(layout.size()));
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_mapped(layout) {
            if let Some(ptr) = take_spare(mapped_len(layout.size())) {
                // SAFETY: a kept block has `mapped_len(size)` >= `size`
                // writable bytes, and nobody else holds it.
                unsafe { ptr.write_bytes(0, layout.size()) };
                return ptr;
            }
            // A fresh anonymous map reads as zeros.
            return map(layout.size());
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees a valid non-zero size and alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (is_mapped(layout), is_mapped(new_layout)) {
            // SAFETY: forwarded with the caller's guarantees.
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            // Still fits the pages mapped for it.
            (true, true) if mapped_len(new_size) == mapped_len(layout.size()) => ptr,
            _ => {
                // SAFETY: `new_layout` is valid (above); the old block holds
                // `layout.size()` readable bytes and the new one
                // `new_size` writable ones, and they are distinct blocks.
                // The old block is freed with its own layout.
                unsafe {
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_mapped(layout) {
            if !keep_spare(ptr, mapped_len(layout.size())) {
                unmap(ptr, layout.size());
            }
            return;
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_through_the_allocator() {
        let a = HugePageAlloc;
        let sizes = [
            16,
            MIN_BYTES - 1,
            MIN_BYTES,
            HUGE_PAGE + 1,
            3 * MIN_BYTES + 12345,
        ];
        for size in sizes {
            for align in [1, 64, 4096, HUGE_PAGE, 2 * HUGE_PAGE] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // Grown across and within the mapped sizes, and shrunk.
                for new_size in [2 * size, size + 1, size / 2 + 1, MIN_BYTES + 7] {
                    #[allow(unsafe_code)]
                    // SAFETY: non-zero layouts; each block is written within
                    // its size, reallocated with its layout, and freed with
                    // its last layout.
                    unsafe {
                        let p = a.alloc_zeroed(layout);
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0);
                        let bytes = std::slice::from_raw_parts(p, size);
                        assert!(bytes.iter().all(|&b| b == 0));
                        p.write_bytes(7, size);
                        let q = a.realloc(p, layout, new_size);
                        assert!(!q.is_null());
                        assert_eq!(q as usize % align, 0);
                        let kept = size.min(new_size);
                        assert!(std::slice::from_raw_parts(q, kept).iter().all(|&b| b == 7));
                        q.write_bytes(9, new_size);
                        a.dealloc(q, Layout::from_size_align(new_size, align).unwrap());
                    }
                }
            }
        }
    }

    #[test]
    fn a_block_is_zeroed_on_request_after_reuse() {
        let a = HugePageAlloc;
        let layout = Layout::from_size_align(5 * HUGE_PAGE + 77, 64).unwrap();
        for _ in 0..3 {
            #[allow(unsafe_code)]
            // SAFETY: a non-zero layout; each block is written within its
            // size and freed once with its layout.
            unsafe {
                let p = a.alloc_zeroed(layout);
                assert!(!p.is_null());
                let bytes = std::slice::from_raw_parts(p, layout.size());
                assert!(bytes.iter().all(|&b| b == 0));
                p.write_bytes(5, layout.size());
                a.dealloc(p, layout);
            }
        }
    }

    #[test]
    fn spare_blocks_are_kept_up_to_the_limit_and_taken_by_length() {
        let mut spare = Spare {
            blocks: [(0, 0); 32],
            bytes: 0,
        };
        assert!(spare.keep(0x1000, HUGE_PAGE));
        assert!(spare.keep(0x2000, 2 * HUGE_PAGE));
        assert_eq!(spare.take(3 * HUGE_PAGE), None);
        assert_eq!(spare.take(2 * HUGE_PAGE), Some(0x2000));
        assert_eq!(spare.take(2 * HUGE_PAGE), None);
        // Past the byte limit, nothing more is kept.
        assert!(!spare.keep(0x3000, SPARE_BYTES));
        assert_eq!(spare.bytes, HUGE_PAGE);
        // Past the slot count either.
        for k in 1..32 {
            assert!(spare.keep(k << 12, 4096));
        }
        assert!(!spare.keep(0x9000, 4096));
        assert_eq!(spare.take(HUGE_PAGE), Some(0x1000));
    }

    #[test]
    fn large_blocks_are_mapped_on_their_own_on_linux() {
        let layout = Layout::from_size_align(MIN_BYTES, 8).unwrap();
        assert_eq!(is_mapped(layout), cfg!(target_os = "linux"));
        assert!(!is_mapped(
            Layout::from_size_align(MIN_BYTES - 1, 8).unwrap()
        ));
        assert!(!is_mapped(
            Layout::from_size_align(MIN_BYTES, 2 * HUGE_PAGE).unwrap()
        ));
        assert_eq!(mapped_len(1), HUGE_PAGE);
        assert_eq!(mapped_len(HUGE_PAGE), HUGE_PAGE);
        assert_eq!(mapped_len(HUGE_PAGE + 1), 2 * HUGE_PAGE);
    }

    #[test]
    fn a_mapped_block_holds_its_whole_size() {
        let a = HugePageAlloc;
        let layout = Layout::array::<u64>(MIN_BYTES).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: a non-zero layout, freed with itself.
        unsafe {
            let p = a.alloc(layout).cast::<u64>();
            assert!(!p.is_null());
            for k in 0..MIN_BYTES {
                p.add(k).write(k as u64);
            }
            assert_eq!(p.add(MIN_BYTES - 1).read(), MIN_BYTES as u64 - 1);
            a.dealloc(p.cast(), layout);
        }
    }
}
