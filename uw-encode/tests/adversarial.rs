//! Adversarial `.uw` files, each built from scratch with every CRC valid, so
//! that the one structural check it targets is what fires (spec §10, §12:
//! "Valid CRCs prove nothing: an attacker recomputes them").
//!
//! Each test names the construction and the error the reader must give.

use uw_encode::bf16_huffman::{self, HuffmanParams};
use uw_encode::palette4;
use uw_format::layout::{
    DirectoryHeader, END_MAGIC, FileHeader, MAGIC, MetadataRecord, TensorRecord, Trailer, align_up,
};
use uw_format::{Condition, Dtype, Error, UwFile};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U32, U64};

/// One tensor to lay out. `name` is raw bytes so it can be invalid UTF-8.
struct Spec {
    name: Vec<u8>,
    dtype: Dtype,
    encoding: u8,
    shape: Vec<u64>,
    section: Vec<u8>,
    decoded: Vec<u8>,
}

fn raw(name: &str, bytes: &[u8]) -> Spec {
    Spec {
        name: name.as_bytes().to_vec(),
        dtype: Dtype::U8,
        encoding: 0,
        shape: vec![bytes.len() as u64],
        section: bytes.to_vec(),
        decoded: bytes.to_vec(),
    }
}

/// `n` BF16 values with `distinct` common exponents (112, 113, ...), and one
/// value in 50 with a rare exponent (3, 4, ...): with `distinct` = 16 the
/// rare ones fall outside the palette (escapes, palette-4 exceptions).
fn bf16_words(n: usize, distinct: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let e = if i % 50 == 49 {
                3 + (i / 50) as u16
            } else {
                112 + (i * 7 % distinct) as u16
            };
            let w = (i as u16 & 0x807F) | e << 7;
            w.to_le_bytes()
        })
        .collect()
}

/// Small blocks and chunks, so a few hundred values span several chunks.
const PARAMS: HuffmanParams = HuffmanParams {
    block_log2: 6,
    chunk_log2: 6,
    max_code_len: 12,
    max_tables: 1,
};

fn huffman(name: &str, n: usize) -> Spec {
    let decoded = bf16_words(n, 8);
    Spec {
        name: name.as_bytes().to_vec(),
        dtype: Dtype::BF16,
        encoding: 1,
        shape: vec![n as u64],
        section: bf16_huffman::encode(&decoded, &PARAMS).expect("encodes"),
        decoded,
    }
}

fn palette(name: &str, n: usize, distinct: usize) -> Spec {
    let decoded = bf16_words(n, distinct);
    Spec {
        name: name.as_bytes().to_vec(),
        dtype: Dtype::BF16,
        encoding: 2,
        shape: vec![n as u64],
        section: palette4::encode(&decoded).expect("encodes"),
        decoded,
    }
}

/// Where the parts of a built file are, to aim edits at them.
struct File {
    bytes: Vec<u8>,
    /// Absolute offset of the directory.
    dir: usize,
    /// Absolute offset of the string heap.
    heap: usize,
    /// Absolute offset of each data section.
    sections: Vec<usize>,
}

impl File {
    fn record(&self, i: usize) -> usize {
        self.dir + 32 + 128 * i
    }
    fn metadata_record(&self, tensors: usize, j: usize) -> usize {
        self.dir + 32 + 128 * tensors + 16 * j
    }
    fn trailer(&self) -> usize {
        self.bytes.len() - 64
    }
    fn set_u8(&mut self, at: usize, v: u8) -> &mut Self {
        self.bytes[at] = v;
        self
    }
    fn set_u32(&mut self, at: usize, v: u32) -> &mut Self {
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
        self
    }
    fn set_u64(&mut self, at: usize, v: u64) -> &mut Self {
        self.bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
        self
    }
    /// Recomputes every CRC over the edited bytes: header, data sections
    /// (and decoded CRC of raw tensors), directory, trailer.
    fn reseal(&mut self) -> &[u8] {
        uw_fuzz_harness::repair_checksums(&mut self.bytes);
        &self.bytes
    }
}

/// Lays out a valid file: header, aligned sections, directory, trailer, with
/// the header's directory fields filled in.
fn build(alignment: u32, tensors: &[Spec], metadata: &[(&[u8], &[u8])]) -> File {
    let align = u64::from(alignment);
    let mut bytes = vec![0u8; 64];
    let mut heap = Vec::new();
    let mut records = Vec::new();
    let mut sections = Vec::new();
    for t in tensors {
        bytes.resize(align_up(bytes.len() as u64, align).unwrap() as usize, 0);
        sections.push(bytes.len());
        let mut shape = [U64::new(0); 8];
        for (d, &v) in shape.iter_mut().zip(&t.shape) {
            *d = v.into();
        }
        records.push(TensorRecord {
            name_offset: (heap.len() as u32).into(),
            name_len: (t.name.len() as u32).into(),
            dtype: t.dtype.code(),
            encoding: t.encoding,
            rank: t.shape.len() as u8,
            reserved0: 0,
            decoded_crc: crc32fast::hash(&t.decoded).into(),
            data_offset: (bytes.len() as u64).into(),
            data_len: (t.section.len() as u64).into(),
            decoded_len: (t.decoded.len() as u64).into(),
            data_crc: crc32fast::hash(&t.section).into(),
            reserved1: 0.into(),
            shape,
            reserved2: [0; 16],
        });
        heap.extend_from_slice(&t.name);
        bytes.extend_from_slice(&t.section);
    }
    let mut meta = Vec::new();
    for (k, v) in metadata {
        let key_offset = heap.len() as u32;
        heap.extend_from_slice(k);
        let value_offset = heap.len() as u32;
        heap.extend_from_slice(v);
        meta.push(MetadataRecord {
            key_offset: key_offset.into(),
            key_len: (k.len() as u32).into(),
            value_offset: value_offset.into(),
            value_len: (v.len() as u32).into(),
        });
    }
    bytes.resize(align_up(bytes.len() as u64, align).unwrap() as usize, 0);
    let dir = bytes.len();
    let dh = DirectoryHeader {
        tensor_count: (records.len() as u32).into(),
        metadata_count: (meta.len() as u32).into(),
        strings_len: (heap.len() as u32).into(),
        source_header_offset: 0.into(),
        source_header_len: 0.into(),
        reserved: [0; 12],
    };
    bytes.extend_from_slice(dh.as_bytes());
    bytes.extend_from_slice(records.as_bytes());
    bytes.extend_from_slice(meta.as_bytes());
    let heap_at = bytes.len();
    bytes.extend_from_slice(&heap);
    let dir_len = (bytes.len() - dir) as u64;
    let header = FileHeader {
        magic: MAGIC,
        version_major: 1.into(),
        version_minor: 0.into(),
        header_len: 64.into(),
        required_features: 0.into(),
        optional_features: 0.into(),
        alignment: alignment.into(),
        reserved0: 0.into(),
        directory_offset: (dir as u64).into(),
        directory_len: dir_len.into(),
        reserved1: 0.into(),
        header_crc: 0.into(),
    };
    bytes[..64].copy_from_slice(header.as_bytes());
    let trailer = Trailer {
        directory_offset: (dir as u64).into(),
        directory_len: dir_len.into(),
        directory_crc: 0.into(),
        tensor_count: (records.len() as u32).into(),
        file_len: (bytes.len() as u64 + 64).into(),
        reserved: [0; 20],
        trailer_crc: U32::new(0),
        end_magic: END_MAGIC,
    };
    bytes.extend_from_slice(trailer.as_bytes());
    let mut file = File {
        bytes,
        dir,
        heap: heap_at,
        sections,
    };
    file.reseal();
    file
}

/// Asserts that `err` is the spec condition `expected` (§10.1), printing the
/// error when it is not.
fn expect_condition(err: Error, expected: Condition) {
    assert_eq!(err.condition(), Some(expected), "unexpected error: {err}");
}

fn open_err(bytes: &[u8]) -> Error {
    match UwFile::from_bytes(bytes) {
        Ok(_) => panic!("hostile file was accepted"),
        Err(e) => {
            // Every rejection says what is wrong in words.
            assert!(!e.to_string().is_empty());
            e
        }
    }
}

/// Opens (must succeed) and decodes every tensor; returns the first error.
fn decode_err(bytes: &[u8]) -> Error {
    let file = UwFile::from_bytes(bytes).expect("stream faults are found at decode, not open");
    file.tensors()
        .find_map(|t| t.decode_to_vec().err())
        .expect("hostile stream was decoded")
}

#[test]
fn the_builder_makes_valid_files() {
    let f = build(
        64,
        &[raw("a", b"xyz"), huffman("h", 300), palette("p", 77, 16)],
        &[(b"k", b"v")],
    );
    let file = UwFile::from_bytes(&f.bytes).expect("opens");
    file.verify(|_| {}).expect("verifies");
    assert_eq!(
        file.tensor("h").unwrap().decode_to_vec().unwrap(),
        bf16_words(300, 8)
    );
}

// ---- huge counts -----------------------------------------------------------

#[test]
fn tensor_count_above_the_limit() {
    let mut f = build(64, &[raw("a", b"x")], &[]);
    let (dir, t) = (f.dir, f.trailer());
    f.set_u32(dir, (1 << 20) + 1).set_u32(t + 20, (1 << 20) + 1);
    expect_condition(open_err(f.reseal()), Condition::LimitExceeded);
}

#[test]
fn tensor_count_at_the_limit_without_the_records_to_back_it() {
    // 2^20 tensors need a 128 MiB directory; this one has 161 bytes.
    let mut f = build(64, &[raw("a", b"x")], &[]);
    let (dir, t) = (f.dir, f.trailer());
    f.set_u32(dir, 1 << 20).set_u32(t + 20, 1 << 20);
    expect_condition(open_err(f.reseal()), Condition::BadLength);
}

#[test]
fn metadata_count_and_string_heap_above_the_limits() {
    let mut f = build(64, &[raw("a", b"x")], &[]);
    let dir = f.dir;
    f.set_u32(dir + 4, u32::MAX);
    expect_condition(open_err(f.reseal()), Condition::LimitExceeded);
    let mut f = build(64, &[raw("a", b"x")], &[]);
    f.set_u32(dir + 8, (256 << 20) + 1);
    expect_condition(open_err(f.reseal()), Condition::LimitExceeded);
}

#[test]
fn trailer_tensor_count_disagrees_with_the_directory() {
    let mut f = build(64, &[raw("a", b"x")], &[]);
    let t = f.trailer();
    f.set_u32(t + 20, 2);
    expect_condition(open_err(f.reseal()), Condition::Inconsistent);
}

#[test]
fn encoded_element_count_above_two_to_the_32() {
    // Shape and header agree on 2^32 elements; the section is 128 bytes.
    let mut f = build(64, &[huffman("h", 100)], &[]);
    let (rec, sec) = (f.record(0), f.sections[0]);
    f.set_u64(rec + 48, 1 << 32)
        .set_u64(rec + 32, 2 << 32)
        .set_u64(sec, 1 << 32);
    expect_condition(open_err(f.reseal()), Condition::LimitExceeded);
}

#[test]
fn palette4_exception_count_above_the_element_count() {
    let mut f = build(64, &[palette("p", 100, 16)], &[]);
    let sec = f.sections[0];
    f.set_u64(sec + 32, 101);
    expect_condition(open_err(f.reseal()), Condition::BadLength);
}

// ---- offsets past the end --------------------------------------------------

#[test]
fn data_section_past_the_directory() {
    let mut f = build(64, &[raw("a", &[7; 100])], &[]);
    let rec = f.record(0);
    let past = align_up(f.bytes.len() as u64, 64).unwrap();
    f.set_u64(rec + 16, past);
    expect_condition(open_err(f.reseal()), Condition::OutOfBounds);
}

#[test]
fn directory_past_the_end_of_the_file() {
    let mut f = build(64, &[raw("a", b"x")], &[]);
    let t = f.trailer();
    let past = align_up(f.bytes.len() as u64, 64).unwrap();
    f.set_u64(t, past).set_u64(40, past);
    expect_condition(open_err(f.reseal()), Condition::OutOfBounds);
}

#[test]
fn name_and_metadata_past_the_string_heap() {
    let mut f = build(64, &[raw("a", b"x")], &[(b"k", b"v")]);
    let rec = f.record(0);
    f.set_u32(rec, 3);
    expect_condition(open_err(f.reseal()), Condition::OutOfBounds);
    let mut f = build(64, &[raw("a", b"x")], &[(b"k", b"v")]);
    let m = f.metadata_record(1, 0);
    f.set_u32(m + 12, u32::MAX);
    expect_condition(open_err(f.reseal()), Condition::OutOfBounds);
    let mut f = build(64, &[raw("a", b"x")], &[]);
    let dir = f.dir;
    f.set_u32(dir + 12, 0).set_u32(dir + 16, 2);
    expect_condition(open_err(f.reseal()), Condition::OutOfBounds);
}

// ---- overlapping sections --------------------------------------------------

#[test]
fn second_section_starts_inside_the_first() {
    let mut f = build(64, &[raw("a", &[1; 200]), raw("b", &[2; 100])], &[]);
    let rec = f.record(1);
    f.set_u64(rec + 16, 128);
    expect_condition(open_err(f.reseal()), Condition::Overlap);
}

#[test]
fn two_tensors_alias_one_section() {
    let mut f = build(64, &[raw("a", &[1; 100]), raw("b", &[1; 100])], &[]);
    let (r0, r1) = (f.record(0), f.record(1));
    let first = f.bytes[r0 + 16..r0 + 24].to_vec();
    f.bytes[r1 + 16..r1 + 24].copy_from_slice(&first);
    expect_condition(open_err(f.reseal()), Condition::Overlap);
}

#[test]
fn section_overlapping_the_header() {
    let mut f = build(64, &[raw("a", &[1; 100])], &[]);
    let rec = f.record(0);
    f.set_u64(rec + 16, 0);
    expect_condition(open_err(f.reseal()), Condition::OutOfBounds);
}

// ---- length overflow -------------------------------------------------------

#[test]
fn data_offset_plus_length_wraps_u64() {
    let mut f = build(64, &[raw("a", &[1; 128])], &[]);
    let rec = f.record(0);
    // Aligned offset 2^64 - 64, length 128: the sum wraps to 64.
    f.set_u64(rec + 16, u64::MAX - 63);
    expect_condition(open_err(f.reseal()), Condition::OutOfBounds);
}

#[test]
fn directory_offset_plus_length_wraps_u64() {
    let mut f = build(64, &[raw("a", b"x")], &[]);
    let t = f.trailer();
    f.set_u64(40, 0).set_u64(48, 0); // the header defers to the trailer
    f.set_u64(t, u64::MAX - 63).set_u64(t + 8, 1 << 20);
    expect_condition(open_err(f.reseal()), Condition::OutOfBounds);
    let mut f = build(64, &[raw("a", b"x")], &[]);
    f.set_u64(40, 0).set_u64(48, 0);
    f.set_u64(t + 8, u64::MAX);
    expect_condition(open_err(f.reseal()), Condition::LimitExceeded);
}

#[test]
fn shape_product_and_byte_size_overflow() {
    let mut f = build(64, &[raw("a", b"x")], &[]);
    let rec = f.record(0);
    f.set_u8(rec + 10, 2)
        .set_u64(rec + 48, 1 << 40)
        .set_u64(rec + 56, 1 << 40);
    expect_condition(open_err(f.reseal()), Condition::BadShape);
    let mut f = build(64, &[raw("a", b"x")], &[]);
    f.set_u8(rec + 8, Dtype::F64.code())
        .set_u64(rec + 48, 1 << 61);
    expect_condition(open_err(f.reseal()), Condition::BadShape);
}

#[test]
fn huffman_stream_length_overflows_the_section_size() {
    let mut f = build(64, &[huffman("h", 100)], &[]);
    let sec = f.sections[0];
    f.set_u64(sec + 112, u64::MAX - 8);
    expect_condition(open_err(f.reseal()), Condition::LimitExceeded);
}

// ---- code lengths that are not a prefix code -------------------------------

/// Sets table 0 of the Huffman section of tensor 0 to `lengths` (with the
/// alphabet size they imply) and returns the reader's reason.
fn table_error(lengths: &[u8]) -> &'static str {
    let mut f = build(64, &[huffman("h", 100)], &[]);
    let sec = f.sections[0];
    // Palette of len(lengths) distinct exponents, no escape, one table.
    f.set_u8(sec + 8, lengths.len() as u8).set_u8(sec + 9, 0);
    for s in 0..16 {
        let e = if s < lengths.len() { 100 + s as u8 } else { 0 };
        f.set_u8(sec + 16 + s, e);
    }
    for s in 0..17 {
        f.set_u8(sec + 32 + s, lengths.get(s).copied().unwrap_or(0));
    }
    match open_err(f.reseal()) {
        Error::BadHuffmanTable {
            tensor: 0,
            table: 0,
            reason,
        } => reason,
        e => panic!("{lengths:?}: expected BadHuffmanTable, got {e}"),
    }
}

#[test]
fn code_lengths_that_are_not_a_prefix_code() {
    assert_eq!(
        table_error(&[1, 1, 1]),
        "code lengths over-subscribe the code space"
    );
    assert_eq!(
        table_error(&[1, 2, 2, 2]),
        "code lengths over-subscribe the code space"
    );
    assert_eq!(
        table_error(&[1, 2]),
        "code lengths leave part of the code space unused"
    );
    assert_eq!(
        table_error(&[2, 2, 2]),
        "code lengths leave part of the code space unused"
    );
    assert_eq!(
        table_error(&[2]),
        "a single-symbol table must use a 1-bit code"
    );
    assert_eq!(table_error(&[0, 0, 0]), "no symbol has a code");
    assert_eq!(table_error(&[1, 13, 13]), "code length above the maximum");
}

// ---- chunk index pointing backwards ----------------------------------------

#[test]
fn chunk_index_entry_pointing_backwards() {
    // 300 values in chunks of 64: 5 chunks, index at align16(128 + 300).
    let mut f = build(64, &[huffman("h", 300)], &[]);
    let idx = f.sections[0] + 432;
    let third = u32::from_le_bytes(f.bytes[idx + 8..idx + 12].try_into().unwrap());
    assert!(third > 1);
    f.set_u32(idx + 12, third - 1); // chunk 3 starts before chunk 2
    expect_condition(decode_err(f.reseal()), Condition::CorruptStream);
}

#[test]
fn chunk_index_not_starting_at_zero_or_past_the_stream() {
    let mut f = build(64, &[huffman("h", 300)], &[]);
    let idx = f.sections[0] + 432;
    f.set_u32(idx, 1);
    expect_condition(decode_err(f.reseal()), Condition::CorruptStream);
    let mut f = build(64, &[huffman("h", 300)], &[]);
    f.set_u32(idx + 16, u32::MAX);
    expect_condition(decode_err(f.reseal()), Condition::CorruptStream);
}

#[test]
fn block_selector_naming_a_missing_table() {
    // Three tables declared (2 selector bits), every block pointing at table 3.
    let mut f = build(64, &[huffman("h", 300)], &[]);
    let sec = f.sections[0];
    let lengths: [u8; 17] = f.bytes[sec + 32..sec + 49].try_into().unwrap();
    f.set_u8(sec + 10, 3).set_u8(sec + 11, 2);
    for t in 1..3 {
        f.bytes[sec + 32 + 17 * t..sec + 49 + 17 * t].copy_from_slice(&lengths);
    }
    // Selectors sit at index + 4 * 5 chunks; 5 blocks * 2 bits = 2 bytes,
    // which the one-table section used for padding or stream: rebuild the
    // tail so that the section still ends where the parts say.
    let idx = sec + 432;
    let stream_len = u64::from_le_bytes(f.bytes[sec + 112..sec + 120].try_into().unwrap()) as usize;
    let old_stream = f.bytes[sec + 464..sec + 464 + stream_len].to_vec();
    let mut section = f.bytes[sec..idx + 20].to_vec();
    section.extend_from_slice(&[0xFF, 0x03]);
    section.resize(align_up(section.len() as u64, 16).unwrap() as usize, 0);
    section.extend_from_slice(&old_stream);
    let spec = Spec {
        name: b"h".to_vec(),
        dtype: Dtype::BF16,
        encoding: 1,
        shape: vec![300],
        section,
        decoded: bf16_words(300, 8),
    };
    let f = build(64, &[spec], &[]);
    expect_condition(decode_err(&f.bytes), Condition::CorruptStream);
}

// ---- palettes --------------------------------------------------------------

#[test]
fn palette_larger_than_allowed() {
    let mut f = build(64, &[huffman("h", 100)], &[]);
    let sec = f.sections[0];
    f.set_u8(sec + 8, 17);
    expect_condition(open_err(f.reseal()), Condition::BadPalette);
    let mut f = build(64, &[palette("p", 100, 16)], &[]);
    let sec = f.sections[0];
    f.set_u8(sec + 8, 255);
    expect_condition(open_err(f.reseal()), Condition::BadPalette);
}

#[test]
fn palette_with_a_repeated_exponent() {
    let mut f = build(64, &[palette("p", 100, 16)], &[]);
    let sec = f.sections[0];
    let first = f.bytes[sec + 16];
    f.set_u8(sec + 17, first);
    expect_condition(open_err(f.reseal()), Condition::BadPalette);
}

#[test]
fn palette4_nibble_past_the_palette_and_unsorted_exceptions() {
    // 8 + 2 exponents in the palette; nibble 15 names none of them.
    let mut f = build(64, &[palette("p", 100, 8)], &[]);
    let sec = f.sections[0];
    let nibbles = sec + 176; // align16(64 + 100)
    f.set_u8(nibbles, 0xF0 | (f.bytes[nibbles] & 0x0F));
    expect_condition(decode_err(f.reseal()), Condition::CorruptStream);
    // Two exceptions (values 49 and 99), swapped.
    let mut f = build(64, &[palette("p", 100, 16)], &[]);
    let positions = sec + 176 + 64; // align16(176 + 50)
    f.set_u32(positions, 99).set_u32(positions + 4, 49);
    expect_condition(decode_err(f.reseal()), Condition::CorruptStream);
}

// ---- names -----------------------------------------------------------------

#[test]
fn tensor_name_not_utf8() {
    let mut spec = raw("a", b"x");
    spec.name = vec![b'w', 0xC3, 0x28]; // a lead byte without its continuation
    let f = build(64, &[spec], &[]);
    let err = open_err(&f.bytes);
    // The error points at the name's bytes in the string heap.
    assert!(err.to_string().contains(&f.heap.to_string()), "{err}");
    expect_condition(err, Condition::BadName);
}

#[test]
fn metadata_key_or_value_not_utf8() {
    let f = build(64, &[raw("a", b"x")], &[(b"k\xFF", b"v")]);
    expect_condition(open_err(&f.bytes), Condition::BadMetadata);
    let f = build(64, &[raw("a", b"x")], &[(b"k", b"\xE2\x82")]);
    expect_condition(open_err(&f.bytes), Condition::BadMetadata);
}

#[test]
fn repeated_tensor_names() {
    let f = build(64, &[raw("w", b"x"), raw("b", b"y"), raw("w", b"z")], &[]);
    expect_condition(open_err(&f.bytes), Condition::DuplicateName);
    // The same name given twice by pointing both records at one heap string.
    let mut f = build(64, &[raw("aa", b"x"), raw("bb", b"y")], &[]);
    let (r0, r1) = (f.record(0), f.record(1));
    f.set_u32(r1, 0).set_u32(r1 + 4, 2);
    let _ = r0;
    expect_condition(open_err(f.reseal()), Condition::DuplicateName);
}

#[test]
fn repeated_or_unsorted_metadata_keys() {
    let f = build(64, &[raw("a", b"x")], &[(b"k", b"1"), (b"k", b"2")]);
    expect_condition(open_err(&f.bytes), Condition::DuplicateName);
    let f = build(64, &[raw("a", b"x")], &[(b"z", b"1"), (b"a", b"2")]);
    expect_condition(open_err(&f.bytes), Condition::Unsorted);
}
