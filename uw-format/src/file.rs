//! Opening and validating a `.uw` file (spec: "Validation algorithm").

use std::borrow::Cow;
use std::path::Path;

use zerocopy::{FromBytes, IntoBytes};

use crate::decode::{HuffmanView, Palette4View};
use crate::dtype::Dtype;
use crate::error::{Checksummed, Error, Result};
use crate::layout::*;

/// The bytes behind a [`UwFile`]: a read-only map of a file or a borrowed slice.
enum Bytes<'a> {
    Mapped(memmap2::Mmap),
    Borrowed(&'a [u8]),
}

impl Bytes<'_> {
    fn get(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Borrowed(b) => b,
        }
    }
}

/// How a tensor's data section is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// The original bytes.
    Raw,
    /// BF16 exponent-Huffman (distribution form).
    Bf16Huffman,
    /// BF16 4-bit palette with exceptions (inference form).
    Bf16Palette4,
}

impl Encoding {
    /// The on-disk code.
    pub fn code(self) -> u8 {
        match self {
            Encoding::Raw => ENCODING_RAW,
            Encoding::Bf16Huffman => ENCODING_BF16_HUFFMAN,
            Encoding::Bf16Palette4 => ENCODING_BF16_PALETTE4,
        }
    }
    /// The encoding with this code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            ENCODING_RAW => Some(Encoding::Raw),
            ENCODING_BF16_HUFFMAN => Some(Encoding::Bf16Huffman),
            ENCODING_BF16_PALETTE4 => Some(Encoding::Bf16Palette4),
            _ => None,
        }
    }
    /// Short name: `raw`, `huffman`, `palette4`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Bf16Huffman => "huffman",
            Encoding::Bf16Palette4 => "palette4",
        }
    }
}

/// What open-time validation learned about one tensor.
#[derive(Debug, Clone)]
struct TensorInfo {
    name: (usize, usize),
    dtype: Dtype,
    encoding: Encoding,
    rank: usize,
    shape: [u64; 8],
    data_offset: u64,
    data_len: u64,
    decoded_len: u64,
    data_crc: u32,
    decoded_crc: u32,
}

/// An opened, validated `.uw` file.
///
/// Opening checks every structural bound in O(number of tensors) time
/// (spec: "Validation algorithm", steps 1-9) before allocating anything sized
/// by the file; section CRCs and stream contents are checked on decode and by
/// [`UwFile::verify`].
pub struct UwFile<'a> {
    bytes: Bytes<'a>,
    version: (u16, u16),
    alignment: u32,
    optional_features: u64,
    directory: (usize, usize),
    source_header: Option<(usize, usize)>,
    metadata: Vec<((usize, usize), (usize, usize))>,
    tensors: Vec<TensorInfo>,
    by_name: Vec<u32>,
}

impl std::fmt::Debug for UwFile<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UwFile")
            .field("len", &self.bytes.get().len())
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn nonzero(bytes: &[u8], what: &'static str, offset: u64) -> Result<()> {
    match bytes.iter().position(|&b| b != 0) {
        Some(i) => Err(Error::NonZeroReserved {
            what,
            offset: offset + i as u64,
        }),
        None => Ok(()),
    }
}

fn zero_padding(bytes: &[u8], what: &'static str, offset: u64) -> Result<()> {
    match bytes.iter().position(|&b| b != 0) {
        Some(i) => Err(Error::NonZeroPadding {
            what,
            offset: offset + i as u64,
        }),
        None => Ok(()),
    }
}

/// Checks `[offset, offset+len)` lies inside `[0, limit)` and returns it as usizes.
fn range(what: &'static str, offset: u64, len: u64, limit: u64) -> Result<(usize, usize)> {
    match offset.checked_add(len) {
        Some(end) if end <= limit => Ok((offset as usize, end as usize)),
        _ => Err(Error::OutOfBounds {
            what,
            offset,
            len,
            limit,
        }),
    }
}

impl UwFile<'static> {
    /// Maps the file at `path` read-only and validates it.
    ///
    /// The map is the crate's only `unsafe` code: a mapped file changed by
    /// another process while mapped is undefined behaviour in Rust's model
    /// (as with every mmap-based reader); open only files nobody rewrites in place.
    #[allow(unsafe_code)]
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let file = std::fs::File::open(path)?;
        // SAFETY: the map is read-only and private to this process; see above.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Self::parse(Bytes::Mapped(map), Sections::AtOpen)
    }
}

/// When stage S (spec §10.3, the section headers) runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sections {
    /// At open, for every encoded tensor.
    AtOpen,
    /// When a tensor's section is first used ([`Tensor::encoded`]).
    OnUse,
}

impl<'a> UwFile<'a> {
    /// Validates `bytes` as a `.uw` file without copying it.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self> {
        Self::parse(Bytes::Borrowed(bytes), Sections::AtOpen)
    }

    /// [`Self::from_bytes`] without stage S (spec §10.3) at open: each
    /// section header is checked when the tensor is first used instead
    /// ([`Tensor::encoded`], which every decoder calls first), as the spec
    /// allows. For a caller that reads a large mapped file section after
    /// section and gives the pages it has used back: checking every section
    /// at open touches a page of each, and the kernel maps its neighbours
    /// too (on a 4 GB model of 9,785 tensors, over 500 MB resident before
    /// the first decode).
    pub fn from_bytes_checking_sections_on_use(bytes: &'a [u8]) -> Result<Self> {
        Self::parse(Bytes::Borrowed(bytes), Sections::OnUse)
    }

    /// Stage O of spec §10.2, steps O1-O25 in order (the first failing step
    /// names the error), then, with [`Sections::AtOpen`], stage S (§10.3)
    /// for every encoded tensor.
    fn parse(bytes: Bytes<'a>, sections: Sections) -> Result<Self> {
        use crate::error::Condition as C;
        let data = bytes.get();
        let len = data.len() as u64;
        // O1
        if len < 128 {
            return Err(Error::Truncated {
                what: "header and trailer",
                needed: 128,
                len,
            });
        }
        let header = FileHeader::read_from_bytes(&data[..64]).expect("64 bytes");
        // O2
        if header.magic != MAGIC {
            return Err(Error::BadMagic { offset: 0 });
        }
        // O3: before the CRC, so a future major reads as "unsupported", not "corrupt".
        let (major, minor) = (header.version_major.get(), header.version_minor.get());
        if major != VERSION_MAJOR {
            return Err(Error::UnsupportedVersion { major, minor });
        }
        // O4
        let computed = crc(&data[..60]);
        if computed != header.header_crc.get() {
            return Err(Error::ChecksumMismatch {
                what: Checksummed::Header,
                offset: 0,
                stored: header.header_crc.get(),
                computed,
            });
        }
        // O5
        if header.header_len.get() != 64 {
            return Err(Error::BadField {
                field: "header_len",
                offset: 12,
                value: header.header_len.get().into(),
                reason: "must be 64",
            });
        }
        // O6
        let unknown = header.required_features.get() & !KNOWN_REQUIRED_FEATURES;
        if unknown != 0 {
            return Err(Error::UnsupportedFeature { bits: unknown });
        }
        // O7
        nonzero(header.reserved0.as_bytes(), "header reserved0", 36)?;
        nonzero(header.reserved1.as_bytes(), "header reserved1", 56)?;
        // O8
        let alignment = header.alignment.get();
        if !alignment.is_power_of_two() || !(MIN_ALIGNMENT..=MAX_ALIGNMENT).contains(&alignment) {
            return Err(Error::BadField {
                field: "alignment",
                offset: 32,
                value: alignment.into(),
                reason: "must be a power of two in 64..=2^30",
            });
        }

        let t_off = len - 64;
        let trailer = Trailer::read_from_bytes(&data[t_off as usize..]).expect("64 bytes");
        // O9
        if trailer.end_magic != END_MAGIC {
            return Err(Error::BadMagic { offset: t_off + 56 });
        }
        // O10
        let computed = crc(&data[t_off as usize..t_off as usize + 52]);
        if computed != trailer.trailer_crc.get() {
            return Err(Error::ChecksumMismatch {
                what: Checksummed::Trailer,
                offset: t_off,
                stored: trailer.trailer_crc.get(),
                computed,
            });
        }
        // O11
        nonzero(&trailer.reserved, "trailer reserved", t_off + 32)?;
        // O12
        if trailer.file_len.get() != len {
            return Err(Error::Inconsistent {
                what: "trailer file_len differs from the file length",
            });
        }
        // O13
        let (dir_off, dir_len) = (trailer.directory_offset.get(), trailer.directory_len.get());
        let (h_off, h_len) = (header.directory_offset.get(), header.directory_len.get());
        if (h_off, h_len) != (0, 0) && (h_off, h_len) != (dir_off, dir_len) {
            return Err(Error::Inconsistent {
                what: "header and trailer give different directory locations",
            });
        }
        // O14
        if dir_len < 32 {
            return Err(Error::BadField {
                field: "directory_len",
                offset: t_off + 8,
                value: dir_len,
                reason: "shorter than the directory header",
            });
        }
        if dir_len > limits::MAX_DIRECTORY_LEN {
            return Err(Error::LimitExceeded {
                what: "directory length",
                value: dir_len,
                limit: limits::MAX_DIRECTORY_LEN,
            });
        }
        // O15
        if dir_off % u64::from(alignment) != 0 {
            return Err(Error::BadField {
                field: "directory_offset",
                offset: t_off,
                value: dir_off,
                reason: "not a multiple of the alignment",
            });
        }
        // O16
        if dir_off < 64 {
            return Err(Error::OutOfBounds {
                what: "directory",
                offset: dir_off,
                len: dir_len,
                limit: t_off,
            });
        }
        let directory = range("directory", dir_off, dir_len, t_off)?;
        // O17
        let dir = &data[directory.0..directory.1];
        let computed = crc(dir);
        if computed != trailer.directory_crc.get() {
            return Err(Error::ChecksumMismatch {
                what: Checksummed::Directory,
                offset: dir_off,
                stored: trailer.directory_crc.get(),
                computed,
            });
        }
        let dh = DirectoryHeader::read_from_bytes(&dir[..32]).expect("32 bytes");
        // O18
        nonzero(&dh.reserved, "directory header reserved", dir_off + 20)?;
        // O19
        let (t_count, m_count, s_len) = (
            dh.tensor_count.get(),
            dh.metadata_count.get(),
            dh.strings_len.get(),
        );
        for (what, value, limit) in [
            ("tensor count", t_count, limits::MAX_TENSORS),
            ("metadata count", m_count, limits::MAX_METADATA),
            ("string heap length", s_len, limits::MAX_STRINGS_LEN),
        ] {
            if value > limit {
                return Err(Error::LimitExceeded {
                    what,
                    value: value.into(),
                    limit: limit.into(),
                });
            }
        }
        // O20 (the counts are bounded, so this arithmetic cannot overflow)
        let meta_off = 32 + 128 * u64::from(t_count);
        let strings_off = meta_off + 16 * u64::from(m_count);
        if strings_off + u64::from(s_len) != dir_len {
            return Err(Error::BadField {
                field: "directory_len",
                offset: t_off + 8,
                value: dir_len,
                reason: "does not equal 32 + 128*tensors + 16*metadata + strings",
            });
        }
        // O21
        if t_count != trailer.tensor_count.get() {
            return Err(Error::Inconsistent {
                what: "trailer and directory give different tensor counts",
            });
        }
        let strings = directory.0 + strings_off as usize;
        let heap = &dir[strings_off as usize..];
        let heap_range = |what: &'static str, off: u32, len: u32| -> Result<(usize, usize)> {
            let (a, b) = range(what, off.into(), len.into(), s_len.into())?;
            Ok((strings + a, strings + b))
        };
        let utf8 = |what: &'static str, r: (usize, usize)| -> Result<()> {
            std::str::from_utf8(&data[r.0..r.1])
                .map(drop)
                .map_err(|_| Error::NotUtf8 {
                    what,
                    offset: r.0 as u64,
                })
        };
        // O22
        let source_header = match (dh.source_header_offset.get(), dh.source_header_len.get()) {
            (0, 0) => None,
            (off, 0) => {
                return Err(Error::BadField {
                    field: "source_header_offset",
                    offset: dir_off + 12,
                    value: off.into(),
                    reason: "must be 0 when there is no source header",
                });
            }
            (off, l) => {
                let r = heap_range("source header", off, l)?;
                utf8("source header", r)?;
                Some(r)
            }
        };
        let _ = heap;

        // O23: tensor records, in order.
        let records =
            <[TensorRecord]>::ref_from_bytes(&dir[32..meta_off as usize]).expect("multiple of 128");
        let mut tensors = Vec::with_capacity(records.len());
        let mut previous: Option<(u64, u64)> = None;
        for (i, r) in records.iter().enumerate() {
            let rec_off = dir_off + 32 + 128 * i as u64;
            let bad = |condition: C, reason: String| Error::BadTensor {
                condition,
                tensor: i,
                offset: rec_off,
                reason,
            };
            // O23a
            nonzero(&[r.reserved0], "tensor record reserved0", rec_off + 11)?;
            nonzero(
                r.reserved1.as_bytes(),
                "tensor record reserved1",
                rec_off + 44,
            )?;
            nonzero(&r.reserved2, "tensor record reserved2", rec_off + 112)?;
            // O23b
            let name_len = r.name_len.get();
            if name_len == 0 {
                return Err(bad(C::BadName, "empty name".into()));
            }
            if name_len > limits::MAX_NAME_LEN {
                return Err(Error::LimitExceeded {
                    what: "tensor name length",
                    value: name_len.into(),
                    limit: limits::MAX_NAME_LEN.into(),
                });
            }
            let name = heap_range("tensor name", r.name_offset.get(), name_len)?;
            utf8("tensor name", name)?;
            if &data[name.0..name.1] == b"__metadata__" {
                return Err(bad(
                    C::BadName,
                    "the name __metadata__ is reserved by safetensors".into(),
                ));
            }
            // O23c
            let dtype = Dtype::from_code(r.dtype)
                .ok_or_else(|| bad(C::BadDtype, format!("unknown dtype code {}", r.dtype)))?;
            // O23d
            let encoding = Encoding::from_code(r.encoding).ok_or_else(|| {
                bad(
                    C::BadEncoding,
                    format!("unknown encoding code {}", r.encoding),
                )
            })?;
            if encoding != Encoding::Raw && dtype != Dtype::BF16 {
                return Err(bad(
                    C::BadEncoding,
                    format!("encoding {} needs dtype BF16, not {dtype}", encoding.name()),
                ));
            }
            // O23e
            if r.rank > limits::MAX_RANK {
                return Err(bad(C::BadShape, format!("rank {} is above 8", r.rank)));
            }
            let rank = usize::from(r.rank);
            let mut shape = [0u64; 8];
            let mut elements = 1u64;
            for (d, dim) in r.shape.iter().enumerate() {
                shape[d] = dim.get();
                if d >= rank {
                    if shape[d] != 0 {
                        return Err(bad(
                            C::BadShape,
                            format!("dimension {d} past the rank is not zero"),
                        ));
                    }
                } else {
                    elements = elements
                        .checked_mul(shape[d])
                        .ok_or_else(|| bad(C::BadShape, "element count overflows".into()))?;
                }
            }
            let bits = elements
                .checked_mul(dtype.bits())
                .ok_or_else(|| bad(C::BadShape, "bit size overflows".into()))?;
            if bits % 8 != 0 || bits / 8 != r.decoded_len.get() {
                return Err(bad(
                    C::BadShape,
                    format!(
                        "decoded_len {} does not match shape and dtype ({bits} bits)",
                        r.decoded_len.get()
                    ),
                ));
            }
            // O23f
            let (data_offset, data_len) = (r.data_offset.get(), r.data_len.get());
            if data_offset % u64::from(alignment) != 0 {
                return Err(Error::BadField {
                    field: "data_offset",
                    offset: rec_off + 16,
                    value: data_offset,
                    reason: "not a multiple of the alignment",
                });
            }
            if data_offset < 64 {
                return Err(Error::OutOfBounds {
                    what: "tensor data section",
                    offset: data_offset,
                    len: data_len,
                    limit: dir_off,
                });
            }
            range("tensor data section", data_offset, data_len, dir_off)?;
            // O23g
            if let Some((prev_off, prev_end)) = previous {
                if data_offset < prev_off {
                    return Err(Error::Unsorted {
                        what: "data section",
                        offset: rec_off + 16,
                    });
                }
                if data_offset < prev_end {
                    return Err(Error::Overlap {
                        tensor: i,
                        offset: data_offset,
                        previous_end: prev_end,
                    });
                }
            }
            previous = Some((data_offset, data_offset + data_len));
            // O23h
            let (data_crc, decoded_crc) = (r.data_crc.get(), r.decoded_crc.get());
            match encoding {
                Encoding::Raw => {
                    if data_len != r.decoded_len.get() {
                        return Err(bad(
                            C::BadLength,
                            format!("raw data_len {data_len} differs from decoded_len"),
                        ));
                    }
                    if data_crc != decoded_crc {
                        return Err(Error::Inconsistent {
                            what: "a raw tensor's data_crc and decoded_crc differ",
                        });
                    }
                }
                Encoding::Bf16Huffman | Encoding::Bf16Palette4 => {
                    if elements == 0 {
                        return Err(bad(
                            C::BadEncoding,
                            "an empty tensor must be stored raw".into(),
                        ));
                    }
                    if elements > limits::MAX_ENCODED_ELEMENTS {
                        return Err(Error::LimitExceeded {
                            what: "elements in an encoded tensor",
                            value: elements,
                            limit: limits::MAX_ENCODED_ELEMENTS,
                        });
                    }
                    let header_len = if encoding == Encoding::Bf16Huffman {
                        128
                    } else {
                        64
                    };
                    if data_len < header_len + elements {
                        return Err(bad(
                            C::BadLength,
                            format!("data_len {data_len} too short for {elements} values"),
                        ));
                    }
                }
            }
            tensors.push(TensorInfo {
                name,
                dtype,
                encoding,
                rank,
                shape,
                data_offset,
                data_len,
                decoded_len: r.decoded_len.get(),
                data_crc,
                decoded_crc,
            });
        }

        // O24: names unique.
        let mut by_name: Vec<u32> = (0..t_count).collect();
        let name_of = |t: &TensorInfo| &data[t.name.0..t.name.1];
        by_name.sort_unstable_by(|&a, &b| {
            name_of(&tensors[a as usize]).cmp(name_of(&tensors[b as usize]))
        });
        for w in by_name.windows(2) {
            let (a, b) = (&tensors[w[0] as usize], &tensors[w[1] as usize]);
            if name_of(a) == name_of(b) {
                return Err(Error::Duplicate {
                    what: "tensor name",
                    name: String::from_utf8_lossy(name_of(a)).into_owned(),
                });
            }
        }

        // O25: metadata.
        let records =
            <[MetadataRecord]>::ref_from_bytes(&dir[meta_off as usize..strings_off as usize])
                .expect("multiple of 16");
        let mut metadata: Vec<((usize, usize), (usize, usize))> = Vec::with_capacity(records.len());
        for (j, r) in records.iter().enumerate() {
            let key = heap_range("metadata key", r.key_offset.get(), r.key_len.get())?;
            let value = heap_range("metadata value", r.value_offset.get(), r.value_len.get())?;
            utf8("metadata key", key)?;
            utf8("metadata value", value)?;
            if let Some(&(prev, _)) = metadata.last() {
                let (pk, k) = (&data[prev.0..prev.1], &data[key.0..key.1]);
                if pk == k {
                    return Err(Error::Duplicate {
                        what: "metadata key",
                        name: String::from_utf8_lossy(k).into_owned(),
                    });
                }
                if pk > k {
                    return Err(Error::Unsorted {
                        what: "metadata key",
                        offset: meta_off + dir_off + 16 * j as u64,
                    });
                }
            }
            metadata.push((key, value));
        }

        // Stage S, done at open (§10.3 allows it): section headers, O(1) each.
        let at_open = if sections == Sections::AtOpen {
            &tensors[..]
        } else {
            &[]
        };
        for (i, t) in at_open.iter().enumerate() {
            let section = &data[t.data_offset as usize..(t.data_offset + t.data_len) as usize];
            let n: u64 = t.shape[..t.rank].iter().product();
            match t.encoding {
                Encoding::Raw => {}
                Encoding::Bf16Huffman => {
                    HuffmanView::parse(i, section, t.data_offset, n)?;
                }
                Encoding::Bf16Palette4 => {
                    Palette4View::parse(i, section, t.data_offset, n)?;
                }
            }
        }

        Ok(UwFile {
            version: (major, minor),
            alignment,
            optional_features: header.optional_features.get(),
            directory,
            source_header,
            metadata,
            tensors,
            by_name,
            bytes,
        })
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get()
    }
    /// `(major, minor)` format version.
    pub fn version(&self) -> (u16, u16) {
        self.version
    }
    /// Section alignment in bytes.
    pub fn alignment(&self) -> u32 {
        self.alignment
    }
    /// Optional feature bits (all ignored by this reader).
    pub fn optional_features(&self) -> u64 {
        self.optional_features
    }
    /// The directory's byte range.
    pub fn directory_range(&self) -> core::ops::Range<usize> {
        self.directory.0..self.directory.1
    }
    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    /// True when the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    fn str_at(&self, r: (usize, usize)) -> &str {
        // Checked to be UTF-8 at open.
        std::str::from_utf8(&self.bytes.get()[r.0..r.1]).unwrap_or_default()
    }

    /// The metadata string map (safetensors `__metadata__`), sorted by key.
    pub fn metadata(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.metadata
            .iter()
            .map(|&(k, v)| (self.str_at(k), self.str_at(v)))
    }

    /// The verbatim JSON header of the source safetensors file, if stored.
    pub fn source_header(&self) -> Option<&str> {
        self.source_header.map(|r| self.str_at(r))
    }

    /// Tensor number `index` in directory order.
    pub fn tensor_at(&self, index: usize) -> Option<Tensor<'_>> {
        self.tensors.get(index).map(|info| Tensor {
            file: self,
            index,
            info,
        })
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Result<Tensor<'_>> {
        let data = self.bytes.get();
        self.by_name
            .binary_search_by(|&i| {
                let t = &self.tensors[i as usize];
                data[t.name.0..t.name.1].cmp(name.as_bytes())
            })
            .map(|k| {
                self.tensor_at(self.by_name[k] as usize)
                    .expect("index from by_name")
            })
            .map_err(|_| Error::NoSuchTensor(name.to_owned()))
    }

    /// All tensors in directory order (the order of the source file's data).
    pub fn tensors(&self) -> impl ExactSizeIterator<Item = Tensor<'_>> + '_ {
        (0..self.tensors.len()).map(|i| self.tensor_at(i).expect("in range"))
    }

    /// The safetensors JSON header to rebuild the source file: the stored one,
    /// or (for files converted from elsewhere) a canonical one.
    pub fn safetensors_header(&self) -> Cow<'_, str> {
        if let Some(h) = self.source_header() {
            return Cow::Borrowed(h);
        }
        let mut json = String::from("{");
        if !self.metadata.is_empty() {
            json.push_str("\"__metadata__\":{");
            for (i, (k, v)) in self.metadata().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                push_json_str(&mut json, k);
                json.push(':');
                push_json_str(&mut json, v);
            }
            json.push('}');
        }
        let mut offset = 0u64;
        for (i, t) in self.tensors().enumerate() {
            if i > 0 || !self.metadata.is_empty() {
                json.push(',');
            }
            push_json_str(&mut json, t.name());
            let shape: Vec<String> = t.shape().iter().map(u64::to_string).collect();
            json.push_str(&format!(
                ":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                t.dtype(),
                shape.join(","),
                offset,
                offset + t.decoded_len()
            ));
            offset += t.decoded_len();
        }
        json.push('}');
        // safetensors pads the header with spaces to a multiple of 8.
        while json.len() % 8 != 0 {
            json.push(' ');
        }
        Cow::Owned(json)
    }

    /// Step F1 (spec §10.5): every padding byte of the file is zero: before
    /// the first section, between sections, before the directory and before
    /// the trailer. Padding inside sections is checked at decode (D3-D5).
    pub fn check_padding(&self) -> Result<()> {
        let data = self.bytes.get();
        let mut prev = 64usize;
        for t in self.tensors() {
            let start = t.info.data_offset as usize;
            zero_padding(&data[prev..start], "padding between sections", prev as u64)?;
            prev = start + t.info.data_len as usize;
        }
        zero_padding(
            &data[prev..self.directory.0],
            "padding before the directory",
            prev as u64,
        )?;
        let trailer = data.len() - 64;
        zero_padding(
            &data[self.directory.1..trailer],
            "padding before the trailer",
            self.directory.1 as u64,
        )
    }

    /// Full verification (spec: "Full verification"): zero padding, every
    /// data CRC, and every tensor decoded and checked against its decoded
    /// CRC. Calls `progress(bytes_decoded)` after each tensor.
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> Result<()> {
        self.check_padding()?;
        for t in self.tensors() {
            t.check_data_crc()?;
            t.decode_to_vec()?;
            progress(t.decoded_len());
        }
        Ok(())
    }
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A tensor of an open [`UwFile`].
#[derive(Clone, Copy)]
pub struct Tensor<'f> {
    file: &'f UwFile<'f>,
    index: usize,
    info: &'f TensorInfo,
}

impl std::fmt::Debug for Tensor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("name", &self.name())
            .field("dtype", &self.dtype())
            .field("shape", &self.shape())
            .field("encoding", &self.encoding())
            .finish()
    }
}

/// A tensor's data section, parsed according to its encoding.
#[derive(Debug, Clone, Copy)]
pub enum Encoded<'f> {
    /// The original bytes.
    Raw(&'f [u8]),
    /// The bf16-huffman form.
    Huffman(HuffmanView<'f>),
    /// The bf16-palette4 form.
    Palette4(Palette4View<'f>),
}

impl<'f> Tensor<'f> {
    /// Position in the directory.
    pub fn index(&self) -> usize {
        self.index
    }
    /// Name.
    pub fn name(&self) -> &'f str {
        self.file.str_at(self.info.name)
    }
    /// Element type.
    pub fn dtype(&self) -> Dtype {
        self.info.dtype
    }
    /// Dimensions.
    pub fn shape(&self) -> &'f [u64] {
        &self.info.shape[..self.info.rank]
    }
    /// Number of elements.
    pub fn element_count(&self) -> u64 {
        self.shape().iter().product()
    }
    /// Encoding of the data section.
    pub fn encoding(&self) -> Encoding {
        self.info.encoding
    }
    /// Decoded size in bytes.
    pub fn decoded_len(&self) -> u64 {
        self.info.decoded_len
    }
    /// Stored size (the data section) in bytes.
    pub fn stored_len(&self) -> u64 {
        self.info.data_len
    }
    /// Absolute offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.info.data_offset
    }
    /// CRC-32 of the decoded bytes, as stored.
    pub fn decoded_crc(&self) -> u32 {
        self.info.decoded_crc
    }
    /// CRC-32 of the data section, as stored (for callers that compute it
    /// piecewise, fused with decoding).
    pub fn data_crc(&self) -> u32 {
        self.info.data_crc
    }
    /// The data section, zero-copy (for upload to a GPU, for instance).
    pub fn data(&self) -> &'f [u8] {
        let r =
            self.info.data_offset as usize..(self.info.data_offset + self.info.data_len) as usize;
        &self.file.bytes.get()[r]
    }

    /// Checks the data section's CRC-32.
    pub fn check_data_crc(&self) -> Result<()> {
        let computed = crc(self.data());
        if computed != self.info.data_crc {
            return Err(Error::ChecksumMismatch {
                what: Checksummed::Data(self.index),
                offset: self.info.data_offset,
                stored: self.info.data_crc,
                computed,
            });
        }
        Ok(())
    }

    /// The data section parsed by encoding (zero-copy views of its parts).
    pub fn encoded(&self) -> Result<Encoded<'f>> {
        let (data, off, n) = (self.data(), self.info.data_offset, self.element_count());
        Ok(match self.info.encoding {
            Encoding::Raw => Encoded::Raw(data),
            Encoding::Bf16Huffman => {
                Encoded::Huffman(HuffmanView::parse(self.index, data, off, n)?)
            }
            Encoding::Bf16Palette4 => {
                Encoded::Palette4(Palette4View::parse(self.index, data, off, n)?)
            }
        })
    }

    /// Checks `decoded` against the stored decoded CRC-32.
    pub fn check_decoded_crc(&self, decoded: &[u8]) -> Result<()> {
        let computed = crc(decoded);
        if computed != self.info.decoded_crc {
            return Err(Error::ChecksumMismatch {
                what: Checksummed::Decoded(self.index),
                offset: self.info.data_offset,
                stored: self.info.decoded_crc,
                computed,
            });
        }
        Ok(())
    }

    /// Decode-time checks of spec §10.4 that the decoders do not make
    /// themselves: D3 (selector padding bits), D4 and D5 (padding between
    /// section parts, the unused high nibble) and D7 (nibble 0 under every
    /// exception). O(padding + exceptions).
    pub fn check_section_structure(&self) -> Result<()> {
        let section = self.data();
        let base = self.info.data_offset;
        let gap =
            |a: u64, b: u64, what| zero_padding(&section[a as usize..b as usize], what, base + a);
        match self.encoded()? {
            Encoded::Raw(_) => {}
            Encoded::Huffman(v) => {
                let p = v.parts();
                let h = v.header();
                gap(
                    p.sign_mantissa + v.element_count(),
                    p.chunk_index,
                    "padding after the sign+mantissa plane",
                )?;
                gap(
                    p.selectors + p.selectors_len,
                    p.exp_stream,
                    "padding after the selectors",
                )?;
                let used_bits =
                    v.element_count().div_ceil(1 << h.block_log2) * u64::from(h.selector_bits);
                if used_bits % 8 != 0 {
                    let last = *v.selectors().last().expect("non-empty when bits are used");
                    if last >> (used_bits % 8) != 0 {
                        return Err(Error::NonZeroPadding {
                            what: "selector padding bits",
                            offset: base + p.selectors + p.selectors_len - 1,
                        });
                    }
                }
            }
            Encoded::Palette4(v) => {
                let p = v.parts();
                let n = v.header().element_count.get();
                gap(
                    p.sign_mantissa + n,
                    p.nibbles,
                    "padding after the sign+mantissa plane",
                )?;
                gap(
                    p.nibbles + n.div_ceil(2),
                    p.exception_positions,
                    "padding after the nibble plane",
                )?;
                let nibbles = v.nibbles();
                for (k, pos) in v.exception_positions().enumerate() {
                    let nibble = nibbles
                        .get(pos as usize / 2)
                        .map(|b| (b >> (4 * (pos % 2))) & 0xF);
                    if nibble.is_some_and(|x| x != 0) {
                        return Err(Error::CorruptStream {
                            tensor: self.index,
                            offset: base + p.exception_positions + 4 * k as u64,
                            reason: "the nibble under an exception is not 0",
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Decodes into `out` (exactly [`Self::decoded_len`] bytes) with every
    /// check of spec §10.4: the data CRC (D1), the section structure, the
    /// stream, and the CRC of the decoded bytes (D9): verified end to end.
    pub fn decode_into(&self, out: &mut [u8]) -> Result<()> {
        if out.len() as u64 != self.decoded_len() {
            return Err(Error::OutputSize {
                expected: self.decoded_len(),
                actual: out.len() as u64,
            });
        }
        self.check_data_crc()?;
        self.check_section_structure()?;
        match self.encoded()? {
            Encoded::Raw(bytes) => out.copy_from_slice(bytes),
            Encoded::Huffman(v) => v.decoder().decode_all(out)?,
            Encoded::Palette4(v) => v.decode_into(out)?,
        }
        self.check_decoded_crc(out)
    }

    /// Decodes into a new vector (its size was validated at open).
    pub fn decode_to_vec(&self) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.decoded_len() as usize];
        self.decode_into(&mut out)?;
        Ok(out)
    }
}
