//! The `uw` binary when things go wrong: a full disk (simulated with a file
//! size limit), Ctrl-C mid-way, an existing output, invalid input, a reader
//! that closes the pipe early. In every
//! case the output is complete or absent, no temporary file is left behind,
//! and the exit status and message say what happened.

#![cfg(unix)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn uw() -> &'static str {
    env!("CARGO_BIN_EXE_uw")
}

fn run(args: &[&Path]) -> Output {
    Command::new(uw())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("uw runs")
}

/// Runs `uw` with its file size limit (`ulimit -f`, in 512-byte blocks for
/// POSIX sh) at `blocks`: past it, writes fail as on a full disk or quota.
fn run_with_file_size_limit(blocks: u32, args: &[&Path]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -f {blocks} && exec \"$0\" \"$@\""))
        .arg(uw())
        .args(args)
        .stdin(Stdio::null());
    cmd.output().expect("sh runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Names of the entries of `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("readable")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn temporaries(dir: &Path) -> Vec<String> {
    listing(dir)
        .into_iter()
        .filter(|n| n.starts_with(".uw-partial-"))
        .collect()
}

/// A safetensors file of `tensors` BF16 tensors of `elements` values each,
/// with weight-like exponents (so the Huffman form is chosen).
fn write_safetensors(path: &Path, tensors: usize, elements: usize) {
    let mut header = String::from("{");
    let bytes_per = 2 * elements;
    for t in 0..tensors {
        if t > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"w{t}\":{{\"dtype\":\"BF16\",\"shape\":[{elements}],\"data_offsets\":[{},{}]}}",
            t * bytes_per,
            (t + 1) * bytes_per
        ));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + tensors * bytes_per);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..tensors * elements {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let r = state >> 32;
        // Exponent 118..=125, skewed towards the top; random sign+mantissa.
        let e = 125 - (r % 64).trailing_zeros().min(7) as u16;
        let w = (r as u16 & 0x807F) | e << 7;
        out.extend_from_slice(&w.to_le_bytes());
    }
    std::fs::write(path, out).expect("writable");
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn convert_onto_a_full_disk_leaves_no_output_and_no_temporary() {
    let dir = tempdir();
    let input = dir.path().join("in.safetensors");
    let output = dir.path().join("out.uw");
    write_safetensors(&input, 4, 1 << 17); // 1 MiB in, ~0.7 MiB out
    // 100 blocks: about 50 KiB may be written.
    let o = run_with_file_size_limit(
        100,
        &[Path::new("convert"), &input, &output, Path::new("-q")],
    );
    assert!(!o.status.success(), "convert succeeded under the limit");
    // Not killed by SIGXFSZ: the write failed, and uw said so and cleaned up.
    assert_eq!(
        o.status.code(),
        Some(1),
        "status {:?}: {}",
        o.status,
        stderr(&o)
    );
    assert!(stderr(&o).contains("File too large"), "{}", stderr(&o));
    assert_eq!(listing(dir.path()), ["in.safetensors"]);
}

#[test]
fn decode_onto_a_full_disk_leaves_no_output_and_no_temporary() {
    let dir = tempdir();
    let input = dir.path().join("in.safetensors");
    let uw_file = dir.path().join("m.uw");
    let output = dir.path().join("back.safetensors");
    write_safetensors(&input, 4, 1 << 17);
    let o = run(&[Path::new("convert"), &input, &uw_file, Path::new("-q")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_with_file_size_limit(
        100,
        &[Path::new("decode"), &uw_file, &output, Path::new("-q")],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "status {:?}: {}",
        o.status,
        stderr(&o)
    );
    assert!(stderr(&o).contains("File too large"), "{}", stderr(&o));
    assert_eq!(listing(dir.path()), ["in.safetensors", "m.uw"]);
}

/// Starts `uw args`, waits until its temporary output exists (the work has
/// begun and the Ctrl-C handler is installed), sends SIGINT, and returns the
/// outcome; `None` if the command finished before the signal could be sent.
fn interrupt(dir: &Path, args: &[&Path]) -> Option<Output> {
    let child = Command::new(uw())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("uw starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while temporaries(dir).is_empty() {
        assert!(Instant::now() < deadline, "no temporary output appeared");
        std::thread::sleep(Duration::from_millis(2));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    let out = child.wait_with_output().expect("uw exits");
    // A clean exit means the signal came too late to matter.
    (sent && !out.status.success()).then_some(out)
}

fn check_interrupted(out: &Output, dir: &Path, expected: &[&str]) {
    println!("interrupted: {:?}, {:?}", out.status, stderr(out).trim());
    // Either the handler ran (status 1, message) or the signal arrived before
    // it was installed (killed by SIGINT): both leave nothing behind.
    if let Some(code) = out.status.code() {
        assert_eq!(code, 1);
        assert!(stderr(out).contains("interrupted"), "{}", stderr(out));
    }
    assert_eq!(listing(dir), expected);
}

#[test]
fn ctrl_c_during_convert_or_decode_leaves_no_output_and_no_temporary() {
    let dir = tempdir();
    let input = dir.path().join("in.safetensors");
    let uw_file = dir.path().join("m.uw");
    let mut tensors = 16;
    // Large enough that the signal lands mid-way; doubled if it did not.
    loop {
        write_safetensors(&input, tensors, 1 << 20); // tensors * 2 MiB
        let output = dir.path().join("out.uw");
        match interrupt(
            dir.path(),
            &[Path::new("convert"), &input, &output, Path::new("-q")],
        ) {
            Some(out) => {
                check_interrupted(&out, dir.path(), &["in.safetensors"]);
                break;
            }
            None => {
                std::fs::remove_file(&output).expect("finished output");
                assert!(tensors < 128, "conversion always finished before SIGINT");
                tensors *= 2;
            }
        }
    }
    let o = run(&[Path::new("convert"), &input, &uw_file, Path::new("-q")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let output = dir.path().join("back.safetensors");
    for _ in 0..4 {
        if let Some(out) = interrupt(
            dir.path(),
            &[Path::new("decode"), &uw_file, &output, Path::new("-q")],
        ) {
            check_interrupted(&out, dir.path(), &["in.safetensors", "m.uw"]);
            return;
        }
        std::fs::remove_file(&output).expect("finished output");
    }
    panic!("decode always finished before SIGINT");
}

#[test]
fn an_existing_output_is_replaced_only_with_force() {
    let dir = tempdir();
    let input = dir.path().join("in.safetensors");
    let output = dir.path().join("out.uw");
    write_safetensors(&input, 2, 4096);
    std::fs::write(&output, b"precious").expect("writable");
    let o = run(&[Path::new("convert"), &input, &output, Path::new("-q")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("already exists (use --force to overwrite)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&output).expect("kept"), b"precious");

    let o = run(&[
        Path::new("convert"),
        &input,
        &output,
        Path::new("-q"),
        Path::new("--force"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let file = uw_format::UwFile::open(&output).expect("a .uw file now");
    file.verify(|_| {}).expect("valid");
    drop(file);

    let back = dir.path().join("back.safetensors");
    std::fs::write(&back, b"precious").expect("writable");
    let o = run(&[Path::new("decode"), &output, &back, Path::new("-q")]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read(&back).expect("kept"), b"precious");
    let o = run(&[
        Path::new("decode"),
        &output,
        &back,
        Path::new("-q"),
        Path::new("--force"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&back).expect("decoded"),
        std::fs::read(&input).expect("input")
    );
    assert!(temporaries(dir.path()).is_empty());
}

#[test]
fn invalid_input_gives_a_clear_message_and_no_output() {
    let dir = tempdir();
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a model at all").expect("writable");
    let out_uw = dir.path().join("out.uw");
    let o = run(&[Path::new("convert"), &garbage, &out_uw, Path::new("-q")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a valid safetensors file"),
        "{}",
        stderr(&o)
    );

    let not_uw = dir.path().join("garbage.uw");
    std::fs::write(&not_uw, vec![0x42u8; 4096]).expect("writable");
    let out_st = dir.path().join("out.safetensors");
    let o = run(&[Path::new("decode"), &not_uw, &out_st, Path::new("-q")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a .uw file"), "{}", stderr(&o));

    // A truncated .uw: every command refuses it and says so.
    let input = dir.path().join("in.safetensors");
    write_safetensors(&input, 1, 1000);
    let good = dir.path().join("good.uw");
    assert!(
        run(&[Path::new("convert"), &input, &good, Path::new("-q")])
            .status
            .success()
    );
    let bytes = std::fs::read(&good).expect("readable");
    let cut = dir.path().join("cut.uw");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).expect("writable");
    for cmd in ["decode", "verify", "inspect"] {
        let o = if cmd == "decode" {
            run(&[Path::new(cmd), &cut, &out_st])
        } else {
            run(&[Path::new(cmd), &cut])
        };
        assert_eq!(o.status.code(), Some(1), "{cmd}");
        assert!(stderr(&o).contains("cut.uw"), "{cmd}: {}", stderr(&o));
        assert!(stderr(&o).contains("truncated"), "{cmd}: {}", stderr(&o));
    }

    let missing = dir.path().join("missing.safetensors");
    let o = run(&[Path::new("convert"), &missing, &out_uw]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing.safetensors"), "{}", stderr(&o));

    let mut left = listing(dir.path());
    left.retain(|n| {
        ![
            "garbage.safetensors",
            "garbage.uw",
            "in.safetensors",
            "good.uw",
            "cut.uw",
        ]
        .contains(&n.as_str())
    });
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    // `uw inspect f | head -1`: the reader closes the pipe; here before uw
    // writes anything, so that the write surely fails.
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/sample.huffman.uw");
    let mut child = Command::new(uw())
        .arg("inspect")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("uw runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("uw ends");
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}
