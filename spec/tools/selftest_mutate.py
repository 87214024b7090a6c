#!/usr/bin/env python3
"""Negative tests for uw_read.py: corrupt a valid .uw file in targeted ways (re-computing the
CRCs where needed so that the deeper validation steps are reached) and check that the reader
rejects each with the condition of spec/uw-v1.md section 10.

usage: python3 spec/tools/selftest_mutate.py VALID.uw WORKDIR
VALID.uw must be written by uw_write_tiny.py from its `sample` input with
  --encoding mixed --tables 3 --block-log2 6 --chunk-log2 7
"""
import os
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import uw_read  # noqa: E402


def crc(b):
    return zlib.crc32(b) & 0xFFFFFFFF


def main(src, work):
    orig = open(src, "rb").read()
    f = uw_read.open_uw(src)
    f.verify()
    L = len(orig)
    doff, dlen = f.directory_offset, f.directory_len
    T = len(f.tensors)
    M = len(f.metadata)
    tens = f.tensors
    rec = [t.record_offset for t in tens]
    by = {t.name: t for t in tens}
    huff = next(t for t in tens if t.encoding == 1 and t.n > 1000)
    p4 = by["odd"]
    p4big = by["layers.1.mlp.weight"]
    raw = by["norm.f32"]
    assert p4.encoding == 2 and p4big.encoding == 2 and raw.encoding == 0
    hs = huff.data_offset
    hh = f.section_header(huff, orig[hs:hs + 128])
    assert hh["T"] == 3 and hh["C"] > 2, hh
    zt = by["zeros"]
    zh = f.section_header(zt, orig[zt.data_offset:zt.data_offset + 128])
    assert zt.encoding == 1 and zh["K"] == 1
    f.close()

    def fix(b, data=True):
        if data:
            for t, ro in zip(tens, rec):
                sec = bytes(b[t.data_offset:t.data_offset + t.data_len])
                struct.pack_into("<I", b, ro + 40, crc(sec))
        struct.pack_into("<I", b, L - 64 + 16, crc(bytes(b[doff:doff + dlen])))
        struct.pack_into("<I", b, L - 64 + 52, crc(bytes(b[L - 64:L - 12])))
        struct.pack_into("<I", b, 60, crc(bytes(b[0:60])))
        return b

    def put(fmt, off, *v):
        def m(b):
            struct.pack_into(fmt, b, off, *v)
        return m

    def xor(off, x=0xFF):
        def m(b):
            b[off] ^= x
        return m

    def seq(*ms):
        def m(b):
            for x in ms:
                x(b)
        return m

    R0 = rec[0]
    first_gap = next(t.data_offset + t.data_len for t in tens if t.data_offset + t.data_len < tens[tens.index(t) + 1].data_offset)
    heap = doff + 32 + 128 * T + 16 * M
    name0_off = heap + struct.unpack_from("<I", orig, R0)[0]
    mrec = doff + 32 + 128 * T
    idx = hs + hh["idx"]
    sel = hs + hh["sel"]
    ex = hs + hh["ex"]
    nb_odd = p4.data_offset + uw_read.align16(64 + p4.n)
    p4h = p4big.data_offset
    E_big = struct.unpack_from("<Q", orig, p4h + 32)[0]
    assert E_big >= 2
    xp_big = p4h + uw_read.align16(uw_read.align16(64 + p4big.n) + (p4big.n + 1) // 2)
    x0 = struct.unpack_from("<I", orig, xp_big)[0]

    cases = [
        # (name, mutation, fix crcs?, expected conditions)
        ("short file", "truncate", False, {"Truncated"}),
        ("magic", xor(1), False, {"BadMagic"}),
        ("major 2 (before crc)", put("<H", 8, 2), False, {"UnsupportedVersion"}),
        ("minor 7 accepted", put("<H", 10, 7), True, set()),
        ("header crc", xor(37), False, {"HeaderCrc"}),
        ("header_len", put("<I", 12, 65), True, {"BadHeader"}),
        ("required feature", put("<Q", 16, 1), True, {"UnsupportedFeature"}),
        ("optional feature ignored", put("<Q", 24, 1 << 40), True, set()),
        ("header reserved", put("<I", 56, 1), True, {"NonZeroReserved"}),
        ("alignment 96", put("<I", 32, 96), True, {"BadAlignment"}),
        ("alignment 32", put("<I", 32, 32), True, {"BadAlignment"}),
        ("end magic", xor(L - 1), False, {"BadMagic"}),
        ("trailer crc", xor(L - 64 + 33), False, {"TrailerCrc"}),
        ("trailer reserved", put("<B", L - 64 + 40, 1), True, {"NonZeroReserved"}),
        ("trailer file_len", put("<Q", L - 64 + 24, L + 1), True, {"Inconsistent"}),
        ("header dir offset", put("<Q", 40, doff + 64), True, {"Inconsistent"}),
        ("header dir zero (streaming) ok", seq(put("<Q", 40, 0), put("<Q", 48, 0)), True, set()),
        ("header dir half zero", put("<Q", 48, 0), True, {"Inconsistent"}),
        ("directory crc", xor(doff + 40), False, {"DirectoryCrc"}),
        ("directory_len > 1 GiB", seq(put("<Q", L - 64 + 8, (1 << 30) + 1), put("<Q", 48, (1 << 30) + 1)), True, {"LimitExceeded"}),
        ("trailer tensor_count", put("<I", L - 64 + 20, T + 1), True, {"Inconsistent"}),
        ("tensor_count 2^20+1", put("<I", doff, (1 << 20) + 1), True, {"LimitExceeded"}),
        ("strings_len+1", put("<I", doff + 8, struct.unpack_from("<I", orig, doff + 8)[0] + 1), True, {"BadLength"}),
        ("dir reserved", put("<B", doff + 25, 1), True, {"NonZeroReserved"}),
        ("source hdr offset w/o len", seq(put("<I", doff + 12, 5), put("<I", doff + 16, 0)), True, {"BadSourceHeader"}),
        ("source hdr out of heap", put("<I", doff + 12, 1 << 27), True, {"OutOfBounds"}),
        ("record reserved", put("<B", R0 + 120, 1), True, {"NonZeroReserved"}),
        ("name_len 0", put("<I", R0 + 4, 0), True, {"BadName"}),
        ("name_len 4097", put("<I", R0 + 4, 4097), True, {"LimitExceeded"}),
        ("name out of heap", put("<I", R0, 1 << 27), True, {"OutOfBounds"}),
        ("name not utf8", put("<B", name0_off, 0xFF), True, {"BadName"}),
        ("duplicate name", lambda b: b.__setitem__(slice(rec[1], rec[1] + 8), b[R0:R0 + 8]), True, {"DuplicateName"}),
        ("dtype 0", put("<B", R0 + 8, 0), True, {"BadDtype"}),
        ("dtype 23", put("<B", R0 + 8, 23), True, {"BadDtype"}),
        ("encoding 3", put("<B", R0 + 9, 3), True, {"BadEncoding"}),
        ("huffman on F32", put("<B", raw.record_offset + 9, 1), True, {"BadEncoding"}),
        ("rank 9", put("<B", R0 + 10, 9), True, {"BadShape"}),
        ("dim past rank", put("<Q", R0 + 48 + 8 * 7, 1), True, {"BadShape"}),
        ("shape vs decoded_len", put("<Q", R0 + 48, 38), True, {"BadShape"}),
        ("misaligned section", put("<Q", rec[1] + 16, tens[1].data_offset + 16), True, {"BadAlignment"}),
        ("section past directory", put("<Q", rec[T - 1] + 24, doff), True, {"OutOfBounds", "BadLength"}),
        ("unsorted", put("<Q", rec[1] + 16, 0), True, {"OutOfBounds"}),
        ("unsorted 2", put("<Q", rec[2] + 16, tens[0].data_offset), True, {"Unsorted"}),
        ("overlap", put("<Q", rec[1] + 16, tens[0].data_offset), True, {"Overlap"}),
        ("raw data_len", put("<Q", raw.record_offset + 24, raw.data_len + 1), True, {"BadLength"}),
        ("raw crc copy", put("<I", raw.record_offset + 12, raw.decoded_crc ^ 1), True, {"Inconsistent"}),
        ("metadata order", lambda b: b.__setitem__(slice(mrec, mrec + 32), b[mrec + 16:mrec + 32] + b[mrec:mrec + 16]), True, {"Unsorted"}),
        ("metadata dup key", lambda b: b.__setitem__(slice(mrec + 16, mrec + 24), b[mrec:mrec + 8]), True, {"DuplicateName"}),
        ("metadata out of heap", put("<I", mrec + 8, 1 << 27), True, {"OutOfBounds"}),
        ("huff reserved", put("<B", hs + 15, 1), True, {"NonZeroReserved"}),
        ("huff element_count", put("<Q", hs, huff.n + 1), True, {"BadLength"}),
        ("huff palette_len 0", put("<B", hs + 8, 0), True, {"BadPalette"}),
        ("huff palette dup", lambda b: b.__setitem__(hs + 17, b[hs + 16]), True, {"BadPalette"}),
        ("huff has_escape 2", put("<B", hs + 9, 2), True, {"BadHuffmanTable"}),
        ("huff tables 5", put("<B", hs + 10, 5), True, {"BadHuffmanTable"}),
        ("huff selector_bits", put("<B", hs + 11, 1), True, {"BadHuffmanTable"}),
        ("huff block_log2 5", put("<B", hs + 12, 5), True, {"BadHuffmanTable"}),
        ("huff chunk < block", put("<B", hs + 13, 5), True, {"BadHuffmanTable"}),
        ("huff max_code_len 13", put("<B", hs + 14, 13), True, {"BadHuffmanTable"}),
        ("huff length in table 3", put("<B", hs + 32 + 17 * 3, 1), True, {"BadHuffmanTable"}),
        ("huff incomplete code", lambda b: b.__setitem__(hs + 32, b[hs + 32] + 1), True, {"BadHuffmanTable"}),
        ("huff chunk_count", put("<I", hs + 104, hh["C"] + 1), True, {"BadLength"}),
        ("huff exp_stream_len", put("<Q", hs + 112, hh["esl"] + 1), True, {"BadLength"}),
        ("huff exp_stream_len 2^32", put("<Q", hs + 112, 1 << 32), True, {"LimitExceeded"}),
        ("chunk_index[0]", put("<I", idx, 1), True, {"CorruptStream"}),
        ("chunk_index decreasing", put("<I", idx + 8, 0), True, {"CorruptStream"}),
        ("chunk_index past end", put("<I", idx + 4 * (hh["C"] - 1), hh["esl"] + 1), True, {"CorruptStream"}),
        ("chunk boundary moved", put("<I", idx + 4, struct.unpack_from("<I", orig, idx + 4)[0] + 1), True, {"CorruptStream", "NonZeroPadding"}),
        ("chunk shortened", put("<I", idx + 4, struct.unpack_from("<I", orig, idx + 4)[0] - 1), True, {"CorruptStream"}),
        ("single-symbol table, bit 1", xor(zt.data_offset + zh["ex"], 0x01), True, {"CorruptStream"}),
        ("selector 3 of 3 tables", put("<B", sel, 0xFF), True, {"CorruptStream"}),
        ("part padding", put("<B", hs + 128 + huff.n, 1) if (128 + huff.n) % 16 else put("<B", sel + hh["sel_len"], 1), True, {"NonZeroPadding"}),
        ("exp stream bit", xor(ex + 3, 0x10), True, {"CorruptStream", "NonZeroPadding", "DecodedCrc"}),
        ("exp stream last byte", xor(ex + hh["esl"] - 1, 0x80), True, {"CorruptStream", "NonZeroPadding", "DecodedCrc"}),
        ("sm plane", xor(hs + 200, 0x01), True, {"DecodedCrc"}),
        ("section w/o crc fix", xor(hs + 200, 0x01), "nodata", {"DataCrc"}),
        ("p4 reserved", put("<B", p4.data_offset + 10, 1), True, {"NonZeroReserved"}),
        ("p4 element_count", put("<Q", p4.data_offset, 8), True, {"BadLength"}),
        ("p4 palette_len 17", put("<B", p4.data_offset + 8, 17), True, {"BadPalette"}),
        ("p4 exception_count", put("<Q", p4h + 32, E_big + 1), True, {"BadLength"}),
        ("p4 nibble >= P", put("<B", nb_odd, 0xFF), True, {"CorruptStream"}),
        ("p4 odd high nibble", lambda b: b.__setitem__(nb_odd + 3, b[nb_odd + 3] | 0x10), True, {"NonZeroPadding"}),
        ("p4 positions order", lambda b: b.__setitem__(slice(xp_big, xp_big + 8), b[xp_big + 4:xp_big + 8] + b[xp_big:xp_big + 4]), True, {"CorruptStream"}),
        ("p4 position >= n", put("<I", xp_big + 4 * (E_big - 1), p4big.n), True, {"CorruptStream"}),
        ("p4 nibble at exception", lambda b: b.__setitem__(p4h + uw_read.align16(64 + p4big.n) + x0 // 2, b[p4h + uw_read.align16(64 + p4big.n) + x0 // 2] | (1 << (4 * (x0 & 1)))), True, {"CorruptStream"}),
        ("p4 exception exponent", xor(xp_big + 4 * E_big, 0x01), True, {"DecodedCrc"}),
        ("file padding", put("<B", first_gap, 1), True, {"NonZeroPadding"}),
        ("padding before trailer", put("<B", doff + dlen, 1) if (doff + dlen) % 8 else "skip", True, {"NonZeroPadding"}),
        ("source header json", lambda b: b.__setitem__(heap + struct.unpack_from("<I", orig, doff + 12)[0], ord("[")), True, {"BadSourceHeader"}),
    ]
    fails = 0
    path = os.path.join(work, "mut.uw")
    for name, mut, dofix, expect in cases:
        if mut == "skip":
            continue
        if mut == "truncate":
            b = bytearray(orig[:100])
        else:
            b = bytearray(orig)
            mut(b)
            if dofix is True:
                fix(b)
            elif dofix == "nodata":
                fix(b, data=False)
        with open(path, "wb") as fo:
            fo.write(b)
        got = None
        try:
            g = uw_read.open_uw(path)
            g.verify()
            g.close()
        except uw_read.UwError as e:
            got = e
        except Exception as e:  # a crash is a reader bug
            got = e
        code = getattr(got, "code", None) if got is not None else None
        ok = (not expect and got is None) or (code in expect)
        if not ok:
            fails += 1
        print(f"{'ok  ' if ok else 'FAIL'} {name:32s} expected {sorted(expect) or 'valid'}, got {got!r}")
    print(f"{len(cases) - fails}/{len(cases)} mutation cases behave as specified")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
