#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod device;
pub mod error;
pub mod kernels;
pub mod mirror;

pub use device::{DeviceTensor, Gpu, driver_available};
pub use error::GpuError;
