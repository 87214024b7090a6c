//! `.uw` -> the original safetensors bytes (spec: "Rebuilding the source file").

use std::io::Write;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use crc32fast::Hasher;
use rayon::prelude::*;
use uw_format::{Checksummed, Encoded, Error, HuffmanView, Tensor, UwFile};

/// Sections smaller than this are checked and decoded in separate passes:
/// they stay in cache between passes, and fusing the CRCs into the decode
/// costs a few CRC combinations (microseconds each).
const FUSE_MIN_BYTES: usize = 1 << 20;

/// Chunks decoded per step of a fused decode: the decoder interleaves four
/// chunks, and four chunks' output (128 KiB by default) is still in cache
/// when its CRC is taken.
const CHUNKS_PER_STEP: usize = 4;

/// Pieces a buffer is cut into for parallel CRCs and copies.
const PIECE_BYTES: usize = 1 << 20;

/// Decodes `t` into `out` using all threads of the current rayon pool, with
/// every check of [`Tensor::decode_into`] in the same order of precedence:
/// the data CRC, the section structure, the stream, the decoded CRC.
///
/// For large Huffman sections the CRCs are taken piecewise while decoding,
/// on bytes still in cache, and combined: one pass over memory instead of
/// three.
pub fn decode_tensor_parallel(t: &Tensor<'_>, out: &mut [u8]) -> uw_format::Result<()> {
    if out.len() as u64 != t.decoded_len() {
        return Err(Error::OutputSize {
            expected: t.decoded_len(),
            actual: out.len() as u64,
        });
    }
    // A damaged section reports its CRC mismatch before anything else.
    let encoded = match t.check_section_structure().and_then(|()| t.encoded()) {
        Ok(e) => e,
        Err(e) => {
            t.check_data_crc()?;
            return Err(e);
        }
    };
    match encoded {
        Encoded::Huffman(view) if t.data().len() >= FUSE_MIN_BYTES => {
            decode_huffman_fused(t, &view, out)
        }
        Encoded::Huffman(view) => {
            t.check_data_crc()?;
            view.decoder().decode_all(out)?;
            t.check_decoded_crc(out)
        }
        Encoded::Palette4(view) => {
            check_crc(
                t,
                Checksummed::Data(t.index()),
                t.data_crc(),
                parallel_crc(t.data()),
            )?;
            view.decode_into(out)?;
            check_crc(
                t,
                Checksummed::Decoded(t.index()),
                t.decoded_crc(),
                parallel_crc(out),
            )
        }
        Encoded::Raw(bytes) => {
            // Raw: the decoded bytes are the section, so one CRC serves both,
            // taken on each piece just before it is copied.
            let mut crcs = vec![Hasher::new(); bytes.len().div_ceil(PIECE_BYTES)];
            out.par_chunks_mut(PIECE_BYTES)
                .zip(bytes.par_chunks(PIECE_BYTES))
                .zip(crcs.par_iter_mut())
                .for_each(|((o, b), h)| {
                    h.update(b);
                    o.copy_from_slice(b);
                });
            let computed = combine(crcs);
            check_crc(t, Checksummed::Data(t.index()), t.data_crc(), computed)?;
            check_crc(
                t,
                Checksummed::Decoded(t.index()),
                t.decoded_crc(),
                computed,
            )
        }
    }
}

fn check_crc(
    t: &Tensor<'_>,
    what: Checksummed,
    stored: u32,
    computed: u32,
) -> uw_format::Result<()> {
    if stored != computed {
        return Err(Error::ChecksumMismatch {
            what,
            offset: t.data_offset(),
            stored,
            computed,
        });
    }
    Ok(())
}

/// Folds hashers of consecutive pieces into the CRC of the whole.
fn combine(parts: impl IntoIterator<Item = Hasher>) -> u32 {
    let mut parts = parts.into_iter();
    let mut all = parts.next().unwrap_or_default();
    for p in parts {
        all.combine(&p);
    }
    all.finalize()
}

/// CRC-32 of `bytes`, pieces in parallel when there are several threads.
fn parallel_crc(bytes: &[u8]) -> u32 {
    if rayon::current_num_threads() == 1 || bytes.len() < 2 * PIECE_BYTES {
        return crc32fast::hash(bytes);
    }
    combine(
        bytes
            .par_chunks(PIECE_BYTES)
            .map(|b| {
                let mut h = Hasher::new();
                h.update(b);
                h
            })
            .collect::<Vec<_>>(),
    )
}

/// What one group of chunks reports: CRC states of the parts it read and
/// wrote, or the first decode error.
struct GroupOutcome {
    sign_mantissa: Hasher,
    exp_stream: Hasher,
    decoded: Hasher,
    error: Option<Error>,
}

/// Huffman decode with the CRCs fused in: groups of chunks in parallel;
/// each group hashes its part of the sign+mantissa plane and of the exponent
/// stream just before decoding them (so the decoder finds them in cache),
/// and its output right after. The data CRC is then assembled from the
/// section's parts in file order.
fn decode_huffman_fused(
    t: &Tensor<'_>,
    view: &HuffmanView<'_>,
    out: &mut [u8],
) -> uw_format::Result<()> {
    let decoder = view.decoder();
    let section = t.data();
    let parts = view.parts();
    let n = view.element_count() as usize;
    let chunk_len = view.chunk_len();
    let chunks = view.chunk_count();
    let stream = view.exp_stream();
    let sm = view.sign_mantissa();
    let offsets: Vec<usize> = view.chunk_offsets().map(|o| o as usize).collect();

    // About four groups per thread balance the load; one thread needs one.
    let threads = rayon::current_num_threads();
    let per_group = if threads == 1 {
        chunks
    } else {
        chunks
            .div_ceil(4 * threads)
            .next_multiple_of(CHUNKS_PER_STEP)
    };
    let groups: Vec<Range<usize>> = (0..chunks)
        .step_by(per_group.max(1))
        .map(|c| c..(c + per_group).min(chunks))
        .collect();
    // The stream is split at the groups' first chunk offsets, forced to be
    // non-decreasing and in bounds so that, whatever a damaged index says,
    // the pieces tile the stream exactly once, in order.
    let mut bounds = Vec::with_capacity(groups.len() + 1);
    let mut at = 0usize;
    for g in &groups {
        at = offsets[g.start].clamp(at, stream.len());
        bounds.push(at);
    }
    bounds[0] = 0;
    bounds.push(stream.len());

    let mut outs = Vec::with_capacity(groups.len());
    let mut rest = &mut *out;
    for g in &groups {
        let len = 2 * ((g.end * chunk_len).min(n) - g.start * chunk_len);
        let (piece, r) = rest.split_at_mut(len);
        outs.push(piece);
        rest = r;
    }

    let outcomes: Vec<GroupOutcome> = groups
        .par_iter()
        .zip(outs)
        .zip(bounds.par_windows(2))
        .map(|((g, piece), b)| {
            let mut o = GroupOutcome {
                sign_mantissa: Hasher::new(),
                exp_stream: Hasher::new(),
                decoded: Hasher::new(),
                error: None,
            };
            let mut hashed = b[0];
            let mut c = g.start;
            while c < g.end {
                let step = CHUNKS_PER_STEP.min(g.end - c);
                let values = c * chunk_len..((c + step) * chunk_len).min(n);
                o.sign_mantissa.update(&sm[values.clone()]);
                let upto = if c + step == g.end {
                    b[1]
                } else {
                    offsets[c + step].clamp(hashed, b[1])
                };
                o.exp_stream.update(&stream[hashed..upto]);
                hashed = upto;
                let base = g.start * chunk_len;
                let dst = &mut piece[2 * (values.start - base)..2 * (values.end - base)];
                if let Err(e) = decoder.decode_chunks(c, step, dst) {
                    o.error = Some(e);
                    break;
                }
                o.decoded.update(dst);
                c += step;
            }
            o
        })
        .collect();

    let mut first_error = None;
    let mut data = Hasher::new();
    let sm_range = parts.sign_mantissa as usize..parts.sign_mantissa as usize + n;
    data.update(&section[..sm_range.start]);
    let mut stream_parts = Vec::with_capacity(outcomes.len());
    let mut decoded = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        if first_error.is_none() {
            first_error = o.error;
        }
        data.combine(&o.sign_mantissa);
        stream_parts.push(o.exp_stream);
        decoded.push(o.decoded);
    }
    if let Some(e) = first_error {
        // Precedence as in Tensor::decode_into: a data CRC mismatch first.
        t.check_data_crc()?;
        return Err(e);
    }
    data.update(&section[sm_range.end..parts.exp_stream as usize]);
    for s in &stream_parts {
        data.combine(s);
    }
    check_crc(
        t,
        Checksummed::Data(t.index()),
        t.data_crc(),
        data.finalize(),
    )?;
    check_crc(
        t,
        Checksummed::Decoded(t.index()),
        t.decoded_crc(),
        combine(decoded),
    )
}

/// Errors of [`write_safetensors`].
#[derive(Debug)]
pub enum RestoreError {
    /// Writing failed.
    Io(std::io::Error),
    /// The file is damaged.
    Format(uw_format::Error),
    /// The cancel flag was raised.
    Interrupted,
}

/// Consecutive tensors of at most `batch_bytes` decoded bytes (a larger
/// tensor makes a batch of its own).
fn batches(tensors: &[Tensor<'_>], batch_bytes: u64) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < tensors.len() {
        let mut end = start;
        let mut bytes = 0u64;
        while end < tensors.len()
            && (end == start || bytes + tensors[end].decoded_len() <= batch_bytes)
        {
            bytes += tensors[end].decoded_len();
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// Decodes the tensors of `batch` into `buf` (resized to their total, its
/// allocation reused from batch to batch), tensors in parallel.
fn decode_batch(tensors: &[Tensor<'_>], buf: &mut Vec<u8>) -> Result<(), RestoreError> {
    let total = tensors.iter().map(|t| t.decoded_len()).sum::<u64>() as usize;
    // Only ever grown: zero-filling happens once per byte of capacity.
    if buf.len() < total {
        buf.resize(total, 0);
    }
    let mut slices = Vec::with_capacity(tensors.len());
    let mut rest = &mut buf[..total];
    for t in tensors {
        let (s, r) = rest.split_at_mut(t.decoded_len() as usize);
        slices.push(s);
        rest = r;
    }
    tensors
        .par_iter()
        .zip(slices)
        .try_for_each(|(t, s)| decode_tensor_parallel(t, s))
        .map_err(RestoreError::Format)
}

/// Writes the safetensors file that `file` was made from: the 8-byte header
/// length, the header, then every tensor decoded, in batches of at most
/// `batch_bytes` decoded in parallel. Calls `progress(bytes)` per tensor.
///
/// While one batch is written on the calling thread, the next is decoded on
/// the pool, so writing overlaps decoding; two batch buffers are reused
/// throughout (peak memory: about two batches).
pub fn write_safetensors<W: Write>(
    file: &UwFile<'_>,
    mut out: W,
    batch_bytes: u64,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &AtomicBool,
) -> Result<W, RestoreError> {
    let header = file.safetensors_header();
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(RestoreError::Io)?;
    out.write_all(header.as_bytes()).map_err(RestoreError::Io)?;
    let tensors: Vec<Tensor<'_>> = file.tensors().collect();
    let batches = batches(&tensors, batch_bytes);
    let (mut ready, mut next) = (Vec::new(), Vec::new());
    let mut ready_batch: Option<Range<usize>> = None;
    for b in batches.iter().map(Some).chain([None]) {
        if cancel.load(Ordering::Relaxed) {
            return Err(RestoreError::Interrupted);
        }
        let mut decoded = Ok(());
        let mut written = Ok(());
        rayon::in_place_scope(|s| {
            if let Some(b) = b {
                let (tensors, next, decoded) = (&tensors, &mut next, &mut decoded);
                s.spawn(move |_| *decoded = decode_batch(&tensors[b.clone()], next));
            }
            if let Some(r) = &ready_batch {
                written = write_batch(&mut out, &tensors[r.clone()], &ready, progress);
            }
        });
        written?;
        decoded?;
        std::mem::swap(&mut ready, &mut next);
        ready_batch = b.cloned();
    }
    out.flush().map_err(RestoreError::Io)?;
    Ok(out)
}

/// Writes a decoded batch straight from its buffer, tensor by tensor.
fn write_batch<W: Write>(
    out: &mut W,
    tensors: &[Tensor<'_>],
    buf: &[u8],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), RestoreError> {
    let mut at = 0;
    for t in tensors {
        let len = t.decoded_len() as usize;
        out.write_all(&buf[at..at + len])
            .map_err(RestoreError::Io)?;
        at += len;
        progress(len as u64);
    }
    Ok(())
}
