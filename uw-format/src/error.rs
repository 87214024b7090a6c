//! Typed errors: each says what is wrong and where (a file offset, a tensor).

use core::fmt;

/// The error conditions of spec §10.1, by name. Every file fault maps to
/// exactly one ([`Error::condition`]), so tests and other implementations
/// can compare verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Condition {
    Truncated,
    BadMagic,
    UnsupportedVersion,
    HeaderCrc,
    TrailerCrc,
    DirectoryCrc,
    BadHeader,
    UnsupportedFeature,
    NonZeroReserved,
    BadAlignment,
    Inconsistent,
    LimitExceeded,
    OutOfBounds,
    BadLength,
    BadName,
    DuplicateName,
    Unsorted,
    Overlap,
    BadMetadata,
    BadDtype,
    BadEncoding,
    BadShape,
    BadHuffmanTable,
    BadPalette,
    CorruptStream,
    NonZeroPadding,
    DataCrc,
    DecodedCrc,
    BadSourceHeader,
}

/// Which checksummed part of a file a CRC mismatch was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksummed {
    /// The 64-byte file header.
    Header,
    /// The 64-byte trailer.
    Trailer,
    /// The directory.
    Directory,
    /// A tensor's data section (index into the directory).
    Data(usize),
    /// A tensor's decoded bytes (index into the directory).
    Decoded(usize),
}

/// Everything that can go wrong reading a `.uw` file.
///
/// Offsets are absolute byte offsets in the file. `tensor` is the index of the
/// tensor record in the directory.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or mapped.
    Io(std::io::Error),
    /// The file is shorter than its structure requires.
    Truncated {
        /// What did not fit.
        what: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        len: u64,
    },
    /// The signature at `offset` is not the `.uw` one.
    BadMagic {
        /// Where the signature was expected.
        offset: u64,
    },
    /// A major version this reader does not know.
    UnsupportedVersion {
        /// Major version in the file.
        major: u16,
        /// Minor version in the file.
        minor: u16,
    },
    /// Required feature bits this reader does not know.
    UnsupportedFeature {
        /// The unknown bits.
        bits: u64,
    },
    /// A CRC-32 does not match.
    ChecksumMismatch {
        /// What was checked.
        what: Checksummed,
        /// Offset of the checked bytes.
        offset: u64,
        /// CRC stored in the file.
        stored: u32,
        /// CRC computed from the bytes.
        computed: u32,
    },
    /// A field has a value the format does not allow.
    BadField {
        /// Field name, as in the spec.
        field: &'static str,
        /// Offset of the field.
        offset: u64,
        /// Its value.
        value: u64,
        /// Why it is wrong.
        reason: &'static str,
    },
    /// A reserved field is not zero.
    NonZeroReserved {
        /// Which field.
        what: &'static str,
        /// Offset of the first non-zero byte.
        offset: u64,
    },
    /// A padding byte (or padding bit) is not zero.
    NonZeroPadding {
        /// Which padding.
        what: &'static str,
        /// Offset of the first non-zero byte.
        offset: u64,
    },
    /// Records that must be in increasing order are not.
    Unsorted {
        /// What is out of order.
        what: &'static str,
        /// Offset of the first record out of order.
        offset: u64,
    },
    /// A range points outside its container.
    OutOfBounds {
        /// What the range is.
        what: &'static str,
        /// Start of the range.
        offset: u64,
        /// Its length.
        len: u64,
        /// End of the container it must fit in.
        limit: u64,
    },
    /// A data section starts before the previous one ended.
    Overlap {
        /// Tensor whose section overlaps.
        tensor: usize,
        /// Its offset.
        offset: u64,
        /// Where the previous section ended.
        previous_end: u64,
    },
    /// A count or size is above the spec's limit.
    LimitExceeded {
        /// What was counted.
        what: &'static str,
        /// The value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// A name, key or value is not valid UTF-8.
    NotUtf8 {
        /// Which string.
        what: &'static str,
        /// Its offset.
        offset: u64,
    },
    /// Two tensors (or metadata keys) have the same name.
    Duplicate {
        /// "tensor name" or "metadata key".
        what: &'static str,
        /// The repeated string.
        name: String,
    },
    /// A tensor record is inconsistent (name, dtype, encoding, shape, sizes).
    BadTensor {
        /// The spec condition.
        condition: Condition,
        /// Tensor index.
        tensor: usize,
        /// Offset of the record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A Huffman code table is not a valid canonical prefix code.
    BadHuffmanTable {
        /// Tensor index.
        tensor: usize,
        /// Table index.
        table: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// An encoded stream does not decode.
    CorruptStream {
        /// Tensor index.
        tensor: usize,
        /// Offset of the fault, as near as known.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two copies of one fact disagree (header and trailer, trailer and
    /// directory, a raw tensor's two CRCs).
    Inconsistent {
        /// What disagrees.
        what: &'static str,
    },
    /// An output buffer has the wrong size (a caller error, not a file fault).
    OutputSize {
        /// Bytes required.
        expected: u64,
        /// Bytes given.
        actual: u64,
    },
    /// No tensor has this name.
    NoSuchTensor(String),
}

impl Error {
    /// The spec condition (§10.1) of a file fault; `None` for errors that
    /// are not about the file's content (I/O, a caller's buffer, a lookup).
    pub fn condition(&self) -> Option<Condition> {
        use Condition as C;
        Some(match self {
            Error::Io(_) | Error::OutputSize { .. } | Error::NoSuchTensor(_) => return None,
            Error::Truncated { .. } => C::Truncated,
            Error::BadMagic { .. } => C::BadMagic,
            Error::UnsupportedVersion { .. } => C::UnsupportedVersion,
            Error::UnsupportedFeature { .. } => C::UnsupportedFeature,
            Error::ChecksumMismatch { what, .. } => match what {
                Checksummed::Header => C::HeaderCrc,
                Checksummed::Trailer => C::TrailerCrc,
                Checksummed::Directory => C::DirectoryCrc,
                Checksummed::Data(_) => C::DataCrc,
                Checksummed::Decoded(_) => C::DecodedCrc,
            },
            Error::BadField { field, .. } => match *field {
                "header_len" => C::BadHeader,
                "alignment" | "directory_offset" | "data_offset" => C::BadAlignment,
                "palette_len" | "palette" => C::BadPalette,
                "has_escape" | "table_count" | "selector_bits" | "block_log2" | "chunk_log2"
                | "max_code_len" => C::BadHuffmanTable,
                "source_header_offset" => C::BadSourceHeader,
                _ => C::BadLength,
            },
            Error::NonZeroReserved { .. } => C::NonZeroReserved,
            Error::NonZeroPadding { .. } => C::NonZeroPadding,
            Error::Unsorted { .. } => C::Unsorted,
            Error::OutOfBounds { .. } => C::OutOfBounds,
            Error::Overlap { .. } => C::Overlap,
            Error::LimitExceeded { .. } => C::LimitExceeded,
            Error::NotUtf8 { what, .. } => match *what {
                "tensor name" => C::BadName,
                "source header" => C::BadSourceHeader,
                _ => C::BadMetadata,
            },
            Error::Duplicate { .. } => C::DuplicateName,
            Error::BadTensor { condition, .. } => *condition,
            Error::BadHuffmanTable { .. } => C::BadHuffmanTable,
            Error::CorruptStream { .. } => C::CorruptStream,
            Error::Inconsistent { .. } => C::Inconsistent,
        })
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl fmt::Display for Checksummed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checksummed::Header => write!(f, "file header"),
            Checksummed::Trailer => write!(f, "trailer"),
            Checksummed::Directory => write!(f, "directory"),
            Checksummed::Data(t) => write!(f, "data section of tensor {t}"),
            Checksummed::Decoded(t) => write!(f, "decoded bytes of tensor {t}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Error::*;
        match self {
            Io(e) => write!(f, "I/O error: {e}"),
            Truncated { what, needed, len } => {
                write!(
                    f,
                    "truncated file: {what} needs {needed} bytes, file has {len}"
                )
            }
            BadMagic { offset: 0 } => write!(f, "not a .uw file: bad signature at offset 0"),
            // The end signature is missing: most often the file was cut short.
            BadMagic { offset } => write!(
                f,
                "no .uw end signature at offset {offset}: the file is truncated, or not a .uw file"
            ),
            UnsupportedVersion { major, minor } => write!(
                f,
                "unsupported .uw version {major}.{minor} (this reader reads major version 1)"
            ),
            UnsupportedFeature { bits } => {
                write!(f, "file requires unknown features (bits {bits:#x})")
            }
            ChecksumMismatch {
                what,
                offset,
                stored,
                computed,
            } => write!(
                f,
                "CRC-32 mismatch in {what} at offset {offset}: stored {stored:#010x}, computed {computed:#010x}"
            ),
            BadField {
                field,
                offset,
                value,
                reason,
            } => {
                write!(f, "invalid {field} = {value} at offset {offset}: {reason}")
            }
            NonZeroReserved { what, offset } | NonZeroPadding { what, offset } => {
                write!(f, "non-zero {what} at offset {offset}")
            }
            Unsorted { what, offset } => write!(f, "{what} out of order at offset {offset}"),
            OutOfBounds {
                what,
                offset,
                len,
                limit,
            } => write!(
                f,
                "{what} [{offset}, +{len}) extends past its limit {limit}"
            ),
            Overlap {
                tensor,
                offset,
                previous_end,
            } => write!(
                f,
                "data section of tensor {tensor} at {offset} starts before the previous one ends ({previous_end})"
            ),
            LimitExceeded { what, value, limit } => {
                write!(f, "{what} is {value}, above the limit of {limit}")
            }
            NotUtf8 { what, offset } => write!(f, "{what} at offset {offset} is not UTF-8"),
            Duplicate { what, name } => write!(f, "duplicate {what} {name:?}"),
            BadTensor {
                tensor,
                offset,
                reason,
                ..
            } => {
                write!(f, "tensor {tensor} (record at {offset}): {reason}")
            }
            BadHuffmanTable {
                tensor,
                table,
                reason,
            } => {
                write!(f, "tensor {tensor}: Huffman table {table}: {reason}")
            }
            CorruptStream {
                tensor,
                offset,
                reason,
            } => {
                write!(
                    f,
                    "tensor {tensor}: corrupt stream near offset {offset}: {reason}"
                )
            }
            Inconsistent { what } => write!(f, "inconsistent file: {what}"),
            OutputSize { expected, actual } => {
                write!(
                    f,
                    "output buffer holds {actual} bytes, tensor decodes to {expected}"
                )
            }
            NoSuchTensor(name) => write!(f, "no tensor named {name:?}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
