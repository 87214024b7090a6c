#!/usr/bin/env python3
"""Independent pure-Python writer of small `.uw` v1 files (spec/uw-v1.md), for testing readers.

usage:
  python3 spec/tools/uw_write_tiny.py sample OUT.safetensors [--pretty]
      write a small BF16/U8/F32/BOOL safetensors test file (NaN, inf, -0, subnormals,
      rare exponents, scalar, empty and odd-length tensors, __metadata__). Default: its
      header is in the canonical form of spec 6.4; --pretty: indented, keys sorted by
      name while the data is in another order, no padding.
  python3 spec/tools/uw_write_tiny.py IN.safetensors OUT.uw [options]
      --encoding auto|raw|huffman|palette4|mixed   (default auto: huffman if smaller, else raw;
                                  mixed: BF16 tensor k gets huffman, palette4, raw for k%3 = 0,1,2)
      --tables T        Huffman tables per tensor, 1..4 (default 1); block b uses table b % T
      --block-log2 B    (default 9)      --chunk-log2 C   (default 14)
      --max-code-len L  (default 12)     --align A        (default 64)
      --stream          leave directory_offset/len 0 in the header (streaming writer)
      --no-source-header  store source_header_len = 0
      --extra-pad       add superfluous zero padding (readers must accept it)

Standard library only. Not fast, not the reference encoder: a second implementation.
"""
import json
import struct
import sys
import zlib

MAGIC = b"\x89UW\r\n\x1a\n\x00"
END_MAGIC = b"\x89UWEND\r\n"
DTYPE_CODES = {
    "BOOL": (1, 8), "U8": (2, 8), "I8": (3, 8), "F8_E5M2": (4, 8), "F8_E4M3": (5, 8),
    "F8_E8M0": (6, 8), "F8_E4M3FNUZ": (7, 8), "F8_E5M2FNUZ": (8, 8), "I16": (9, 16),
    "U16": (10, 16), "F16": (11, 16), "BF16": (12, 16), "I32": (13, 32), "U32": (14, 32),
    "F32": (15, 32), "C64": (16, 64), "F64": (17, 64), "I64": (18, 64), "U64": (19, 64),
    "F4": (20, 4), "F6_E2M3": (21, 6), "F6_E3M2": (22, 6),
}


def crc(b):
    return zlib.crc32(b) & 0xFFFFFFFF


def align_up(x, a):
    return (x + a - 1) // a * a


def q(s):
    """JSON string quoting of spec 6.4."""
    m = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    return '"' + "".join(m.get(c) or ("\\u%04x" % ord(c) if ord(c) < 0x20 else c) for c in s) + '"'


# ----------------------------------------------------------------------------- safetensors in
def read_safetensors(path):
    with open(path, "rb") as f:
        b = f.read()
    (hn,) = struct.unpack_from("<Q", b, 0)
    hbytes = b[8:8 + hn]
    h = json.loads(hbytes)
    meta = h.pop("__metadata__", None) or {}
    items = sorted(h.items(), key=lambda kv: kv[1]["data_offsets"][0])
    base = 8 + hn
    tensors = []
    expect = 0
    for name, v in items:
        s, e = v["data_offsets"]
        if s != expect:
            raise SystemExit(f"{path}: data region has a gap or overlap at {name}")
        expect = e
        tensors.append(dict(name=name, dtype=v["dtype"], shape=list(v["shape"]), data=b[base + s:base + e]))
    if base + expect != len(b):
        raise SystemExit(f"{path}: trailing bytes after the data region")
    return tensors, meta, hbytes


# ----------------------------------------------------------------------------- BF16 split
def split_bf16(data):
    lo, hi = data[0::2], data[1::2]
    n = len(lo)
    e = (int.from_bytes(hi.translate(bytes(((x & 0x7F) << 1) for x in range(256))), "little")
         | int.from_bytes(lo.translate(bytes((x >> 7) for x in range(256))), "little")).to_bytes(n, "little")
    sm = (int.from_bytes(hi.translate(bytes((x & 0x80) for x in range(256))), "little")
          | int.from_bytes(lo.translate(bytes((x & 0x7F) for x in range(256))), "little")).to_bytes(n, "little")
    return e, sm


def choose_palette(exps):
    hist = [0] * 256
    for v in exps:
        hist[v] += 1
    order = sorted((e for e in range(256) if hist[e]), key=lambda e: (-hist[e], e))
    return order[:16], hist


# ----------------------------------------------------------------------------- Huffman
def package_merge(counts, limit):
    """counts: {symbol: count > 0}. Returns {symbol: length}, lengths <= limit, complete code."""
    syms = sorted(counts, key=lambda s: (counts[s], s))
    if len(syms) == 1:
        return {syms[0]: 1}
    leaves = [(counts[s], [s]) for s in syms]
    cur = list(leaves)
    for _ in range(limit - 1):
        pkg = [(cur[i][0] + cur[i + 1][0], cur[i][1] + cur[i + 1][1]) for i in range(0, len(cur) - 1, 2)]
        cur = sorted(leaves + pkg, key=lambda x: x[0])
    lens = dict.fromkeys(syms, 0)
    for _, ss in cur[:2 * len(syms) - 2]:
        for s in ss:
            lens[s] += 1
    return lens


def canonical(lens):
    """DEFLATE code assignment: list of (code, length) per symbol index."""
    maxl = max(lens)
    bl = [0] * (maxl + 1)
    for l in lens:
        if l:
            bl[l] += 1
    nxt = [0] * (maxl + 2)
    code = 0
    for l in range(1, maxl + 1):
        code = (code + bl[l - 1]) << 1
        nxt[l] = code
    out = []
    for l in lens:
        if l:
            out.append((nxt[l], l))
            nxt[l] += 1
        else:
            out.append((None, 0))
    return out


def rev(code, l):
    r = 0
    for _ in range(l):
        r = (r << 1) | (code & 1)
        code >>= 1
    return r


def a16(x):
    return align_up(x, 16)


def encode_huffman(data, tables, block_log2, chunk_log2, max_code_len):
    exps, sm = split_bf16(data)
    n = len(exps)
    palette, hist = choose_palette(exps)
    P = len(palette)
    sym_of = {e: i for i, e in enumerate(palette)}
    has_esc = 1 if any(hist[e] for e in range(256) if e not in sym_of) else 0
    K = P + has_esc
    ESC = P
    syms = bytes(sym_of.get(e, ESC) for e in exps)
    nblocks = -(-n // (1 << block_log2))
    T = max(1, min(tables, nblocks)) if tables > 1 else 1
    # block b -> table b % T (simple, deterministic; exercises every selector value)
    tab_counts = [[0] * K for _ in range(T)]
    for b in range(nblocks):
        t = b % T
        for s in syms[b << block_log2:(b + 1) << block_log2]:
            tab_counts[t][s] += 1
    lengths = []
    for t in range(T):
        cnt = {s: c for s, c in enumerate(tab_counts[t]) if c}
        L = package_merge(cnt, max_code_len)
        lengths.append([L.get(s, 0) for s in range(K)])
    codes = [[(rev(c, l), l) if l else (0, 0) for c, l in canonical(lens)] for lens in lengths]
    # exponent stream, per chunk
    CS = 1 << chunk_log2
    C = -(-n // CS)
    stream = bytearray()
    index = []
    for c in range(C):
        index.append(len(stream))
        acc = 0
        nacc = 0
        for i in range(c * CS, min(n, (c + 1) * CS)):
            t = (i >> block_log2) % T
            s = syms[i]
            r, l = codes[t][s]
            assert l, "symbol missing from its table"
            acc |= r << nacc
            nacc += l
            if s == ESC:
                acc |= exps[i] << nacc
                nacc += 8
            while nacc >= 8:
                stream.append(acc & 0xFF)
                acc >>= 8
                nacc -= 8
        if nacc:
            stream.append(acc & 0xFF)
    sbits = 0 if T == 1 else (1 if T == 2 else 2)
    selb = bytearray(-(-nblocks * sbits // 8))
    for b in range(nblocks):
        if sbits:
            bit = b * sbits
            selb[bit // 8] |= (b % T) << (bit % 8)
    hdr = bytearray(128)
    struct.pack_into("<QBBBBBBBB", hdr, 0, n, P, has_esc, T, sbits, block_log2, chunk_log2, max_code_len, 0)
    hdr[16:16 + P] = bytes(palette)
    for t in range(T):
        hdr[32 + 17 * t:32 + 17 * t + K] = bytes(lengths[t])
    struct.pack_into("<IIQQ", hdr, 104, C, 0, len(stream), 0)
    sec = bytearray(hdr) + sm
    sec += bytes(a16(len(sec)) - len(sec))
    sec += struct.pack(f"<{C}I", *index)
    sec += selb
    sec += bytes(a16(len(sec)) - len(sec))
    sec += stream
    return bytes(sec)


def encode_palette4(data):
    exps, sm = split_bf16(data)
    n = len(exps)
    palette, _ = choose_palette(exps)
    P = len(palette)
    sym_of = {e: i for i, e in enumerate(palette)}
    nib = bytearray(-(-n // 2))
    xpos, xexp = [], []
    for i, e in enumerate(exps):
        s = sym_of.get(e)
        if s is None:
            s = 0
            xpos.append(i)
            xexp.append(e)
        nib[i >> 1] |= s << (4 * (i & 1))
    hdr = bytearray(64)
    struct.pack_into("<QB", hdr, 0, n, P)
    hdr[16:16 + P] = bytes(palette)
    struct.pack_into("<Q", hdr, 32, len(xpos))
    sec = bytearray(hdr) + sm
    sec += bytes(a16(len(sec)) - len(sec))
    sec += nib
    sec += bytes(a16(len(sec)) - len(sec))
    sec += struct.pack(f"<{len(xpos)}I", *xpos) + bytes(xexp)
    return bytes(sec)


# ----------------------------------------------------------------------------- container
def write_uw(tensors, meta, source_header, out, opt):
    align = opt["align"]
    buf = bytearray(64)
    recs = []
    heap = bytearray()

    def put(s):
        b = s if isinstance(s, bytes) else s.encode("utf-8")
        off = len(heap)
        heap.extend(b)
        return off, len(b)

    bf16_k = 0
    for t in tensors:
        code, bits = DTYPE_CODES[t["dtype"]]
        data = t["data"]
        n = 1
        for d in t["shape"]:
            n *= d
        assert n * bits // 8 == len(data)
        enc, sec = 0, data
        if t["dtype"] == "BF16" and n >= 1:
            mode = opt["encoding"]
            if mode == "mixed":
                mode = ("huffman", "palette4", "raw")[bf16_k % 3]
            bf16_k += 1
            if mode in ("auto", "huffman"):
                hs = encode_huffman(data, opt["tables"], opt["block_log2"], opt["chunk_log2"], opt["max_code_len"])
                if mode == "huffman" or len(hs) < len(data):
                    enc, sec = 1, hs
            elif mode == "palette4":
                enc, sec = 2, encode_palette4(data)
        off = align_up(len(buf), align)
        if opt["extra_pad"]:
            off += align
        buf += bytes(off - len(buf))
        buf += sec
        name_off, name_len = put(t["name"])
        recs.append((name_off, name_len, code, enc, t["shape"], crc(data), off, len(sec), len(data), crc(sec)))
    mrecs = []
    for k in sorted(meta, key=lambda k: k.encode("utf-8")):
        ko, kl = put(k)
        vo, vl = put(meta[k])
        mrecs.append((ko, kl, vo, vl))
    if source_header is not None:
        sh_off, sh_len = put(source_header)
    else:
        sh_off, sh_len = 0, 0
    d = bytearray(struct.pack("<IIIII12x", len(recs), len(mrecs), len(heap), sh_off, sh_len))
    for (no, nl, code, enc, shape, dcrc, off, dlen, declen, scrc) in recs:
        r = bytearray(128)
        struct.pack_into("<IIBBBBIQQQII", r, 0, no, nl, code, enc, len(shape), 0, dcrc, off, dlen, declen, scrc, 0)
        struct.pack_into(f"<{len(shape)}Q", r, 48, *shape)
        d += r
    for m in mrecs:
        d += struct.pack("<IIII", *m)
    d += heap
    doff = align_up(len(buf), align)
    buf += bytes(doff - len(buf))
    buf += d
    toff = align_up(len(buf), 8) + (3 if opt["extra_pad"] else 0)
    buf += bytes(toff - len(buf))
    file_len = toff + 64
    tr = bytearray(struct.pack("<QQIIQ20x", doff, len(d), crc(bytes(d)), len(recs), file_len))
    tr += struct.pack("<I", crc(bytes(tr[0:52])))
    tr += END_MAGIC
    buf += tr
    hd = bytearray(MAGIC)
    hd += struct.pack("<HHIQQIIQQI", 1, 0, 64, 0, 0, align, 0,
                      0 if opt["stream"] else doff, 0 if opt["stream"] else len(d), 0)
    hd += struct.pack("<I", crc(bytes(hd)))
    buf[0:64] = hd
    assert len(buf) == file_len
    with open(out, "wb") as f:
        f.write(buf)


# ----------------------------------------------------------------------------- sample input
def bf16_of(x):
    (u,) = struct.unpack("<I", struct.pack("<f", x))
    if (u >> 23) & 0xFF == 0xFF:  # inf/nan: truncate, keep quiet bit
        return (u >> 16) | (0x40 if u & 0x7FFFFF else 0)
    u += 0x7FFF + ((u >> 16) & 1)  # round to nearest even
    return (u >> 16) & 0xFFFF


def make_sample(path, pretty):
    import random
    rng = random.Random(12345)
    T = []

    def bf16(name, shape, words):
        T.append((name, "BF16", shape, struct.pack(f"<{len(words)}H", *words)))

    # 1. gaussian with specials and rare exponents
    w = [bf16_of(rng.gauss(0, 0.05)) for _ in range(37 * 41)]
    specials = [0x7FC0, 0xFFC1, 0x7F80, 0xFF80, 0x8000, 0x0000, 0x0001, 0x807F, 0x7F7F, 0x0080,
                bf16_of(1e30), bf16_of(-3e-30), bf16_of(7.0), bf16_of(1e-12)]
    for k, s in enumerate(specials):
        w[(k * 97 + 5) % len(w)] = s
    bf16("layers.0.weight", [37, 41], w)
    # 2. two chunks at chunk_log2 14, blocks of different scales, ~0.5% rare
    w = []
    for r in range(300):
        scale = 0.02 if r % 3 else 0.3
        for c in range(64):
            v = rng.gauss(0, scale)
            if rng.random() < 0.005:
                v *= 2.0 ** rng.choice([-40, -30, -20, 20])
            w.append(bf16_of(v))
    bf16("layers.1.mlp.weight", [300, 64], w)
    bf16("scalar", [], [bf16_of(1.5)])
    bf16("zeros", [64], [0] * 64)
    bf16("empty", [0, 3], [])
    bf16("odd", [7], [bf16_of(x) for x in (1.0, -2.0, 0.5, 1e-30, 3.0, float("nan"), -0.0)])
    # 3. very spread exponents: escape-heavy
    bf16("wide", [2048], [rng.randrange(0, 65536) for _ in range(2048)])
    # 4. exactly 17 distinct exponents
    bf16("seventeen", [17, 8], [((e + 100) << 7) | rng.randrange(0, 128) | (rng.randrange(2) << 15)
                                for e in range(17) for _ in range(8)])
    T.append(("ü/tokens", "U8", [5, 3], bytes(range(200, 215))))
    T.append(("norm.f32", "F32", [4], struct.pack("<4f", 1.0, -0.0, float("inf"), 1e-40)))
    T.append(("mask", "BOOL", [3], b"\x01\x00\x01"))
    meta = {"format": "pt", "ключ": "значение", 'quote"key': "line\nbreak\ttab\u0001end", "": "empty key"}
    offs = []
    B = 0
    for name, dt, shape, data in T:
        offs.append((B, B + len(data)))
        B += len(data)
    if pretty:
        obj = {"__metadata__": meta}
        for (name, dt, shape, data), o in zip(T, offs):
            obj[name] = {"dtype": dt, "shape": shape, "data_offsets": list(o)}
        h = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8")
    else:
        ents = ['"__metadata__":{' + ",".join(q(k) + ":" + q(v) for k, v in
                                              sorted(meta.items(), key=lambda kv: kv[0].encode())) + "}"]
        for (name, dt, shape, data), o in zip(T, offs):
            ents.append(q(name) + ':{"dtype":' + q(dt) + ',"shape":[' + ",".join(map(str, shape))
                        + '],"data_offsets":[' + str(o[0]) + "," + str(o[1]) + "]}")
        h = ("{" + ",".join(ents) + "}").encode("utf-8")
        h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in T))


def main(argv):
    if len(argv) >= 2 and argv[0] == "sample":
        make_sample(argv[1], "--pretty" in argv[2:])
        return 0
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    src, out = argv[0], argv[1]
    opt = dict(encoding="auto", tables=1, block_log2=9, chunk_log2=14, max_code_len=12, align=64,
               stream=False, no_source_header=False, extra_pad=False)
    a = argv[2:]
    while a:
        k = a.pop(0)
        if k in ("--stream", "--no-source-header", "--extra-pad"):
            opt[k[2:].replace("-", "_")] = True
        elif k == "--encoding":
            opt["encoding"] = a.pop(0)
        elif k in ("--tables", "--block-log2", "--chunk-log2", "--max-code-len", "--align"):
            opt[k[2:].replace("-", "_")] = int(a.pop(0))
        else:
            print(f"uw_write_tiny: bad argument {k!r}", file=sys.stderr)
            return 2
    tensors, meta, hbytes = read_safetensors(src)
    write_uw(tensors, meta, None if opt["no_source_header"] else hbytes, out, opt)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
