#!/usr/bin/env python3
"""Annotated hex dump of a `.uw` v1 file, field by field (spec/uw-v1.md).

usage: python3 spec/tools/hexdump_example.py [FILE.uw] [--full] [--symbols N]

Default FILE: testdata/hello.huffman.uw. Walks the file in offset order: the
file header, each data section (raw, bf16-huffman or bf16-palette4, part by
part), the padding, the directory (header, tensor records, metadata records,
string heap) and the trailer. Each line is

    OFFSET    BYTES (up to 16, hex)                          FIELD    VALUE

For bf16-huffman sections it also derives the canonical codes of every table
and decodes the exponent stream symbol by symbol (bit position, code bits,
symbol, exponent, the sign+mantissa byte, the BF16 word and its value), then
checks each chunk's exact bit consumption and every CRC.

Long byte runs are cut after a few lines unless --full is given, and at most
N (default 256) decoded symbols per tensor are listed; everything is still
decoded and checked.
It is a teaching aid for valid files: it reports the checks it makes but does
not validate everything (spec/tools/uw_read.py does). Standard library only.
Its output for the default file is the core of spec/worked-example.md.
"""
import math
import os
import struct
import sys
import zlib

DTYPES = {
    1: ("BOOL", 8), 2: ("U8", 8), 3: ("I8", 8), 4: ("F8_E5M2", 8), 5: ("F8_E4M3", 8),
    6: ("F8_E8M0", 8), 7: ("F8_E4M3FNUZ", 8), 8: ("F8_E5M2FNUZ", 8),
    9: ("I16", 16), 10: ("U16", 16), 11: ("F16", 16), 12: ("BF16", 16),
    13: ("I32", 32), 14: ("U32", 32), 15: ("F32", 32),
    16: ("C64", 64), 17: ("F64", 64), 18: ("I64", 64), 19: ("U64", 64),
    20: ("F4", 4), 21: ("F6_E2M3", 6), 22: ("F6_E3M2", 6),
}
ENCODINGS = {0: "raw", 1: "bf16-huffman", 2: "bf16-palette4"}
FULL = False
LIMIT_ROWS = 6       # byte rows shown per long field unless --full
LIMIT_SYMBOLS = 256  # decoded symbols listed per tensor unless --full


def crc32(b):
    return zlib.crc32(b) & 0xFFFFFFFF


def align_up(x, a):
    return (x + a - 1) // a * a


def bf16_value(w):
    """The BF16 word `w` as a Python float, written compactly."""
    f = struct.unpack("<f", struct.pack("<I", w << 16))[0]
    if math.isnan(f):
        return "NaN" if not w & 0x8000 else "-NaN"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    if f == 0:
        return "-0.0" if w & 0x8000 else "0.0"
    return "%.6g" % f


class Dump:
    """Prints rows of `data` and keeps track of what has been covered."""

    def __init__(self, data):
        self.data = data

    def row(self, off, length, field, value=""):
        """One field at `off`; a field longer than 16 bytes takes several rows."""
        chunk = self.data[off:off + length]
        rows = [chunk[i:i + 16] for i in range(0, max(len(chunk), 1), 16)] if chunk else [b""]
        shown = rows if FULL or len(rows) <= LIMIT_ROWS else rows[:LIMIT_ROWS - 1]
        for k, r in enumerate(shown):
            hexs = " ".join("%02x" % b for b in r)
            print("%08x  %-47s  %-26s %s" % (off + 16 * k, hexs, field if k == 0 else "",
                                             value if k == 0 else ""))
        if len(shown) < len(rows):
            print("%8s  %-47s  %-26s" % ("...", "(%d more bytes)" % (length - 16 * len(shown)), ""))

    def u(self, off, size, field, note=""):
        v = int.from_bytes(self.data[off:off + size], "little")
        self.row(off, size, field, ("%d" % v) + (("  " + note) if note else ""))
        return v

    def padding(self, start, end, what):
        if end <= start:
            return
        gap = self.data[start:end]
        state = "all zero" if not any(gap) else "NOT ZERO"
        self.row(start, end - start, what, "%d bytes, %s" % (end - start, state))

    def heading(self, text):
        print()
        print("== " + text)


def dump_file_header(d):
    d.heading("FileHeader (64 bytes at 0, spec 4.1)")
    magic = d.data[0:8]
    d.row(0, 8, "magic", "%r %s" % (bytes(magic), "ok" if magic == b"\x89UW\r\n\x1a\n\x00" else "BAD"))
    d.u(8, 2, "version_major")
    d.u(10, 2, "version_minor")
    d.u(12, 4, "header_len")
    d.u(16, 8, "required_features")
    d.u(24, 8, "optional_features")
    align = d.u(32, 4, "alignment")
    d.u(36, 4, "reserved")
    d.u(40, 8, "directory_offset")
    d.u(48, 8, "directory_len")
    d.u(56, 4, "reserved")
    stored = int.from_bytes(d.data[60:64], "little")
    d.row(60, 4, "header_crc", "0x%08x (CRC of bytes 0..60: 0x%08x %s)" % (
        stored, crc32(d.data[0:60]), "ok" if stored == crc32(d.data[0:60]) else "MISMATCH"))
    return align


def read_trailer(data):
    t = len(data) - 64
    dir_off, dir_len = struct.unpack_from("<QQ", data, t)
    count = struct.unpack_from("<I", data, t + 20)[0]
    return dir_off, dir_len, count


def read_directory(data, dir_off):
    tcount, mcount, slen, sh_off, sh_len = struct.unpack_from("<IIIII", data, dir_off)
    heap = dir_off + 32 + 128 * tcount + 16 * mcount
    tensors = []
    for i in range(tcount):
        r = dir_off + 32 + 128 * i
        name_off, name_len, dtype, enc, rank = struct.unpack_from("<IIBBB", data, r)
        decoded_crc, data_off, data_len, decoded_len, data_crc = struct.unpack_from("<IQQQI", data, r + 12)
        shape = list(struct.unpack_from("<8Q", data, r + 48))[:rank]
        name = data[heap + name_off:heap + name_off + name_len].decode("utf-8")
        tensors.append(dict(index=i, record=r, name=name, name_off=name_off, name_len=name_len,
                            dtype=dtype, encoding=enc, rank=rank, shape=shape,
                            decoded_crc=decoded_crc, data_offset=data_off, data_len=data_len,
                            decoded_len=decoded_len, data_crc=data_crc))
    return tensors


def dump_raw(d, t):
    base, n = t["data_offset"], t["data_len"]
    name, bits = DTYPES.get(t["dtype"], ("?", 0))
    note = "tensor bytes as in safetensors"
    if name == "BF16" and n:
        words = struct.unpack_from("<%dH" % min(n // 2, 8), d.data, base)
        note += "; first values " + ", ".join(bf16_value(w) for w in words)
    d.row(base, n, "raw bytes", note)
    section = d.data[base:base + n]
    return section


def canonical_codes(lengths):
    """DEFLATE canonical codes: {symbol: (code, length)} (spec 8.3.3)."""
    bl_count = [0] * 13
    for l in lengths:
        if l:
            bl_count[l] += 1
    next_code = [0] * 13
    code = 0
    for l in range(1, 13):
        code = (code + bl_count[l - 1]) << 1
        next_code[l] = code
    codes = {}
    for s, l in enumerate(lengths):
        if l:
            codes[s] = (next_code[l], l)
            next_code[l] += 1
    return codes


def dump_huffman(d, t):
    data, base = d.data, t["data_offset"]
    n = d.u(base + 0, 8, "element_count n")
    P = d.u(base + 8, 1, "palette_len P")
    esc = d.u(base + 9, 1, "has_escape", "(symbol %d is ESC)" % P if data[base + 9] else "")
    K = P + esc
    T = d.u(base + 10, 1, "table_count T")
    sb = d.u(base + 11, 1, "selector_bits")
    block_log2 = d.u(base + 12, 1, "block_log2", "(%d values per block)" % (1 << data[base + 12]))
    chunk_log2 = d.u(base + 13, 1, "chunk_log2", "(%d values per chunk)" % (1 << data[base + 13]))
    max_len = d.u(base + 14, 1, "max_code_len")
    d.u(base + 15, 1, "reserved")
    palette = list(data[base + 16:base + 16 + P])
    d.row(base + 16, 16, "palette[16]", "exponents " + " ".join(str(e) for e in palette) +
          (" (entries >= P are 0)" if P < 16 else ""))
    tables = []
    for k in range(4):
        off = base + 32 + 17 * k
        lengths = list(data[off:off + K])
        if k < T:
            tables.append(lengths)
            d.row(off, 17, "code_lengths[%d][17]" % k, "lengths of symbols 0..%d: %s" % (
                K - 1, " ".join(str(l) for l in lengths)))
        else:
            d.row(off, 17, "code_lengths[%d][17]" % k, "unused table (zeros)")
    d.row(base + 100, 4, "reserved", "")
    C = d.u(base + 104, 4, "chunk_count C")
    d.u(base + 108, 4, "reserved")
    xlen = d.u(base + 112, 8, "exp_stream_len")
    d.u(base + 120, 8, "reserved")

    codes = [canonical_codes(lengths) for lengths in tables]
    print()
    print("   Canonical codes (spec 8.3.3; written first bit first into the LSB-first stream):")
    for k, c in enumerate(codes):
        print("   table %d:" % k)
        for s in sorted(c, key=lambda s: (c[s][1], s)):
            code, l = c[s]
            what = "ESC (8-bit literal follows)" if s == P else "exponent %d" % palette[s]
            print("     symbol %2d  len %2d  code %-12s %s" % (s, l, format(code, "0%db" % l), what))

    idx = align_up(128 + n, 16)
    nblocks = (n + (1 << block_log2) - 1) >> block_log2
    sel = idx + 4 * C
    sel_len = (nblocks * sb + 7) // 8
    ex = align_up(sel + sel_len, 16)
    print()
    print("   Parts (derived, spec 8.3.1): sm plane [128, %d), chunk index at %d, selectors at %d "
          "(%d bytes, %d blocks), exponent stream at %d (%d bytes); data_len must be %d: %s" % (
              128 + n, idx, sel, sel_len, nblocks, ex, xlen, ex + xlen,
              "ok" if ex + xlen == t["data_len"] else "MISMATCH"))
    print()
    sm = data[base + 128:base + 128 + n]
    d.row(base + 128, n, "sm plane (n bytes)", "sign+mantissa byte of each element, in order")
    d.padding(base + 128 + n, base + idx, "padding to align16")
    chunk_index = []
    for c in range(C):
        chunk_index.append(d.u(base + idx + 4 * c, 4, "chunk_index[%d]" % c,
                               "(byte offset of chunk %d in the exponent stream)" % c))
    selectors = []
    sel_bytes = int.from_bytes(data[base + sel:base + sel + sel_len], "little")
    for b in range(nblocks):
        selectors.append((sel_bytes >> (b * sb)) & ((1 << sb) - 1) if sb else 0)
    if sel_len:
        d.row(base + sel, sel_len, "selectors",
              "table of each block (LSB first): " + " ".join(str(s) for s in selectors[:64]) +
              (" ..." if nblocks > 64 else ""))
    else:
        print("%8s  %-47s  %-26s %s" % ("", "(0 bytes)", "selectors", "none: one table, every block uses table 0"))
    d.padding(base + sel + sel_len, base + ex, "padding to align16")
    d.row(base + ex, xlen, "exponent stream", "%d bytes, decoded below" % xlen)

    # Decode the stream symbol by symbol.
    lookup = [{(l, code): s for s, (code, l) in c.items()} for c in codes]
    stream = data[base + ex:base + ex + xlen]
    out = bytearray(2 * n)
    chunk_len = 1 << chunk_log2
    shown = 0
    print()
    print("   Exponent stream, symbol by symbol (spec 8.3.5). 'bit' is the stream bit position")
    print("   (bit i = bit i%8 of stream byte i/8); code bits are listed in stream order.")
    print("   A code is followed, for ESC, by '+' and the 8 literal bits (stream order = LSB first).")
    print("   %6s %5s %6s %-16s %-4s %-5s %3s  %-3s %-6s %s" % (
        "elem", "table", "bit", "code", "sym", "", "exp", "sm", "word", "value"))
    ok = True
    for c in range(C):
        start = chunk_index[c]
        end = chunk_index[c + 1] if c + 1 < C else xlen
        pos = 8 * start
        first, last = c * chunk_len, min(n, (c + 1) * chunk_len)
        print("   -- chunk %d: elements [%d, %d), stream bytes [%d, %d)" % (c, first, last, start, end))
        for i in range(first, last):
            tbl = selectors[i >> block_log2]
            at = pos
            code, l, s = 0, 0, None
            bits = ""
            while s is None:
                if pos >= 8 * end or l >= max_len:
                    print("   element %d: CorruptStream (no code)" % i)
                    return None
                bit = (stream[pos >> 3] >> (pos & 7)) & 1
                pos += 1
                code, l = (code << 1) | bit, l + 1
                bits += str(bit)
                s = lookup[tbl].get((l, code))
            if s == P and esc:
                if pos + 8 > 8 * end:
                    print("   element %d: CorruptStream (literal past the chunk)" % i)
                    return None
                lit = 0
                litbits = ""
                for k in range(8):
                    bit = (stream[pos >> 3] >> (pos & 7)) & 1
                    lit |= bit << k
                    litbits += str(bit)
                    pos += 1
                e = lit
                sym = "ESC"
                bits += "+" + litbits
            else:
                e = palette[s]
                sym = str(s)
            w = ((sm[i] & 0x80) << 8) | (e << 7) | (sm[i] & 0x7F)
            out[2 * i:2 * i + 2] = struct.pack("<H", w)
            if shown < LIMIT_SYMBOLS:
                print("   %6d %5d %6d %-16s %-4s %-5s %3d  %02x  0x%04x %s" % (
                    i, tbl, at, bits, sym, "(lit)" if sym == "ESC" else "", e, sm[i], w, bf16_value(w)))
                shown += 1
        used = pos - 8 * start
        pad_bits = [(stream[p >> 3] >> (p & 7)) & 1 for p in range(pos, 8 * end)]
        exact = (used + 7) // 8 == end - start
        print("   -- chunk %d used %d bits = %d bytes (chunk holds %d bytes: %s); %d pad bits %s" % (
            c, used, (used + 7) // 8, end - start, "ok" if exact else "CorruptStream",
            len(pad_bits), "all zero" if not any(pad_bits) else "NOT ZERO"))
        ok = ok and exact and not any(pad_bits)
    if shown < n:
        print("   (%d more symbols decoded, not listed; --symbols N lists more)" % (n - shown))
    return bytes(out) if ok else None


def dump_palette4(d, t):
    data, base = d.data, t["data_offset"]
    n = d.u(base + 0, 8, "element_count n")
    P = d.u(base + 8, 1, "palette_len P")
    d.row(base + 9, 7, "reserved", "")
    palette = list(data[base + 16:base + 16 + P])
    d.row(base + 16, 16, "palette[16]", "exponents " + " ".join(str(e) for e in palette))
    E = d.u(base + 32, 8, "exception_count E")
    d.row(base + 40, 24, "reserved", "")
    nb = align_up(64 + n, 16)
    xp = align_up(nb + (n + 1) // 2, 16)
    sm = data[base + 64:base + 64 + n]
    d.row(base + 64, n, "sm plane (n bytes)", "sign+mantissa byte of each element")
    d.padding(base + 64 + n, base + nb, "padding to align16")
    nib = data[base + nb:base + nb + (n + 1) // 2]
    idx = [(nib[i // 2] >> (4 * (i % 2))) & 15 for i in range(n)]
    nonzero = [(i, v) for i, v in enumerate(idx) if v]
    if len(nonzero) <= 24:
        what = "non-zero at element:index " + " ".join("%d:%x" % iv for iv in nonzero)
    else:
        what = "palette index per element (low nibble first): " + " ".join(
            "%x" % v for v in idx[:32]) + (" ..." if n > 32 else "")
    d.row(base + nb, (n + 1) // 2, "nibbles", what)
    d.padding(base + nb + (n + 1) // 2, base + xp, "padding to align16")
    positions = list(struct.unpack_from("<%dI" % E, data, base + xp)) if E else []
    exps = list(data[base + xp + 4 * E:base + xp + 5 * E])
    if E:
        d.row(base + xp, 4 * E, "exception positions (u32)", " ".join(str(p) for p in positions[:16]) +
              (" ..." if E > 16 else ""))
        d.row(base + xp + 4 * E, E, "exception exponents (u8)", " ".join(str(e) for e in exps[:16]) +
              (" ..." if E > 16 else ""))
    e_of = [palette[v] if v < P else None for v in idx]
    for p, e in zip(positions, exps):
        e_of[p] = e
    out = bytearray(2 * n)
    for i in range(n):
        w = ((sm[i] & 0x80) << 8) | (e_of[i] << 7) | (sm[i] & 0x7F)
        out[2 * i:2 * i + 2] = struct.pack("<H", w)
    return bytes(out)


def dump(path, shown_as):
    data = open(path, "rb").read()
    d = Dump(data)
    print("%s: %d bytes" % (shown_as, len(data)))
    dump_file_header(d)
    dir_off, dir_len, _ = read_trailer(data)
    tensors = read_directory(data, dir_off)
    prev = 64
    decoded = {}
    for t in sorted(tensors, key=lambda t: t["data_offset"]):
        d.padding(prev, t["data_offset"], "padding to alignment")
        enc = t["encoding"]
        d.heading("Data section of tensor %d %r: %s %s, %s, %d bytes at %d (spec 8)" % (
            t["index"], t["name"], DTYPES[t["dtype"]][0], t["shape"],
            ENCODINGS.get(enc, "?"), t["data_len"], t["data_offset"]))
        section = data[t["data_offset"]:t["data_offset"] + t["data_len"]]
        if t["data_len"] == 0:
            print("   (empty section: no bytes)")
            out = b""
        elif enc == 1:
            out = dump_huffman(d, t)
        elif enc == 2:
            out = dump_palette4(d, t)
        else:
            out = dump_raw(d, t)
        print("   data_crc of the section 0x%08x (record says 0x%08x: %s)" % (
            crc32(section), t["data_crc"], "ok" if crc32(section) == t["data_crc"] else "MISMATCH"))
        if out is None:
            print("   decode FAILED")
        else:
            print("   decoded %d bytes, CRC 0x%08x (record says 0x%08x: %s)" % (
                len(out), crc32(out), t["decoded_crc"],
                "ok" if crc32(out) == t["decoded_crc"] and len(out) == t["decoded_len"] else "MISMATCH"))
            decoded[t["index"]] = out
        prev = t["data_offset"] + t["data_len"]
    d.padding(prev, dir_off, "padding to alignment")

    d.heading("Directory (%d bytes at %d, spec 5)" % (dir_len, dir_off))
    tcount = d.u(dir_off + 0, 4, "tensor_count")
    mcount = d.u(dir_off + 4, 4, "metadata_count")
    slen = d.u(dir_off + 8, 4, "strings_len")
    sh_off = d.u(dir_off + 12, 4, "source_header_offset", "(in the heap)")
    sh_len = d.u(dir_off + 16, 4, "source_header_len")
    d.row(dir_off + 20, 12, "reserved", "")
    heap = dir_off + 32 + 128 * tcount + 16 * mcount
    for t in tensors:
        r = t["record"]
        print()
        print("   TensorRecord %d (128 bytes at %d)" % (t["index"], r))
        d.u(r + 0, 4, "name_offset")
        d.u(r + 4, 4, "name_len", "-> %r" % t["name"])
        d.u(r + 8, 1, "dtype", DTYPES.get(t["dtype"], ("?",))[0])
        d.u(r + 9, 1, "encoding", ENCODINGS.get(t["encoding"], "?"))
        d.u(r + 10, 1, "rank")
        d.u(r + 11, 1, "reserved")
        d.row(r + 12, 4, "decoded_crc", "0x%08x" % t["decoded_crc"])
        d.u(r + 16, 8, "data_offset")
        d.u(r + 24, 8, "data_len")
        d.u(r + 32, 8, "decoded_len")
        d.row(r + 40, 4, "data_crc", "0x%08x" % t["data_crc"])
        d.u(r + 44, 4, "reserved")
        d.row(r + 48, 64, "shape[8]", "%s (dims past rank are 0)" % t["shape"])
        d.row(r + 112, 16, "reserved", "")
    meta = []
    for i in range(mcount):
        r = dir_off + 32 + 128 * tcount + 16 * i
        ko, kl, vo, vl = struct.unpack_from("<IIII", data, r)
        key = data[heap + ko:heap + ko + kl].decode("utf-8")
        value = data[heap + vo:heap + vo + vl].decode("utf-8")
        meta.append((ko, kl, "metadata key", key))
        meta.append((vo, vl, "metadata value", value))
        print()
        print("   MetadataRecord %d (16 bytes at %d)" % (i, r))
        d.u(r + 0, 4, "key_offset")
        d.u(r + 4, 4, "key_len", "-> %r" % key)
        d.u(r + 8, 4, "value_offset")
        d.u(r + 12, 4, "value_len", "-> %r" % value)
    print()
    print("   String heap (%d bytes at %d; offsets below are absolute)" % (slen, heap))
    pieces = [(t["name_off"], t["name_len"], "tensor name", t["name"]) for t in tensors] + meta
    if sh_len:
        pieces.append((sh_off, sh_len, "source header (JSON)",
                       "verbatim safetensors header, %d bytes" % sh_len))
    for off, length, what, text in sorted(pieces):
        shown = text if len(text) <= 40 else text[:37] + "..."
        d.row(heap + off, length, what, "%r" % shown if what != "source header (JSON)" else text)
    if sh_len:
        print("   source header text: %s" % data[heap + sh_off:heap + sh_off + sh_len].decode("utf-8"))
    end = dir_off + dir_len
    dir_crc = crc32(data[dir_off:end])

    trailer = len(data) - 64
    d.padding(end, trailer, "padding before trailer")
    d.heading("Trailer (64 bytes at %d, spec 4.2)" % trailer)
    d.u(trailer + 0, 8, "directory_offset")
    d.u(trailer + 8, 8, "directory_len")
    stored = int.from_bytes(data[trailer + 16:trailer + 20], "little")
    d.row(trailer + 16, 4, "directory_crc", "0x%08x (CRC of the directory: 0x%08x %s)" % (
        stored, dir_crc, "ok" if stored == dir_crc else "MISMATCH"))
    d.u(trailer + 20, 4, "tensor_count")
    d.u(trailer + 24, 8, "file_len", "ok" if int.from_bytes(
        data[trailer + 24:trailer + 32], "little") == len(data) else "MISMATCH")
    d.row(trailer + 32, 20, "reserved", "")
    stored = int.from_bytes(data[trailer + 52:trailer + 56], "little")
    tcrc = crc32(data[trailer:trailer + 52])
    d.row(trailer + 52, 4, "trailer_crc", "0x%08x (CRC of trailer bytes 0..52: 0x%08x %s)" % (
        stored, tcrc, "ok" if stored == tcrc else "MISMATCH"))
    d.row(trailer + 56, 8, "end_magic", "%r" % bytes(data[trailer + 56:trailer + 64]))

    # Rebuild the safetensors file (spec 6).
    if len(decoded) == len(tensors) and sh_len:
        header = data[heap + sh_off:heap + sh_off + sh_len]
        rebuilt = struct.pack("<Q", len(header)) + header + b"".join(
            decoded[t["index"]] for t in tensors)
        import hashlib
        print()
        print("Rebuilt safetensors file (spec 6): %d bytes, sha256 %s" % (
            len(rebuilt), hashlib.sha256(rebuilt).hexdigest()))


def main(argv):
    global FULL, LIMIT_SYMBOLS
    args = []
    it = iter(argv)
    try:
        for a in it:
            if a == "--full":
                FULL = True
            elif a == "--symbols":
                LIMIT_SYMBOLS = int(next(it))
            else:
                args.append(a)
    except (StopIteration, ValueError):
        args = ["-"]
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = args[0] if args else os.path.join(root, "testdata", "hello.huffman.uw")
    dump(path, args[0] if args else "testdata/hello.huffman.uw")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
