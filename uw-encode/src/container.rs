//! Streaming writer of the `.uw` container (spec: "File layout").
//!
//! Sections are written as they come, so the output may be a pipe; the
//! directory and trailer follow the last section. A caller whose output is
//! seekable may then rewrite the header with [`header_bytes`] so the
//! directory can be found from the front too.

use std::io::{self, Write};

use uw_format::layout::*;
use uw_format::{Dtype, Encoding};
use zerocopy::IntoBytes;

/// The 64-byte file header; `directory` is `None` for a streamed file.
pub fn header_bytes(alignment: u32, directory: Option<(u64, u64)>) -> [u8; 64] {
    let (off, len) = directory.unwrap_or((0, 0));
    let mut h = FileHeader {
        magic: MAGIC,
        version_major: VERSION_MAJOR.into(),
        version_minor: VERSION_MINOR.into(),
        header_len: 64.into(),
        required_features: 0.into(),
        optional_features: 0.into(),
        alignment: alignment.into(),
        reserved0: 0.into(),
        directory_offset: off.into(),
        directory_len: len.into(),
        reserved1: 0.into(),
        header_crc: 0.into(),
    };
    h.header_crc = crc32fast::hash(&h.as_bytes()[..60]).into();
    let mut out = [0u8; 64];
    out.copy_from_slice(h.as_bytes());
    out
}

/// The two CRC-32s of a tensor record (spec: `decoded_crc` of the decoded
/// bytes, `data_crc` of the section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorCrcs {
    /// Of the decoded bytes.
    pub decoded: u32,
    /// Of the data section as stored.
    pub data: u32,
}

/// What the directory records of one tensor.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    /// Name (unique, UTF-8).
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Encoding of the section.
    pub encoding: Encoding,
    /// Absolute offset of the section.
    pub data_offset: u64,
    /// Section length.
    pub data_len: u64,
    /// Decoded length.
    pub decoded_len: u64,
    /// CRC-32 of the section.
    pub data_crc: u32,
    /// CRC-32 of the decoded bytes.
    pub decoded_crc: u32,
}

/// Where the directory landed, returned by [`ContainerWriter::finish`].
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// Directory offset.
    pub directory_offset: u64,
    /// Directory length.
    pub directory_len: u64,
    /// Total file length.
    pub file_len: u64,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Writes a `.uw` file section by section.
#[derive(Debug)]
pub struct ContainerWriter<W: Write> {
    out: W,
    pos: u64,
    alignment: u32,
    entries: Vec<TensorEntry>,
}

impl<W: Write> ContainerWriter<W> {
    /// Starts a file with sections aligned to `alignment` (a power of two in
    /// 64..=2^30).
    pub fn new(mut out: W, alignment: u32) -> io::Result<Self> {
        if !alignment.is_power_of_two() || !(MIN_ALIGNMENT..=MAX_ALIGNMENT).contains(&alignment) {
            return Err(invalid(format!(
                "alignment {alignment} is not a power of two in 64..=2^30"
            )));
        }
        out.write_all(&header_bytes(alignment, None))?;
        Ok(Self {
            out,
            pos: 64,
            alignment,
            entries: Vec::new(),
        })
    }

    /// Tensors written so far.
    pub fn entries(&self) -> &[TensorEntry] {
        &self.entries
    }

    fn pad_to(&mut self, align: u64) -> io::Result<()> {
        let target = align_up(self.pos, align).ok_or_else(|| invalid("file too large".into()))?;
        const ZEROS: [u8; 4096] = [0; 4096];
        while self.pos < target {
            let k = (target - self.pos).min(ZEROS.len() as u64) as usize;
            self.out.write_all(&ZEROS[..k])?;
            self.pos += k as u64;
        }
        Ok(())
    }

    /// Appends one tensor's data section.
    #[allow(clippy::too_many_arguments)]
    pub fn add_tensor(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: &[u64],
        encoding: Encoding,
        section: &[u8],
        decoded_len: u64,
        decoded_crc: u32,
    ) -> io::Result<()> {
        let crcs = TensorCrcs {
            decoded: decoded_crc,
            data: crc32fast::hash(section),
        };
        self.add_tensor_with_crcs(name, dtype, shape, encoding, section, decoded_len, crcs)
    }

    /// [`Self::add_tensor`] with the section's CRC already taken (the
    /// Huffman encoder takes it while the section is in cache). It is
    /// written as given: a wrong one makes readers reject the tensor.
    #[allow(clippy::too_many_arguments)]
    pub fn add_tensor_with_crcs(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: &[u64],
        encoding: Encoding,
        section: &[u8],
        decoded_len: u64,
        crcs: TensorCrcs,
    ) -> io::Result<()> {
        if name == "__metadata__" {
            return Err(invalid(
                "a tensor cannot be named __metadata__ (reserved by safetensors)".into(),
            ));
        }
        if name.is_empty() || name.len() > limits::MAX_NAME_LEN as usize {
            return Err(invalid(format!(
                "tensor name length {} is not in 1..=4096",
                name.len()
            )));
        }
        if shape.len() > usize::from(limits::MAX_RANK) {
            return Err(invalid(format!(
                "tensor {name:?} has rank {}, above 8",
                shape.len()
            )));
        }
        if self.entries.len() >= limits::MAX_TENSORS as usize {
            return Err(invalid("more than 2^20 tensors".into()));
        }
        self.pad_to(u64::from(self.alignment))?;
        let data_offset = self.pos;
        self.out.write_all(section)?;
        self.pos += section.len() as u64;
        self.entries.push(TensorEntry {
            name: name.to_owned(),
            dtype,
            shape: shape.to_vec(),
            encoding,
            data_offset,
            data_len: section.len() as u64,
            decoded_len,
            data_crc: crcs.data,
            decoded_crc: crcs.decoded,
        });
        Ok(())
    }

    /// Writes the directory (metadata `(key, value)` pairs in any order, and
    /// the verbatim source safetensors header if any) and the trailer.
    pub fn finish(
        mut self,
        metadata: &[(String, String)],
        source_header: Option<&str>,
    ) -> io::Result<(W, Finished)> {
        let mut names = std::collections::HashSet::new();
        for e in &self.entries {
            if !names.insert(e.name.as_str()) {
                return Err(invalid(format!("duplicate tensor name {:?}", e.name)));
            }
        }
        let mut meta: Vec<&(String, String)> = metadata.iter().collect();
        meta.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        if meta.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(invalid("duplicate metadata key".into()));
        }
        let mut heap: Vec<u8> = Vec::new();
        let mut put = |s: &str| -> io::Result<(u32, u32)> {
            let off =
                u32::try_from(heap.len()).map_err(|_| invalid("string heap over 4 GiB".into()))?;
            heap.extend_from_slice(s.as_bytes());
            Ok((off, s.len() as u32))
        };
        let mut records = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let (name_offset, name_len) = put(&e.name)?;
            let mut shape = [zerocopy::little_endian::U64::new(0); 8];
            for (d, &v) in shape.iter_mut().zip(&e.shape) {
                *d = v.into();
            }
            records.push(TensorRecord {
                name_offset: name_offset.into(),
                name_len: name_len.into(),
                dtype: e.dtype.code(),
                encoding: e.encoding.code(),
                rank: e.shape.len() as u8,
                reserved0: 0,
                decoded_crc: e.decoded_crc.into(),
                data_offset: e.data_offset.into(),
                data_len: e.data_len.into(),
                decoded_len: e.decoded_len.into(),
                data_crc: e.data_crc.into(),
                reserved1: 0.into(),
                shape,
                reserved2: [0; 16],
            });
        }
        let mut meta_records = Vec::with_capacity(meta.len());
        for (k, v) in meta {
            let (key_offset, key_len) = put(k)?;
            let (value_offset, value_len) = put(v)?;
            meta_records.push(MetadataRecord {
                key_offset: key_offset.into(),
                key_len: key_len.into(),
                value_offset: value_offset.into(),
                value_len: value_len.into(),
            });
        }
        let (source_header_offset, source_header_len) = match source_header {
            Some(s) if !s.is_empty() => put(s)?,
            _ => (0, 0),
        };
        if heap.len() > limits::MAX_STRINGS_LEN as usize {
            return Err(invalid(format!(
                "string heap of {} bytes is above the 256 MiB limit",
                heap.len()
            )));
        }
        let dh = DirectoryHeader {
            tensor_count: (records.len() as u32).into(),
            metadata_count: (meta_records.len() as u32).into(),
            strings_len: (heap.len() as u32).into(),
            source_header_offset: source_header_offset.into(),
            source_header_len: source_header_len.into(),
            reserved: [0; 12],
        };
        let mut dir = Vec::new();
        dir.extend_from_slice(dh.as_bytes());
        dir.extend_from_slice(records.as_bytes());
        dir.extend_from_slice(meta_records.as_bytes());
        dir.extend_from_slice(&heap);
        self.pad_to(u64::from(self.alignment))?;
        let directory_offset = self.pos;
        self.out.write_all(&dir)?;
        self.pos += dir.len() as u64;
        // The trailer goes on an 8-byte boundary (spec §3.1, SHOULD).
        self.pad_to(8)?;
        let trailer_offset = self.pos;
        let mut trailer = Trailer {
            directory_offset: directory_offset.into(),
            directory_len: (dir.len() as u64).into(),
            directory_crc: crc32fast::hash(&dir).into(),
            tensor_count: (records.len() as u32).into(),
            file_len: (trailer_offset + 64).into(),
            reserved: [0; 20],
            trailer_crc: 0.into(),
            end_magic: END_MAGIC,
        };
        trailer.trailer_crc = crc32fast::hash(&trailer.as_bytes()[..52]).into();
        self.out.write_all(trailer.as_bytes())?;
        self.out.flush()?;
        let finished = Finished {
            directory_offset,
            directory_len: dir.len() as u64,
            file_len: trailer_offset + 64,
        };
        Ok((self.out, finished))
    }
}
