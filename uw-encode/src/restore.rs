//! `.uw` -> the original safetensors bytes (spec: "Rebuilding the source file").

use std::io::Write;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::prefault::SharedMapIn;
use crate::stream_copy::{SlicedCopy, copy_nontemporal, join_bf16, prefetch_line};
use crate::work_split::{Claims, Unclaimed, share};
use crc32fast::Hasher;
use rayon::prelude::*;
use uw_format::{
    Checksummed, DecodeHooks, Encoded, Error, HuffmanDecoder, HuffmanView, Tensor, UwFile,
};

/// Sections smaller than this are checked and decoded in separate passes:
/// they stay in cache between passes. Larger ones go through the fused
/// path, whose output leaves through the cache-bypassing copy: for
/// MiniLM-L6's 295 KB and 1.2 MB tensors that made decoding the whole file
/// about 7% faster than a 1 MiB threshold (a scratch one-thread decode
/// harness, not kept; five alternating runs each).
const FUSE_MIN_BYTES: usize = 1 << 16;

/// Chunks decoded per step of a fused decode: the decoder interleaves four
/// chunks, and four chunks' output (128 KiB by default) is still in cache
/// when its CRC is taken.
const CHUNKS_PER_STEP: usize = 4;

/// Largest staging buffer of a fused decode (see [`FusedHuffman`]).
const MAX_STAGING_BYTES: usize = 1 << 20;

/// Bytes of earlier output streamed out per decoding round (a round yields
/// about 70 values, 140 bytes): enough to keep ahead of the decoder, few
/// enough for the store buffer.
const SLICE_BYTES: usize = 192;

/// Cache lines of later input prefetched per decoding round (a round reads
/// about 90 bytes).
const PREFETCH_LINES: usize = 2;

/// What a fused decode does besides decoding (see [`DecodeHooks`]): the
/// join with SSE2 (`stream_copy::join_bf16`), and between rounds a slice of
/// the previous step's output streamed out and a few lines of the next
/// step's input prefetched.
struct StepHooks<'a> {
    copy: Option<SlicedCopy<'a>>,
    next_sm: &'a [u8],
    next_stream: &'a [u8],
    prefetched: usize,
}

impl DecodeHooks for StepHooks<'_> {
    #[inline]
    fn join(&mut self, exps: &[u8], sm: &[u8], out: &mut [u8]) {
        join_bf16(exps, sm, out);
    }

    #[inline]
    fn background(&mut self) {
        if let Some(copy) = self.copy.as_mut() {
            copy.advance(SLICE_BYTES);
        }
        prefetch_lines(self.next_sm, self.next_stream, &mut self.prefetched);
    }
}

/// Prefetches the next [`PREFETCH_LINES`] lines of `sm`, then of `stream`,
/// from line `*done` of the two on.
#[inline(always)]
fn prefetch_lines(sm: &[u8], stream: &[u8], done: &mut usize) {
    for _ in 0..PREFETCH_LINES {
        let at = *done * 64;
        if at < sm.len() {
            prefetch_line(sm, at);
        } else {
            prefetch_line(stream, at - sm.len().next_multiple_of(64));
        }
        *done += 1;
    }
}

thread_local! {
    /// Each thread's staging buffers, kept from one section to the next: a
    /// fresh allocation per section was zeroed and page-faulted in again
    /// (perf of `uw decode --threads 1`: about 6% of its time).
    static STAGING: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

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

/// What decoding a range of chunks reports: CRC states of the parts it read
/// and wrote, or the first decode error.
struct RangeOutcome {
    sign_mantissa: Hasher,
    exp_stream: Hasher,
    decoded: Hasher,
    error: Option<Error>,
}

impl RangeOutcome {
    fn new() -> Self {
        Self {
            sign_mantissa: Hasher::new(),
            exp_stream: Hasher::new(),
            decoded: Hasher::new(),
            error: None,
        }
    }

    /// Appends `next`, the outcome of the range right after this one.
    fn append(&mut self, next: RangeOutcome) {
        self.sign_mantissa.combine(&next.sign_mantissa);
        self.exp_stream.combine(&next.exp_stream);
        self.decoded.combine(&next.decoded);
        if self.error.is_none() {
            self.error = next.error;
        }
    }
}

/// A Huffman section being decoded with its CRCs fused in, range of chunks
/// after range of chunks.
struct FusedHuffman<'v> {
    view: HuffmanView<'v>,
    decoder: HuffmanDecoder<'v>,
    /// Where the hashing of the exponent stream stops before each chunk,
    /// and (last) the stream's end: the chunk index's offsets, forced
    /// non-decreasing and in bounds, so that whatever a damaged index
    /// says, the pieces between them tile the stream exactly once, in
    /// order, however the chunks are shared out.
    bounds: Vec<usize>,
    /// Everything decoded so far.
    so_far: RangeOutcome,
}

impl<'v> FusedHuffman<'v> {
    fn new(view: HuffmanView<'v>) -> Self {
        let len = view.exp_stream().len();
        let mut at = 0;
        let bounds = view.chunk_offsets().skip(1).map(|o| {
            at = (o as usize).clamp(at, len);
            at
        });
        let bounds = std::iter::once(0).chain(bounds).chain([len]).collect();
        Self {
            view,
            decoder: view.decoder(),
            bounds,
            so_far: RangeOutcome::new(),
        }
    }

    /// Decodes chunks `range` into `out` (their decoded bytes). This thread
    /// takes them step by step from the front; helpers offered to the pool
    /// take groups from the back when a thread is idle. (Cut four ways per
    /// thread whatever the load, decoding MiniLM-L6 on two threads ran at
    /// 1.83-1.89x one thread's speed, whole tensors at 2.0x: a scratch
    /// harness, two runs each.) Each part hashes its share of the
    /// sign+mantissa plane and of the exponent stream just before decoding
    /// them (so the decoder finds them in cache), and its output right
    /// after.
    fn decode_range(&mut self, range: Range<usize>, out: &mut [u8]) {
        let chunk_bytes = 2 * self.view.chunk_len();
        let unclaimed = Claims::new(Unclaimed::new(
            range.clone(),
            out,
            chunk_bytes,
            CHUNKS_PER_STEP,
        ));
        let this = &*self;
        let (front, groups) = share(
            &unclaimed,
            || this.decode_steps(|| unclaimed.take_front(), range.end),
            |g, out| {
                let end = g.end;
                let mut steps = Unclaimed::new(g, out, chunk_bytes, CHUNKS_PER_STEP);
                this.decode_steps(|| steps.take_front(), end)
            },
        );
        self.so_far.append(front);
        for o in groups {
            self.so_far.append(o);
        }
    }

    /// Decodes the steps `next` yields (their chunks and decoded bytes;
    /// consecutive, up to chunk `end` at most), hashing each
    /// step's part of the sign+mantissa plane and of the exponent stream
    /// just before decoding it, and its output while it is in cache.
    ///
    /// Each step decodes into one of two small buffers, is hashed there, and
    /// streams out (see `stream_copy`) in slices while the next step decodes
    /// into the other one; meanwhile that step also prefetches the input of
    /// the step after it. Chunks too large for that are decoded in place.
    fn decode_steps<'o>(
        &self,
        mut next: impl FnMut() -> Option<(Range<usize>, &'o mut [u8])>,
        end: usize,
    ) -> RangeOutcome {
        let n = self.view.element_count() as usize;
        let chunk_len = self.view.chunk_len();
        let (decoder, bounds) = (&self.decoder, &self.bounds);
        let (sm, stream) = (self.view.sign_mantissa(), self.view.exp_stream());
        let mut o = RangeOutcome::new();
        let Some(mut at) = next() else {
            return o;
        };
        let staging_len = 2 * CHUNKS_PER_STEP * chunk_len;
        let mut staging_buf = STAGING.take();
        let most = 2 * (end - at.0.start) * chunk_len;
        let staging = if staging_len <= MAX_STAGING_BYTES {
            room(&mut staging_buf, 2 * staging_len.min(most))
        } else {
            &mut []
        };
        let in_place = staging.is_empty();
        let half = staging.len() / 2;
        let (mut cur, mut prev) = staging.split_at_mut(half);
        // The output of the step before, still to stream out.
        let mut pending: Option<&mut [u8]> = None;
        let values = |c: usize, step: usize| c * chunk_len..((c + step) * chunk_len).min(n);
        loop {
            let (chunks, dst) = at;
            let (c, step) = (chunks.start, chunks.len());
            o.sign_mantissa.update(&sm[values(c, step)]);
            o.exp_stream.update(&stream[bounds[c]..bounds[c + step]]);
            // The next step's input, prefetched a few lines per round
            // (whoever decodes it).
            let after = (c + step + CHUNKS_PER_STEP).min(end);
            let (next_sm, next_stream) = if c + step < end {
                (
                    &sm[values(c + step, after - c - step)],
                    &stream[bounds[c + step]..bounds[after]],
                )
            } else {
                (&[][..], &[][..])
            };
            let mut hooks = StepHooks {
                copy: None,
                next_sm,
                next_stream,
                prefetched: 0,
            };
            let result = if in_place {
                let result = decoder.decode_chunks_with(c, step, dst, &mut hooks);
                if result.is_ok() {
                    o.decoded.update(dst);
                }
                result
            } else {
                std::mem::swap(&mut cur, &mut prev);
                let len = dst.len();
                hooks.copy = pending.take().map(|d: &mut [u8]| {
                    let n = d.len();
                    SlicedCopy::new(d, &prev[..n])
                });
                let result = decoder.decode_chunks_with(c, step, &mut cur[..len], &mut hooks);
                if let Some(copy) = hooks.copy.take() {
                    copy.finish();
                }
                if result.is_ok() {
                    o.decoded.update(&cur[..len]);
                    pending = Some(dst);
                }
                result
            };
            if let Err(e) = result {
                o.error = Some(e);
                break;
            }
            match next() {
                Some(step) => at = step,
                None => break,
            }
        }
        if let Some(d) = pending {
            let n = d.len();
            copy_nontemporal(d, &cur[..n]);
        }
        STAGING.set(staging_buf);
        o
    }

    /// After the last range: the first decode error (a data CRC mismatch
    /// first, as in [`Tensor::decode_into`]), else the two CRC checks.
    fn finish(self, t: &Tensor<'_>) -> uw_format::Result<()> {
        if let Some(e) = self.so_far.error {
            t.check_data_crc()?;
            return Err(e);
        }
        let section = t.data();
        let parts = self.view.parts();
        let n = self.view.element_count() as usize;
        let sm_start = parts.sign_mantissa as usize;
        let mut data = Hasher::new();
        data.update(&section[..sm_start]);
        data.combine(&self.so_far.sign_mantissa);
        data.update(&section[sm_start + n..parts.exp_stream as usize]);
        data.combine(&self.so_far.exp_stream);
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
            self.so_far.decoded.finalize(),
        )
    }
}

/// Huffman decode with the CRCs fused in (see [`FusedHuffman`]).
fn decode_huffman_fused(
    t: &Tensor<'_>,
    view: &HuffmanView<'_>,
    out: &mut [u8],
) -> uw_format::Result<()> {
    let mut fused = FusedHuffman::new(*view);
    fused.decode_range(0..view.chunk_count(), out);
    fused.finish(t)
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

/// Most decoded bytes per piece when a tensor larger than a batch is decoded
/// and written piece by piece (pieces are also at most a batch): memory
/// stays bounded by the batch size whatever the tensor size.
const STREAM_PIECE_BYTES: usize = 8 << 20;

/// What the writer gets next: consecutive tensors of at most `batch_bytes`
/// decoded bytes, or one tensor larger than that, in pieces.
#[derive(Debug, Clone)]
enum Unit {
    Batch(Range<usize>),
    Pieces(usize),
}

fn units(tensors: &[Tensor<'_>], batch_bytes: u64) -> Vec<Unit> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < tensors.len() {
        if tensors[start].decoded_len() > batch_bytes {
            out.push(Unit::Pieces(start));
            start += 1;
            continue;
        }
        let mut end = start;
        let mut bytes = 0u64;
        while end < tensors.len() && bytes + tensors[end].decoded_len() <= batch_bytes {
            bytes += tensors[end].decoded_len();
            end += 1;
        }
        out.push(Unit::Batch(start..end));
        start = end;
    }
    out
}

/// Grows `buf` to at least `len` bytes (never shrinks it) and returns its
/// first `len` bytes. Grown, it is a new zeroed allocation rather than a
/// resized one: a large one then comes zeroed from the kernel as its pages
/// are first written, where resizing would copy the old bytes and write
/// zeros over the rest first.
fn room(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buf.len() < len {
        *buf = vec![0; len];
    }
    &mut buf[..len]
}

/// A tensor being decoded piece by piece.
enum Streaming<'f> {
    /// Huffman: chunk ranges, CRCs fused and checked after the last piece.
    Huffman {
        tensor: usize,
        fused: Box<FusedHuffman<'f>>,
        next_chunk: usize,
    },
    /// Raw: byte ranges, one CRC for both checks.
    Raw {
        tensor: usize,
        next_byte: usize,
        crc: Hasher,
    },
}

/// The decoding side of [`write_safetensors`]: fills a buffer with the next
/// bytes to write and says which tensors (and how many bytes of each) they
/// are.
struct Decoding<'f, 't> {
    tensors: &'t [Tensor<'f>],
    /// Decoded bytes per piece of a tensor larger than a batch.
    piece_bytes: usize,
    units: Vec<Unit>,
    next_unit: usize,
    streaming: Option<Streaming<'f>>,
}

impl<'f> Decoding<'f, '_> {
    /// Bytes the first fill of `unit` decodes: a batch whole, a tensor in
    /// pieces its first piece.
    fn unit_first_fill(&self, unit: &Unit) -> usize {
        match unit {
            Unit::Batch(r) => self.tensors[r.clone()]
                .iter()
                .map(|t| t.decoded_len() as usize)
                .sum(),
            Unit::Pieces(k) => self
                .piece_bytes
                .min(self.tensors[*k].decoded_len() as usize),
        }
    }

    /// Decodes the next bytes into `buf`; returns `(tensor, bytes)` for each
    /// part of them, or `None` at the end.
    fn fill(&mut self, buf: &mut Vec<u8>) -> Result<Option<Vec<(usize, usize)>>, RestoreError> {
        if self.streaming.is_none() {
            let Some(unit) = self.units.get(self.next_unit).cloned() else {
                return Ok(None);
            };
            self.next_unit += 1;
            let first_fill = self.unit_first_fill(&unit);
            match unit {
                Unit::Batch(r) => {
                    decode_batch(&self.tensors[r.clone()], room(buf, first_fill))?;
                    return Ok(Some(
                        r.map(|k| (k, self.tensors[k].decoded_len() as usize))
                            .collect(),
                    ));
                }
                Unit::Pieces(k) => {
                    if let Some(whole) = self.start_streaming(k, buf)? {
                        return Ok(Some(vec![(k, whole)]));
                    }
                }
            }
        }
        self.next_piece(buf).map(Some)
    }

    /// Starts decoding tensor `k` in pieces; tensors of other encodings are
    /// decoded whole into `buf` (returning their length).
    fn start_streaming(
        &mut self,
        k: usize,
        buf: &mut Vec<u8>,
    ) -> Result<Option<usize>, RestoreError> {
        let t = &self.tensors[k];
        // The checks before any decoding, in the order decode_into makes them.
        let encoded = match t.check_section_structure().and_then(|()| t.encoded()) {
            Ok(e) => e,
            Err(e) => {
                t.check_data_crc().map_err(RestoreError::Format)?;
                return Err(RestoreError::Format(e));
            }
        };
        self.streaming = Some(match encoded {
            Encoded::Huffman(view) => Streaming::Huffman {
                tensor: k,
                fused: Box::new(FusedHuffman::new(view)),
                next_chunk: 0,
            },
            Encoded::Raw(_) => Streaming::Raw {
                tensor: k,
                next_byte: 0,
                crc: Hasher::new(),
            },
            Encoded::Palette4(_) => {
                let len = t.decoded_len() as usize;
                decode_tensor_parallel(t, room(buf, len)).map_err(RestoreError::Format)?;
                return Ok(Some(len));
            }
        });
        Ok(None)
    }

    /// The next piece of the tensor being streamed, checked after its last.
    fn next_piece(&mut self, buf: &mut Vec<u8>) -> Result<Vec<(usize, usize)>, RestoreError> {
        let state = self.streaming.as_mut().expect("a tensor is being streamed");
        let (k, len, done) = match state {
            Streaming::Huffman {
                tensor,
                fused,
                next_chunk,
            } => {
                let view = fused.view;
                let chunk_bytes = 2 * view.chunk_len();
                let per_piece = (self.piece_bytes / chunk_bytes).max(1);
                let range = *next_chunk..(*next_chunk + per_piece).min(view.chunk_count());
                let values =
                    view.chunk_range(range.start).start..view.chunk_range(range.end - 1).end;
                let len = 2 * values.len();
                fused.decode_range(range.clone(), room(buf, len));
                *next_chunk = range.end;
                if fused.so_far.error.is_some() && range.end < view.chunk_count() {
                    // Stop at the first error: skip to the end to report it.
                    *next_chunk = view.chunk_count();
                }
                (*tensor, len, *next_chunk == view.chunk_count())
            }
            Streaming::Raw {
                tensor,
                next_byte,
                crc,
            } => {
                let bytes = self.tensors[*tensor].data();
                let piece = &bytes[*next_byte..(*next_byte + self.piece_bytes).min(bytes.len())];
                crc.update(piece);
                room(buf, piece.len()).copy_from_slice(piece);
                *next_byte += piece.len();
                (*tensor, piece.len(), *next_byte == bytes.len())
            }
        };
        if done {
            let t = &self.tensors[k];
            match self.streaming.take().expect("a tensor is being streamed") {
                Streaming::Huffman { fused, .. } => fused.finish(t),
                Streaming::Raw { crc, .. } => {
                    let computed = crc.finalize();
                    check_crc(t, Checksummed::Data(t.index()), t.data_crc(), computed).and_then(
                        |()| {
                            check_crc(
                                t,
                                Checksummed::Decoded(t.index()),
                                t.decoded_crc(),
                                computed,
                            )
                        },
                    )
                }
            }
            .map_err(RestoreError::Format)?;
        }
        Ok(vec![(k, len)])
    }
}

/// Decodes `tensors` into `buf` (exactly their total length), in parallel.
fn decode_batch(tensors: &[Tensor<'_>], buf: &mut [u8]) -> Result<(), RestoreError> {
    let mut slices = Vec::with_capacity(tensors.len());
    let mut rest = buf;
    for t in tensors {
        let (s, r) = rest.split_at_mut(t.decoded_len() as usize);
        slices.push(s);
        rest = r;
    }
    // One job per tensor, as in `convert::convert` (why: there).
    tensors
        .par_iter()
        .with_max_len(1)
        .zip(slices)
        .try_for_each(|(t, s)| decode_tensor_parallel(t, s))
        .map_err(RestoreError::Format)
}

/// What [`write_safetensors`] tells its caller as it goes. Any
/// `Fn(u64) + Sync` closure is one: it hears [`Progress::written`].
pub trait Progress: Sync {
    /// `bytes` more decoded bytes have been written.
    fn written(&self, bytes: u64);

    /// Every section has been decoded: the input is not read again. Called
    /// once (unless decoding fails first), on a decoding thread, while the
    /// calling thread writes the last batch: a caller can give back the
    /// input's pages there, off the path the writing takes (`uw decode`
    /// does). (Called a round earlier, beside the decoding of the last
    /// batch, it gained less: that round then took longer.)
    fn input_done(&self) {}
}

impl<F: Fn(u64) + Sync> Progress for F {
    fn written(&self, bytes: u64) {
        self(bytes)
    }
}

/// Writes the safetensors file that `file` was made from: the 8-byte header
/// length, the header, then every tensor decoded: consecutive tensors in
/// batches of at most `batch_bytes` decoded in parallel, a larger tensor in
/// pieces of at most 8 MiB (and at most a batch, or 64 KiB). Tells
/// `progress` of each part written, and when the input is done with.
///
/// While one buffer is written on the calling thread, the next is decoded on
/// the pool, so writing overlaps decoding. Two buffers are reused throughout:
/// peak memory is about two batches (or two pieces, or for a palette-4
/// tensor larger than a batch, that tensor).
///
/// A tensor decoded in pieces is checked (CRCs, stream) as its pieces are
/// decoded, so on a damaged one the output already holds its first pieces
/// when the error comes: callers write to a temporary file.
pub fn write_safetensors<W: Write>(
    file: &UwFile<'_>,
    mut out: W,
    batch_bytes: u64,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<W, RestoreError> {
    let header = file.safetensors_header();
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(RestoreError::Io)?;
    out.write_all(header.as_bytes()).map_err(RestoreError::Io)?;
    let tensors: Vec<Tensor<'_>> = file.tensors().collect();
    let mut decoding = Decoding {
        tensors: &tensors,
        piece_bytes: (batch_bytes.min(STREAM_PIECE_BYTES as u64) as usize).max(64 << 10),
        units: units(&tensors, batch_bytes),
        next_unit: 0,
        streaming: None,
    };
    // The most bytes one fill decodes: both buffers grow to this (see below).
    let max_fill = decoding
        .units
        .iter()
        .map(|u| decoding.unit_first_fill(u))
        .max()
        .unwrap_or(0);
    let (mut ready, mut next) = (Vec::new(), Vec::new());
    let mut ready_parts: Option<Vec<(usize, usize)>> = None;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(RestoreError::Interrupted);
        }
        let mut filled = Ok(None);
        let mut written = Ok(());
        // The unit after the one the workers decode now (a tensor decoded
        // in pieces: its first batch), whose input is mapped in meanwhile
        // (see `crate::prefault`).
        let after = if decoding.streaming.is_none() {
            decoding.units.get(decoding.next_unit + 1)
        } else {
            decoding.units.get(decoding.next_unit)
        }
        .cloned();
        // Whether a fill may follow this round's: if not, the buffer being
        // written now is not needed again.
        let more_fills = after.is_some()
            || decoding.streaming.is_some()
            || matches!(
                decoding.units.get(decoding.next_unit),
                Some(Unit::Pieces(_))
            );
        // With a writing thread outside the pool, the input is mapped in by
        // whichever of it and the worker finishes first. (Inside the pool,
        // the writer is a worker: the decoding threads take the faults.)
        let writer_apart = rayon::current_thread_index().is_none();
        let range = match after.filter(|_| writer_apart) {
            Some(Unit::Batch(r)) => r,
            Some(Unit::Pieces(k)) => k..k + 1,
            None => 0..0,
        };
        let budget = usize::try_from(batch_bytes).unwrap_or(usize::MAX);
        let mapping = SharedMapIn::new(tensors[range].iter().map(|t| t.data()), budget);
        rayon::in_place_scope(|s| {
            let (decoding, next, filled, mapping) =
                (&mut decoding, &mut next, &mut filled, &mapping);
            s.spawn(move |_| {
                *filled = decoding.fill(next);
                mapping.help();
                if matches!(filled, Ok(None)) {
                    progress.input_done();
                }
            });
            if let Some(parts) = &ready_parts {
                written = write_parts(&mut out, parts, &ready, progress);
            }
            if writer_apart {
                if more_fills && ready.len() < max_fill {
                    // `ready` is the buffer the next fill decodes into (the
                    // buffers swap): this thread faults in its pages (in
                    // the first round, and in the second after writing the
                    // first fill's smaller buffer), so that the worker does
                    // not while it decodes. Grown to the largest fill, it
                    // never grows again. `uw decode --threads 1` to tmpfs:
                    // 30 alternating runs twice, bests 0.9-1.3 ms and
                    // medians 1.1-1.4 ms faster (of 30-35) than faulting in
                    // the first round's alone.
                    for page in room(&mut ready, max_fill).chunks_mut(4096) {
                        page[0] = std::hint::black_box(0);
                    }
                }
                mapping.help();
            }
        });
        written?;
        ready_parts = filled?;
        if ready_parts.is_none() {
            break;
        }
        std::mem::swap(&mut ready, &mut next);
    }
    out.flush().map_err(RestoreError::Io)?;
    Ok(out)
}

/// Writes decoded parts straight from their buffer, all in one call: the
/// parts lie end to end there, and a part smaller than the writer's buffer
/// written alone would be copied into it first.
fn write_parts<W: Write>(
    out: &mut W,
    parts: &[(usize, usize)],
    buf: &[u8],
    progress: &dyn Progress,
) -> Result<(), RestoreError> {
    let total = parts.iter().map(|&(_, len)| len).sum();
    out.write_all(&buf[..total]).map_err(RestoreError::Io)?;
    for &(_, len) in parts {
        progress.written(len as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{ConvertOptions, Target, convert_to_vec, parse_safetensors};
    use crate::work_split::tests::HELP_FIRST;

    /// A safetensors image with BF16 tensors of several sizes and one F32.
    fn image() -> Vec<u8> {
        let mut seed = 0x1234_5678u64;
        let mut value = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Weight-like: exponents around 120, random sign and mantissa.
            let e = 116 + (seed % 9) as u16;
            (e << 7 | (seed >> 32) as u16 & 0x807F).to_le_bytes()
        };
        let shapes: [(&str, &str, usize); 4] = [
            ("a", "BF16", 300_000),
            ("b", "BF16", 5),
            ("c", "F32", 1000),
            ("d", "BF16", 70_000),
        ];
        let mut header = String::from("{");
        let mut data = Vec::new();
        for (i, (name, dtype, n)) in shapes.iter().enumerate() {
            let bytes = if *dtype == "F32" { 4 * n } else { 2 * n };
            let start = data.len();
            while data.len() < start + bytes {
                data.extend_from_slice(&value());
            }
            header += &format!(
                "{}\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{n}],\"data_offsets\":[{start},{}]}}",
                if i > 0 { "," } else { "" },
                start + bytes
            );
        }
        header += "}";
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&data);
        out
    }

    fn restore(file: &[u8], batch_bytes: u64) -> Result<Vec<u8>, RestoreError> {
        let file = UwFile::from_bytes(file).expect("valid file");
        write_safetensors(
            &file,
            Vec::new(),
            batch_bytes,
            &|_| {},
            &AtomicBool::new(false),
        )
    }

    #[test]
    fn batches_and_pieces_give_the_source_back() {
        let source_bytes = image();
        let source = parse_safetensors(&source_bytes).expect("valid image");
        for target in [Target::Huffman, Target::Palette4, Target::Raw] {
            let opts = ConvertOptions {
                target,
                ..Default::default()
            };
            let (file, _) = convert_to_vec(&source, &opts).expect("converts");
            // Whole batches, tensors larger than a batch in one or several
            // pieces, pieces smaller than a chunk.
            for batch in [64 << 20, 700_000, 100_000, 20_000] {
                let back = restore(&file, batch).expect("decodes");
                assert!(back == source_bytes, "{target:?}, batch {batch}");
            }
        }
    }

    #[test]
    fn progress_hears_every_byte_and_the_input_done_once() {
        use std::sync::atomic::AtomicU64;
        struct Counts {
            written: AtomicU64,
            input_done: AtomicU64,
        }
        impl Progress for Counts {
            fn written(&self, bytes: u64) {
                self.written.fetch_add(bytes, Ordering::SeqCst);
            }
            fn input_done(&self) {
                self.input_done.fetch_add(1, Ordering::SeqCst);
            }
        }
        let source_bytes = image();
        let source = parse_safetensors(&source_bytes).expect("valid image");
        let (file, _) = convert_to_vec(&source, &ConvertOptions::default()).expect("converts");
        let file = UwFile::from_bytes(&file).expect("valid file");
        let decoded: u64 = file.tensors().map(|t| t.decoded_len()).sum();
        for batch in [64 << 20, 100_000, 20_000] {
            let counts = Counts {
                written: AtomicU64::new(0),
                input_done: AtomicU64::new(0),
            };
            let back =
                write_safetensors(&file, Vec::new(), batch, &counts, &AtomicBool::new(false))
                    .expect("decodes");
            assert!(back == source_bytes);
            assert_eq!(counts.written.into_inner(), decoded, "batch {batch}");
            assert_eq!(counts.input_done.into_inner(), 1, "batch {batch}");
        }
    }

    /// Flips a bit of tensor `a`'s section 10 bytes before its end.
    fn damage_the_end_of_a(file: &mut [u8]) {
        let at = UwFile::from_bytes(file)
            .expect("valid")
            .tensor("a")
            .map(|t| (t.data_offset() + t.stored_len() - 10) as usize)
            .expect("tensor a");
        file[at] ^= 0x10;
    }

    #[test]
    fn a_damaged_tensor_decoded_in_pieces_is_reported() {
        let source_bytes = image();
        let source = parse_safetensors(&source_bytes).expect("valid image");
        for target in [Target::Huffman, Target::Raw] {
            let opts = ConvertOptions {
                target,
                ..Default::default()
            };
            let (mut file, _) = convert_to_vec(&source, &opts).expect("converts");
            damage_the_end_of_a(&mut file);
            match restore(&file, 100_000) {
                Err(RestoreError::Format(Error::ChecksumMismatch {
                    what: Checksummed::Data(0),
                    ..
                })) => {}
                other => panic!("{target:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn groups_taken_from_the_back_decode_the_same() {
        let source_bytes = image();
        let source = parse_safetensors(&source_bytes).expect("valid image");
        let (mut file, _) = convert_to_vec(&source, &ConvertOptions::default()).expect("converts");
        let decode_a = |file: &[u8]| {
            let uw = UwFile::from_bytes(file).expect("valid");
            let t = uw.tensor("a").expect("tensor a");
            let mut out = vec![0u8; t.decoded_len() as usize];
            HELP_FIRST.set(true);
            let r = decode_tensor_parallel(&t, &mut out);
            HELP_FIRST.set(false);
            r.map(|()| out)
        };
        let a = &source.tensors[0];
        assert_eq!(a.name, "a");
        assert!(decode_a(&file).expect("decodes") == a.bytes);
        // A damaged stream byte near the end (in a group from the back):
        // still the data CRC.
        damage_the_end_of_a(&mut file);
        match decode_a(&file) {
            Err(Error::ChecksumMismatch {
                what: Checksummed::Data(0),
                ..
            }) => {}
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
