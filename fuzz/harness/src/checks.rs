//! The six harnesses and the properties they assert.

use std::sync::atomic::AtomicBool;

use uw_encode::bf16_huffman::{self, HuffmanParams};
use uw_encode::container::ContainerWriter;
use uw_encode::{ConvertOptions, Target, palette4};
use uw_format::layout::{HuffmanHeader, HuffmanParts, limits, selector_bits_for};
use uw_format::{Dtype, Encoded, Encoding, HuffmanView, Palette4View, Tensor, UwFile, bf16};
use zerocopy::IntoBytes;

use crate::repair::{repair_checksums, repair_decoded_checksums};

/// Reads fuzz input front to back; past the end it yields zeros, so every
/// input, however short, selects some case.
struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = b;
        a
    }
}

/// Decodes a tensor without checking either CRC: what the decoders alone
/// make of the section.
pub(crate) fn decode_unchecked(t: &Tensor<'_>) -> uw_format::Result<Vec<u8>> {
    let mut out = vec![0u8; t.decoded_len() as usize];
    match t.encoded()? {
        Encoded::Raw(bytes) => out.copy_from_slice(bytes),
        Encoded::Huffman(v) => v.decoder().decode_all(&mut out)?,
        Encoded::Palette4(v) => v.decode_into(&mut out)?,
    }
    Ok(out)
}

/// What open-time validation promises about an opened file (spec §10.2):
/// sections sorted, disjoint, aligned, before the directory; sizes
/// consistent; names unique and found by name; metadata keys sorted.
fn check_structure(file: &UwFile<'_>) {
    let len = file.as_bytes().len();
    let dir = file.directory_range();
    assert!(dir.start >= 64 && dir.start <= dir.end && dir.end <= len - 64);
    assert_eq!(dir.start as u64 % u64::from(file.alignment()), 0);
    let mut previous_end = 64u64;
    for (i, t) in file.tensors().enumerate() {
        assert_eq!(t.index(), i);
        assert!(t.data_offset() >= previous_end, "sections overlap");
        assert_eq!(t.data_offset() % u64::from(file.alignment()), 0);
        previous_end = t.data_offset() + t.stored_len();
        assert!(
            previous_end <= dir.start as u64,
            "section runs into the directory"
        );
        assert_eq!(t.data().len() as u64, t.stored_len());
        assert!(!t.name().is_empty() && t.name().len() <= 4096);
        assert!(t.shape().len() <= 8);
        assert_eq!(
            u128::from(t.element_count()) * u128::from(t.dtype().bits()),
            u128::from(t.decoded_len()) * 8
        );
        // Spec §9, derived bounds: no decompression bomb.
        match t.encoding() {
            Encoding::Raw => assert_eq!(t.decoded_len(), t.stored_len()),
            _ => {
                assert_eq!(t.dtype(), Dtype::BF16);
                assert!(t.decoded_len() <= 2 * t.stored_len());
            }
        }
        assert!(t.encoded().is_ok(), "section parsed at open fails later");
        assert_eq!(file.tensor(t.name()).map(|x| x.index()).ok(), Some(i));
    }
    let keys: Vec<&str> = file.metadata().map(|(k, _)| k).collect();
    assert!(keys.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()));
    let _ = file.safetensors_header();
    let _ = file.source_header();
}

/// Target `open`: validation of arbitrary bytes never panics, and whatever
/// it accepts keeps the promises of [`check_structure`].
pub fn open(data: &[u8]) {
    if let Ok(file) = UwFile::from_bytes(data) {
        check_structure(&file);
        let _ = file.check_padding();
    }
}

/// Opens, decodes every tensor both ways and verifies; returns the decoded
/// tensors when the whole file verifies.
fn decode_and_verify(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let file = UwFile::from_bytes(bytes).ok()?;
    check_structure(&file);
    let mut decoded = Vec::with_capacity(file.len());
    for t in file.tensors() {
        let serial = t.decode_to_vec();
        let mut parallel = vec![0u8; t.decoded_len() as usize];
        let parallel_result = uw_encode::decode_tensor_parallel(&t, &mut parallel);
        assert_eq!(
            serial.as_ref().err().map(ToString::to_string),
            parallel_result.as_ref().err().map(ToString::to_string),
            "serial and parallel decoders disagree"
        );
        if let Ok(v) = serial {
            assert_eq!(v, parallel);
            assert_eq!(crc32fast::hash(&v), t.decoded_crc());
            decoded.push(Some(v));
        } else {
            decoded.push(None);
        }
    }
    let verified = file.verify(|_| {});
    let expected = file.check_padding().is_ok() && decoded.iter().all(Option::is_some);
    assert_eq!(verified.is_ok(), expected, "verify disagrees: {verified:?}");
    verified.ok()?;
    let decoded: Vec<Vec<u8>> = decoded.into_iter().flatten().collect();
    // A verified file rebuilds its safetensors source: length, header, data.
    let rebuilt =
        uw_encode::write_safetensors(&file, Vec::new(), 1 << 16, &|_| {}, &AtomicBool::new(false))
            .expect("a verified file rebuilds");
    let header = file.safetensors_header();
    assert_eq!(rebuilt[..8], (header.len() as u64).to_le_bytes());
    assert_eq!(&rebuilt[8..8 + header.len()], header.as_bytes());
    assert_eq!(rebuilt[8 + header.len()..], decoded.concat());
    Some(decoded)
}

/// Target `decode`: the first byte's low bit asks for checksum repair (so
/// mutations reach the stream checks); then every tensor is decoded with the
/// serial and the parallel decoder, the file is verified, and the outcomes
/// must agree with each other.
pub fn decode(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if flags & 1 != 0 {
        repair_checksums(&mut bytes);
        if flags & 2 != 0 {
            repair_decoded_checksums(&mut bytes);
        }
    }
    decode_and_verify(&bytes);
}

/// Target `mutate_valid` (seeded with valid files): repairs every checksum of
/// the mutated file; when it then verifies, its tensors written again by the
/// reference writer and encoder give a file that verifies and holds the same
/// names, dtypes, shapes, bytes, metadata and source header.
pub fn mutate_valid(data: &[u8]) {
    let mut bytes = data.to_vec();
    repair_checksums(&mut bytes);
    repair_decoded_checksums(&mut bytes);
    let Some(decoded) = decode_and_verify(&bytes) else {
        return;
    };
    let file = UwFile::from_bytes(&bytes).expect("verified above");
    let mut writer = ContainerWriter::new(Vec::new(), 64).expect("valid alignment");
    let opts = ConvertOptions::default();
    for (t, d) in file.tensors().zip(&decoded) {
        let (encoding, section) = uw_encode::encode_tensor(t.dtype(), d, &opts);
        writer
            .add_tensor(
                t.name(),
                t.dtype(),
                t.shape(),
                encoding,
                &section,
                d.len() as u64,
                crc32fast::hash(d),
            )
            .expect("names and ranks of a valid file are writable");
    }
    let metadata: Vec<(String, String)> = file
        .metadata()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let (out, _) = writer
        .finish(&metadata, file.source_header())
        .expect("a valid file's directory is writable");
    let again = UwFile::from_bytes(&out).expect("re-encoded file opens");
    again.verify(|_| {}).expect("re-encoded file verifies");
    assert_eq!(again.len(), file.len());
    for ((a, b), d) in file.tensors().zip(again.tensors()).zip(&decoded) {
        assert_eq!(
            (a.name(), a.dtype(), a.shape()),
            (b.name(), b.dtype(), b.shape())
        );
        assert_eq!(&b.decode_to_vec().expect("verified"), d);
    }
    assert!(again.metadata().eq(file.metadata()));
    assert_eq!(again.source_header(), file.source_header());
}

/// Runs `decode` on buffers pre-filled with 0x00 and with 0xFF: the outcome
/// (error text, or the bytes) must not depend on the buffer's old contents.
fn same_for_any_fill(len: usize, what: &str, decode: impl Fn(&mut [u8]) -> uw_format::Result<()>) {
    let run = |fill: u8| {
        let mut buf = vec![fill; len];
        let result = decode(&mut buf).map_err(|e| e.to_string());
        (result, buf)
    };
    let (zeros, ones) = (run(0x00), run(0xFF));
    assert_eq!(zeros.0, ones.0, "{what}: outcome depends on the buffer");
    if zeros.0.is_ok() {
        assert!(
            zeros.1 == ones.1,
            "{what}: output leaks the buffer's old bytes"
        );
    }
}

/// Target `decode_fill`: every decode entry point (whole tensor with CRCs,
/// parallel, per-chunk, exponents only, palette-4) gives the same result into
/// a buffer of 0x00 as into one of 0xFF. Low bit of the first byte: repair
/// checksums first.
pub fn decode_fill(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if flags & 1 != 0 {
        repair_checksums(&mut bytes);
        repair_decoded_checksums(&mut bytes);
    }
    let Ok(file) = UwFile::from_bytes(&bytes) else {
        return;
    };
    for t in file.tensors() {
        let n = t.decoded_len() as usize;
        same_for_any_fill(n, "Tensor::decode_into", |out| t.decode_into(out));
        same_for_any_fill(n, "decode_tensor_parallel", |out| {
            uw_encode::decode_tensor_parallel(&t, out)
        });
        match t.encoded() {
            Ok(Encoded::Huffman(v)) => {
                let decoder = v.decoder();
                same_for_any_fill(n, "HuffmanDecoder::decode_all", |out| {
                    decoder.decode_all(out)
                });
                for c in 0..v.chunk_count() {
                    let len = v.chunk_range(c).len();
                    same_for_any_fill(2 * len, "decode_chunk", |out| decoder.decode_chunk(c, out));
                    same_for_any_fill(len, "decode_chunk_exponents", |out| {
                        decoder.decode_chunk_exponents(c, out)
                    });
                }
            }
            Ok(Encoded::Palette4(v)) => {
                same_for_any_fill(n, "Palette4View::decode_into", |out| v.decode_into(out));
            }
            Ok(Encoded::Raw(_)) => {}
            Err(e) => panic!("section parsed at open fails later: {e}"),
        }
    }
}

/// Definition of a valid code-length set (spec §8.3.3), computed directly:
/// all lengths <= `max_len`, and either a lone symbol of length 1 or a Kraft
/// sum of exactly 1.
fn lengths_valid_by_definition(lengths: &[u8], max_len: u8) -> bool {
    let used: Vec<u8> = lengths.iter().copied().filter(|&l| l != 0).collect();
    if used.iter().any(|&l| l > max_len) {
        return false;
    }
    match used.len() {
        0 => false,
        1 => used[0] == 1,
        _ => {
            let kraft: u64 = used.iter().map(|&l| 1u64 << (32 - l)).sum();
            kraft == 1 << 32
        }
    }
}

/// Canonical codes computed the textbook way (sort by length then symbol,
/// shift left by the length increase, add one): independent of
/// `uw_format::huffman::canonical_codes`.
fn reference_codes(lengths: &[u8]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..lengths.len()).filter(|&s| lengths[s] != 0).collect();
    order.sort_by_key(|&s| (lengths[s], s));
    let mut codes = vec![0u32; lengths.len()];
    let (mut code, mut prev_len) = (0u32, 0u8);
    for (k, &s) in order.iter().enumerate() {
        if k > 0 {
            code += 1;
        }
        code <<= lengths[s] - prev_len;
        prev_len = lengths[s];
        codes[s] = code;
    }
    codes
}

/// One Huffman table of the `huffman` target.
struct RefTable {
    lengths: Vec<u8>,
    codes: Vec<u32>,
}

/// Everything the reference decoder needs about the crafted section.
struct RefSection<'a> {
    tables: Vec<RefTable>,
    palette: &'a [u8],
    escape: Option<usize>,
    max_len: u8,
    block_log2: u8,
    selector_bits: u8,
    selectors: &'a [u8],
    chunk_offsets: &'a [u32],
    stream: &'a [u8],
}

/// Decodes the exponents of one chunk bit by bit, matching codes by
/// definition (spec §8.3.4-8.3.6); `Err(())` on any fault.
fn reference_decode_chunk(
    s: &RefSection<'_>,
    c: usize,
    elements: core::ops::Range<usize>,
) -> Result<Vec<u8>, ()> {
    let start = s.chunk_offsets[c] as usize;
    let end = s
        .chunk_offsets
        .get(c + 1)
        .map_or(s.stream.len(), |&o| o as usize);
    if (c == 0 && start != 0) || start > end || end > s.stream.len() {
        return Err(());
    }
    let bytes = &s.stream[start..end];
    let mut pos = 0usize;
    let mut next_bit = || -> Result<u32, ()> {
        let b = bytes.get(pos / 8).ok_or(())?;
        let bit = u32::from(b >> (pos % 8) & 1);
        pos += 1;
        Ok(bit)
    };
    let mut out = Vec::with_capacity(elements.len());
    for i in elements {
        let block = i >> s.block_log2;
        let table = if s.selector_bits == 0 {
            0
        } else {
            let bit = block * usize::from(s.selector_bits);
            usize::from(s.selectors[bit / 8] >> (bit % 8)) & ((1 << s.selector_bits) - 1)
        };
        let t = s.tables.get(table).ok_or(())?;
        let (mut code, mut len) = (0u32, 0u8);
        let symbol = loop {
            code = code << 1 | next_bit()?;
            len += 1;
            if let Some(sym) =
                (0..t.lengths.len()).find(|&x| t.lengths[x] == len && t.codes[x] == code)
            {
                break sym;
            }
            if len >= s.max_len {
                return Err(());
            }
        };
        if s.escape == Some(symbol) {
            let mut e = 0u8;
            for k in 0..8 {
                e |= (next_bit()? as u8) << k;
            }
            out.push(e);
        } else {
            out.push(s.palette[symbol]);
        }
    }
    if pos.div_ceil(8) != bytes.len() {
        return Err(());
    }
    if pos % 8 != 0 && bytes[bytes.len() - 1] >> (pos % 8) != 0 {
        return Err(());
    }
    Ok(out)
}

/// Target `huffman`: code lengths, decode tables and stream decoding from
/// arbitrary input, against definitions computed independently here.
///
/// Input: max code length, table count, symbol count, escape flag, the code
/// lengths, then a bf16-huffman section around them (element count, block
/// and chunk sizes, palette base, selectors, chunk offsets) whose exponent
/// stream is the rest of the input.
pub fn huffman(data: &[u8]) {
    let mut input = Input { rest: data };
    let max_len = 1 + input.byte() % limits::MAX_CODE_LEN;
    let table_count = 1 + input.byte() % limits::MAX_TABLES;
    let symbols = 1 + usize::from(input.byte()) % 17;
    let escape_bit = input.byte() & 1 == 1;
    // A palette holds at most 16 exponents: a 17th symbol is the escape.
    let has_escape = symbols == 17 || (escape_bit && symbols >= 2);
    let palette_len = symbols - usize::from(has_escape);
    let escape = has_escape.then_some(palette_len);
    let mut code_lengths = [[0u8; 17]; 4];
    for table in code_lengths.iter_mut().take(usize::from(table_count)) {
        for l in &mut table[..symbols] {
            *l = input.byte() % 16;
        }
    }
    let base = input.byte();
    // 17 is odd, so these 16 exponents are distinct.
    let palette: Vec<u8> = (0..palette_len as u8)
        .map(|i| base.wrapping_add(17 * i))
        .collect();

    // 1. Validation agrees with the definition; valid tables decode each
    //    bit pattern to the one code that prefixes it.
    let mut all_valid = true;
    let mut tables = Vec::new();
    for lengths in &code_lengths[..usize::from(table_count)] {
        let lengths = &lengths[..symbols];
        let valid = uw_format::huffman::validate_lengths(lengths, max_len).is_ok();
        assert_eq!(
            valid,
            lengths_valid_by_definition(lengths, max_len),
            "{lengths:?} max {max_len}"
        );
        all_valid &= valid;
        if !valid {
            continue;
        }
        let codes = reference_codes(lengths);
        let lib_codes = uw_format::huffman::canonical_codes(lengths);
        for s in 0..symbols {
            if lengths[s] != 0 {
                assert_eq!(u32::from(lib_codes[s]), codes[s]);
            }
        }
        let mut table = vec![0; 1 << max_len];
        uw_format::huffman::build_decode_table(lengths, &palette, escape, max_len, &mut table);
        let used = lengths.iter().filter(|&&l| l != 0).count();
        for (idx, &entry) in table.iter().enumerate() {
            let matches: Vec<usize> = (0..symbols)
                .filter(|&s| {
                    let l = lengths[s];
                    l != 0 && {
                        let reversed = codes[s].reverse_bits() >> (32 - u32::from(l));
                        idx as u32 & ((1 << l) - 1) == reversed
                    }
                })
                .collect();
            assert!(matches.len() <= 1, "codes are not prefix-free");
            match matches.first() {
                Some(&s) => {
                    assert_eq!(uw_format::huffman::entry_len(entry), u32::from(lengths[s]));
                    assert_eq!(
                        uw_format::huffman::entry_escape(entry),
                        u32::from(escape == Some(s))
                    );
                    if escape != Some(s) {
                        assert_eq!(uw_format::huffman::entry_exponent(entry), palette[s]);
                    }
                }
                None => {
                    assert_eq!(used, 1, "a complete code leaves a pattern undecodable");
                    assert_eq!(uw_format::huffman::entry_len(entry), 0);
                }
            }
        }
        tables.push(RefTable {
            lengths: lengths.to_vec(),
            codes,
        });
    }

    // 2. A section around these tables: it parses iff every table is valid,
    //    and then decodes exactly as the reference decoder does.
    // Mostly small sections; with the top bit, 2^15 values or more, where the
    // decoder switches to its multi-symbol tables.
    let size = input.u16();
    let n = if size & 0x8000 != 0 {
        (1 << 15) + 1 + u64::from(size & 0x7FFF)
    } else {
        1 + u64::from(size % 4096)
    };
    let block_log2 = 6 + input.byte() % 3;
    let chunk_log2 = block_log2 + input.byte() % 3;
    let selector_bits = selector_bits_for(table_count);
    let chunk_count = n.div_ceil(1 << chunk_log2);
    let blocks = n.div_ceil(1 << block_log2);
    let selectors_len = (blocks * u64::from(selector_bits)).div_ceil(8) as usize;
    let mut selectors = input.take(selectors_len).to_vec();
    selectors.resize(selectors_len, 0);
    let mut chunk_offsets = vec![0u32; chunk_count as usize];
    if input.byte() == 0xFF {
        chunk_offsets[0] = 1;
    }
    for o in chunk_offsets.iter_mut().skip(1) {
        *o = u32::from(input.u16());
    }
    let stream = input.rest;
    let parts = HuffmanParts::compute(
        n,
        chunk_count,
        block_log2,
        selector_bits,
        stream.len() as u64,
    )
    .expect("small section");
    let mut header = HuffmanHeader {
        element_count: n.into(),
        palette_len: palette_len as u8,
        has_escape: u8::from(has_escape),
        table_count,
        selector_bits,
        block_log2,
        chunk_log2,
        max_code_len: max_len,
        reserved0: 0,
        palette: [0; 16],
        code_lengths,
        reserved1: [0; 4],
        chunk_count: (chunk_count as u32).into(),
        reserved2: 0.into(),
        exp_stream_len: (stream.len() as u64).into(),
        reserved3: 0.into(),
    };
    header.palette[..palette_len].copy_from_slice(&palette);
    let mut section = vec![0u8; parts.end as usize];
    section[..128].copy_from_slice(header.as_bytes());
    for i in 0..n as usize {
        section[128 + i] = (i * 31) as u8;
    }
    for (c, o) in chunk_offsets.iter().enumerate() {
        let at = parts.chunk_index as usize + 4 * c;
        section[at..at + 4].copy_from_slice(&o.to_le_bytes());
    }
    let sel = parts.selectors as usize;
    section[sel..sel + selectors_len].copy_from_slice(&selectors);
    section[parts.exp_stream as usize..].copy_from_slice(stream);

    let view = HuffmanView::parse(0, &section, 0, n);
    assert_eq!(view.is_ok(), all_valid, "parse: {:?}", view.err());
    let Ok(view) = view else {
        return;
    };
    let reference = RefSection {
        tables,
        palette: &palette,
        escape,
        max_len,
        block_log2,
        selector_bits,
        selectors: &selectors,
        chunk_offsets: &chunk_offsets,
        stream,
    };
    let decoder = view.decoder();
    // Chunk by chunk against the reference; remember what a whole-tensor
    // decode must give: every chunk's words, or the first chunk's error.
    let mut all_words = Vec::with_capacity(2 * n as usize);
    let mut first_error = None;
    for c in 0..view.chunk_count() {
        let range = view.chunk_range(c);
        let mut exponents = vec![0u8; range.len()];
        let got = decoder.decode_chunk_exponents(c, &mut exponents);
        let want = reference_decode_chunk(&reference, c, range.clone());
        assert_eq!(got.is_ok(), want.is_ok(), "chunk {c}: {got:?}");
        let mut words = vec![0u8; 2 * range.len()];
        let got_words = decoder.decode_chunk(c, &mut words);
        assert_eq!(
            got.as_ref().err().map(ToString::to_string),
            got_words.as_ref().err().map(ToString::to_string),
            "chunk {c}: exponent and word decoders disagree"
        );
        match want {
            Ok(want) => {
                assert_eq!(exponents, want, "chunk {c}");
                for (k, i) in range.enumerate() {
                    let w = bf16::join(want[k], section[128 + i]);
                    assert_eq!(words[2 * k..2 * k + 2], w.to_le_bytes());
                }
                all_words.extend_from_slice(&words);
            }
            Err(()) => {
                if first_error.is_none() {
                    first_error = got_words.err().map(|e| e.to_string());
                }
            }
        }
    }
    // The whole-tensor decoder (which may interleave several chunks) gives
    // the same bytes, or the same first error, as chunk-by-chunk decoding.
    let mut whole = vec![0u8; 2 * n as usize];
    let got = decoder.decode_all(&mut whole);
    match first_error {
        None => {
            assert!(
                got.is_ok(),
                "decode_all fails where every chunk decodes: {got:?}"
            );
            assert!(whole == all_words, "decode_all differs from decode_chunk");
        }
        Some(e) => assert_eq!(got.err().map(|g| g.to_string()), Some(e)),
    }
}

/// Replaces the exponent of BF16 pattern `w`.
fn with_exponent(w: u16, e: u8) -> u16 {
    (w & 0x807F) | u16::from(e) << 7
}

/// Target `roundtrip`: arbitrary BF16 tensors (shaped so that some have few
/// exponents, some many, some one) encoded with arbitrary valid encoder
/// parameters decode back exactly, alone and through the container.
///
/// Input: block, chunk, code-length and table-count choices, an exponent
/// shaping mode (its top bit picks the alignment), a repeat count, then the
/// tensor's bytes.
pub fn roundtrip(data: &[u8]) {
    let mut input = Input { rest: data };
    let block_log2 = 6 + input.byte() % 11;
    let chunk_log2 = block_log2 + input.byte() % (25 - block_log2);
    let choice = input.byte();
    // 2^5 >= 17 symbols: smaller limits cannot hold a full alphabet, a
    // precondition of the encoder (huffman_build::code_lengths).
    let params = HuffmanParams {
        block_log2,
        chunk_log2,
        max_code_len: 5 + choice % 8,
        max_tables: 1 + (choice >> 3) % 4,
    };
    let mode = input.byte();
    let alignment = if mode & 0x80 != 0 { 4096 } else { 64 };
    // The input's words repeated up to 64 times: large tensors (2^15 values
    // and more take the decoder's multi-symbol path) from small inputs.
    let repeat = 1 + usize::from(input.byte() % 64);
    let words: Vec<u16> = input
        .rest
        .chunks_exact(2)
        .cycle()
        .take(repeat * (input.rest.len() / 2))
        .map(|w| {
            let x = u16::from_le_bytes([w[0], w[1]]);
            let e = bf16::exponent(x);
            match mode % 4 {
                0 => x,
                1 => with_exponent(x, 120 + e % 8),
                2 if e < 16 => x,
                2 => with_exponent(x, 110 + e % 18),
                _ => with_exponent(x, 127),
            }
        })
        .collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let n = words.len() as u64;

    let huffman = bf16_huffman::encode(&bytes, &params);
    let palette4 = palette4::encode(&bytes);
    if n == 0 {
        assert!(huffman.is_none() && palette4.is_none());
    } else {
        let section = huffman.as_ref().expect("small tensors encode");
        let view = HuffmanView::parse(0, section, 0, n).expect("encoder output parses");
        let mut out = vec![0u8; bytes.len()];
        view.decoder()
            .decode_all(&mut out)
            .expect("encoder output decodes");
        assert!(out == bytes, "bf16-huffman round trip differs");
        let section = palette4.as_ref().expect("small tensors encode");
        let view = Palette4View::parse(0, section, 0, n).expect("encoder output parses");
        out.fill(0);
        view.decode_into(&mut out).expect("encoder output decodes");
        assert!(out == bytes, "bf16-palette4 round trip differs");
    }

    // Through the container, with the encoder's own raw/encoded choice too.
    let mut writer = ContainerWriter::new(Vec::new(), alignment).expect("valid alignment");
    let shape = [n];
    let crc = crc32fast::hash(&bytes);
    let mut expected: Vec<(&str, &[u8])> = Vec::new();
    let forced = [
        ("huffman", Encoding::Bf16Huffman, huffman.as_deref()),
        ("palette4", Encoding::Bf16Palette4, palette4.as_deref()),
        ("raw", Encoding::Raw, Some(&bytes[..])),
    ];
    for (name, encoding, section) in forced {
        if let Some(section) = section {
            writer
                .add_tensor(
                    name,
                    Dtype::BF16,
                    &shape,
                    encoding,
                    section,
                    bytes.len() as u64,
                    crc,
                )
                .expect("writable");
            expected.push((name, &bytes));
        }
    }
    for (name, target) in [
        ("auto-huffman", Target::Huffman),
        ("auto-palette4", Target::Palette4),
    ] {
        let opts = ConvertOptions {
            target,
            huffman: params,
            ..ConvertOptions::default()
        };
        let (encoding, section) = uw_encode::encode_tensor(Dtype::BF16, &bytes, &opts);
        writer
            .add_tensor(
                name,
                Dtype::BF16,
                &shape,
                encoding,
                &section,
                bytes.len() as u64,
                crc,
            )
            .expect("writable");
        expected.push((name, &bytes));
    }
    // The odd-length tail as U8, raw.
    writer
        .add_tensor(
            "tail",
            Dtype::U8,
            &[data.len() as u64],
            Encoding::Raw,
            data,
            data.len() as u64,
            crc32fast::hash(data),
        )
        .expect("writable");
    expected.push(("tail", data));
    let metadata = [("format".to_owned(), "pt".to_owned())];
    let (file_bytes, finished) = writer.finish(&metadata, None).expect("finishes");
    assert_eq!(finished.file_len, file_bytes.len() as u64);
    let file = UwFile::from_bytes(&file_bytes).expect("writer output opens");
    check_structure(&file);
    file.verify(|_| {}).expect("writer output verifies");
    assert_eq!(file.len(), expected.len());
    for (t, (name, want)) in file.tensors().zip(expected) {
        assert_eq!(t.name(), name);
        assert!(
            t.decode_to_vec().expect("verified") == want,
            "{name} differs"
        );
    }
}
