//! Helpers shared by the integration tests: a small deterministic random
//! generator, realistic BF16 weights, an in-memory safetensors writer and
//! conversion round trips.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use uw_encode::convert::convert_to_vec;
use uw_encode::restore::RestoreError;
use uw_encode::{ConvertOptions, parse_safetensors, write_safetensors};
use uw_format::{Dtype, UwFile};

/// SplitMix64: tiny, fast and deterministic, so a failing case replays exactly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn gaussian(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    pub fn fill_bytes(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// f32 -> BF16 bit pattern, rounding to nearest even (as the sample weights
/// were made); NaN stays a quiet NaN.
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) as u16) | 0x40;
    }
    let rounding = ((bits >> 16) & 1) + 0x7FFF;
    (bits.wrapping_add(rounding) >> 16) as u16
}

/// Little-endian bytes of BF16 words.
pub fn words_to_bytes(words: &[u16]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// `n` BF16 values like trained weights: Gaussian with standard deviation
/// `sigma`, except a fraction `rare` of values whose exponent is uniform over
/// all 256 values (so far outside the main range: huge, tiny, subnormal,
/// infinities and NaNs), which the encoders must carry as escapes/exceptions.
pub fn realistic_bf16(n: usize, seed: u64, sigma: f64, rare: f64) -> Vec<u16> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            if rng.unit() < rare {
                let e = rng.below(256) as u16;
                let sm = rng.below(256) as u16;
                ((sm & 0x80) << 8) | (e << 7) | (sm & 0x7F)
            } else {
                f32_to_bf16((rng.gaussian() * sigma) as f32)
            }
        })
        .collect()
}

/// One tensor of a safetensors file to build.
#[derive(Debug, Clone)]
pub struct SourceTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    pub bytes: Vec<u8>,
}

/// Bytes of a tensor of `shape` and `dtype` (valid only when the bit count is
/// a multiple of 8).
pub fn byte_len(dtype: Dtype, shape: &[u64]) -> u64 {
    shape.iter().product::<u64>() * dtype.bits() / 8
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// Layout choices of a safetensors header that readers must all accept.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderStyle {
    /// Put `__metadata__` after the tensors instead of before.
    pub metadata_last: bool,
    /// List the tensors in the JSON in an order other than the data order.
    pub shuffle_seed: Option<u64>,
    /// Pad the header with spaces to a multiple of 8, as safetensors does.
    pub pad_to_8: bool,
}

/// A safetensors file: tensors' data in the given order, no gaps.
pub fn safetensors_bytes(
    tensors: &[SourceTensor],
    metadata: &[(String, String)],
    style: HeaderStyle,
) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut offset = 0u64;
    for t in tensors {
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        let end = offset + t.bytes.len() as u64;
        entries.push(format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            json_str(&t.name),
            t.dtype.name(),
            shape.join(",")
        ));
        offset = end;
    }
    if let Some(seed) = style.shuffle_seed {
        Rng::new(seed).shuffle(&mut entries);
    }
    if !metadata.is_empty() {
        let pairs: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
            .collect();
        let meta = format!("\"__metadata__\":{{{}}}", pairs.join(","));
        if style.metadata_last {
            entries.push(meta);
        } else {
            entries.insert(0, meta);
        }
    }
    let mut header = format!("{{{}}}", entries.join(","));
    if style.pad_to_8 {
        while header.len() % 8 != 0 {
            header.push(' ');
        }
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset as usize);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for t in tensors {
        out.extend_from_slice(&t.bytes);
    }
    out
}

/// safetensors bytes -> `.uw` bytes, exactly as `uw convert` writes them.
pub fn convert_bytes(safetensors: &[u8], opts: &ConvertOptions) -> Vec<u8> {
    let source = parse_safetensors(safetensors).expect("valid safetensors input");
    convert_to_vec(&source, opts)
        .unwrap_or_else(|e| panic!("convert failed: {e:?}"))
        .0
}

/// `.uw` bytes -> the safetensors bytes they were made from.
pub fn restore_bytes(uw: &[u8]) -> Vec<u8> {
    let file = UwFile::from_bytes(uw).expect("converted file opens");
    restore_file(&file).unwrap_or_else(|e| panic!("restore failed: {e:?}"))
}

/// An open `.uw` file -> the safetensors bytes it was made from.
pub fn restore_file(file: &UwFile<'_>) -> Result<Vec<u8>, RestoreError> {
    write_safetensors(file, Vec::new(), 1 << 20, &|_| {}, &AtomicBool::new(false))
}

/// Path of a shared real-weights file: the project's `testdata/` copy first,
/// then the shared weights directory; `None` when neither exists.
pub fn weights_file(name: &str) -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    [
        root.join("testdata").join(name),
        root.join("../shared/weights").join(name),
        PathBuf::from("/work/shared/weights").join(name),
    ]
    .into_iter()
    .find(|p| p.is_file())
}
