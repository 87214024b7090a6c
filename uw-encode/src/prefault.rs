//! Mapping input pages in ahead of the threads that will read them.
//!
//! `uw convert` and `uw decode` read a memory-mapped input: the first read
//! of each page takes a page fault (the kernel maps it and, by fault-around,
//! its neighbours). With fewer workers than cores, the thread that writes
//! the output has time to spare while the workers encode or decode, and
//! takes those faults instead ([`map_in`]): measured 1-4% off `uw convert
//! --threads 1` and 3-5% off `uw decode --threads 1` to tmpfs (bests and
//! medians of 25 alternating runs, two comparisons each). `uw convert`
//! maps in the batch being encoded (ahead of the encoder) and the start of
//! the next; `uw decode` the next unit, shared between its writing thread
//! and its worker, whichever finishes its round first ([`SharedMapIn`]).
//! (Faulting in the encoder's fresh section buffers the same way measured
//! no gain, and again slower in the fifth session of 2026-11-23:
//! docs/benchmarks.md.)

use std::sync::atomic::{AtomicUsize, Ordering};

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

/// The first `budget` bytes of some inputs, to be mapped in by whichever
/// threads finish their own work first: each [`SharedMapIn::help`] takes
/// blocks not taken yet until none is left.
///
/// `uw decode`'s writing thread and its worker finish each round at
/// different times, and which one first depends on the round (a 4 MiB
/// write to tmpfs takes about as long as decoding 4 MiB). Shared this
/// way, the pages of the next round's input are mapped by the thread
/// that would otherwise wait: `uw decode --threads 1` to tmpfs, 30
/// alternating runs twice, bests 0.8-1.2 ms and medians 1.2-1.6 ms
/// faster (of 30-35) than with the writing thread mapping them all.
pub struct SharedMapIn<'a> {
    blocks: Vec<&'a [u8]>,
    next: AtomicUsize,
}

impl<'a> SharedMapIn<'a> {
    /// Bytes a thread maps in per block it takes: 32 pages, a few faults
    /// (each maps up to 16 neighbours too), small enough that the last
    /// block taken hardly delays the thread that took it.
    const BLOCK: usize = 128 << 10;

    /// The first `budget` bytes of `inputs`, taken in order, nothing mapped
    /// in yet.
    pub fn new(inputs: impl IntoIterator<Item = &'a [u8]>, budget: usize) -> Self {
        let mut left = budget;
        let mut blocks = Vec::new();
        for bytes in inputs {
            let bytes = &bytes[..bytes.len().min(left)];
            left -= bytes.len();
            blocks.extend(bytes.chunks(Self::BLOCK));
        }
        Self {
            blocks,
            next: AtomicUsize::new(0),
        }
    }

    /// Maps in blocks not taken yet, until none is left.
    pub fn help(&self) {
        while let Some(block) = self.blocks.get(self.next.fetch_add(1, Ordering::Relaxed)) {
            map_in([*block], block.len());
        }
    }
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

    #[test]
    fn helpers_take_every_block_once() {
        let bytes = vec![1u8; 5 * super::SharedMapIn::BLOCK + 100];
        for budget in [0, 1, super::SharedMapIn::BLOCK, 3 * bytes.len()] {
            let shared = super::SharedMapIn::new([&bytes[..], &bytes[..7]], budget);
            let covered: usize = shared.blocks.iter().map(|b| b.len()).sum();
            assert_eq!(covered, budget.min(bytes.len() + 7));
            std::thread::scope(|s| {
                s.spawn(|| shared.help());
                shared.help();
            });
            assert!(shared.next.load(std::sync::atomic::Ordering::Relaxed) >= shared.blocks.len());
        }
    }
}
