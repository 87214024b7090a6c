//! CUDA C kernel sources and their run-time compilation with NVRTC.
//!
//! Kernels ship as source, never as prebuilt PTX, so they are compiled for
//! the GPU actually present (`sm_90a` on Hopper) by the NVRTC of the machine.

use cudarc::nvrtc::{CompileOptions, Ptx};

use crate::error::GpuError;

/// Common definitions, prepended to every kernel file.
pub const COMMON: &str = include_str!("kernels/common.cuh");
/// bf16-palette4 decode and exception patch kernels.
pub const PALETTE4: &str = include_str!("kernels/palette4.cu");
/// bf16-huffman decode kernels.
pub const HUFFMAN: &str = include_str!("kernels/huffman.cu");

/// Names of every kernel entry point, for loading and for checks.
pub const KERNEL_NAMES: [&str; 3] = [
    "uw_palette4_to_bf16",
    "uw_palette4_exceptions",
    "uw_huffman_to_bf16",
];

/// The whole module source: common definitions then each kernel file.
pub fn module_source() -> String {
    [COMMON, PALETTE4, HUFFMAN].join("\n")
}

/// The NVRTC architecture for a compute capability: `sm_90a` on Hopper (its
/// architecture-specific features), else the plain `sm_XY`.
pub fn arch_for(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (9, 0) => "sm_90a",
        (10, 0) => "sm_100",
        (12, 0) => "sm_120",
        (8, 9) => "sm_89",
        (8, 6) => "sm_86",
        (8, 0) => "sm_80",
        (7, 5) => "sm_75",
        (7, 0) => "sm_70",
        _ => "compute_75",
    }
}

/// True when the NVRTC library can be loaded (checked before any NVRTC call,
/// because cudarc panics when it is missing).
#[allow(unsafe_code)]
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library; no symbol is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles the module for `arch` (e.g. `"sm_90a"`).
pub fn compile(arch: &'static str) -> Result<Ptx, GpuError> {
    if !nvrtc_available() {
        return Err(GpuError::NoNvrtc);
    }
    let opts = CompileOptions {
        arch: Some(arch),
        name: Some("uw_kernels.cu".into()),
        options: vec!["--std=c++17".into()],
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(module_source(), opts)
        .map_err(|e| GpuError::Compile(format!("{e:?}")))
}
