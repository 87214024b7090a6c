//! Malformed files: start from a valid file made by the encoder, break one
//! rule at a time (re-sealing the CRCs that would otherwise fire first) and
//! check the reader reports that exact fault, never panics, and never
//! returns wrong bytes.

mod common;

use std::sync::OnceLock;

use uw_encode::bf16_huffman::{self, HuffmanParams};
use uw_encode::container::{ContainerWriter, header_bytes};
use uw_encode::palette4;
use uw_encode::restore::decode_tensor_parallel;
use uw_format::Condition as C;
use uw_format::layout::{
    DirectoryHeader, FileHeader, HuffmanHeader, MetadataRecord, Palette4Header, TensorRecord,
    Trailer, limits,
};
use uw_format::{Checksummed, Condition, Dtype, Encoded, Encoding, Error, UwFile, bf16};
use zerocopy::FromBytes;

use common::{HeaderStyle, Rng, SourceTensor, realistic_bf16, safetensors_bytes, words_to_bytes};

/// Directory index of the bf16-huffman tensor of the fixture.
const HUFF: usize = 0;
/// Directory index of the bf16-palette4 tensor.
const PAL: usize = 1;
/// Directory index of the raw F32 tensor.
const RAW: usize = 2;

/// Elements of the palette-4 tensor: odd, so the last high nibble is padding.
const PAL_N: usize = 513;

/// A valid file with one tensor of each encoding, two metadata entries and a
/// source header, as `uw convert` would write it (header patched).
struct Fixture {
    bytes: Vec<u8>,
    /// The safetensors file the `.uw` file restores to.
    safetensors: Vec<u8>,
    /// Decoded bytes of each tensor, in directory order.
    decoded: Vec<Vec<u8>>,
    huffman_params: HuffmanParams,
}

/// BF16 values whose scale changes every 64-value block among four very
/// different ones (so the encoder picks four tables), with rare escapes.
fn block_varying_bf16(n: usize, seed: u64) -> Vec<u16> {
    let scales = [1e-3, 0.02, 0.5, 20.0];
    let mut words = Vec::with_capacity(n);
    let mut block = 0;
    while words.len() < n {
        let len = 64.min(n - words.len());
        words.extend(realistic_bf16(
            len,
            seed + block as u64,
            scales[block % 4],
            0.01,
        ));
        block += 1;
    }
    words
}

impl Fixture {
    fn build(huffman_n: usize, huffman_params: HuffmanParams) -> Self {
        let huffman_raw = words_to_bytes(&block_varying_bf16(huffman_n, 1));
        let palette_raw = words_to_bytes(&realistic_bf16(PAL_N, 2, 0.02, 0.05));
        let mut raw = vec![0u8; 60];
        Rng::new(3).fill_bytes(&mut raw);
        let sources = vec![
            SourceTensor {
                name: "a.huffman".into(),
                dtype: Dtype::BF16,
                shape: vec![huffman_n as u64],
                bytes: huffman_raw,
            },
            SourceTensor {
                name: "b.palette4".into(),
                dtype: Dtype::BF16,
                shape: vec![1, PAL_N as u64],
                bytes: palette_raw,
            },
            SourceTensor {
                name: "c.raw".into(),
                dtype: Dtype::F32,
                shape: vec![3, 5],
                bytes: raw,
            },
        ];
        let metadata = vec![
            ("alpha".to_string(), "1".to_string()),
            ("beta".to_string(), "2".to_string()),
        ];
        let safetensors = safetensors_bytes(&sources, &metadata, HeaderStyle::default());
        let header_len = u64::from_le_bytes(safetensors[..8].try_into().unwrap()) as usize;
        let source_header = std::str::from_utf8(&safetensors[8..8 + header_len]).unwrap();

        let sections = [
            (
                Encoding::Bf16Huffman,
                bf16_huffman::encode(&sources[HUFF].bytes, &huffman_params).unwrap(),
            ),
            (
                Encoding::Bf16Palette4,
                palette4::encode(&sources[PAL].bytes).unwrap(),
            ),
            (Encoding::Raw, sources[RAW].bytes.clone()),
        ];
        let mut w = ContainerWriter::new(Vec::new(), 64).unwrap();
        for (src, (encoding, section)) in sources.iter().zip(&sections) {
            w.add_tensor(
                &src.name,
                src.dtype,
                &src.shape,
                *encoding,
                section,
                src.bytes.len() as u64,
                crc32fast::hash(&src.bytes),
            )
            .unwrap();
        }
        let (mut bytes, finished) = w.finish(&metadata, Some(source_header)).unwrap();
        bytes[..64].copy_from_slice(&header_bytes(
            64,
            Some((finished.directory_offset, finished.directory_len)),
        ));
        Fixture {
            bytes,
            safetensors,
            decoded: sources.into_iter().map(|s| s.bytes).collect(),
            huffman_params,
        }
    }

    /// The small fixture: every structure present, cheap enough to flip every bit.
    fn small() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            Fixture::build(
                2001,
                HuffmanParams {
                    block_log2: 6,
                    chunk_log2: 8,
                    max_code_len: 12,
                    max_tables: 4,
                },
            )
        })
    }

    /// A fixture whose Huffman tensor is large enough for the decoder's
    /// multi-symbol fast path.
    fn large() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            Fixture::build(
                40_001,
                HuffmanParams {
                    block_log2: 6,
                    chunk_log2: 12,
                    max_code_len: 12,
                    max_tables: 4,
                },
            )
        })
    }

    /// A copy with `edit` applied and the header, directory and trailer CRCs
    /// recomputed (data CRCs left as they are).
    fn corrupt(&self, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = self.bytes.clone();
        edit(&mut b);
        reseal(&mut b);
        b
    }

    /// As [`Self::corrupt`], and every data CRC recomputed too, so only the
    /// structural check under test (or the decoded CRC) can fire.
    fn corrupt_data(&self, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = self.bytes.clone();
        edit(&mut b);
        for i in 0..3 {
            reseal_data(&mut b, i);
        }
        reseal(&mut b);
        b
    }
}

// ---------------------------------------------------------------------------
// Views into a file's records, by the layout of spec/uw-v1.md.

fn trailer(b: &[u8]) -> Trailer {
    Trailer::read_from_bytes(&b[b.len() - 64..]).unwrap()
}
fn dir_off(b: &[u8]) -> usize {
    trailer(b).directory_offset.get() as usize
}
fn dir_header(b: &[u8]) -> DirectoryHeader {
    DirectoryHeader::read_from_prefix(&b[dir_off(b)..])
        .unwrap()
        .0
}
fn record_off(b: &[u8], i: usize) -> usize {
    dir_off(b) + 32 + 128 * i
}
fn record(b: &[u8], i: usize) -> TensorRecord {
    TensorRecord::read_from_prefix(&b[record_off(b, i)..])
        .unwrap()
        .0
}
fn meta_off(b: &[u8], j: usize) -> usize {
    dir_off(b) + 32 + 128 * 3 + 16 * j
}
fn meta(b: &[u8], j: usize) -> MetadataRecord {
    MetadataRecord::read_from_prefix(&b[meta_off(b, j)..])
        .unwrap()
        .0
}
fn heap_off(b: &[u8]) -> usize {
    dir_off(b) + 32 + 128 * 3 + 16 * 2
}
fn section_off(b: &[u8], i: usize) -> usize {
    record(b, i).data_offset.get() as usize
}

fn header_mut(b: &mut [u8]) -> &mut FileHeader {
    FileHeader::mut_from_bytes(&mut b[..64]).unwrap()
}
fn trailer_mut(b: &mut [u8]) -> &mut Trailer {
    let n = b.len();
    Trailer::mut_from_bytes(&mut b[n - 64..]).unwrap()
}
fn dir_header_mut(b: &mut [u8]) -> &mut DirectoryHeader {
    let at = dir_off(b);
    DirectoryHeader::mut_from_prefix(&mut b[at..]).unwrap().0
}
fn record_mut(b: &mut [u8], i: usize) -> &mut TensorRecord {
    let at = record_off(b, i);
    TensorRecord::mut_from_prefix(&mut b[at..]).unwrap().0
}
fn meta_mut(b: &mut [u8], j: usize) -> &mut MetadataRecord {
    let at = meta_off(b, j);
    MetadataRecord::mut_from_prefix(&mut b[at..]).unwrap().0
}
fn huffman_mut(b: &mut [u8]) -> &mut HuffmanHeader {
    let at = section_off(b, HUFF);
    HuffmanHeader::mut_from_prefix(&mut b[at..]).unwrap().0
}
fn huffman(b: &[u8]) -> HuffmanHeader {
    HuffmanHeader::read_from_prefix(&b[section_off(b, HUFF)..])
        .unwrap()
        .0
}
fn palette_mut(b: &mut [u8]) -> &mut Palette4Header {
    let at = section_off(b, PAL);
    Palette4Header::mut_from_prefix(&mut b[at..]).unwrap().0
}
fn palette(b: &[u8]) -> Palette4Header {
    Palette4Header::read_from_prefix(&b[section_off(b, PAL)..])
        .unwrap()
        .0
}

/// Sets the directory location in both the header and the trailer.
fn set_directory(b: &mut [u8], offset: u64, len: u64) {
    let h = header_mut(b);
    h.directory_offset = offset.into();
    h.directory_len = len.into();
    let t = trailer_mut(b);
    t.directory_offset = offset.into();
    t.directory_len = len.into();
}

/// Recomputes the directory CRC (when the directory lies in the file), the
/// trailer CRC and the header CRC, in that order.
fn reseal(b: &mut [u8]) {
    let t = trailer(b);
    let (off, len) = (t.directory_offset.get(), t.directory_len.get());
    if let Some(end) = off.checked_add(len).filter(|&e| e <= b.len() as u64) {
        let crc = crc32fast::hash(&b[off as usize..end as usize]);
        trailer_mut(b).directory_crc = crc.into();
    }
    let n = b.len();
    let crc = crc32fast::hash(&b[n - 64..n - 12]);
    trailer_mut(b).trailer_crc = crc.into();
    let crc = crc32fast::hash(&b[..60]);
    header_mut(b).header_crc = crc.into();
}

/// Recomputes tensor `i`'s data CRC when its section lies in the file.
fn reseal_data(b: &mut [u8], i: usize) {
    let r = record(b, i);
    let (off, len) = (r.data_offset.get(), r.data_len.get());
    if let Some(end) = off.checked_add(len).filter(|&e| e <= b.len() as u64) {
        let crc = crc32fast::hash(&b[off as usize..end as usize]);
        record_mut(b, i).data_crc = crc.into();
    }
}

/// An edit of a whole file.
type FileEdit = dyn Fn(&mut Vec<u8>);
/// An edit of one tensor record.
type RecordEdit = dyn Fn(&mut TensorRecord);

/// The error opening `b`; panics if it opens.
fn open_err(b: &[u8]) -> Error {
    UwFile::from_bytes(b).expect_err("a malformed file must not open")
}

/// The error decoding tensor `i` of `b`, which must open: the same error from
/// the sequential decoder and full verification, and the same condition from
/// the parallel decoder (whose first failing chunk may differ).
fn decode_err(b: &[u8], i: usize) -> Error {
    let file = UwFile::from_bytes(b).expect("the fault is one found at decode time");
    let t = file.tensor_at(i).unwrap();
    let e = t
        .decode_to_vec()
        .expect_err("a corrupt tensor must not decode");
    let v = file
        .verify(|_| {})
        .expect_err("a corrupt file must not verify");
    assert_eq!(
        format!("{e:?}"),
        format!("{v:?}"),
        "verify reports the decode error"
    );
    let mut out = vec![0u8; t.decoded_len() as usize];
    let p = decode_tensor_parallel(&t, &mut out).expect_err("parallel decode fails too");
    assert_eq!(
        p.condition(),
        e.condition(),
        "parallel: {p:?}, sequential: {e:?}"
    );
    e
}

/// The error of full verification of `b`, which must open and whose tensors
/// all decode.
fn verify_err(b: &[u8]) -> Error {
    let file = UwFile::from_bytes(b).expect("the fault is one found by verify");
    for t in file.tensors() {
        t.decode_to_vec().expect("every tensor still decodes");
    }
    file.verify(|_| {}).expect_err("verify must find the fault")
}

/// Asserts `e` is the spec condition `c` and returns it for field checks.
#[track_caller]
fn expect(e: Error, c: Condition) -> Error {
    assert_eq!(e.condition(), Some(c), "unexpected error: {e:?}");
    e
}

macro_rules! assert_err {
    ($e:expr, $pat:pat $(if $guard:expr)?) => {{
        let e = $e;
        assert!(matches!(e, $pat $(if $guard)?), "unexpected error: {e:?}");
    }};
}

/// `CorruptStream` for `tensor` whose reason contains `word`.
fn is_corrupt(e: &Error, tensor: usize, word: &str) -> bool {
    matches!(e, Error::CorruptStream { tensor: t, reason, .. } if *t == tensor && reason.contains(word))
}

/// `BadTensor` for `tensor` (record-level faults carry the tensor index).
fn is_bad_tensor(e: &Error, tensor: usize) -> bool {
    matches!(e, Error::BadTensor { tensor: t, .. } if *t == tensor)
}

// ---------------------------------------------------------------------------
// The fixture itself.

#[test]
fn fixture_is_valid_and_has_every_structure() {
    for fx in [Fixture::small(), Fixture::large()] {
        let b = &fx.bytes;
        let file = UwFile::from_bytes(b).unwrap();
        file.verify(|_| {}).unwrap();
        let encodings: Vec<Encoding> = file.tensors().map(|t| t.encoding()).collect();
        assert_eq!(
            encodings,
            [Encoding::Bf16Huffman, Encoding::Bf16Palette4, Encoding::Raw]
        );
        for (t, expected) in file.tensors().zip(&fx.decoded) {
            assert!(t.decode_to_vec().unwrap() == *expected, "{}", t.name());
        }
        assert!(common::restore_bytes(b) == fx.safetensors);
        // Preconditions of the cases below.
        let h = huffman(b);
        assert_eq!(
            h.table_count, 4,
            "four tables, so a selector can name table 3"
        );
        assert_eq!(h.palette_len, 16);
        assert_eq!(h.has_escape, 1);
        assert!(h.chunk_count.get() >= 8);
        let p = palette(b);
        assert_eq!(p.palette_len, 16);
        assert!(p.exception_count.get() >= 2);
        assert_ne!(p.palette[15], 0);
        assert_ne!(h.palette[15], 0);
        assert_eq!(dir_header(b).metadata_count.get(), 2);
        assert_eq!(file.metadata().count(), 2);
        // Padding exists where the padding cases write.
        assert!(
            section_off(b, PAL) > section_off(b, HUFF) + record(b, HUFF).data_len.get() as usize
        );
        assert!(dir_off(b) > section_off(b, RAW) + 60);
    }
}

#[test]
fn chunk_lengths_are_exactly_the_bits_of_their_codes() {
    // Recomputes each chunk's bit count from the header's code lengths and
    // selectors: each chunk must be ceil(bits / 8) bytes (the rule the
    // decode-time cases below rely on).
    for fx in [Fixture::small(), Fixture::large()] {
        let bits = chunk_bits(fx);
        let file = UwFile::from_bytes(&fx.bytes).unwrap();
        let Encoded::Huffman(v) = file.tensor_at(HUFF).unwrap().encoded().unwrap() else {
            panic!("not Huffman")
        };
        let offsets: Vec<u64> = v.chunk_offsets().map(u64::from).collect();
        for (c, &b) in bits.iter().enumerate() {
            let end = offsets
                .get(c + 1)
                .copied()
                .unwrap_or(v.exp_stream().len() as u64);
            assert_eq!(end - offsets[c], b.div_ceil(8), "chunk {c}");
        }
    }
}

/// Bits of codes (escape literals included) in each chunk of the fixture's
/// Huffman tensor, from its source values.
fn chunk_bits(fx: &Fixture) -> Vec<u64> {
    let h = huffman(&fx.bytes);
    let file = UwFile::from_bytes(&fx.bytes).unwrap();
    let Encoded::Huffman(v) = file.tensor_at(HUFF).unwrap().encoded().unwrap() else {
        panic!("not Huffman")
    };
    let sel = v.selectors();
    let p = usize::from(h.palette_len);
    let mut bits = vec![0u64; v.chunk_count()];
    for (i, w) in fx.decoded[HUFF].chunks_exact(2).enumerate() {
        let e = bf16::exponent(u16::from_le_bytes([w[0], w[1]]));
        let symbol = h.palette[..p].iter().position(|&x| x == e).unwrap_or(p);
        let bit = (i >> h.block_log2) * usize::from(h.selector_bits);
        let table = if h.selector_bits == 0 {
            0
        } else {
            usize::from(sel[bit / 8] >> (bit % 8)) & ((1 << h.selector_bits) - 1)
        };
        let len = u64::from(h.code_lengths[table][symbol]) + if symbol == p { 8 } else { 0 };
        bits[i >> h.chunk_log2] += len;
    }
    assert_eq!(fx.huffman_params.chunk_log2, h.chunk_log2);
    bits
}

#[test]
fn accepted_variations() {
    let fx = Fixture::small();
    // A streaming writer leaves the header's directory fields at 0.
    let b = fx.corrupt(|b| {
        let h = header_mut(b);
        h.directory_offset = 0.into();
        h.directory_len = 0.into();
    });
    UwFile::from_bytes(&b).unwrap().verify(|_| {}).unwrap();
    // Unknown optional features and higher minor versions are read.
    let b = fx.corrupt(|b| {
        header_mut(b).optional_features = 0xFF.into();
        header_mut(b).version_minor = 7.into();
    });
    let file = UwFile::from_bytes(&b).unwrap();
    assert_eq!(file.version(), (1, 7));
    assert_eq!(file.optional_features(), 0xFF);
    file.verify(|_| {}).unwrap();
    // Zero bytes between the directory and the trailer.
    let b = with_padding_before_trailer(&fx.bytes, &[0; 24]);
    UwFile::from_bytes(&b).unwrap().verify(|_| {}).unwrap();
}

/// `bytes` with `pad` inserted before the trailer (file_len updated).
fn with_padding_before_trailer(bytes: &[u8], pad: &[u8]) -> Vec<u8> {
    let n = bytes.len();
    let mut b = [&bytes[..n - 64], pad, &bytes[n - 64..]].concat();
    let len = b.len() as u64;
    trailer_mut(&mut b).file_len = len.into();
    reseal(&mut b);
    b
}

// ---------------------------------------------------------------------------
// File header and trailer (spec §10.2, O1-O12).

#[test]
fn bad_magic_at_front_and_end() {
    let fx = Fixture::small();
    let mut b = fx.bytes.clone();
    b[1] ^= 0x20;
    assert_err!(
        expect(open_err(&b), C::BadMagic),
        Error::BadMagic { offset: 0 }
    );
    let mut b = fx.bytes.clone();
    let n = b.len();
    b[n - 1] ^= 0x01;
    assert_err!(
        expect(open_err(&b), C::BadMagic),
        Error::BadMagic { offset } if offset == n as u64 - 8
    );
}

#[test]
fn unsupported_major_version() {
    let fx = Fixture::small();
    for major in [0u16, 2, u16::MAX] {
        let b = fx.corrupt(|b| header_mut(b).version_major = major.into());
        assert_err!(
            expect(open_err(&b), C::UnsupportedVersion),
            Error::UnsupportedVersion { major: m, minor: 0 } if m == major
        );
        // Checked before the header CRC: a future major may move it.
        let mut b = fx.bytes.clone();
        b[8..10].copy_from_slice(&major.to_le_bytes());
        expect(open_err(&b), C::UnsupportedVersion);
    }
}

#[test]
fn unknown_required_feature() {
    let fx = Fixture::small();
    for bits in [1u64, 1 << 17, 1 << 63] {
        let b = fx.corrupt(|b| header_mut(b).required_features = bits.into());
        assert_err!(
            expect(open_err(&b), C::UnsupportedFeature),
            Error::UnsupportedFeature { bits: x } if x == bits
        );
    }
}

#[test]
fn bad_header_len() {
    let b = Fixture::small().corrupt(|b| header_mut(b).header_len = 128.into());
    expect(open_err(&b), C::BadHeader);
}

#[test]
fn bad_alignment() {
    let fx = Fixture::small();
    for alignment in [0u32, 1, 32, 96, 1000, 1 << 31] {
        let b = fx.corrupt(|b| header_mut(b).alignment = alignment.into());
        assert_err!(
            expect(open_err(&b), C::BadAlignment),
            Error::BadField { field: "alignment", value, .. } if value == u64::from(alignment)
        );
    }
}

#[test]
fn header_crc_mismatch() {
    let fx = Fixture::small();
    let mut b = fx.bytes.clone();
    b[24] ^= 0x04; // optional_features: ignored by readers, so only the CRC can catch it
    let computed = crc32fast::hash(&b[..60]);
    let stored = u32::from_le_bytes(b[60..64].try_into().unwrap());
    assert_err!(
        expect(open_err(&b), C::HeaderCrc),
        Error::ChecksumMismatch { offset: 0, stored: s, computed: c, .. }
            if s == stored && c == computed
    );
}

#[test]
fn trailer_crc_mismatch() {
    let fx = Fixture::small();
    let mut b = fx.bytes.clone();
    let n = b.len();
    b[n - 64 + 40] ^= 0x80; // a reserved byte
    assert_err!(
        expect(open_err(&b), C::TrailerCrc),
        Error::ChecksumMismatch { offset, .. } if offset == n as u64 - 64
    );
}

#[test]
fn directory_crc_mismatch() {
    let fx = Fixture::small();
    let mut b = fx.bytes.clone();
    let at = heap_off(&b);
    b[at] ^= 0x01; // first byte of the first tensor name
    assert_err!(
        expect(open_err(&b), C::DirectoryCrc),
        Error::ChecksumMismatch { offset, .. } if offset == dir_off(&b) as u64
    );
}

#[test]
fn file_len_differs_from_the_trailer() {
    let fx = Fixture::small();
    let n = fx.bytes.len();
    // The trailer says the file was longer: bytes were lost.
    let b = fx.corrupt(|b| trailer_mut(b).file_len = (n as u64 + 64).into());
    expect(open_err(&b), C::Inconsistent);
    // Bytes were inserted before the trailer but file_len kept.
    let mut b = [&fx.bytes[..n - 64], &[0; 64], &fx.bytes[n - 64..]].concat();
    reseal(&mut b);
    expect(open_err(&b), C::Inconsistent);
}

#[test]
fn non_zero_reserved_fields_in_header_and_trailer() {
    let fx = Fixture::small();
    let n = fx.bytes.len() as u64;
    let cases: [(&FileEdit, u64); 4] = [
        (&|b| header_mut(b).reserved0 = 1.into(), 36),
        (&|b| header_mut(b).reserved1 = (1 << 24).into(), 59),
        (&|b| trailer_mut(b).reserved[0] = 1, n - 64 + 32),
        (&|b| trailer_mut(b).reserved[19] = 0xFF, n - 64 + 51),
    ];
    for (edit, at) in cases {
        let b = fx.corrupt(|b| edit(b));
        assert_err!(
            expect(open_err(&b), C::NonZeroReserved),
            Error::NonZeroReserved { offset, .. } if offset == at
        );
    }
}

// ---------------------------------------------------------------------------
// Directory location and header (O13-O22).

#[test]
fn header_and_trailer_disagree() {
    let fx = Fixture::small();
    let b = fx.corrupt(|b| {
        let off = header_mut(b).directory_offset.get();
        header_mut(b).directory_offset = (off + 64).into();
    });
    expect(open_err(&b), C::Inconsistent);
    let b = fx.corrupt(|b| {
        let len = header_mut(b).directory_len.get();
        header_mut(b).directory_len = (len - 1).into();
    });
    expect(open_err(&b), C::Inconsistent);
    let b = fx.corrupt(|b| trailer_mut(b).tensor_count = 2.into());
    expect(open_err(&b), C::Inconsistent);
}

#[test]
fn directory_out_of_bounds() {
    let fx = Fixture::small();
    let (off, len) = (
        dir_off(&fx.bytes) as u64,
        trailer(&fx.bytes).directory_len.get(),
    );
    let n = fx.bytes.len() as u64;
    // One byte into the trailer; entirely past the end; inside the file header.
    let into_trailer = n - 64 - off + 1;
    for (o, l) in [
        (off, into_trailer),
        (n.next_multiple_of(64) + 64, len),
        (0, len),
    ] {
        let b = fx.corrupt(|b| set_directory(b, o, l));
        assert_err!(
            expect(open_err(&b), C::OutOfBounds),
            Error::OutOfBounds { what: "directory", offset, .. } if offset == o
        );
    }
    // Too long, including lengths whose end overflows.
    for l in [limits::MAX_DIRECTORY_LEN + 1, u64::MAX - 63] {
        let b = fx.corrupt(|b| set_directory(b, off, l));
        expect(open_err(&b), C::LimitExceeded);
    }
    // Misaligned.
    let b = fx.corrupt(|b| set_directory(b, off + 8, len));
    assert_err!(
        expect(open_err(&b), C::BadAlignment),
        Error::BadField { field: "directory_offset", value, .. } if value == off + 8
    );
}

#[test]
fn directory_len_inconsistent_with_counts() {
    let fx = Fixture::small();
    for delta in [-1i64, 1] {
        let b = fx.corrupt(|b| {
            let s = dir_header_mut(b).strings_len.get();
            dir_header_mut(b).strings_len = ((s as i64 + delta) as u32).into();
        });
        expect(open_err(&b), C::BadLength);
    }
    let b = fx.corrupt(|b| dir_header_mut(b).metadata_count = 1.into());
    expect(open_err(&b), C::BadLength);
    // Shorter than a directory header (the rest of it left as zero padding).
    let b = fx.corrupt(|b| {
        let (off, len) = (dir_off(b), trailer(b).directory_len.get() as usize);
        b[off + 16..off + len].fill(0);
        set_directory(b, off as u64, 16);
    });
    expect(open_err(&b), C::BadLength);
}

#[test]
fn counts_above_limits() {
    let fx = Fixture::small();
    let b = fx.corrupt(|b| {
        dir_header_mut(b).tensor_count = (limits::MAX_TENSORS + 1).into();
        trailer_mut(b).tensor_count = (limits::MAX_TENSORS + 1).into();
    });
    assert_err!(
        expect(open_err(&b), C::LimitExceeded),
        Error::LimitExceeded { value, .. } if value == u64::from(limits::MAX_TENSORS) + 1
    );
    let b = fx.corrupt(|b| dir_header_mut(b).metadata_count = u32::MAX.into());
    assert_err!(
        expect(open_err(&b), C::LimitExceeded),
        Error::LimitExceeded { value, .. } if value == u64::from(u32::MAX)
    );
    let b = fx.corrupt(|b| dir_header_mut(b).strings_len = (limits::MAX_STRINGS_LEN + 1).into());
    expect(open_err(&b), C::LimitExceeded);
}

#[test]
fn non_zero_reserved_fields_in_the_directory() {
    let fx = Fixture::small();
    let d = dir_off(&fx.bytes) as u64;
    let r = record_off(&fx.bytes, RAW) as u64;
    let cases: [(&FileEdit, u64); 4] = [
        (&|b| dir_header_mut(b).reserved[11] = 1, d + 31),
        (&|b| record_mut(b, RAW).reserved0 = 1, r + 11),
        (&|b| record_mut(b, RAW).reserved1 = 1.into(), r + 44),
        (&|b| record_mut(b, RAW).reserved2[15] = 1, r + 127),
    ];
    for (edit, at) in cases {
        let b = fx.corrupt(|b| edit(b));
        assert_err!(
            expect(open_err(&b), C::NonZeroReserved),
            Error::NonZeroReserved { offset, .. } if offset == at
        );
    }
    // A source header offset without a source header.
    let b = fx.corrupt(|b| dir_header_mut(b).source_header_len = 0.into());
    expect(open_err(&b), C::BadSourceHeader);
}

// ---------------------------------------------------------------------------
// Strings: names, metadata, source header (O22-O25).

#[test]
fn strings_not_utf8() {
    let fx = Fixture::small();
    let heap = heap_off(&fx.bytes);
    let name = heap + record(&fx.bytes, PAL).name_offset.get() as usize;
    let key = heap + meta(&fx.bytes, 1).key_offset.get() as usize;
    let value = heap + meta(&fx.bytes, 0).value_offset.get() as usize;
    let source = heap + dir_header(&fx.bytes).source_header_offset.get() as usize;
    for (at, condition) in [
        (name, C::BadName),
        (key, C::BadMetadata),
        (value, C::BadMetadata),
        (source, C::BadSourceHeader),
    ] {
        let b = fx.corrupt(|b| b[at] = 0xFF);
        assert_err!(
            expect(open_err(&b), condition),
            Error::NotUtf8 { offset, .. } if offset == at as u64
        );
    }
}

#[test]
fn bad_tensor_names() {
    let fx = Fixture::small();
    let b = fx.corrupt(|b| record_mut(b, PAL).name_len = 0.into());
    assert!(is_bad_tensor(&expect(open_err(&b), C::BadName), PAL));
    let b = fx.corrupt(|b| record_mut(b, PAL).name_len = (limits::MAX_NAME_LEN + 1).into());
    expect(open_err(&b), C::LimitExceeded);
    let s_len = dir_header(&fx.bytes).strings_len.get();
    let b = fx.corrupt(|b| record_mut(b, PAL).name_offset = s_len.into());
    assert_err!(
        expect(open_err(&b), C::OutOfBounds),
        Error::OutOfBounds {
            what: "tensor name",
            ..
        }
    );
    // Tensor 2 renamed to tensor 0's name.
    let b = fx.corrupt(|b| {
        let first = record(b, HUFF);
        let r = record_mut(b, RAW);
        r.name_offset = first.name_offset;
        r.name_len = first.name_len;
    });
    assert_err!(
        expect(open_err(&b), C::DuplicateName),
        Error::Duplicate { ref name, .. } if name == "a.huffman"
    );
    // Named `__metadata__` (the source header's copy of those bytes).
    let heap = heap_off(&fx.bytes);
    let s_len = dir_header(&fx.bytes).strings_len.get() as usize;
    let at = fx.bytes[heap..heap + s_len]
        .windows(12)
        .position(|w| w == b"__metadata__")
        .expect("the source header has metadata");
    let b = fx.corrupt(|b| {
        let r = record_mut(b, RAW);
        r.name_offset = (at as u32).into();
        r.name_len = 12.into();
    });
    assert!(is_bad_tensor(&expect(open_err(&b), C::BadName), RAW));
}

#[test]
fn bad_metadata_keys() {
    let fx = Fixture::small();
    // Key 1 made equal to key 0.
    let b = fx.corrupt(|b| {
        let first = meta(b, 0);
        let m = meta_mut(b, 1);
        m.key_offset = first.key_offset;
        m.key_len = first.key_len;
    });
    assert_err!(
        expect(open_err(&b), C::DuplicateName),
        Error::Duplicate { ref name, .. } if name == "alpha"
    );
    // The two records swapped: keys no longer sorted.
    let b = fx.corrupt(|b| {
        let (m0, m1) = (meta(b, 0), meta(b, 1));
        *meta_mut(b, 0) = m1;
        *meta_mut(b, 1) = m0;
    });
    expect(open_err(&b), C::Unsorted);
    let s_len = dir_header(&fx.bytes).strings_len.get();
    let b = fx.corrupt(|b| meta_mut(b, 1).value_len = (s_len + 1).into());
    assert_err!(
        expect(open_err(&b), C::OutOfBounds),
        Error::OutOfBounds {
            what: "metadata value",
            ..
        }
    );
}

// ---------------------------------------------------------------------------
// Tensor records (O23).

#[test]
fn unknown_dtype_and_encoding() {
    let fx = Fixture::small();
    for code in [0u8, 23, 255] {
        let b = fx.corrupt(|b| record_mut(b, RAW).dtype = code);
        assert!(is_bad_tensor(&expect(open_err(&b), C::BadDtype), RAW));
    }
    for code in [3u8, 255] {
        let b = fx.corrupt(|b| record_mut(b, RAW).encoding = code);
        assert!(is_bad_tensor(&expect(open_err(&b), C::BadEncoding), RAW));
    }
}

#[test]
fn bf16_encodings_on_other_dtypes() {
    let fx = Fixture::small();
    // 16-bit dtypes keep decoded_len valid, so only the dtype rule fails.
    for (i, dtype) in [(HUFF, Dtype::F16), (PAL, Dtype::I16), (HUFF, Dtype::U16)] {
        let b = fx.corrupt(|b| record_mut(b, i).dtype = dtype.code());
        assert!(is_bad_tensor(&expect(open_err(&b), C::BadEncoding), i));
    }
}

#[test]
fn encoded_empty_tensor() {
    let b = Fixture::small().corrupt(|b| {
        let r = record_mut(b, HUFF);
        r.shape[0] = 0.into();
        r.decoded_len = 0.into();
    });
    assert!(is_bad_tensor(&expect(open_err(&b), C::BadEncoding), HUFF));
}

#[test]
fn bad_shapes() {
    let fx = Fixture::small();
    let mut edits: Vec<Box<RecordEdit>> = vec![
        Box::new(|r| r.rank = 9),
        Box::new(|r| r.rank = 255),
        // Dimensions past the rank must be zero.
        Box::new(|r| r.shape[2] = 1.into()),
        Box::new(|r| r.shape[7] = 1.into()),
        // 15 four-bit values are not a whole number of bytes.
        Box::new(|r| r.dtype = Dtype::F4.code()),
        // The element count overflows; the bit count overflows.
        Box::new(|r| {
            r.shape[0] = (1u64 << 32).into();
            r.shape[1] = (1u64 << 32).into();
        }),
        Box::new(|r| {
            r.shape[0] = (1u64 << 60).into();
            r.shape[1] = 1.into();
        }),
    ];
    for decoded_len in [0u64, 59, 61, 120] {
        edits.push(Box::new(move |r| r.decoded_len = decoded_len.into()));
    }
    for (k, edit) in edits.iter().enumerate() {
        let b = fx.corrupt(|b| edit(record_mut(b, RAW)));
        let e = open_err(&b);
        assert!(
            e.condition() == Some(C::BadShape) && is_bad_tensor(&e, RAW),
            "case {k}: {e:?}"
        );
    }
}

#[test]
fn bad_section_placement() {
    let fx = Fixture::small();
    let b0 = &fx.bytes;
    // Misaligned.
    let b = fx.corrupt(|b| {
        let o = record(b, PAL).data_offset.get();
        record_mut(b, PAL).data_offset = (o + 16).into();
    });
    expect(open_err(&b), C::BadAlignment);
    // Starts where the previous section starts: inside it.
    let first = record(b0, HUFF);
    let previous_end = first.data_offset.get() + first.data_len.get();
    let b = fx.corrupt(|b| record_mut(b, PAL).data_offset = first.data_offset);
    assert_err!(
        expect(open_err(&b), C::Overlap),
        Error::Overlap { tensor: PAL, offset, previous_end: p }
            if offset == first.data_offset.get() && p == previous_end
    );
    // Starts before the previous section starts: out of order.
    let b = fx.corrupt(|b| record_mut(b, RAW).data_offset = first.data_offset);
    expect(open_err(&b), C::Unsorted);
    // Inside the file header.
    let b = fx.corrupt(|b| record_mut(b, HUFF).data_offset = 0.into());
    expect(open_err(&b), C::OutOfBounds);
    // Past the directory, or overflowing.
    let d = dir_off(b0) as u64;
    for len in [d, u64::MAX] {
        let b = fx.corrupt(|b| record_mut(b, RAW).data_len = len.into());
        assert_err!(
            expect(open_err(&b), C::OutOfBounds),
            Error::OutOfBounds { what: "tensor data section", limit, .. } if limit == d
        );
    }
    // Raw data_len must equal decoded_len.
    let b = fx.corrupt(|b| record_mut(b, RAW).data_len = 56.into());
    assert!(is_bad_tensor(&expect(open_err(&b), C::BadLength), RAW));
    // A raw tensor's two CRCs are of the same bytes.
    let b = fx.corrupt(|b| {
        let r = record_mut(b, RAW);
        r.decoded_crc = (r.decoded_crc.get() ^ 1).into();
    });
    expect(open_err(&b), C::Inconsistent);
}

// ---------------------------------------------------------------------------
// bf16-huffman section header (stage S, done at open).

#[test]
fn bad_huffman_header_fields() {
    let fx = Fixture::small();
    type Edit = fn(&mut HuffmanHeader);
    let cases: [(Edit, Condition); 23] = [
        (|h| h.palette_len = 0, C::BadPalette),
        (|h| h.palette_len = 17, C::BadPalette),
        (|h| h.palette[3] = h.palette[0], C::BadPalette),
        // Fewer palette entries: the one left over must be zero.
        (|h| h.palette_len = 15, C::BadPalette),
        (|h| h.has_escape = 2, C::BadHuffmanTable),
        (|h| h.table_count = 0, C::BadHuffmanTable),
        (|h| h.table_count = 5, C::BadHuffmanTable),
        (|h| h.selector_bits = 1, C::BadHuffmanTable),
        (|h| h.block_log2 = 5, C::BadHuffmanTable),
        (|h| h.block_log2 = 17, C::BadHuffmanTable),
        (|h| h.chunk_log2 = 5, C::BadHuffmanTable),
        (|h| h.chunk_log2 = 25, C::BadHuffmanTable),
        (|h| h.max_code_len = 0, C::BadHuffmanTable),
        (|h| h.max_code_len = 13, C::BadHuffmanTable),
        // Below the longest code in use.
        (|h| h.max_code_len = 1, C::BadHuffmanTable),
        // A table past table_count must be all zero (T = 3, selectors unchanged).
        (|h| h.table_count = 3, C::BadHuffmanTable),
        // No escape symbol, but the escape's code lengths kept.
        (|h| h.has_escape = 0, C::BadHuffmanTable),
        (
            |h| h.chunk_count = (h.chunk_count.get() + 1).into(),
            C::BadLength,
        ),
        (
            |h| h.element_count = (h.element_count.get() - 1).into(),
            C::BadLength,
        ),
        (
            |h| h.exp_stream_len = (h.exp_stream_len.get() + 1).into(),
            C::BadLength,
        ),
        (|h| h.exp_stream_len = (1u64 << 32).into(), C::LimitExceeded),
        (|h| h.reserved0 = 1, C::NonZeroReserved),
        (|h| h.reserved3 = (1u64 << 56).into(), C::NonZeroReserved),
    ];
    let mut wrong = Vec::new();
    for (k, (edit, condition)) in cases.into_iter().enumerate() {
        let b = fx.corrupt_data(|b| edit(huffman_mut(b)));
        let e = open_err(&b);
        if e.condition() != Some(condition) {
            wrong.push(format!("case {k}: expected {condition:?}, got {e:?}"));
        }
        // Checked on use instead: the file opens, and the tensor's first
        // use and every decoder report the same error.
        let file = UwFile::from_bytes_checking_sections_on_use(&b).expect("stage O passes");
        let t = file.tensor_at(HUFF).unwrap();
        let same = |r: uw_format::Result<()>| format!("{:?}", r.err()) == format!("{:?}", Some(&e));
        let mut out = vec![0u8; t.decoded_len() as usize];
        if !same(t.encoded().map(drop))
            || !same(t.decode_into(&mut out))
            || !same(uw_encode::decode_tensor_parallel(&t, &mut out))
        {
            wrong.push(format!("case {k}: checked on use, not {e:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    let s = section_off(&fx.bytes, HUFF) as u64;
    for (edit, at) in [
        ((|h| h.reserved1[2] = 1) as Edit, 102),
        (|h| h.reserved2 = 1.into(), 108),
        (|h| h.reserved3 = (1u64 << 56).into(), 127),
    ] {
        let b = fx.corrupt_data(|b| edit(huffman_mut(b)));
        assert_err!(
            expect(open_err(&b), C::NonZeroReserved),
            Error::NonZeroReserved { offset, .. } if offset == s + at
        );
    }
}

#[test]
fn code_lengths_not_a_prefix_code() {
    let fx = Fixture::small();
    let k = 17; // 16 palette entries and the escape
    let mut cases: Vec<(usize, Vec<u8>)> = vec![
        (0, vec![1, 1, 1]),                // over-subscribed
        (1, vec![1, 2]),                   // incomplete
        (2, vec![2]),                      // a lone symbol must have length 1
        (3, vec![]),                       // no symbol at all
        (0, vec![1, 2, 3, 4, 5, 6, 6, 6]), // over-subscribed by one code
    ];
    // Complete except that the longest code is one bit too long.
    let mut lengths: Vec<u8> = (1..=12).collect();
    lengths.push(13);
    cases.push((1, lengths));
    for (table, lengths) in cases {
        let b = fx.corrupt_data(|b| {
            let row = &mut huffman_mut(b).code_lengths[table];
            row[..k].fill(0);
            row[..lengths.len()].copy_from_slice(&lengths);
        });
        assert_err!(
            expect(open_err(&b), C::BadHuffmanTable),
            Error::BadHuffmanTable { tensor: HUFF, table: t, .. } if t == table
        );
    }
}

// ---------------------------------------------------------------------------
// bf16-huffman streams (stage D).

/// Edits the fixture's Huffman chunk index (entries as u32) and re-seals.
fn with_chunk_index(fx: &Fixture, edit: impl FnOnce(&mut [u32], u32)) -> Vec<u8> {
    let file = UwFile::from_bytes(&fx.bytes).unwrap();
    let Encoded::Huffman(v) = file.tensor_at(HUFF).unwrap().encoded().unwrap() else {
        panic!("not Huffman")
    };
    let mut idx: Vec<u32> = v.chunk_offsets().collect();
    edit(&mut idx, v.exp_stream().len() as u32);
    let at = huffman_part(fx, |p| p.chunk_index);
    fx.corrupt_data(|b| {
        for (k, x) in idx.iter().enumerate() {
            b[at + 4 * k..at + 4 * k + 4].copy_from_slice(&x.to_le_bytes());
        }
    })
}

/// Absolute offset of a part of the fixture's Huffman section, chosen by `part`.
fn huffman_part(fx: &Fixture, part: fn(&uw_format::layout::HuffmanParts) -> u64) -> usize {
    let file = UwFile::from_bytes(&fx.bytes).unwrap();
    let t = file.tensor_at(HUFF).unwrap();
    let Encoded::Huffman(v) = t.encoded().unwrap() else {
        panic!("not Huffman")
    };
    t.data_offset() as usize + part(v.parts()) as usize
}

#[test]
fn corrupt_chunk_index() {
    for fx in [Fixture::small(), Fixture::large()] {
        let b = with_chunk_index(fx, |idx, _| idx[0] = 1);
        assert!(is_corrupt(&decode_err(&b, HUFF), HUFF, "start at 0"));
        // Chunk 2 starts before chunk 1.
        let b = with_chunk_index(fx, |idx, _| idx[2] = idx[1] - 1);
        assert!(is_corrupt(&decode_err(&b, HUFF), HUFF, "out of order"));
        // The last chunk starts past the stream.
        let b = with_chunk_index(fx, |idx, len| *idx.last_mut().unwrap() = len + 1);
        assert!(is_corrupt(&decode_err(&b, HUFF), HUFF, "past the stream"));
        let b = with_chunk_index(fx, |idx, _| *idx.last_mut().unwrap() = u32::MAX);
        assert!(is_corrupt(&decode_err(&b, HUFF), HUFF, "past the stream"));
    }
}

#[test]
fn chunk_too_short_or_too_long() {
    for fx in [Fixture::small(), Fixture::large()] {
        // Chunk 1 left with no bytes: its first code runs off its end.
        let b = with_chunk_index(fx, |idx, _| idx[2] = idx[1]);
        assert!(is_corrupt(&decode_err(&b, HUFF), HUFF, "middle of a code"));
        // Chunk 1 given one byte of chunk 2: a byte after its last code.
        let b = with_chunk_index(fx, |idx, _| idx[2] += 1);
        assert!(is_corrupt(
            &decode_err(&b, HUFF),
            HUFF,
            "after its last code"
        ));
    }
}

#[test]
fn non_zero_pad_bits_after_the_last_code() {
    for fx in [Fixture::small(), Fixture::large()] {
        let bits = chunk_bits(fx);
        let c = bits
            .iter()
            .position(|b| b % 8 != 0)
            .expect("some chunk ends inside a byte");
        // Chunk c's last byte holds bits[c] % 8 code bits; bit 7 is padding.
        let start: u64 = bits[..c].iter().map(|b| b.div_ceil(8)).sum();
        let at = huffman_part(fx, |p| p.exp_stream) + (start + bits[c] / 8) as usize;
        let b = fx.corrupt_data(|b| b[at] |= 0x80);
        assert_err!(
            expect(decode_err(&b, HUFF), C::NonZeroPadding),
            Error::NonZeroPadding { offset, .. } if offset == at as u64
        );
    }
}

#[test]
fn selector_names_a_missing_table() {
    for fx in [Fixture::small(), Fixture::large()] {
        let selectors = huffman_part(fx, |p| p.selectors);
        // Three tables keep two selector bits, so value 3 is representable.
        let b = fx.corrupt_data(|b| {
            let h = huffman_mut(b);
            h.table_count = 3;
            h.code_lengths[3] = [0; 17];
            b[selectors] |= 0b11; // block 0 -> table 3
        });
        assert_err!(
            expect(decode_err(&b, HUFF), C::CorruptStream),
            Error::CorruptStream { tensor: HUFF, offset, .. } if offset == selectors as u64
        );
    }
}

#[test]
fn non_zero_padding_inside_a_huffman_section() {
    let fx = Fixture::large();
    let n = fx.decoded[HUFF].len() / 2;
    let h = huffman(&fx.bytes);
    let blocks = n.div_ceil(1 << h.block_log2);
    let used_bits = blocks * usize::from(h.selector_bits);
    assert_ne!(used_bits % 8, 0, "the last selector byte has padding bits");
    let last_selector = huffman_part(fx, |p| p.selectors) + used_bits / 8;
    let after_sm = section_off(&fx.bytes, HUFF) + 128 + n;
    let after_selectors = last_selector + 1;
    assert!(after_sm < huffman_part(fx, |p| p.chunk_index));
    assert!(after_selectors < huffman_part(fx, |p| p.exp_stream));
    for (at, value) in [(last_selector, 0x80), (after_sm, 1), (after_selectors, 1)] {
        let b = fx.corrupt_data(|b| b[at] |= value);
        assert_err!(
            expect(decode_err(&b, HUFF), C::NonZeroPadding),
            Error::NonZeroPadding { offset, .. } if offset == at as u64
        );
    }
}

#[test]
fn data_and_decoded_crc_mismatch() {
    for fx in [Fixture::small(), Fixture::large()] {
        for i in [HUFF, PAL, RAW] {
            let s = section_off(&fx.bytes, i);
            // The first value byte and the last byte of each section.
            let last = s + record(&fx.bytes, i).data_len.get() as usize - 1;
            let first_value = match i {
                HUFF => s + 128,
                PAL => s + 64,
                _ => s,
            };
            for at in [first_value, last] {
                let b = fx.corrupt(|b| b[at] ^= 0x01);
                assert_err!(
                    expect(decode_err(&b, i), C::DataCrc),
                    Error::ChecksumMismatch { what: Checksummed::Data(t), offset, .. }
                        if t == i && offset == s as u64
                );
            }
            // Sign+mantissa bytes change the value but decode fine.
            let b = fx.corrupt_data(|b| b[first_value] ^= 0x01);
            if i == RAW {
                // A raw tensor's CRCs are of the same bytes: caught at open.
                expect(open_err(&b), C::Inconsistent);
            } else {
                assert_err!(
                    expect(decode_err(&b, i), C::DecodedCrc),
                    Error::ChecksumMismatch { what: Checksummed::Decoded(t), .. } if t == i
                );
            }
        }
    }
}

/// A file with one Huffman tensor of `n` copies of one value: a single-symbol
/// table whose only code is the 1-bit code `0`.
fn constant_huffman_file(n: usize) -> Vec<u8> {
    let raw = words_to_bytes(&vec![0x3F80; n]);
    let section = bf16_huffman::encode(&raw, &HuffmanParams::default()).unwrap();
    let mut w = ContainerWriter::new(Vec::new(), 64).unwrap();
    w.add_tensor(
        "constant",
        Dtype::BF16,
        &[n as u64],
        Encoding::Bf16Huffman,
        &section,
        raw.len() as u64,
        crc32fast::hash(&raw),
    )
    .unwrap();
    w.finish(&[], None).unwrap().0
}

#[test]
fn bits_that_start_no_code() {
    for n in [1000, 40_000] {
        let b = constant_huffman_file(n);
        let file = UwFile::from_bytes(&b).unwrap();
        file.verify(|_| {}).unwrap();
        let t = file.tensor_at(0).unwrap();
        let Encoded::Huffman(v) = t.encoded().unwrap() else {
            panic!("not Huffman")
        };
        assert_eq!(&v.header().code_lengths[0][..2], &[1, 0]);
        // Element 24's code becomes the bit 1, which is not a code.
        let at = t.data_offset() as usize + v.parts().exp_stream as usize + 3;
        let mut bad = b.clone();
        bad[at] = 0x01;
        reseal_data(&mut bad, 0);
        reseal(&mut bad);
        let e = expect(decode_err(&bad, 0), C::CorruptStream);
        assert!(is_corrupt(&e, 0, "no code"));
        // The byte of the bad code, with or without multi-symbol tables
        // (which tensors of 40,000 values get, and 1,000 do not).
        assert_err!(e, Error::CorruptStream { offset, .. } if offset == at as u64);
    }
}

#[test]
fn stream_ends_in_the_middle_of_a_code() {
    // Every code of a constant tensor is the bit 0, so a chunk one byte
    // short needs 8 bits more than it holds whatever the reader pads with.
    for n in [1000, 40_000] {
        let mut b = constant_huffman_file(n);
        let file = UwFile::from_bytes(&b).unwrap();
        let t = file.tensor_at(0).unwrap();
        let Encoded::Huffman(v) = t.encoded().unwrap() else {
            panic!("not Huffman")
        };
        let (s, parts, chunks) = (t.data_offset() as usize, *v.parts(), v.chunk_count());
        drop(file);
        if chunks > 1 {
            // Chunk 0 ends one byte early (chunk 1 starts one byte early).
            let at = s + parts.chunk_index as usize + 4;
            let x = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) - 1;
            b[at..at + 4].copy_from_slice(&x.to_le_bytes());
        } else {
            // The single chunk loses its last byte, which becomes padding.
            let len = parts.end - parts.exp_stream - 1;
            b[s + 112..s + 120].copy_from_slice(&len.to_le_bytes()); // exp_stream_len
            record_mut(&mut b, 0).data_len = (parts.end - 1).into();
        }
        reseal_data(&mut b, 0);
        reseal(&mut b);
        let e = expect(decode_err(&b, 0), C::CorruptStream);
        assert!(is_corrupt(&e, 0, "middle of a code"), "n = {n}: {e:?}");
    }
}

/// Random damage to the Huffman parts, CRCs re-sealed: never a panic, never
/// wrong bytes returned.
#[test]
fn random_stream_damage_is_detected() {
    let mut rng = Rng::new(99);
    for fx in [Fixture::small(), Fixture::large()] {
        let s = section_off(&fx.bytes, HUFF);
        let len = record(&fx.bytes, HUFF).data_len.get() as usize;
        // Past the sign+mantissa plane: the chunk index, selectors and stream.
        let first = 128 + fx.decoded[HUFF].len() / 2;
        for _ in 0..300 {
            let flips = 1 + rng.below(4);
            let b = fx.corrupt_data(|b| {
                for _ in 0..flips {
                    let at = s + first + rng.below((len - first) as u64) as usize;
                    b[at] ^= 1 << rng.below(8);
                }
            });
            let Ok(file) = UwFile::from_bytes(&b) else {
                continue;
            };
            let t = file.tensor_at(HUFF).unwrap();
            if let Ok(out) = t.decode_to_vec() {
                assert!(out == fx.decoded[HUFF], "wrong bytes returned");
            }
            let mut out = vec![0u8; t.decoded_len() as usize];
            if decode_tensor_parallel(&t, &mut out).is_ok() {
                assert!(out == fx.decoded[HUFF], "wrong bytes returned in parallel");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// bf16-palette4 sections.

#[test]
fn bad_palette4_header_fields() {
    let fx = Fixture::small();
    let s = section_off(&fx.bytes, PAL) as u64;
    type Edit = fn(&mut Palette4Header);
    let cases: [(Edit, Condition); 10] = [
        (|h| h.palette_len = 0, C::BadPalette),
        (|h| h.palette_len = 17, C::BadPalette),
        (|h| h.palette[15] = h.palette[2], C::BadPalette),
        (|h| h.palette_len = 15, C::BadPalette),
        (
            |h| h.exception_count = (PAL_N as u64 + 1).into(),
            C::BadLength,
        ),
        (|h| h.exception_count = (PAL_N as u64).into(), C::BadLength),
        (
            |h| h.exception_count = (h.exception_count.get() - 1).into(),
            C::BadLength,
        ),
        (
            |h| h.element_count = (PAL_N as u64 - 1).into(),
            C::BadLength,
        ),
        (|h| h.reserved0[6] = 1, C::NonZeroReserved),
        (|h| h.reserved1[0] = 1, C::NonZeroReserved),
    ];
    let mut wrong = Vec::new();
    for (k, (edit, condition)) in cases.into_iter().enumerate() {
        let b = fx.corrupt_data(|b| edit(palette_mut(b)));
        let e = open_err(&b);
        if e.condition() != Some(condition) {
            wrong.push(format!("case {k}: expected {condition:?}, got {e:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    for (edit, at) in [
        ((|h| h.reserved0[6] = 1) as Edit, 15),
        (|h| h.reserved1[0] = 1, 40),
    ] {
        let b = fx.corrupt_data(|b| edit(palette_mut(b)));
        assert_err!(open_err(&b), Error::NonZeroReserved { offset, .. } if offset == s + at);
    }
}

/// Absolute offsets of the fixture palette-4 parts: nibbles, exception
/// positions, and the exception count.
fn palette_parts(fx: &Fixture) -> (usize, usize, u64) {
    let file = UwFile::from_bytes(&fx.bytes).unwrap();
    let t = file.tensor_at(PAL).unwrap();
    let Encoded::Palette4(v) = t.encoded().unwrap() else {
        panic!("not palette-4")
    };
    let s = t.data_offset() as usize;
    (
        s + v.parts().nibbles as usize,
        s + v.parts().exception_positions as usize,
        v.header().exception_count.get(),
    )
}

#[test]
fn palette4_index_past_the_palette() {
    let fx = Fixture::small();
    let (nibbles, positions, _) = palette_parts(fx);
    let first_exception =
        u32::from_le_bytes(fx.bytes[positions..positions + 4].try_into().unwrap());
    assert_ne!(first_exception, 0, "element 0 is no exception");
    let b = fx.corrupt_data(|b| {
        let h = palette_mut(b);
        h.palette_len = 15;
        h.palette[15] = 0;
        b[nibbles] = (b[nibbles] & 0xF0) | 0x0F; // element 0 -> index 15
    });
    assert_err!(
        expect(decode_err(&b, PAL), C::CorruptStream),
        Error::CorruptStream { tensor: PAL, offset, .. } if offset == nibbles as u64
    );
}

#[test]
fn palette4_non_zero_padding() {
    let fx = Fixture::small();
    let (nibbles, positions, _) = palette_parts(fx);
    let s = section_off(&fx.bytes, PAL);
    // The unused high nibble of an odd count, and the gaps between parts.
    let cases = [
        (nibbles + PAL_N / 2, 0x10),
        (s + 64 + PAL_N, 1),
        (nibbles - 1, 1),
        (nibbles + PAL_N.div_ceil(2), 1),
        (positions - 1, 1),
    ];
    for (at, value) in cases {
        assert_eq!(fx.bytes[at] & value, 0);
        let b = fx.corrupt_data(|b| b[at] |= value);
        assert_err!(
            expect(decode_err(&b, PAL), C::NonZeroPadding),
            Error::NonZeroPadding { offset, .. } if offset == at as u64
        );
    }
}

#[test]
fn palette4_bad_exception_positions() {
    let fx = Fixture::small();
    let (nibbles, positions, count) = palette_parts(fx);
    let read = move |b: &[u8], k: usize| {
        u32::from_le_bytes(b[positions + 4 * k..][..4].try_into().unwrap())
    };
    let write = move |b: &mut [u8], k: usize, v: u32| {
        b[positions + 4 * k..][..4].copy_from_slice(&v.to_le_bytes())
    };
    let last = count as usize - 1;
    let cases: Vec<(Box<FileEdit>, usize)> = vec![
        // Swapped: decreasing.
        (
            Box::new(move |b| {
                let (p0, p1) = (read(b, 0), read(b, 1));
                write(b, 0, p1);
                write(b, 1, p0);
            }),
            1,
        ),
        // Repeated.
        (
            Box::new(move |b| {
                let p0 = read(b, 0);
                write(b, 1, p0);
            }),
            1,
        ),
        // Past the end.
        (Box::new(move |b| write(b, last, PAL_N as u32)), last),
        (Box::new(move |b| write(b, last, u32::MAX)), last),
    ];
    for (edit, k) in cases {
        let b = fx.corrupt_data(|b| edit(b));
        assert_err!(
            expect(decode_err(&b, PAL), C::CorruptStream),
            Error::CorruptStream { tensor: PAL, offset, .. } if offset == (positions + 4 * k) as u64
        );
    }
    // The nibble under an exception must be 0.
    let p = read(&fx.bytes, 0) as usize;
    let b = fx.corrupt_data(|b| b[nibbles + p / 2] |= 1 << (4 * (p % 2)));
    assert_err!(
        expect(decode_err(&b, PAL), C::CorruptStream),
        Error::CorruptStream { tensor: PAL, .. }
    );
}

// ---------------------------------------------------------------------------
// File padding (stage F, full verification).

#[test]
fn non_zero_file_padding_found_by_verify() {
    let fx = Fixture::small();
    let b0 = &fx.bytes;
    let huff_end = section_off(b0, HUFF) + record(b0, HUFF).data_len.get() as usize;
    let raw_end = section_off(b0, RAW) + 60;
    for at in [huff_end, raw_end] {
        assert_eq!(b0[at], 0, "{at} is padding");
        let b = fx.corrupt(|b| b[at] = 0x40);
        assert_err!(
            expect(verify_err(&b), C::NonZeroPadding),
            Error::NonZeroPadding { offset, .. } if offset == at as u64
        );
    }
    // Between the directory and the trailer.
    let n = b0.len() as u64;
    let b = with_padding_before_trailer(b0, &[0, 0, 0, 7, 0, 0, 0, 0]);
    assert_err!(
        expect(verify_err(&b), C::NonZeroPadding),
        Error::NonZeroPadding { offset, .. } if offset == n - 64 + 3
    );
}

// ---------------------------------------------------------------------------
// Exhaustive damage to the small file.

#[test]
fn every_truncation_is_rejected() {
    let b = &Fixture::small().bytes;
    for len in 0..b.len() {
        assert!(
            UwFile::from_bytes(&b[..len]).is_err(),
            "prefix of {len} bytes opened"
        );
    }
}

#[test]
fn every_single_bit_flip_is_rejected_or_harmless() {
    let fx = Fixture::small();
    let mut b = fx.bytes.clone();
    let mut accepted = 0usize;
    for at in 0..b.len() {
        for bit in 0..8 {
            b[at] ^= 1 << bit;
            let outcome = UwFile::from_bytes(&b).and_then(|file| {
                file.verify(|_| {})?;
                let decoded = file
                    .tensors()
                    .map(|t| t.decode_to_vec())
                    .collect::<Result<Vec<_>, _>>()?;
                let restored = common::restore_file(&file).expect("a verified file restores");
                Ok((decoded, restored))
            });
            if let Ok((decoded, restored)) = outcome {
                accepted += 1;
                assert!(decoded == fx.decoded, "byte {at} bit {bit}: wrong tensors");
                assert!(
                    restored == fx.safetensors,
                    "byte {at} bit {bit}: wrong file"
                );
            }
            b[at] ^= 1 << bit;
        }
    }
    println!(
        "{accepted} of {} single-bit flips accepted (all harmless)",
        8 * b.len()
    );
}
