//! `uw bench`: in-memory throughput of the `.uw` encoders and decoders, next
//! to a plain memory copy and zstd level 3 on the same bytes.
//!
//! Everything is timed on data held in memory, so the figures are CPU speed,
//! not disk speed. Throughput is always raw BF16 (decoded) bytes per second.
//! Each measurement is repeated and the fastest run kept: on a shared,
//! noisy machine the minimum is the most repeatable figure, and the memory
//! copy measured in the same run gives a yardstick for how fast the machine
//! was at the time (the `x memcpy` columns).
//!
//! What is timed, per form:
//! - `memcpy`: copying every tensor's bytes into a preallocated buffer.
//! - `zstd -3`: `zstd` level 3 on each tensor's bytes (one frame per tensor),
//!   and decompression into preallocated buffers.
//! - `uw huffman` / `uw palette4`: per tensor what `uw convert` does apart
//!   from I/O (encode, CRC of the raw bytes, CRC of the section), and what
//!   `uw decode` does apart from I/O (CRC of the section, decode into a
//!   preallocated buffer, CRC of the result).
//!
//! Tensors are processed in parallel as in `uw convert` / `uw decode`, each
//! large tensor also in parallel inside, on a pool of the given size.

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use uw_format::{Dtype, Tensor, UwFile};

use crate::bf16_split::{entropy_bits, exponent_histogram};
use crate::buffers::BufferPool;
use crate::convert::{
    ConvertOptions, Target, convert_to_vec, encode_tensor_with_crc, parse_safetensors,
};
use crate::restore::{decode_tensor_parallel, write_safetensors};

/// zstd level of the comparison row.
pub const ZSTD_LEVEL: i32 = 3;

/// One row of the table: a form and its speeds.
#[derive(Debug, Clone)]
pub struct Row {
    /// Name of the form.
    pub name: &'static str,
    /// Stored size over raw size (for `.uw` forms: whole file over whole
    /// input file, as `uw convert` reports).
    pub ratio: f64,
    /// Encode throughput, raw GB/s (1e9 bytes per second).
    pub encode_gbps: f64,
    /// Decode throughput, raw GB/s.
    pub decode_gbps: f64,
    /// Encode throughput per CPU-second (all threads), where measurable.
    pub encode_gb_per_cpu_s: Option<f64>,
    /// Decode throughput per CPU-second (all threads), where measurable.
    pub decode_gb_per_cpu_s: Option<f64>,
}

impl Row {
    fn new(name: &'static str, ratio: f64, raw: u64, enc: Timing, dec: Timing) -> Self {
        let (encode_gbps, encode_gb_per_cpu_s) = enc.rates(raw);
        let (decode_gbps, decode_gb_per_cpu_s) = dec.rates(raw);
        Self {
            name,
            ratio,
            encode_gbps,
            decode_gbps,
            encode_gb_per_cpu_s,
            decode_gb_per_cpu_s,
        }
    }
}

/// All rows measured with one pool size.
#[derive(Debug, Clone)]
pub struct Run {
    /// Worker threads.
    pub threads: usize,
    /// Rows, memcpy first.
    pub rows: Vec<Row>,
}

impl Run {
    /// The memory-copy row, the yardstick of this run.
    pub fn memcpy(&self) -> &Row {
        &self.rows[0]
    }
}

/// The outcome of [`run`].
#[derive(Debug, Clone)]
pub struct Report {
    /// File measured.
    pub file: String,
    /// Tensors in it.
    pub tensors: usize,
    /// Raw tensor bytes.
    pub raw_bytes: u64,
    /// Order-0 bound `(8 + H(exponent)) / 16` per BF16 tensor (other dtypes
    /// count as 1), size-weighted: what no exponent-only coder can beat.
    pub entropy_bound: f64,
    /// Repeats per measurement (the best is kept).
    pub repeats: usize,
    /// One run per pool size.
    pub runs: Vec<Run>,
}

/// The model under test, held in memory as a safetensors image.
struct Model {
    image: Vec<u8>,
}

fn load(path: &Path) -> Result<Model, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if path.extension().is_some_and(|e| e == "uw") {
        // Measure on the bytes the .uw file was made from.
        let file = UwFile::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let image = write_safetensors(
            &file,
            Vec::new(),
            64 << 20,
            &|_| {},
            &std::sync::atomic::AtomicBool::new(false),
        )
        .map_err(|e| format!("{}: cannot decode: {e:?}", path.display()))?;
        return Ok(Model { image });
    }
    Ok(Model { image: bytes })
}

/// Fastest of `repeats` runs of `f`: the shortest wall time and,
/// separately, the least CPU time of the process (all threads).
fn best_of(repeats: usize, mut f: impl FnMut()) -> Timing {
    let mut best = Timing {
        wall: Duration::MAX,
        cpu: None,
    };
    for _ in 0..repeats.max(1) {
        let cpu0 = process_cpu_time();
        let t = Instant::now();
        f();
        let wall = t.elapsed();
        let cpu = cpu0
            .zip(process_cpu_time())
            .map(|(a, b)| b.saturating_sub(a));
        best.wall = best.wall.min(wall);
        best.cpu = match (best.cpu, cpu) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    best
}

/// Wall and CPU time of a measurement.
#[derive(Debug, Clone, Copy)]
struct Timing {
    wall: Duration,
    cpu: Option<Duration>,
}

impl Timing {
    /// Raw GB per second of wall time, and per second of CPU time.
    fn rates(self, bytes: u64) -> (f64, Option<f64>) {
        (gbps(bytes, self.wall), self.cpu.map(|c| gbps(bytes, c)))
    }
}

/// CPU time used so far by this process, all threads
/// (`CLOCK_PROCESS_CPUTIME_ID` where there is one, through the `cpu-time`
/// crate). On a shared machine it leaves out the time other processes held
/// the cores. (Linux's per-thread `schedstat`, used before, lags a running
/// thread by up to a scheduler tick: its figures came out quantized.)
fn process_cpu_time() -> Option<Duration> {
    cpu_time::ProcessTime::try_now()
        .ok()
        .map(|t| t.as_duration())
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-12) / 1e9
}

/// Buffers shaped like the tensors, written once so that page faults stay
/// out of the timings.
fn output_buffers(sizes: &[usize]) -> Vec<Vec<u8>> {
    sizes.iter().map(|&n| vec![1u8; n]).collect()
}

fn measure_memcpy(tensors: &[&[u8]], repeats: usize, raw: u64) -> Row {
    let mut outs = output_buffers(&tensors.iter().map(|t| t.len()).collect::<Vec<_>>());
    let d = best_of(repeats, || {
        outs.par_iter_mut()
            .zip(tensors)
            .for_each(|(o, t)| o.copy_from_slice(t));
    });
    Row::new("memcpy", 1.0, raw, d, d)
}

fn measure_zstd(tensors: &[&[u8]], repeats: usize, raw: u64) -> Result<Row, String> {
    let err = |e: std::io::Error| format!("zstd: {e}");
    let mut frames: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| vec![0u8; zstd::zstd_safe::compress_bound(t.len())])
        .collect();
    let mut sizes = vec![0usize; tensors.len()];
    let mut failed = None;
    let enc = best_of(repeats, || {
        let r: std::io::Result<Vec<usize>> = frames
            .par_iter_mut()
            .zip(tensors)
            .map_init(
                || zstd::bulk::Compressor::new(ZSTD_LEVEL),
                |c, (f, t)| {
                    c.as_mut()
                        .map_err(|e| std::io::Error::other(e.to_string()))?
                        .compress_to_buffer(t, f.as_mut_slice())
                },
            )
            .collect();
        match r {
            Ok(s) => sizes = s,
            Err(e) => failed = Some(e),
        }
    });
    if let Some(e) = failed {
        return Err(err(e));
    }
    let mut outs = output_buffers(&tensors.iter().map(|t| t.len()).collect::<Vec<_>>());
    let dec = best_of(repeats, || {
        let r: std::io::Result<()> = outs
            .par_iter_mut()
            .zip(&frames)
            .zip(&sizes)
            .try_for_each_init(zstd::bulk::Decompressor::new, |d, ((o, f), &n)| {
                let d = d
                    .as_mut()
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                d.decompress_to_buffer(&f[..n], o.as_mut_slice()).map(drop)
            });
        if let Err(e) = r {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(err(e));
    }
    Ok(Row::new(
        "zstd -3",
        sizes.iter().sum::<usize>() as f64 / raw as f64,
        raw,
        enc,
        dec,
    ))
}

fn measure_uw(
    image: &[u8],
    target: Target,
    name: &'static str,
    repeats: usize,
    raw: u64,
) -> Result<Row, String> {
    let source = parse_safetensors(image)?;
    let opts = ConvertOptions {
        target,
        ..Default::default()
    };
    // Encode: what `convert` does per tensor, without the container I/O.
    // Sections go back to a pool once "written", as in `convert`, which
    // keeps two batches' worth; a new pool per run, as per conversion.
    let largest = source.tensors.iter().map(|t| t.bytes.len()).max();
    let pool_bytes = 2 * largest.unwrap_or(0).max(opts.batch_bytes as usize);
    let enc = best_of(repeats, || {
        let buffers = BufferPool::new(pool_bytes);
        // Both CRCs come from the encoder, as in `convert`.
        // One job per tensor, as in `convert::convert` (why: there).
        let sections: Vec<(u32, u32, usize)> = source
            .tensors
            .par_iter()
            .with_max_len(1)
            .map(|t| {
                let (_, section, crcs) = encode_tensor_with_crc(t.dtype, t.bytes, &opts, &buffers);
                let len = section.len();
                if let Cow::Owned(section) = section {
                    buffers.give(section);
                }
                (crcs.decoded, crcs.data, len)
            })
            .collect();
        std::hint::black_box(sections);
    });
    let (file_bytes, _) =
        convert_to_vec(&source, &opts).map_err(|e| format!("{name}: convert: {e:?}"))?;
    let ratio = file_bytes.len() as f64 / image.len() as f64;
    let file = UwFile::from_bytes(&file_bytes).map_err(|e| format!("{name}: {e}"))?;
    let tensors: Vec<Tensor<'_>> = file.tensors().collect();
    let mut outs = output_buffers(
        &tensors
            .iter()
            .map(|t| t.decoded_len() as usize)
            .collect::<Vec<_>>(),
    );
    let mut failed = None;
    let dec = best_of(repeats, || {
        // One job per tensor, as in `convert::convert` (why: there).
        if let Err(e) = outs
            .par_iter_mut()
            .with_max_len(1)
            .zip(&tensors)
            .try_for_each(|(o, t)| decode_tensor_parallel(t, o))
        {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(format!("{name}: decode: {e}"));
    }
    // The decoded bytes must be the input's: a fast wrong decoder is no use.
    for (o, t) in outs.iter().zip(&source.tensors) {
        if o.as_slice() != t.bytes {
            return Err(format!("{name}: decoded bytes differ from the input"));
        }
    }
    Ok(Row::new(name, ratio, raw, enc, dec))
}

fn entropy_bound(tensors: &[(Dtype, &[u8])]) -> f64 {
    let mut bound_bytes = 0.0;
    let mut raw = 0.0;
    for &(dtype, bytes) in tensors {
        let len = bytes.len() as f64;
        raw += len;
        if dtype == Dtype::BF16 && bytes.len() >= 2 {
            let n = (bytes.len() / 2) as f64;
            let h = entropy_bits(&exponent_histogram(bytes)) / n;
            bound_bytes += len * (8.0 + h) / 16.0;
        } else {
            bound_bytes += len;
        }
    }
    bound_bytes / raw.max(1.0)
}

/// Measures `path` (a .safetensors or .uw file) with each pool size in
/// `threads` (0 = all cores), `repeats` runs per measurement.
pub fn run(path: &Path, threads: &[usize], repeats: usize) -> Result<Report, String> {
    let model = load(path)?;
    let source = parse_safetensors(&model.image)?;
    let slices: Vec<&[u8]> = source.tensors.iter().map(|t| t.bytes).collect();
    let raw: u64 = slices.iter().map(|t| t.len() as u64).sum();
    let typed: Vec<(Dtype, &[u8])> = source.tensors.iter().map(|t| (t.dtype, t.bytes)).collect();
    let mut runs = Vec::new();
    for &n in threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| format!("cannot start {n} threads: {e}"))?;
        let rows = pool.install(|| -> Result<Vec<Row>, String> {
            Ok(vec![
                measure_memcpy(&slices, repeats, raw),
                measure_zstd(&slices, repeats, raw)?,
                measure_uw(&model.image, Target::Huffman, "uw huffman", repeats, raw)?,
                measure_uw(&model.image, Target::Palette4, "uw palette4", repeats, raw)?,
            ])
        })?;
        runs.push(Run {
            threads: pool.current_num_threads(),
            rows,
        });
    }
    Ok(Report {
        file: path.display().to_string(),
        tensors: slices.len(),
        raw_bytes: raw,
        entropy_bound: entropy_bound(&typed),
        repeats,
        runs,
    })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} tensors, {} raw bytes, order-0 entropy bound {:.4}; best of {} runs; GB/s = 1e9 raw bytes/s",
            self.file, self.tensors, self.raw_bytes, self.entropy_bound, self.repeats
        )?;
        for run in &self.runs {
            let copy = run.memcpy();
            writeln!(f)?;
            writeln!(f, "threads: {}", run.threads)?;
            writeln!(
                f,
                "{:<12} {:>7} {:>11} {:>9} {:>11} {:>9} {:>13} {:>13}",
                "form",
                "ratio",
                "encode GB/s",
                "x memcpy",
                "decode GB/s",
                "x memcpy",
                "enc GB/cpu-s",
                "dec GB/cpu-s"
            )?;
            let cpu = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
            for r in &run.rows {
                writeln!(
                    f,
                    "{:<12} {:>7.4} {:>11.3} {:>9.3} {:>11.3} {:>9.3} {:>13} {:>13}",
                    r.name,
                    r.ratio,
                    r.encode_gbps,
                    r.encode_gbps / copy.encode_gbps,
                    r.decode_gbps,
                    r.decode_gbps / copy.decode_gbps,
                    cpu(r.encode_gb_per_cpu_s),
                    cpu(r.decode_gb_per_cpu_s)
                )?;
            }
            writeln!(f, "{:<12} {:>7.4}", "entropy", self.entropy_bound)?;
        }
        if let [first, .., last] = self.runs.as_slice() {
            writeln!(f)?;
            for (a, b) in first.rows.iter().zip(&last.rows) {
                writeln!(
                    f,
                    "speed-up {} -> {} threads, {:<12} encode {:.2}x, decode {:.2}x",
                    first.threads,
                    last.threads,
                    a.name,
                    b.encode_gbps / a.encode_gbps,
                    b.decode_gbps / a.decode_gbps
                )?;
            }
        }
        Ok(())
    }
}
