//! Checksum repair, so that mutated inputs reach the checks behind the CRCs.
//!
//! A random mutation almost always breaks a CRC first, and the reader then
//! stops at the CRC check. An attacker recomputes CRCs (spec §12: "Valid CRCs
//! prove nothing"), so the harnesses do the same and let the fuzzer explore
//! the structural and stream checks.

use uw_format::{Encoded, Encoding, UwFile};

use crate::checks::decode_unchecked;

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    if let Some(dst) = bytes.get_mut(at..at + 4) {
        dst.copy_from_slice(&value.to_le_bytes());
    }
}

/// `[offset, offset + len)` as usizes when it lies inside `[0, limit)`.
fn inside(offset: u64, len: u64, limit: usize) -> Option<(usize, usize)> {
    let end = offset.checked_add(len)?;
    (end <= limit as u64).then_some((offset as usize, end as usize))
}

/// Rewrites every CRC that the bytes let us locate: the header CRC, each data
/// CRC (and the decoded CRC of raw tensors, which equals it), the directory
/// CRC and the trailer CRC, in that order so each covers the repaired bytes.
/// Never panics, whatever `bytes` holds.
pub fn repair_checksums(bytes: &mut [u8]) {
    let len = bytes.len();
    if len >= 64 {
        let c = crc32fast::hash(&bytes[..60]);
        put_u32(bytes, 60, c);
    }
    if len < 128 {
        return;
    }
    let trailer = len - 64;
    let (Some(dir_off), Some(dir_len)) = (u64_at(bytes, trailer), u64_at(bytes, trailer + 8))
    else {
        return;
    };
    if let Some((start, end)) = inside(dir_off, dir_len, trailer) {
        let tensors = u32_at(bytes, start).unwrap_or(0) as usize;
        for i in 0..tensors {
            let record = start + 32 + 128 * i;
            if record + 128 > end {
                break;
            }
            let (Some(off), Some(data_len)) =
                (u64_at(bytes, record + 16), u64_at(bytes, record + 24))
            else {
                break;
            };
            if let Some((a, b)) = inside(off, data_len, len) {
                let c = crc32fast::hash(&bytes[a..b]);
                put_u32(bytes, record + 40, c);
                if bytes[record + 9] == Encoding::Raw.code() {
                    put_u32(bytes, record + 12, c);
                }
            }
        }
        let c = crc32fast::hash(&bytes[start..end]);
        put_u32(bytes, trailer + 16, c);
    }
    let c = crc32fast::hash(&bytes[trailer..trailer + 52]);
    put_u32(bytes, trailer + 52, c);
}

/// After [`repair_checksums`]: when the file opens, decodes every encoded
/// tensor without checking its CRCs and stores the CRC of what came out as its
/// `decoded_crc`, then repairs the directory and trailer CRCs again. The file
/// then fails only on a structural or stream fault, never on a checksum.
pub fn repair_decoded_checksums(bytes: &mut [u8]) {
    let fixes: Vec<(usize, u32)> = {
        let Ok(file) = UwFile::from_bytes(bytes) else {
            return;
        };
        let records = file.directory_range().start + 32;
        file.tensors()
            .filter(|t| !matches!(t.encoded(), Ok(Encoded::Raw(_))))
            .filter_map(|t| {
                let decoded = decode_unchecked(&t).ok()?;
                Some((records + 128 * t.index() + 12, crc32fast::hash(&decoded)))
            })
            .collect()
    };
    for (at, crc) in fixes {
        put_u32(bytes, at, crc);
    }
    repair_checksums(bytes);
}
