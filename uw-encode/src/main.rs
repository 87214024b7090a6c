//! `uw`: convert safetensors models to `.uw` and back, inspect and verify.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use uw_encode::atomic::{AtomicDir, AtomicFile};
use uw_encode::bf16_split::entropy_bits;
use uw_encode::convert::{ConvertError, TensorOutcome};
use uw_encode::error::{Error, IoContext, Result};
use uw_encode::restore::RestoreError;
use uw_encode::{ConvertOptions, Target};
use uw_format::{Dtype, UwFile};

#[derive(Parser)]
#[command(
    name = "uw",
    version,
    about = "Lossless compression of LLM weights (.uw files)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum EncodingArg {
    /// Exponent Huffman: smallest, for storage and transfer.
    Huffman,
    /// 4-bit exponent palette: fixed width, for GPU inference.
    Palette4,
    /// No compression.
    Raw,
}

#[derive(clap::Args)]
struct Common {
    /// Worker threads (default: all cores for convert, all but one for
    /// decode). With fewer than the cores, the output is written by a thread
    /// of its own, beside the workers.
    #[arg(long)]
    threads: Option<usize>,
    /// Overwrite OUT if it exists.
    #[arg(long)]
    force: bool,
    /// No progress bar and no summary.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a .safetensors file (or a model directory) to .uw.
    Convert {
        /// A .safetensors file, or a directory (e.g. a Hugging Face model).
        input: PathBuf,
        /// The .uw file (or directory) to write.
        output: PathBuf,
        /// Form of BF16 tensors; other dtypes are always stored raw.
        #[arg(long, value_enum, default_value = "huffman")]
        encoding: EncodingArg,
        /// Section alignment in bytes (power of two >= 64; 4096 for page alignment).
        #[arg(long, default_value_t = 64)]
        align: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Decode a .uw file (or directory) back to the original safetensors bytes.
    Decode {
        /// The .uw file or directory.
        input: PathBuf,
        /// The .safetensors file (or directory) to write.
        output: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Print a per-tensor table of a .uw file.
    Inspect {
        /// The .uw file.
        file: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check every CRC and decode every tensor; non-zero exit on any fault.
    Verify {
        /// The .uw file.
        file: PathBuf,
        /// Print nothing; the exit status tells.
        #[arg(long, short)]
        quiet: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Time the encoders and decoders in memory, next to memcpy and zstd -3.
    Bench {
        /// A .safetensors or .uw file.
        file: PathBuf,
        /// Worker threads (default: one thread, then all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Runs per measurement; the fastest is reported.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
}

static CANCEL: AtomicBool = AtomicBool::new(false);

/// Large buffers on huge pages: fewer page faults (see the module).
#[global_allocator]
static ALLOC: uw_encode::huge_pages::HugePageAlloc = uw_encode::huge_pages::HugePageAlloc;

/// `println!` for the reports on stdout, which returns the error instead of
/// panicking as `println!` does (see [`stdout_failed`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            stdout_failed(e)?;
        }
    }};
}

/// A failed write to stdout. When stdout is a pipe whose reader has gone
/// (`uw inspect f | head`), the output is simply no longer wanted: exit
/// quietly with success, as Unix tools do (only reports go to stdout, so no
/// output file is pending). Anything else is an error.
fn stdout_failed(e: std::io::Error) -> Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    Err(Error::Io {
        path: "<stdout>".into(),
        source: e,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Ctrl-C raises a flag checked between tensors; the partial output is
    // then deleted by its guard's Drop.
    let _ = ctrlc::set_handler(|| CANCEL.store(true, Ordering::SeqCst));
    // A write past the file size limit (`ulimit -f`, a quota) raises SIGXFSZ,
    // whose default action kills the process and leaves the partial output
    // behind. With a handler installed the write fails with EFBIG instead,
    // and the error path deletes the temporary file.
    #[cfg(unix)]
    let _ = signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(AtomicBool::new(false)),
    );
    let threads = match &cli.command {
        Command::Convert { common, .. } | Command::Decode { common, .. } => common.threads,
        _ => None,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // By default `decode` leaves the writing thread a core of its own: on
    // two cores, one worker and the writer took 32.1 ms (best; median 36.0)
    // where two workers, one of them writing, took 35.2 (39.8), 30
    // alternating runs to tmpfs. `convert` takes every core: there two
    // workers beat one (0.88-0.95 against 0.80-0.83 GB/s to tmpfs).
    let default_workers = match &cli.command {
        Command::Decode { .. } => cores.saturating_sub(1).max(1),
        _ => cores,
    };
    let workers = threads.filter(|&t| t > 0).unwrap_or(default_workers);
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build_global()
    {
        eprintln!("uw: cannot start threads: {e}");
        return ExitCode::from(2);
    }
    // convert and decode write the output on the thread that runs them,
    // between handing batches to the workers. With a core to spare, that
    // is this thread, outside the pool: the kernel's side of writing
    // (copying into the page cache, allocating its pages) then overlaps the
    // encoding or decoding instead of following it (`uw decode --threads 1`
    // to tmpfs: 0.81 -> 1.23 GB/s). With every core a worker, one of them
    // writes: a thread more than cores measured 3-10% slower (bests and
    // medians of 15 alternating runs).
    let outcome = if workers < cores {
        run(cli.command)
    } else {
        rayon::scope(|_| run(cli.command))
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("uw: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn progress_bar(total: u64, quiet: bool, what: &str) -> ProgressBar {
    let target = if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Gives back the pages of a read-only file mapping once they have been
/// used: mapped file pages count as resident memory, so without this a
/// conversion's resident size grows to the input file's size. The kernel
/// keeps the data in its page cache; a later read just maps it again.
///
/// `uw decode` keeps inputs of at most [`PageReleaser::KEEP_MAPPED`] bytes
/// mapped whole ([`PageReleaser::keeping_small`]): all of such a file
/// mapped stays well inside the memory a run may use, and giving pages back
/// (`madvise` unmaps page by page) cost its writing thread about a tenth of
/// its time in perf. (Giving them back again later measured no difference
/// either way, five comparisons of 30-60 alternating runs,
/// docs/benchmarks.md.) `uw convert`, whose
/// writing thread waits on the encoder, gives them back always: there it
/// costs nothing, and pages still mapped at the end cost the exit
/// (measured 0.4-1.4 ms per run on MiniLM-L6, bests of 20-30 alternating
/// runs, docs/benchmarks.md).
struct PageReleaser<'m> {
    map: &'m memmap2::Mmap,
    /// Bytes from the start of the map already given back.
    released: std::sync::Mutex<usize>,
    /// Whether pages are given back at all.
    releasing: bool,
}

impl<'m> PageReleaser<'m> {
    /// Pages are given back whole; 4 KiB divides every page size.
    const PAGE: usize = 4096;

    /// The largest input kept mapped whole (a quarter of the 512 MB that a
    /// conversion of a large model stays under, docs/benchmarks.md).
    const KEEP_MAPPED: usize = 128 << 20;

    /// Gives back every page once used.
    fn new(map: &'m memmap2::Mmap) -> Self {
        Self {
            map,
            released: std::sync::Mutex::new(0),
            releasing: true,
        }
    }

    /// Gives back pages only if the map is larger than
    /// [`PageReleaser::KEEP_MAPPED`].
    fn keeping_small(map: &'m memmap2::Mmap) -> Self {
        Self {
            releasing: map.len() > Self::KEEP_MAPPED,
            ..Self::new(map)
        }
    }

    /// Gives back the whole pages below `end` (bytes from the map's start)
    /// not given back yet.
    fn release_below(&self, end: usize) {
        let end = end.min(self.map.len()) / Self::PAGE * Self::PAGE;
        let mut released = self.released.lock().unwrap_or_else(|e| e.into_inner());
        if end > *released {
            self.release(*released, end);
            *released = end;
        }
    }

    /// Gives back the pages of `start..end` (page multiples), whatever was
    /// given back before: after checks at open have touched pages all over
    /// the file (each touch maps its neighbours too).
    fn release(&self, start: usize, end: usize) {
        if self.releasing {
            self.release_always(start, end);
        }
    }

    /// [`PageReleaser::release`], also for a map kept whole.
    #[allow(unsafe_code)]
    fn release_always(&self, start: usize, end: usize) {
        let end = end.min(self.map.len());
        if start < end {
            // SAFETY: a read-only shared map of a file: after MADV_DONTNEED a
            // read faults the same bytes back in from the file, so slices
            // into the map stay valid and unchanged (the "unchecked" advices
            // are unsafe for private or anonymous maps, where it zeroes).
            // Failure only means the pages stay resident.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }
}

#[allow(unsafe_code)]
fn map_input(path: &Path) -> Result<memmap2::Mmap> {
    let f = std::fs::File::open(path).at(path)?;
    // SAFETY: read-only map of an input we do not modify; like every mmap
    // reader, we assume nobody truncates the file while we read it.
    unsafe { memmap2::Mmap::map(&f) }.at(path)
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Convert {
            input,
            output,
            encoding,
            align,
            common,
        } => {
            let target = match encoding {
                EncodingArg::Huffman => Target::Huffman,
                EncodingArg::Palette4 => Target::Palette4,
                EncodingArg::Raw => Target::Raw,
            };
            let opts = ConvertOptions {
                target,
                alignment: align,
                ..Default::default()
            };
            if !align.is_power_of_two() || align < 64 {
                return Err(Error::BadInput(format!(
                    "--align {align}: must be a power of two >= 64"
                )));
            }
            let started = Instant::now();
            let totals = if input.is_dir() {
                let out = AtomicDir::create(&output, common.force)?;
                let t = convert_dir(&input, out.path(), &opts, common.quiet)?;
                out.commit()?;
                t
            } else {
                let out = AtomicFile::create(&output, common.force)?;
                convert_file(&input, out, &opts, common.quiet)?
            };
            if !common.quiet {
                totals.print_summary(&input, &output, started.elapsed().as_secs_f64());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Decode {
            input,
            output,
            common,
        } => {
            let started = Instant::now();
            let (raw, stored) = if input.is_dir() {
                let out = AtomicDir::create(&output, common.force)?;
                let t = decode_dir(&input, out.path(), common.quiet)?;
                out.commit()?;
                t
            } else {
                let out = AtomicFile::create(&output, common.force)?;
                decode_file(&input, out, common.quiet)?
            };
            if !common.quiet {
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "decoded {} -> {}: {} bytes from {} stored, in {:.2} s ({:.2} GB/s)",
                    input.display(),
                    output.display(),
                    raw,
                    stored,
                    secs,
                    raw as f64 / secs / 1e9
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { file, json } => inspect(&file, json),
        Command::Verify { file, quiet, json } => verify(&file, quiet, json),
        Command::Bench {
            file,
            threads,
            repeats,
        } => {
            // Without --threads: one thread, then all cores, and the speed-up.
            let pools = match threads {
                Some(n) => vec![n],
                None => vec![1, 0],
            };
            let report = uw_encode::bench::run(&file, &pools, repeats).map_err(Error::BadInput)?;
            outln!("{}", report.to_string().trim_end());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Totals of a conversion, for the summary line.
#[derive(Default)]
struct Totals {
    files: usize,
    input_bytes: u64,
    output_bytes: u64,
    raw_tensor_bytes: u64,
    outcomes: Vec<TensorOutcome>,
}

impl Totals {
    fn print_summary(&self, input: &Path, output: &Path, secs: f64) {
        let mut by_enc = std::collections::BTreeMap::new();
        for o in &self.outcomes {
            *by_enc.entry(o.encoding.name()).or_insert(0usize) += 1;
        }
        let counts: Vec<String> = by_enc.iter().map(|(k, v)| format!("{v} {k}")).collect();
        eprintln!(
            "converted {} -> {}: {} file(s), {} tensors ({}), {} -> {} bytes, ratio {:.4}, in {:.2} s ({:.2} GB/s)",
            input.display(),
            output.display(),
            self.files,
            self.outcomes.len(),
            counts.join(", "),
            self.input_bytes,
            self.output_bytes,
            self.output_bytes as f64 / self.input_bytes.max(1) as f64,
            secs,
            self.raw_tensor_bytes as f64 / secs / 1e9
        );
    }
}

fn convert_file(
    input: &Path,
    mut out: AtomicFile,
    opts: &ConvertOptions,
    quiet: bool,
) -> Result<Totals> {
    let buf = map_input(input)?;
    let source = uw_encode::parse_safetensors(&buf).map_err(|message| Error::Safetensors {
        path: input.to_path_buf(),
        message,
    })?;
    let total: u64 = source.tensors.iter().map(|t| t.bytes.len() as u64).sum();
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bar = progress_bar(total, quiet, &format!("convert {name}"));
    let tmp_path = PathBuf::from(format!("{} (temporary)", out_display(input)));
    // Tensors are written in data order and the data region has no gaps:
    // everything before the end of the last tensor written is done with.
    let data_start = buf.len() as u64 - total;
    let releaser = PageReleaser::new(&buf);
    let written = std::sync::atomic::AtomicU64::new(0);
    let progress = |n: u64| {
        bar.inc(n);
        let done = written.fetch_add(n, Ordering::Relaxed) + n;
        releaser.release_below((data_start + done) as usize);
    };
    // The output is a seekable file: the directory is recorded in the header too.
    let result = {
        let writer = out.writer();
        uw_encode::convert::convert_seekable(&source, writer, opts, &progress, &CANCEL)
            .map(|(_, finished, outcomes)| (finished, outcomes))
    };
    bar.finish_and_clear();
    let (finished, outcomes) = result.map_err(|e| match e {
        ConvertError::Io(source) => Error::Io {
            path: tmp_path.clone(),
            source,
        },
        ConvertError::Interrupted => Error::Interrupted,
    })?;
    // Ctrl-C during the last batch: still an interruption, not a result.
    if CANCEL.load(Ordering::SeqCst) {
        return Err(Error::Interrupted);
    }
    out.commit()?;
    Ok(Totals {
        files: 1,
        input_bytes: buf.len() as u64,
        output_bytes: finished.file_len,
        raw_tensor_bytes: total,
        outcomes,
    })
}

fn out_display(p: &Path) -> String {
    p.display().to_string()
}

fn is_safetensors(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "safetensors")
}

fn is_uw(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "uw")
}

/// Files under `dir`, sorted, recursively, as paths relative to it.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&abs)
            .at(&abs)?
            .collect::<std::io::Result<_>>()
            .at(&abs)?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let r = rel.join(e.file_name());
            let ft = e.file_type().at(e.path())?;
            if ft.is_dir() {
                stack.push(r);
            } else {
                out.push(r);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn convert_dir(input: &Path, out_dir: &Path, opts: &ConvertOptions, quiet: bool) -> Result<Totals> {
    let files = walk(input)?;
    if !files.iter().any(|f| is_safetensors(f)) {
        return Err(Error::BadInput(format!(
            "{}: no .safetensors file in this directory",
            input.display()
        )));
    }
    let mut totals = Totals::default();
    for rel in files {
        let src = input.join(&rel);
        let dest = out_dir.join(&rel);
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p).at(p)?;
        }
        if is_safetensors(&rel) {
            let dest = dest.with_extension("uw");
            let t = convert_file(&src, AtomicFile::create(&dest, false)?, opts, quiet)?;
            totals.files += 1;
            totals.input_bytes += t.input_bytes;
            totals.output_bytes += t.output_bytes;
            totals.raw_tensor_bytes += t.raw_tensor_bytes;
            totals.outcomes.extend(t.outcomes);
        } else {
            // Config, tokenizer, index: copied as they are.
            std::fs::copy(&src, &dest).at(&dest)?;
        }
        if CANCEL.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
    }
    Ok(totals)
}

fn open_uw(path: &Path) -> Result<UwFile<'static>> {
    UwFile::open(path).map_err(|source| match source {
        uw_format::Error::Io(source) => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        source => Error::Format {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Step R1 (spec §6.2): the stored source header matches the directory.
fn check_source_header(path: &Path, file: &UwFile<'_>) -> Result<()> {
    uw_encode::source_header::check_file(file)
        .map_err(|m| Error::BadInput(format!("{}: BadSourceHeader: {m}", path.display())))
}

/// What `uw decode` does as a file is written: the progress bar, and the
/// input's pages given back as they are done with (see [`PageReleaser`]).
struct DecodeProgress<'a> {
    bar: &'a ProgressBar,
    /// (decoded bytes written, tensors finished)
    written: &'a std::sync::Mutex<(u64, usize)>,
    /// Per tensor: (decoded bytes up to its end, its section's end).
    ends: &'a [(u64, u64)],
    releaser: &'a PageReleaser<'a>,
    /// Where the last section ends, rounded down to a page: the directory
    /// after it is not given back.
    data_end: usize,
}

impl uw_encode::restore::Progress for DecodeProgress<'_> {
    fn written(&self, n: u64) {
        self.bar.inc(n);
        let mut w = self.written.lock().unwrap_or_else(|e| e.into_inner());
        w.0 += n;
        while let Some(&(_, section_end)) = self.ends.get(w.1).filter(|e| e.0 <= w.0) {
            self.releaser.release_below(section_end as usize);
            w.1 += 1;
        }
    }

    /// Gives back every page of the sections, whatever the input's size,
    /// on the decoding thread while the last batch is written: the
    /// pages would otherwise be unmapped at exit, after the last write
    /// (about 1.8 ms for MiniLM-L6's 30 MB in strace).
    fn input_done(&self) {
        self.releaser.release_always(0, self.data_end);
    }
}

fn decode_file(input: &Path, mut out: AtomicFile, quiet: bool) -> Result<(u64, u64)> {
    // Mapped here rather than by UwFile::open, so that the sections already
    // decoded can be given back (see PageReleaser).
    let map = map_input(input)?;
    // Opening reads the directory; with the kernel's default read-around,
    // each small read there would map its neighbours too. Decoding then
    // reads sections in order, where read-ahead helps.
    let _ = map.advise(memmap2::Advice::Random);
    // Section headers are checked as each tensor is decoded, not all at
    // open: that touched a page of every section (and the kernel mapped
    // their neighbours), over 500 MB resident for a 4 GB model.
    let file =
        UwFile::from_bytes_checking_sections_on_use(&map).map_err(|source| Error::Format {
            path: input.to_path_buf(),
            source,
        })?;
    let _ = map.advise(memmap2::Advice::Sequential);
    check_source_header(input, &file)?;
    // Tensors are written in directory order, which is data order: once
    // tensor k's decoded bytes are all written, everything before its
    // section's end is done with.
    let ends: Vec<(u64, u64)> = file
        .tensors()
        .scan(0u64, |decoded, t| {
            *decoded += t.decoded_len();
            Some((*decoded, t.data_offset() + t.stored_len()))
        })
        .collect();
    let releaser = PageReleaser::keeping_small(&map);
    // Opening checked the structure all over the file; start from nothing
    // resident but the directory.
    let data_end =
        ends.last().map_or(0, |e| e.1) as usize / PageReleaser::PAGE * PageReleaser::PAGE;
    releaser.release(0, data_end);
    // (decoded bytes written, tensors finished)
    let written = std::sync::Mutex::new((0u64, 0usize));
    let total: u64 = file.tensors().map(|t| t.decoded_len()).sum();
    let stored = file.as_bytes().len() as u64;
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bar = progress_bar(total, quiet, &format!("decode {name}"));
    let progress = DecodeProgress {
        bar: &bar,
        written: &written,
        ends: &ends,
        releaser: &releaser,
        data_end,
    };
    // 4 MiB batches: the two batch buffers are first touched (page faults)
    // once per process, which for small files costs more than larger batches
    // gain; larger tensors are decoded in pieces (docs/benchmarks.md).
    let result =
        uw_encode::write_safetensors(&file, out.writer(), 4 << 20, &progress, &CANCEL).map(drop);
    bar.finish_and_clear();
    result.map_err(|e| match e {
        RestoreError::Io(source) => Error::Io {
            path: input.with_extension("safetensors"),
            source,
        },
        RestoreError::Format(source) => Error::Format {
            path: input.to_path_buf(),
            source,
        },
        RestoreError::Interrupted => Error::Interrupted,
    })?;
    // Ctrl-C during the last batch: still an interruption, not a result.
    if CANCEL.load(Ordering::SeqCst) {
        return Err(Error::Interrupted);
    }
    out.commit()?;
    Ok((total, stored))
}

fn decode_dir(input: &Path, out_dir: &Path, quiet: bool) -> Result<(u64, u64)> {
    let files = walk(input)?;
    let (mut raw, mut stored) = (0, 0);
    for rel in files {
        let src = input.join(&rel);
        let dest = out_dir.join(&rel);
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p).at(p)?;
        }
        if is_uw(&rel) {
            let (r, s) = decode_file(
                &src,
                AtomicFile::create(&dest.with_extension("safetensors"), false)?,
                quiet,
            )?;
            raw += r;
            stored += s;
        } else {
            std::fs::copy(&src, &dest).at(&dest)?;
        }
        if CANCEL.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
    }
    Ok((raw, stored))
}

#[derive(Serialize)]
struct InspectRow {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    encoding: &'static str,
    raw_bytes: u64,
    stored_bytes: u64,
    ratio: f64,
    /// (8 + H(exponent)) / 16 for BF16 tensors: the order-0 bound.
    entropy_bound: Option<f64>,
}

#[derive(Serialize)]
struct InspectReport {
    file: String,
    version: String,
    alignment: u32,
    file_bytes: u64,
    raw_bytes: u64,
    ratio: f64,
    entropy_bound: f64,
    metadata: std::collections::BTreeMap<String, String>,
    tensors: Vec<InspectRow>,
}

fn inspect(path: &Path, json: bool) -> Result<ExitCode> {
    use rayon::prelude::*;
    let file = open_uw(path)?;
    let rows: Vec<InspectRow> = file
        .tensors()
        .collect::<Vec<_>>()
        .par_iter()
        .map(|t| {
            let entropy_bound = if t.dtype() == Dtype::BF16 && t.decoded_len() > 0 {
                let mut buf = vec![0u8; t.decoded_len() as usize];
                uw_encode::decode_tensor_parallel(t, &mut buf).map_err(|source| Error::Format {
                    path: path.to_path_buf(),
                    source,
                })?;
                let h = uw_encode::bf16_split::exponent_histogram(&buf);
                let n = (buf.len() / 2) as f64;
                Some((8.0 + entropy_bits(&h) / n) / 16.0)
            } else {
                None
            };
            Ok(InspectRow {
                name: t.name().to_owned(),
                dtype: t.dtype().to_string(),
                shape: t.shape().to_vec(),
                encoding: t.encoding().name(),
                raw_bytes: t.decoded_len(),
                stored_bytes: t.stored_len(),
                ratio: t.stored_len() as f64 / t.decoded_len().max(1) as f64,
                entropy_bound,
            })
        })
        .collect::<Result<_>>()?;
    let raw: u64 = rows.iter().map(|r| r.raw_bytes).sum();
    let bound: f64 = rows
        .iter()
        .map(|r| r.entropy_bound.unwrap_or(1.0) * r.raw_bytes as f64)
        .sum();
    let report = InspectReport {
        file: path.display().to_string(),
        version: format!("{}.{}", file.version().0, file.version().1),
        alignment: file.alignment(),
        file_bytes: file.as_bytes().len() as u64,
        raw_bytes: raw,
        ratio: file.as_bytes().len() as f64 / raw.max(1) as f64,
        entropy_bound: bound / raw.max(1) as f64,
        metadata: file
            .metadata()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        tensors: rows,
    };
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serializable")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let width = report
        .tensors
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 60);
    outln!(
        "{:<width$}  {:<5} {:<16} {:<8} {:>12} {:>12} {:>7} {:>7}",
        "name",
        "dtype",
        "shape",
        "encoding",
        "raw",
        "stored",
        "ratio",
        "bound"
    );
    for r in &report.tensors {
        let shape = format!("{:?}", r.shape);
        let bound = r
            .entropy_bound
            .map(|b| format!("{b:.4}"))
            .unwrap_or_else(|| "-".into());
        outln!(
            "{:<width$}  {:<5} {:<16} {:<8} {:>12} {:>12} {:>7.4} {:>7}",
            r.name,
            r.dtype,
            shape,
            r.encoding,
            r.raw_bytes,
            r.stored_bytes,
            r.ratio,
            bound
        );
    }
    outln!(
        "total: {} tensors, {} raw bytes, file {} bytes, ratio {:.4} (order-0 entropy bound {:.4}), format v{}, alignment {}",
        report.tensors.len(),
        report.raw_bytes,
        report.file_bytes,
        report.ratio,
        report.entropy_bound,
        report.version,
        report.alignment
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct VerifyReport {
    file: String,
    ok: bool,
    tensors: usize,
    decoded_bytes: u64,
    error: Option<String>,
}

fn verify(path: &Path, quiet: bool, json: bool) -> Result<ExitCode> {
    use rayon::prelude::*;
    let outcome = (|| -> Result<(usize, u64)> {
        let file = open_uw(path)?;
        let fault = |source| Error::Format {
            path: path.to_path_buf(),
            source,
        };
        // Structure and padding (cheap), then every tensor decoded in parallel.
        let total: u64 = file.tensors().map(|t| t.decoded_len()).sum();
        let bar = progress_bar(total, quiet || json, "verify");
        let tensors: Vec<_> = file.tensors().collect();
        // One job per tensor, as in `convert::convert` (why: there).
        tensors
            .par_iter()
            .with_max_len(1)
            .try_for_each(|t| {
                let mut buf = vec![0u8; t.decoded_len() as usize];
                let r = uw_encode::decode_tensor_parallel(t, &mut buf);
                bar.inc(t.decoded_len());
                r
            })
            .map_err(fault)?;
        file.check_padding().map_err(fault)?;
        check_source_header(path, &file)?;
        bar.finish_and_clear();
        Ok((tensors.len(), total))
    })();
    let report = VerifyReport {
        file: path.display().to_string(),
        ok: outcome.is_ok(),
        tensors: outcome.as_ref().map(|o| o.0).unwrap_or(0),
        decoded_bytes: outcome.as_ref().map(|o| o.1).unwrap_or(0),
        error: outcome.as_ref().err().map(|e| e.to_string()),
    };
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serializable")
        );
    } else if !quiet {
        match &outcome {
            Ok((n, bytes)) => outln!(
                "{}: OK ({n} tensors, {bytes} bytes, every CRC checked)",
                path.display()
            ),
            Err(e) => eprintln!("uw: verify failed: {e}"),
        }
    }
    Ok(if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
