//! `.uw` -> the original safetensors bytes (spec: "Rebuilding the source file").

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use uw_format::{Encoded, Tensor, UwFile};

/// Decodes `t` into `out` using all threads of the current rayon pool,
/// checking the data CRC first and the decoded CRC last.
pub fn decode_tensor_parallel(t: &Tensor<'_>, out: &mut [u8]) -> uw_format::Result<()> {
    if out.len() as u64 != t.decoded_len() {
        return Err(uw_format::Error::OutputSize {
            expected: t.decoded_len(),
            actual: out.len() as u64,
        });
    }
    t.check_data_crc()?;
    t.check_section_structure()?;
    match t.encoded()? {
        Encoded::Huffman(view) => {
            let decoder = view.decoder();
            out.par_chunks_mut(2 * view.chunk_len())
                .enumerate()
                .try_for_each(|(c, piece)| decoder.decode_chunk(c, piece))?;
        }
        Encoded::Palette4(view) => view.decode_into(out)?,
        Encoded::Raw(bytes) => out.copy_from_slice(bytes),
    }
    t.check_decoded_crc(out)
}

/// Errors of [`write_safetensors`].
#[derive(Debug)]
pub enum RestoreError {
    /// Writing failed.
    Io(std::io::Error),
    /// The file is damaged.
    Format(uw_format::Error),
    /// The cancel flag was raised.
    Interrupted,
}

/// Writes the safetensors file that `file` was made from: the 8-byte header
/// length, the header, then every tensor decoded, in batches of at most
/// `batch_bytes` decoded in parallel. Calls `progress(bytes)` per tensor.
pub fn write_safetensors<W: Write>(
    file: &UwFile<'_>,
    mut out: W,
    batch_bytes: u64,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &AtomicBool,
) -> Result<W, RestoreError> {
    let header = file.safetensors_header();
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(RestoreError::Io)?;
    out.write_all(header.as_bytes()).map_err(RestoreError::Io)?;
    let tensors: Vec<Tensor<'_>> = file.tensors().collect();
    let mut start = 0;
    while start < tensors.len() {
        let mut end = start;
        let mut bytes = 0u64;
        while end < tensors.len()
            && (end == start || bytes + tensors[end].decoded_len() <= batch_bytes)
        {
            bytes += tensors[end].decoded_len();
            end += 1;
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(RestoreError::Interrupted);
        }
        let decoded: Vec<Vec<u8>> = tensors[start..end]
            .par_iter()
            .map(|t| {
                let mut buf = vec![0u8; t.decoded_len() as usize];
                decode_tensor_parallel(t, &mut buf).map(|()| buf)
            })
            .collect::<Result<_, _>>()
            .map_err(RestoreError::Format)?;
        for buf in decoded {
            out.write_all(&buf).map_err(RestoreError::Io)?;
            progress(buf.len() as u64);
        }
        start = end;
    }
    out.flush().map_err(RestoreError::Io)?;
    Ok(out)
}
