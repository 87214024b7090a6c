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
//! Mapping whole pages measured 1-4 ms less system time per `uw convert`
//! or `uw decode --threads 1` of MiniLM-L6, medians of 25 alternating
//! runs, docs/benchmarks.md.) Smaller blocks, and every block elsewhere,
//! come from the system allocator unchanged.
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

// SAFETY: a mapped block is a fresh map of at least its size, at a 2 MiB
// boundary (so aligned for any layout `is_mapped` accepts), zeroed by the
// kernel, and unmapped only when freed with its layout; every other block
// comes from `System` with the caller's layout and goes back to it
// unchanged. Whether a block is mapped depends on its layout alone, which
// the caller passes back unchanged, so each block is freed the way it was
// made.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_mapped(layout) {
            return map(layout.size());
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_mapped(layout) {
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
            unmap(ptr, layout.size());
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
