#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bf16;
mod bits;
pub mod decode;
mod dtype;
mod error;
mod file;
pub mod huffman;
pub mod layout;

pub use decode::{DecodeHooks, HuffmanDecoder, HuffmanView, Palette4View, PlainJoin};
pub use dtype::Dtype;
pub use error::{Checksummed, Condition, Error, Result};
pub use file::{Encoded, Encoding, Tensor, UwFile};
