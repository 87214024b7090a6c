//! A global allocator that asks Linux for transparent huge pages for large
//! blocks: section buffers, decode batches, the exponent streams.
//!
//! A large block is fresh anonymous memory, and its first touch faults once
//! per 4 KiB page: on the development machine (a KVM guest) about 2 µs a
//! page, 23 ms to touch 46 MB, against 8.5 ms with 2 MiB pages (`madvise
//! (MADV_HUGEPAGE)`, zeroing then dominates). `uw convert --threads 1`
//! spent about a fifth of its encoding thread in such faults.
//!
//! Only advice: where transparent huge pages are off (`never`), or no
//! 2 MiB page is free, the kernel uses 4 KiB pages as before. With
//! `enabled` set to `madvise` (the usual default) the advice is what turns
//! them on for these blocks. Blocks under [`MIN_BYTES`] are left alone; in
//! a block, only the whole 2 MiB-aligned pages inside it are advised.
//!
//! To use it: `#[global_allocator] static A: HugePageAlloc = HugePageAlloc;`
//! (the `uw` binary does).

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, with `MADV_HUGEPAGE` on large blocks (Linux).
#[derive(Debug, Default, Clone, Copy)]
pub struct HugePageAlloc;

/// Smallest block advised: two huge pages, so that at least one whole
/// aligned huge page lies inside it.
pub const MIN_BYTES: usize = 4 << 20;

const HUGE_PAGE: usize = 2 << 20;

/// Advises the whole huge pages in `len` bytes from `ptr`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn advise(ptr: *mut u8, len: usize) {
    let at = ptr as usize;
    let start = at.next_multiple_of(HUGE_PAGE);
    let end = (at + len) / HUGE_PAGE * HUGE_PAGE;
    if start < end {
        // SAFETY: the range lies inside a block the allocator just handed
        // out, and MADV_HUGEPAGE changes how its pages are backed, never
        // what they hold. A failure only means small pages.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_ptr: *mut u8, _len: usize) {}

// SAFETY: every block comes from `System` with the caller's layout and goes
// back to it unchanged; the advice never moves or changes a block.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let ptr = unsafe { System.alloc(layout) };
        if layout.size() >= MIN_BYTES && !ptr.is_null() {
            advise(ptr, layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if layout.size() >= MIN_BYTES && !ptr.is_null() {
            advise(ptr, layout.size());
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if new_size >= MIN_BYTES && !new.is_null() {
            advise(new, new_size);
        }
        new
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
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
        for size in [16, MIN_BYTES - 1, MIN_BYTES, 3 * MIN_BYTES + 12345] {
            let layout = Layout::from_size_align(size, 64).unwrap();
            #[allow(unsafe_code)]
            // SAFETY: a non-zero layout; the block is written within its
            // size, grown with realloc, and freed with its last layout.
            unsafe {
                let p = a.alloc_zeroed(layout);
                assert!(!p.is_null());
                assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                p.write_bytes(7, size);
                let q = a.realloc(p, layout, 2 * size);
                assert!(!q.is_null());
                assert!(std::slice::from_raw_parts(q, size).iter().all(|&b| b == 7));
                a.dealloc(q, Layout::from_size_align(2 * size, 64).unwrap());
            }
        }
    }
}
