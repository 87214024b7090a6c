//! Memory use under hostile input, measured with a counting allocator
//! (spec §12, "Allocation only from validated sizes"):
//!
//! - opening allocates O(directory) and nothing sized by an unchecked count:
//!   a file that claims 2^20 tensors, a 2^40-byte tensor or 2^32 - 1 encoded
//!   values is refused after a few hundred bytes of allocation;
//! - decoding allocates at most the validated output size plus the decode
//!   tables, whether the stream is valid or hostile.
//!
//! Allocations are counted per thread, so tests running in parallel do not
//! disturb each other; the measured code is the single-threaded API.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use uw_encode::bf16_huffman::{self, HuffmanParams};
use uw_encode::container::ContainerWriter;
use uw_format::{Dtype, Encoding, UwFile};

/// (tracking, live bytes, peak live bytes) of the current thread.
#[derive(Clone, Copy)]
struct Stats {
    on: bool,
    live: isize,
    peak: isize,
}

thread_local! {
    static STATS: Cell<Stats> = const { Cell::new(Stats { on: false, live: 0, peak: 0 }) };
}

fn account(delta: isize) {
    // `try_with`: the slot may be gone while a thread shuts down.
    let _ = STATS.try_with(|s| {
        let mut v = s.get();
        if v.on {
            v.live += delta;
            v.peak = v.peak.max(v.live);
            s.set(v);
        }
    });
}

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; only
// counts sizes in a thread-local without allocating.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result and the peak of bytes it held allocated
/// at once (allocations freed inside `f` count while they live).
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    STATS.with(|s| {
        s.set(Stats {
            on: true,
            live: 0,
            peak: 0,
        })
    });
    let r = f();
    let peak = STATS.with(|s| {
        let v = s.get();
        s.set(Stats { on: false, ..v });
        v.peak
    });
    (r, peak.max(0) as usize)
}

/// Decode tables, for each of up to 4 code tables: 2^12 four-byte
/// one-symbol entries and (tensors of 2^15 values or more) 2^11 eight-byte
/// multi-symbol entries.
const DECODE_TABLES: usize = 4 * (4096 * 4 + 2048 * 8);
/// Room for an error message and other small change.
const SLACK: usize = 4096;

fn bf16_words(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| ((i as u16 & 0x807F) | (118 + (i * 5 % 9) as u16) << 7).to_le_bytes())
        .collect()
}

const SMALL_CHUNKS: HuffmanParams = HuffmanParams {
    block_log2: 6,
    chunk_log2: 8,
    max_code_len: 12,
    max_tables: 4,
};

/// A valid file: one Huffman tensor of `n` values, then `extra` 1-byte raw
/// tensors and `metadata` entries (to grow the directory).
fn file_with(n: usize, extra: usize, metadata: usize) -> Vec<u8> {
    let mut w = ContainerWriter::new(Vec::new(), 64).expect("alignment");
    let words = bf16_words(n);
    let section = bf16_huffman::encode(&words, &SMALL_CHUNKS).expect("encodes");
    w.add_tensor(
        "h",
        Dtype::BF16,
        &[n as u64],
        Encoding::Bf16Huffman,
        &section,
        words.len() as u64,
        crc32fast::hash(&words),
    )
    .expect("writable");
    for i in 0..extra {
        let name = format!("model.layers.{i}.bias");
        w.add_tensor(
            &name,
            Dtype::U8,
            &[1],
            Encoding::Raw,
            &[7],
            1,
            crc32fast::hash(&[7]),
        )
        .expect("writable");
    }
    let meta: Vec<(String, String)> = (0..metadata)
        .map(|i| (format!("key{i:05}"), format!("value {i}")))
        .collect();
    w.finish(&meta, None).expect("finishes").0
}

fn directory_len(bytes: &[u8]) -> usize {
    let t = bytes.len() - 64;
    u64::from_le_bytes(bytes[t + 8..t + 16].try_into().unwrap()) as usize
}

fn set_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn set_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn directory_offset(bytes: &[u8]) -> usize {
    let t = bytes.len() - 64;
    u64::from_le_bytes(bytes[t..t + 8].try_into().unwrap()) as usize
}

#[test]
fn refusing_huge_claims_allocates_almost_nothing() {
    let base = file_with(300, 2, 1);
    let dir = directory_offset(&base);
    let trailer = base.len() - 64;
    let record = |i: usize| dir + 32 + 128 * i;

    // 2^20 tensors claimed, in the directory header and the trailer.
    let mut claims_many = base.clone();
    set_u32(&mut claims_many, dir, 1 << 20);
    set_u32(&mut claims_many, trailer + 20, 1 << 20);
    // A raw U8 tensor of 2^40 bytes.
    let mut claims_huge_raw = base.clone();
    let r = record(1);
    set_u64(&mut claims_huge_raw, r + 48, 1 << 40);
    set_u64(&mut claims_huge_raw, r + 32, 1 << 40);
    set_u64(&mut claims_huge_raw, r + 24, 1 << 40);
    // The Huffman tensor claims 2^32 - 1 values (8 GiB decoded), in its shape,
    // decoded_len and section header alike.
    let mut claims_bomb = base.clone();
    let r = record(0);
    let n = u64::from(u32::MAX);
    set_u64(&mut claims_bomb, r + 48, n);
    set_u64(&mut claims_bomb, r + 32, 2 * n);
    let sec = u64::from_le_bytes(base[r + 16..r + 24].try_into().unwrap()) as usize;
    set_u64(&mut claims_bomb, sec, n);
    set_u32(&mut claims_bomb, sec + 104, (n.div_ceil(256)) as u32);

    for (what, mut bytes) in [
        ("2^20 tensors", claims_many),
        ("a 2^40-byte raw tensor", claims_huge_raw),
        ("2^32 - 1 encoded values", claims_bomb),
    ] {
        uw_fuzz_harness::repair_checksums(&mut bytes);
        let (result, peak) = peak_of(|| UwFile::from_bytes(&bytes).map(drop));
        let err = result.expect_err("refused");
        println!("{what}: refused ({err}), peak allocation {peak} bytes");
        assert!(peak <= 1024, "{what}: {peak} bytes allocated to refuse it");
    }
}

#[test]
fn opening_allocates_in_proportion_to_the_directory() {
    for (extra, metadata) in [(0, 0), (100, 10), (5000, 1000)] {
        let bytes = file_with(1000, extra, metadata);
        let dir_len = directory_len(&bytes);
        let (file, peak) = peak_of(|| UwFile::from_bytes(&bytes).expect("valid"));
        println!(
            "{} tensors, {metadata} metadata: directory {dir_len} bytes, open peak {peak} bytes",
            file.len()
        );
        // Per tensor: a ~128-byte summary and a 4-byte name index; per
        // metadata entry: two ranges (32 bytes) for a 16-byte record.
        assert!(
            peak <= 2 * dir_len + SLACK,
            "open allocated {peak} bytes for a {dir_len}-byte directory"
        );
    }
}

#[test]
fn decoding_allocates_at_most_the_output_and_the_tables() {
    // Past 2^15 values, so the multi-symbol tables are built too.
    let n = 40_000;
    let good = file_with(n, 0, 0);
    let file = UwFile::from_bytes(&good).expect("valid");
    let t = file.tensor("h").expect("present");
    let decoded_len = t.decoded_len() as usize;
    let (out, peak) = peak_of(|| t.decode_to_vec());
    assert_eq!(out.expect("valid"), bf16_words(n));
    println!("valid: decoded {decoded_len} bytes, peak {peak} bytes");
    assert!(peak <= decoded_len + DECODE_TABLES + SLACK);
    let (r, peak) = peak_of(|| file.verify(|_| {}));
    r.expect("valid");
    assert!(
        peak <= decoded_len + DECODE_TABLES + SLACK,
        "verify peak {peak}"
    );

    // Hostile streams, with repaired CRCs so that the decoder runs: the
    // exponent stream overwritten with 0xFF (codes that do not end where the
    // chunk does), then with zeros, then a chunk index pointing backwards.
    let dir = directory_offset(&good);
    let sec = u64::from_le_bytes(good[dir + 48..dir + 56].try_into().unwrap()) as usize;
    let data_len = u64::from_le_bytes(good[dir + 56..dir + 64].try_into().unwrap()) as usize;
    let stream_len = u64::from_le_bytes(good[sec + 112..sec + 120].try_into().unwrap()) as usize;
    let stream = sec + data_len - stream_len;
    let index = sec + (128 + n).next_multiple_of(16);
    let mut hostile = Vec::new();
    for fill in [0xFF, 0x00] {
        let mut bytes = good.clone();
        bytes[stream..stream + stream_len].fill(fill);
        hostile.push(bytes);
    }
    let mut backwards = good.clone();
    set_u32(&mut backwards, index + 8, 1);
    hostile.push(backwards);
    for mut bytes in hostile {
        uw_fuzz_harness::repair_checksums(&mut bytes);
        let file = UwFile::from_bytes(&bytes).expect("stream faults are found at decode");
        let t = file.tensor("h").expect("present");
        let (r, peak) = peak_of(|| t.decode_to_vec());
        let err = r.expect_err("hostile stream");
        println!("hostile: {err}; peak {peak} bytes");
        assert!(
            peak <= decoded_len + DECODE_TABLES + SLACK,
            "decode peak {peak}"
        );
        let (r, peak) = peak_of(|| file.verify(|_| {}));
        assert!(r.is_err());
        assert!(
            peak <= decoded_len + DECODE_TABLES + SLACK,
            "verify peak {peak}"
        );
    }
}
