//! Fixed-size on-disk records of `.uw` v1 (spec/uw-v1.md, "Records").
//!
//! Every record is `repr(C)` of little-endian, alignment-1 fields, so it can be
//! viewed in place in any byte slice (an mmap or a `Vec`) without copying and
//! without alignment requirements, on hosts of either endianness.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The 8-byte signature that opens every `.uw` file: `\x89UW\r\n\x1a\n\0`.
///
/// Like PNG's, it catches 7-bit channels (high bit), CR/LF conversion and
/// truncation at a DOS end-of-file byte (spec: "FileHeader").
pub const MAGIC: [u8; 8] = *b"\x89UW\r\n\x1a\n\0";
/// The 8 bytes that close every `.uw` file (spec: "Trailer").
pub const END_MAGIC: [u8; 8] = *b"\x89UWEND\r\n";
/// Major version this crate reads and writes. Another major is refused.
pub const VERSION_MAJOR: u16 = 1;
/// Minor version this crate writes. Higher minors of the same major are read.
pub const VERSION_MINOR: u16 = 0;
/// Required feature bits this reader understands (none in v1.0).
pub const KNOWN_REQUIRED_FEATURES: u64 = 0;
/// Smallest permitted section alignment.
pub const MIN_ALIGNMENT: u32 = 64;
/// Largest permitted section alignment.
pub const MAX_ALIGNMENT: u32 = 1 << 30;
/// Parts inside an encoded tensor section start at multiples of this, relative
/// to the section start.
pub const PART_ALIGN: u64 = 16;

/// Encoding code of a tensor stored as its original bytes.
pub const ENCODING_RAW: u8 = 0;
/// Encoding code of the BF16 exponent-Huffman form (distribution form).
pub const ENCODING_BF16_HUFFMAN: u8 = 1;
/// Encoding code of the BF16 palette-4 form (inference form).
pub const ENCODING_BF16_PALETTE4: u8 = 2;

/// Limits every reader enforces before allocating (spec: "Limits").
pub mod limits {
    /// Most tensors in one file.
    pub const MAX_TENSORS: u32 = 1 << 20;
    /// Most metadata entries in one file.
    pub const MAX_METADATA: u32 = 1 << 20;
    /// Largest string heap.
    pub const MAX_STRINGS_LEN: u32 = 256 << 20;
    /// Largest directory.
    pub const MAX_DIRECTORY_LEN: u64 = 1 << 30;
    /// Longest tensor name, in bytes.
    pub const MAX_NAME_LEN: u32 = 4096;
    /// Highest tensor rank.
    pub const MAX_RANK: u8 = 8;
    /// Most elements in one BF16-encoded (Huffman or palette-4) tensor.
    pub const MAX_ENCODED_ELEMENTS: u64 = u32::MAX as u64;
    /// Most exponents in a palette.
    pub const MAX_PALETTE: u8 = 16;
    /// Most Huffman tables per tensor.
    pub const MAX_TABLES: u8 = 4;
    /// Longest Huffman code, in bits.
    pub const MAX_CODE_LEN: u8 = 12;
    /// Smallest and largest block size (log2 of values per table selector).
    pub const BLOCK_LOG2: core::ops::RangeInclusive<u8> = 6..=16;
    /// Largest chunk size (log2 of values per chunk-index entry).
    pub const MAX_CHUNK_LOG2: u8 = 24;
}

/// File header, the first 64 bytes of the file.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FileHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// Major format version.
    pub version_major: U16,
    /// Minor format version.
    pub version_minor: U16,
    /// Size of this header: 64.
    pub header_len: U32,
    /// Features a reader must understand to read the file.
    pub required_features: U64,
    /// Features a reader may ignore.
    pub optional_features: U64,
    /// Alignment of every section, a power of two in 64..=2^30.
    pub alignment: U32,
    /// Zero.
    pub reserved0: U32,
    /// Directory offset, or 0 when the writer streamed (see the trailer).
    pub directory_offset: U64,
    /// Directory length, or 0 when the writer streamed.
    pub directory_len: U64,
    /// Zero.
    pub reserved1: U32,
    /// CRC-32 of bytes 0..60.
    pub header_crc: U32,
}

/// Trailer, the last 64 bytes of the file.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Trailer {
    /// Directory offset.
    pub directory_offset: U64,
    /// Directory length.
    pub directory_len: U64,
    /// CRC-32 of the directory bytes.
    pub directory_crc: U32,
    /// Number of tensors (repeats the directory's count).
    pub tensor_count: U32,
    /// Length of the whole file.
    pub file_len: U64,
    /// Zero.
    pub reserved: [u8; 20],
    /// CRC-32 of bytes 0..52 of the trailer.
    pub trailer_crc: U32,
    /// [`END_MAGIC`].
    pub end_magic: [u8; 8],
}

/// Start of the directory.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DirectoryHeader {
    /// Number of [`TensorRecord`]s.
    pub tensor_count: U32,
    /// Number of [`MetadataRecord`]s.
    pub metadata_count: U32,
    /// Length of the string heap.
    pub strings_len: U32,
    /// Offset in the heap of the verbatim source safetensors header.
    pub source_header_offset: U32,
    /// Its length; 0 when there is none.
    pub source_header_len: U32,
    /// Zero.
    pub reserved: [u8; 12],
}

/// One tensor's directory entry.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct TensorRecord {
    /// Name offset in the string heap.
    pub name_offset: U32,
    /// Name length in bytes.
    pub name_len: U32,
    /// Dtype code ([`crate::Dtype`]).
    pub dtype: u8,
    /// Encoding code (`ENCODING_*`).
    pub encoding: u8,
    /// Number of dimensions.
    pub rank: u8,
    /// Zero.
    pub reserved0: u8,
    /// CRC-32 of the decoded tensor bytes.
    pub decoded_crc: U32,
    /// Absolute offset of the data section.
    pub data_offset: U64,
    /// Length of the data section.
    pub data_len: U64,
    /// Length of the decoded tensor in bytes.
    pub decoded_len: U64,
    /// CRC-32 of the data section.
    pub data_crc: U32,
    /// Zero.
    pub reserved1: U32,
    /// Dimensions; those past `rank` are zero.
    pub shape: [U64; 8],
    /// Zero.
    pub reserved2: [u8; 16],
}

/// One entry of the metadata string map.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct MetadataRecord {
    /// Key offset in the heap.
    pub key_offset: U32,
    /// Key length.
    pub key_len: U32,
    /// Value offset in the heap.
    pub value_offset: U32,
    /// Value length.
    pub value_len: U32,
}

/// Header at the start of a bf16-huffman data section.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct HuffmanHeader {
    /// Number of BF16 values.
    pub element_count: U64,
    /// Number of palette exponents (1..=16).
    pub palette_len: u8,
    /// 1 when symbol `palette_len` is the escape symbol.
    pub has_escape: u8,
    /// Number of code tables (1..=4).
    pub table_count: u8,
    /// Bits per block selector: 0, 1 or 2.
    pub selector_bits: u8,
    /// log2 of values per block.
    pub block_log2: u8,
    /// log2 of values per chunk.
    pub chunk_log2: u8,
    /// Longest code in any table (1..=12): the decode table has 2^this entries.
    pub max_code_len: u8,
    /// Zero.
    pub reserved0: u8,
    /// Palette exponents.
    pub palette: [u8; 16],
    /// Code lengths per table and symbol.
    pub code_lengths: [[u8; 17]; 4],
    /// Zero.
    pub reserved1: [u8; 4],
    /// Number of chunks.
    pub chunk_count: U32,
    /// Zero.
    pub reserved2: U32,
    /// Length of the exponent bit stream in bytes.
    pub exp_stream_len: U64,
    /// Zero.
    pub reserved3: U64,
}

/// Header at the start of a bf16-palette4 data section.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Palette4Header {
    /// Number of BF16 values.
    pub element_count: U64,
    /// Number of palette exponents (1..=16).
    pub palette_len: u8,
    /// Zero.
    pub reserved0: [u8; 7],
    /// Palette exponents.
    pub palette: [u8; 16],
    /// Number of exceptions.
    pub exception_count: U64,
    /// Zero.
    pub reserved1: [u8; 24],
}

const _: () = {
    assert!(size_of::<FileHeader>() == 64);
    assert!(size_of::<Trailer>() == 64);
    assert!(size_of::<DirectoryHeader>() == 32);
    assert!(size_of::<TensorRecord>() == 128);
    assert!(size_of::<MetadataRecord>() == 16);
    assert!(size_of::<HuffmanHeader>() == 128);
    assert!(size_of::<Palette4Header>() == 64);
};

/// Rounds `x` up to a multiple of `align` (a power of two), or `None` on overflow.
pub fn align_up(x: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// Offsets of the parts of a bf16-huffman section, derived from its header
/// (spec: "bf16-huffman section layout").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HuffmanParts {
    /// Sign+mantissa plane: `[sm, sm + n)`.
    pub sign_mantissa: u64,
    /// Chunk index: `chunk_count` u32 entries.
    pub chunk_index: u64,
    /// Packed block selectors.
    pub selectors: u64,
    /// Length of the selector part in bytes.
    pub selectors_len: u64,
    /// Exponent bit stream.
    pub exp_stream: u64,
    /// End of the section: the required `data_len`.
    pub end: u64,
}

impl HuffmanParts {
    /// Computes the part offsets, or `None` if any of them overflows.
    pub fn compute(
        element_count: u64,
        chunk_count: u64,
        block_log2: u8,
        selector_bits: u8,
        exp_stream_len: u64,
    ) -> Option<Self> {
        let sign_mantissa = size_of::<HuffmanHeader>() as u64;
        let chunk_index = align_up(sign_mantissa.checked_add(element_count)?, PART_ALIGN)?;
        let selectors = chunk_index.checked_add(chunk_count.checked_mul(4)?)?;
        let blocks = element_count.div_ceil(1u64 << block_log2);
        let selectors_len = blocks.checked_mul(u64::from(selector_bits))?.div_ceil(8);
        let exp_stream = align_up(selectors.checked_add(selectors_len)?, PART_ALIGN)?;
        let end = exp_stream.checked_add(exp_stream_len)?;
        Some(Self {
            sign_mantissa,
            chunk_index,
            selectors,
            selectors_len,
            exp_stream,
            end,
        })
    }
}

/// Offsets of the parts of a bf16-palette4 section (spec: "bf16-palette4").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Palette4Parts {
    /// Sign+mantissa plane.
    pub sign_mantissa: u64,
    /// Nibble plane, `ceil(n/2)` bytes.
    pub nibbles: u64,
    /// Exception positions, `exception_count` u32.
    pub exception_positions: u64,
    /// Exception exponents, `exception_count` bytes.
    pub exception_exponents: u64,
    /// End of the section: the required `data_len`.
    pub end: u64,
}

impl Palette4Parts {
    /// Computes the part offsets, or `None` if any of them overflows.
    pub fn compute(element_count: u64, exception_count: u64) -> Option<Self> {
        let sign_mantissa = size_of::<Palette4Header>() as u64;
        let nibbles = align_up(sign_mantissa.checked_add(element_count)?, PART_ALIGN)?;
        let exception_positions =
            align_up(nibbles.checked_add(element_count.div_ceil(2))?, PART_ALIGN)?;
        let exception_exponents =
            exception_positions.checked_add(exception_count.checked_mul(4)?)?;
        let end = exception_exponents.checked_add(exception_count)?;
        Some(Self {
            sign_mantissa,
            nibbles,
            exception_positions,
            exception_exponents,
            end,
        })
    }
}

/// Selector width for a table count (spec: "HuffmanHeader.selector_bits").
pub fn selector_bits_for(table_count: u8) -> u8 {
    match table_count {
        0 | 1 => 0,
        2 => 1,
        _ => 2,
    }
}
