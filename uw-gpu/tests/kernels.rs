//! Kernel tests. Three layers, so that every machine tests something:
//! - the CPU mirrors of the kernels against the reference decoder (always);
//! - NVRTC compilation of every kernel (where libnvrtc loads; CI installs it
//!   and sets UW_REQUIRE_NVRTC=1 so a missing library fails instead of skipping);
//! - the kernels themselves on a GPU, bit-exact against the CPU decoder with
//!   a poisoned output buffer (where a GPU is present; skipped otherwise).

use std::sync::atomic::AtomicBool;

use uw_encode::{ConvertOptions, Target};
use uw_format::{Encoded, UwFile};
use uw_gpu::{Gpu, GpuError, kernels, mirror};

fn sample() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/all-minilm-l6-v2-mlp-sample.safetensors"
    );
    std::fs::read(path).unwrap_or_else(|_| {
        std::fs::read("/work/shared/weights/all-minilm-l6-v2-mlp-sample.safetensors")
            .expect("sample weights")
    })
}

/// Converts the real sample plus a tensor with rare exponents and odd length
/// to `.uw` in memory with the given target and Huffman block/chunk sizes.
fn encoded(target: Target, chunk_log2: u8, block_log2: u8) -> Vec<u8> {
    let input = sample();
    let source = uw_encode::parse_safetensors(&input).expect("valid safetensors");
    let mut opts = ConvertOptions {
        target,
        ..Default::default()
    };
    opts.huffman.chunk_log2 = chunk_log2;
    opts.huffman.block_log2 = block_log2;
    let (out, _, _) =
        uw_encode::convert(&source, Vec::new(), &opts, &|_| {}, &AtomicBool::new(false))
            .expect("conversion succeeds");
    out
}

fn reference(t: &uw_format::Tensor<'_>) -> Vec<u16> {
    t.decode_to_vec()
        .expect("CPU decode")
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

#[test]
fn mirrors_match_the_cpu_decoder_on_real_weights() {
    for (target, chunk_log2, block_log2) in [
        (Target::Huffman, 14, 9),
        (Target::Huffman, 10, 6),
        (Target::Palette4, 14, 9),
    ] {
        let bytes = encoded(target, chunk_log2, block_log2);
        let file = UwFile::from_bytes(&bytes).expect("valid file");
        let mut checked = 0;
        for t in file.tensors() {
            let got = match t.encoded().expect("parses") {
                Encoded::Huffman(v) => {
                    mirror::huffman_to_bf16(&v, &uw_gpu::device::host_tables(&v))
                }
                Encoded::Palette4(v) => mirror::palette4_to_bf16(&v),
                Encoded::Raw(_) => continue,
            };
            assert_eq!(
                got.expect("mirror decodes"),
                reference(&t),
                "tensor {}",
                t.name()
            );
            checked += 1;
        }
        assert!(checked >= 5, "every sample tensor is encoded");
    }
}

#[test]
fn every_kernel_compiles_with_nvrtc() {
    if !kernels::nvrtc_available() {
        assert!(
            std::env::var_os("UW_REQUIRE_NVRTC").is_none(),
            "UW_REQUIRE_NVRTC is set but libnvrtc could not be loaded (LD_LIBRARY_PATH?)"
        );
        eprintln!("skipped: libnvrtc not found (set LD_LIBRARY_PATH to an NVRTC 13 lib directory)");
        return;
    }
    for arch in ["sm_90a", "sm_80"] {
        let ptx = kernels::compile(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let text = ptx.to_src();
        for name in kernels::KERNEL_NAMES {
            assert!(
                text.contains(&format!(".entry {name}")),
                "{arch}: PTX lacks {name}"
            );
        }
    }
}

#[test]
fn no_gpu_is_a_typed_error_not_a_panic() {
    match Gpu::open(0) {
        Ok(gpu) => eprintln!("GPU present: {:?}", gpu),
        Err(e @ (GpuError::NoDriver | GpuError::NoNvrtc | GpuError::NoDevice(_))) => {
            eprintln!("no GPU here, as expected on CI: {e}")
        }
        Err(e) => panic!("unexpected error opening a GPU: {e}"),
    }
}

#[test]
fn kernels_are_bit_exact_on_a_gpu() {
    let gpu = match Gpu::open(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    for target in [Target::Huffman, Target::Palette4] {
        let bytes = encoded(target, 14, 9);
        let file = UwFile::from_bytes(&bytes).expect("valid file");
        for t in file.tensors() {
            let section = gpu.upload_section(&t).expect("upload");
            // Poison the output so an element the kernel skips shows up.
            let mut out = gpu
                .stream()
                .clone_htod(&vec![0xA5u8; t.decoded_len() as usize])
                .expect("alloc");
            gpu.decode_section_into(&t, &section, &mut out)
                .expect("decode");
            let got = gpu
                .to_host(&out, t.decoded_len() as usize)
                .expect("copy back");
            assert_eq!(
                got,
                t.decode_to_vec().expect("CPU decode"),
                "tensor {}",
                t.name()
            );
        }
    }
}
