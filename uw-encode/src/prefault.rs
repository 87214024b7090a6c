//! Mapping input pages in ahead of the threads that will read them.
//!
//! `uw convert` and `uw decode` read a memory-mapped input: the first read
//! of each page takes a page fault (the kernel maps it and, by fault-around,
//! its neighbours). With fewer workers than cores, the thread that writes
//! the output has time to spare while the workers encode or decode, and
//! takes those faults for the next batch instead ([`map_in`]): measured
//! 1-4% off `uw convert --threads 1` and 3-5% off `uw decode --threads 1`
//! to tmpfs (bests and medians of 25 alternating runs, two comparisons
//! each). (Faulting in the
//! encoder's fresh section buffers the same way measured no gain: zeroing
//! their pages took memory bandwidth from the encoder.)

/// Reads a byte of each 4 KiB page of the first `budget` bytes of
/// `inputs` (taken in order), so that the pages are mapped when another
/// thread reads them.
pub fn map_in<'a>(inputs: impl IntoIterator<Item = &'a [u8]>, budget: usize) {
    let mut left = budget;
    let mut read = 0u8;
    for bytes in inputs {
        let bytes = &bytes[..bytes.len().min(left)];
        read = bytes.chunks(4096).fold(read, |x, page| x ^ page[0]);
        left -= bytes.len();
    }
    std::hint::black_box(read);
}

#[cfg(test)]
mod tests {
    #[test]
    fn any_length_is_read() {
        for len in [0, 1, 4095, 4096, 4097, 3 * 4096] {
            let bytes = vec![7u8; len];
            for budget in [0, 1, 4096, len, usize::MAX] {
                super::map_in([&bytes[..], &bytes[..]], budget);
            }
        }
    }
}
