#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Why GPU decoding is not available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuError {
    /// This build has no GPU support yet.
    NotImplemented,
}

impl std::fmt::Display for GpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("uw-gpu: GPU decoding is not implemented yet; decode on the CPU with uw-format")
    }
}

impl std::error::Error for GpuError {}

/// Opens the first CUDA device. Always fails in this version.
pub fn open_device() -> Result<(), GpuError> {
    Err(GpuError::NotImplemented)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_not_implemented() {
        assert_eq!(super::open_device(), Err(super::GpuError::NotImplemented));
    }
}
