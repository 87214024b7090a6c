#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod atomic;
pub mod bench;
pub mod bf16_huffman;
pub mod bf16_split;
pub mod bitwriter;
pub mod buffers;
pub mod container;
pub mod convert;
pub mod error;
pub mod huffman_build;
pub mod huge_pages;
pub mod palette4;
pub mod prefault;
pub mod restore;
pub mod source_header;
pub mod stream_copy;
mod work_split;

pub use convert::{ConvertOptions, Target, convert, encode_tensor, parse_safetensors};
pub use error::{Error, Result};
pub use restore::{decode_tensor_parallel, write_safetensors};
