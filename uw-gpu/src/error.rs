//! Typed errors: a machine without a driver or a GPU gets one of these,
//! never a panic.

use std::fmt;

/// Everything that can go wrong on the GPU side.
#[derive(Debug)]
#[non_exhaustive]
pub enum GpuError {
    /// The CUDA driver library (libcuda) could not be loaded.
    NoDriver,
    /// The NVRTC library could not be loaded.
    NoNvrtc,
    /// The driver loaded but there is no usable device at this ordinal.
    NoDevice(String),
    /// A CUDA driver call failed.
    Driver(String),
    /// NVRTC rejected a kernel.
    Compile(String),
    /// The file is damaged (found by the reader or by a kernel).
    Format(uw_format::Error),
    /// A kernel found a corrupt stream in tensor `tensor` (kernel error code).
    Corrupt {
        /// Tensor index in the file.
        tensor: usize,
        /// Kernel error code (see kernels/common.cuh).
        code: i32,
    },
}

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuError::NoDriver => f.write_str("no CUDA driver (libcuda) on this machine"),
            GpuError::NoNvrtc => f.write_str("no NVRTC library (libnvrtc) on this machine"),
            GpuError::NoDevice(m) => write!(f, "no usable CUDA device: {m}"),
            GpuError::Driver(m) => write!(f, "CUDA driver error: {m}"),
            GpuError::Compile(m) => write!(f, "kernel compilation failed: {m}"),
            GpuError::Format(e) => write!(f, "{e}"),
            GpuError::Corrupt { tensor, code } => {
                write!(
                    f,
                    "tensor {tensor}: the GPU decoder found a corrupt stream (code {code})"
                )
            }
        }
    }
}

impl std::error::Error for GpuError {}

impl From<uw_format::Error> for GpuError {
    fn from(e: uw_format::Error) -> Self {
        GpuError::Format(e)
    }
}

impl From<cudarc::driver::DriverError> for GpuError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        GpuError::Driver(format!("{e:?}"))
    }
}
