//! safetensors -> `.uw` (spec: "Reference encoder choices").

use std::borrow::Cow;
use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use uw_format::{Dtype, Encoding};

use crate::bf16_huffman::{self, HuffmanParams};
use crate::buffers::BufferPool;
use crate::container::{ContainerWriter, TensorCrcs};
use crate::palette4;

/// Which form BF16 tensors take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// bf16-huffman, the smallest (distribution form). The default.
    #[default]
    Huffman,
    /// bf16-palette4, fixed width (inference form).
    Palette4,
    /// Everything raw.
    Raw,
}

/// Options of a conversion.
#[derive(Debug, Clone, Copy)]
pub struct ConvertOptions {
    /// Form of BF16 tensors.
    pub target: Target,
    /// Section alignment (power of two, >= 64).
    pub alignment: u32,
    /// Huffman encoder choices.
    pub huffman: HuffmanParams,
    /// Most raw bytes encoded at once: bounds memory (plus one tensor).
    pub batch_bytes: u64,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            target: Target::Huffman,
            alignment: 64,
            huffman: HuffmanParams::default(),
            batch_bytes: 8 << 20,
        }
    }
}

/// One tensor of the input, in the order of its data.
#[derive(Debug, Clone)]
pub struct SourceTensor<'a> {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Its bytes.
    pub bytes: &'a [u8],
}

/// A parsed safetensors file.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// The JSON header, verbatim.
    pub header: &'a str,
    /// `__metadata__`, as pairs.
    pub metadata: Vec<(String, String)>,
    /// Tensors in data order.
    pub tensors: Vec<SourceTensor<'a>>,
}

/// Parses a safetensors file held in memory (strictly, with the safetensors
/// crate: contiguous data, no holes, sizes matching shapes).
pub fn parse_safetensors(buf: &[u8]) -> Result<Source<'_>, String> {
    let (header_len, meta) =
        safetensors::SafeTensors::read_metadata(buf).map_err(|e| e.to_string())?;
    let header = std::str::from_utf8(&buf[8..8 + header_len]).map_err(|e| e.to_string())?;
    let data = &buf[8 + header_len..];
    let infos = meta.tensors();
    let mut tensors = Vec::with_capacity(infos.len());
    let mut names = meta.offset_keys();
    // Empty tensors share data offsets and the parser orders such ties by
    // hash-map iteration, which differs between runs: order ties by name so
    // the output is a pure function of the input.
    names.sort_by(|a, b| (infos[a].data_offsets, a).cmp(&(infos[b].data_offsets, b)));
    for name in names {
        let info = infos[&name];
        let dtype_name = format!("{:?}", info.dtype);
        let dtype = Dtype::from_name(&dtype_name)
            .ok_or_else(|| format!("unsupported dtype {dtype_name}"))?;
        let (start, end) = info.data_offsets;
        tensors.push(SourceTensor {
            name,
            dtype,
            shape: info.shape.iter().map(|&d| d as u64).collect(),
            bytes: &data[start..end],
        });
    }
    let mut metadata: Vec<(String, String)> = meta
        .metadata()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.sort();
    // Spec §6.2: the verbatim header must describe exactly these tensors, or
    // the reconstruction would not be this file. Refuse rather than guess.
    let expected: Vec<crate::source_header::Expected<'_>> = tensors
        .iter()
        .map(|t| crate::source_header::Expected {
            name: &t.name,
            dtype: t.dtype.name(),
            shape: &t.shape,
            decoded_len: t.bytes.len() as u64,
        })
        .collect();
    let pairs: Vec<(&str, &str)> = metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    crate::source_header::check(header, &expected, &pairs)
        .map_err(|e| format!("header cannot be stored verbatim: {e}"))?;
    Ok(Source {
        header,
        metadata,
        tensors,
    })
}

/// Encodes one tensor: the chosen BF16 form when it is smaller than the raw
/// bytes, else raw (tiny vectors, where tables cost more than they save).
pub fn encode_tensor<'a>(
    dtype: Dtype,
    bytes: &'a [u8],
    opts: &ConvertOptions,
) -> (Encoding, Cow<'a, [u8]>) {
    let encoded = match (dtype, opts.target) {
        (Dtype::BF16, Target::Huffman) => {
            bf16_huffman::encode(bytes, &opts.huffman).map(|s| (Encoding::Bf16Huffman, s))
        }
        (Dtype::BF16, Target::Palette4) => {
            palette4::encode(bytes).map(|s| (Encoding::Bf16Palette4, s))
        }
        _ => None,
    };
    match encoded {
        Some((enc, section)) if section.len() < bytes.len() => (enc, Cow::Owned(section)),
        _ => (Encoding::Raw, Cow::Borrowed(bytes)),
    }
}

/// [`encode_tensor`], and the tensor's two CRC-32s: of `bytes`, which the
/// BF16 encoders take during their first pass over the bytes instead of in
/// a pass of its own, and of the section (the Huffman encoder takes it
/// while writing; a raw section's is the same as the bytes'; a palette-4
/// section's takes a pass, here on the calling thread rather than on the
/// file writer's). A Huffman section's buffer comes from `buffers`: give
/// it back there once written (see [`crate::buffers`]).
pub fn encode_tensor_with_crc<'a>(
    dtype: Dtype,
    bytes: &'a [u8],
    opts: &ConvertOptions,
    buffers: &BufferPool,
) -> (Encoding, Cow<'a, [u8]>, TensorCrcs) {
    let (encoded, crc) = match (dtype, opts.target) {
        (Dtype::BF16, Target::Huffman) => {
            let (s, crc) = bf16_huffman::encode_with_crc(bytes, &opts.huffman, buffers);
            (s.map(|(s, c)| (Encoding::Bf16Huffman, s, Some(c))), crc)
        }
        (Dtype::BF16, Target::Palette4) => {
            let (s, crc) = palette4::encode_with_crc(bytes);
            (s.map(|s| (Encoding::Bf16Palette4, s, None)), crc)
        }
        _ => (None, crc32fast::hash(bytes)),
    };
    match encoded {
        Some((enc, section, section_crc)) if section.len() < bytes.len() => {
            let data = section_crc.unwrap_or_else(|| crc32fast::hash(&section));
            let crcs = TensorCrcs { decoded: crc, data };
            (enc, Cow::Owned(section), crcs)
        }
        _ => {
            let crcs = TensorCrcs {
                decoded: crc,
                data: crc,
            };
            (Encoding::Raw, Cow::Borrowed(bytes), crcs)
        }
    }
}

/// Per-tensor outcome of a conversion.
#[derive(Debug, Clone)]
pub struct TensorOutcome {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Encoding chosen.
    pub encoding: Encoding,
    /// Raw bytes.
    pub raw_len: u64,
    /// Stored bytes.
    pub stored_len: u64,
}

/// Errors of [`convert`].
#[derive(Debug)]
pub enum ConvertError {
    /// Writing failed.
    Io(std::io::Error),
    /// The cancel flag was raised.
    Interrupted,
}

/// Writes `source` as `.uw` to `out`, in batches of tensors encoded in
/// parallel and written in order. Calls `progress(raw_bytes_done)` after
/// each tensor and stops early when `cancel` is set.
pub fn convert<W: Write>(
    source: &Source<'_>,
    out: W,
    opts: &ConvertOptions,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &AtomicBool,
) -> Result<(W, crate::container::Finished, Vec<TensorOutcome>), ConvertError> {
    let mut writer = ContainerWriter::new(out, opts.alignment).map_err(ConvertError::Io)?;
    let mut outcomes = Vec::with_capacity(source.tensors.len());
    // Batches of consecutive tensors of at most `batch_bytes` raw bytes (a
    // larger tensor makes a batch of its own).
    let mut batches = Vec::new();
    let mut largest_batch = 0u64;
    let mut start = 0;
    while start < source.tensors.len() {
        let mut end = start;
        let mut bytes = 0u64;
        while end < source.tensors.len()
            && (end == start || bytes + source.tensors[end].bytes.len() as u64 <= opts.batch_bytes)
        {
            bytes += source.tensors[end].bytes.len() as u64;
            end += 1;
        }
        batches.push(start..end);
        largest_batch = largest_batch.max(bytes);
        start = end;
    }
    // Sections are smaller than their tensors: two batches' worth is what
    // is in flight (one being written, the next being encoded).
    let buffers = &BufferPool::new(usize::try_from(2 * largest_batch).unwrap_or(usize::MAX));
    let raw_bytes = |b: &std::ops::Range<usize>| -> usize {
        source.tensors[b.clone()]
            .iter()
            .map(|t| t.bytes.len())
            .sum()
    };
    // While one batch is written on this thread, the next is encoded on the
    // pool: writing overlaps encoding, and at most two batches of sections
    // are held at once.
    type Encoded<'a> = Vec<(Encoding, Cow<'a, [u8]>, TensorCrcs)>;
    let mut ready: Option<(std::ops::Range<usize>, Encoded<'_>)> = None;
    for (index, batch) in batches.iter().map(Some).chain([None]).enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(ConvertError::Interrupted);
        }
        let mut next: Option<Encoded<'_>> = None;
        let mut written = Ok(());
        rayon::in_place_scope(|s| {
            if let Some(b) = batch {
                let next = &mut next;
                s.spawn(move |_| {
                    *next = Some(
                        // One job per tensor: rayon otherwise hands each
                        // thread a run of tensors to work through in turn,
                        // and a thread done with its run could not take the
                        // tensors still waiting in another's (on two
                        // threads, one idled for up to a fifth of an
                        // encode of MiniLM-L6). Large tensors are shared
                        // out inside `bf16_huffman` instead.
                        source.tensors[b.clone()]
                            .par_iter()
                            .with_max_len(1)
                            .map(|t| encode_tensor_with_crc(t.dtype, t.bytes, opts, buffers))
                            .collect(),
                    );
                });
            }
            if let Some((range, sections)) = ready.take() {
                written = (|| {
                    for (t, (encoding, section, crcs)) in source.tensors[range].iter().zip(sections)
                    {
                        writer.add_tensor_with_crcs(
                            &t.name,
                            t.dtype,
                            &t.shape,
                            encoding,
                            &section,
                            t.bytes.len() as u64,
                            crcs,
                        )?;
                        outcomes.push(TensorOutcome {
                            name: t.name.clone(),
                            dtype: t.dtype,
                            encoding,
                            raw_len: t.bytes.len() as u64,
                            stored_len: section.len() as u64,
                        });
                        if let Cow::Owned(section) = section {
                            buffers.give(section);
                        }
                        progress(t.bytes.len() as u64);
                    }
                    Ok(())
                })();
            }
            // A writing thread outside the pool has time to spare while
            // the workers encode: it maps in the input pages of their batch
            // (ahead of them: mapping pages in is many times faster than
            // encoding them), then of the batch after theirs (see
            // `crate::prefault`). Of that one, only the first `4 x` their
            // batch's bytes, so that no one waits on it: all of it measured
            // slower, when a small batch comes before a large one.
            // (Mapping in their batch too, not only the next one's first
            // `4 x`: MiniLM-L6's 23 MB embedding, after a 0.4 MB batch, was
            // otherwise mostly faulted in by the encoder. `uw convert
            // --threads 1` to tmpfs, 30 alternating runs, three
            // comparisons: bests 54.0-55.3 -> 51.6-52.3 ms, medians
            // 56.4-58.5 -> 53.9-55.0.)
            if rayon::current_thread_index().is_none()
                && let Some(b) = batch
            {
                let inputs = source.tensors[b.clone()].iter().map(|t| t.bytes);
                crate::prefault::map_in(inputs, usize::MAX);
                if let Some(after) = batches.get(index + 1) {
                    let inputs = source.tensors[after.clone()].iter().map(|t| t.bytes);
                    crate::prefault::map_in(inputs, 4 * raw_bytes(b));
                }
            }
        });
        written.map_err(ConvertError::Io)?;
        ready = batch.cloned().zip(next);
    }
    let (out, finished) = writer
        .finish(&source.metadata, Some(source.header))
        .map_err(ConvertError::Io)?;
    Ok((out, finished, outcomes))
}

/// [`convert`] to a seekable output, then rewrites the file header with the
/// directory's location (which a streaming writer cannot know up front), so
/// a reader finds the directory from the front too. This is exactly what
/// `uw convert` writes; the output is left positioned at its end.
pub fn convert_seekable<W: Write + Seek>(
    source: &Source<'_>,
    out: W,
    opts: &ConvertOptions,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &AtomicBool,
) -> Result<(W, crate::container::Finished, Vec<TensorOutcome>), ConvertError> {
    let (mut out, finished, outcomes) = convert(source, out, opts, progress, cancel)?;
    let header = crate::container::header_bytes(
        opts.alignment,
        Some((finished.directory_offset, finished.directory_len)),
    );
    (|| {
        out.seek(SeekFrom::Start(0))?;
        out.write_all(&header)?;
        out.seek(SeekFrom::End(0))?;
        out.flush()
    })()
    .map_err(ConvertError::Io)?;
    Ok((out, finished, outcomes))
}

/// Converts `source` to an in-memory `.uw` file, byte for byte what
/// `uw convert` writes with the same options.
pub fn convert_to_vec(
    source: &Source<'_>,
    opts: &ConvertOptions,
) -> Result<(Vec<u8>, Vec<TensorOutcome>), ConvertError> {
    let (out, _, outcomes) = convert_seekable(
        source,
        std::io::Cursor::new(Vec::new()),
        opts,
        &|_| {},
        &AtomicBool::new(false),
    )?;
    Ok((out.into_inner(), outcomes))
}
