#!/usr/bin/env python3
"""Measure the rare-exponent alternatives of spec/uw-v1.md ("Rationale").

usage: python3 spec/tools/measure_rare.py [FILE.safetensors] [--seed N] [--target 0.997]

Reads a BF16 safetensors file and prints, for the real tensors and for a
synthetic "hard" variant (see make_hard), the size/raw ratio of each way of
coding out-of-palette ("rare") exponents. Sizes count a 128-byte section header,
the sign+mantissa plane, the exponent coding, the chunk index (one u32 per
16384 values) and the 16-byte part alignment, with a raw fallback when the
coding is not smaller; they exclude the container (file header, directory).
Needs numpy.
"""
import heapq
import json
import struct
import sys

import numpy as np

CHUNK = 16384
ROW = 64
HDR = 128


def a16(x):
    return (x + 15) & ~15


def load(path):
    with open(path, "rb") as f:
        b = f.read()
    (n,) = struct.unpack_from("<Q", b, 0)
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    base = 8 + n
    out = []
    for name, v in sorted(h.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if v["dtype"] != "BF16":
            continue
        s, e = v["data_offsets"]
        w = np.frombuffer(b, dtype="<u2", count=(e - s) // 2, offset=base + s)
        out.append((name, ((w >> 7) & 0xFF).astype(np.uint8)))
    return out


def huffman_lengths(counts):
    """Unlimited Huffman code lengths for {symbol: count>0}."""
    if len(counts) == 1:
        return {s: 1 for s in counts}
    heap = [(c, i, (s,)) for i, (s, c) in enumerate(sorted(counts.items()))]
    heapq.heapify(heap)
    depth = {s: 0 for s in counts}
    k = len(heap)
    while len(heap) > 1:
        c1, _, a = heapq.heappop(heap)
        c2, _, b = heapq.heappop(heap)
        for s in a + b:
            depth[s] += 1
        heapq.heappush(heap, (c1 + c2, k, a + b))
        k += 1
    return depth


def limited_lengths(counts, limit):
    """Length-limited Huffman (package-merge) code lengths for {symbol: count>0}."""
    syms = sorted(counts, key=lambda s: (counts[s], s))
    if len(syms) == 1:
        return {syms[0]: 1}
    assert len(syms) <= 1 << limit
    leaves = [(counts[s], (s,)) for s in syms]
    cur = list(leaves)
    for _ in range(limit - 1):
        pk = [(cur[i][0] + cur[i + 1][0], cur[i][1] + cur[i + 1][1])
              for i in range(0, len(cur) - 1, 2)]
        cur = sorted(leaves + pk, key=lambda x: x[0])
    lens = {s: 0 for s in syms}
    for _, items in cur[:2 * len(syms) - 2]:
        for s in items:
            lens[s] += 1
    return lens


def palette_of(hist):
    order = sorted(range(256), key=lambda e: (-hist[e], e))
    return [e for e in order[:16] if hist[e] > 0]


def chunk_bytes(bits):
    """Sum over 16384-value chunks of ceil(chunk bits / 8)."""
    idx = np.arange(0, len(bits), CHUNK)
    per = np.add.reduceat(bits.astype(np.int64), idx)
    return int(((per + 7) // 8).sum()), len(idx)


def section(n, exp_bytes, chunks, extra_parts=()):
    size = a16(HDR + n) + 4 * chunks
    for p in extra_parts:
        size = a16(size) + p
    size = a16(size) + exp_bytes
    return min(size, 2 * n)


def measure(ex):
    n = len(ex)
    hist = np.bincount(ex, minlength=256)
    pal = palette_of(hist)
    inpal = np.zeros(256, bool)
    inpal[pal] = True
    rare_mask = ~inpal[ex]
    n_rare = int(rare_mask.sum())
    res = {}
    # order-0 entropy bound (8 + H)/16, no side information
    p = hist[hist > 0] / n
    res["entropy"] = n * (8 + float(-(p * np.log2(p)).sum())) / 8
    # (c) palette16 + ESC symbol + 8-bit literal inline (chosen)
    counts = {i: int(hist[e]) for i, e in enumerate(pal)}
    if n_rare:
        counts[16] = n_rare
    L = limited_lengths(counts, 12)
    lut = np.zeros(256, np.int32)
    for i, e in enumerate(pal):
        lut[e] = L.get(i, 0)
    if n_rare:
        lut[~inpal] = L[16] + 8
    eb, ch = chunk_bytes(lut[ex])
    res["c"] = section(n, eb, ch)
    # (b1) no ESC: rare coded as palette[0], exception list u32 pos + u8 exponent
    counts_b = {i: int(hist[e]) for i, e in enumerate(pal)}
    counts_b[0] += n_rare
    Lb = limited_lengths(counts_b, 12)
    lutb = np.zeros(256, np.int32)
    lutb[:] = Lb[0]
    for i, e in enumerate(pal):
        lutb[e] = Lb[i]
    eb, ch = chunk_bytes(lutb[ex])
    res["b1"] = section(n, eb, ch, [5 * n_rare])
    # (b2) ESC symbol in the stream, literals in a separate byte array,
    #      plus a u32 per chunk (escapes before the chunk) for random access
    eb, ch = chunk_bytes(lut[ex] - 8 * rare_mask)
    res["b2"] = section(n, eb, ch, [n_rare, 4 * ch])
    # (a) rows of 64: a row holding any rare exponent stores its 64 exponents
    #     verbatim (8 bits each), 1 flag bit per row; other rows Huffman, 16 symbols
    rows = -(-n // ROW)
    pad = rows * ROW - n
    rm = np.concatenate([rare_mask, np.zeros(pad, bool)]).reshape(rows, ROW).any(1)
    verb = np.repeat(rm, ROW)[:n]
    h_ok = np.bincount(ex[~verb], minlength=256)
    counts_a = {i: int(h_ok[e]) for i, e in enumerate(pal) if h_ok[e] > 0}
    La = limited_lengths(counts_a, 12) if counts_a else {}
    luta = np.zeros(256, np.int32)
    for i, e in enumerate(pal):
        luta[e] = La.get(i, 0)
    bits = np.where(verb, 8, luta[ex])
    eb, ch = chunk_bytes(bits)
    res["a"] = section(n, eb, ch, [(rows + 7) // 8])
    res["rows_hit"] = int(rm.sum())
    res["rows"] = rows
    # (d) full-alphabet Huffman, unlimited code length, 256-byte length table
    counts_d = {e: int(hist[e]) for e in range(256) if hist[e] > 0}
    Ld = huffman_lengths(counts_d)
    lutd = np.zeros(256, np.int32)
    for e, l in Ld.items():
        lutd[e] = l
    eb, ch = chunk_bytes(lutd[ex])
    res["d"] = section(n, eb, ch, [256 - 17]) if n_rare else res["c"]
    res["dmax"] = max(Ld.values())
    res["rare"] = n_rare
    res["cov16"] = 1 - n_rare / n
    return res


def make_hard(tensors, target, seed):
    """Remap a random fraction q of each tensor's exponents to out-of-palette
    values so that its top-16 exponents cover `target` of its values.
    90% of remapped values go below the palette (tiny magnitudes):
    lo-1-k, k ~ Geometric(0.1) (mean spread ~10 exponents, floor 0); 10% above:
    hi+1+k, k ~ Geometric(0.5) (cap 254). q is found per tensor by bisection.
    Positions are uniform at random; sign and mantissa bits are unchanged."""
    rng = np.random.default_rng(seed)
    out = []
    for name, ex in tensors:
        hist = np.bincount(ex, minlength=256)
        pal = palette_of(hist)
        lo, hi = min(pal), max(pal)
        n = len(ex)
        perm = rng.permutation(n)
        kind = rng.random(n) < 0.9
        below = np.clip(lo - 1 - (rng.geometric(0.1, n) - 1), 0, 255)
        above = np.clip(hi + 1 + (rng.geometric(0.5, n) - 1), 0, 254)
        repl = np.where(kind, below, above).astype(np.uint8)

        def apply(q):
            m = int(round(q * n))
            e2 = ex.copy()
            pos = perm[:m]
            e2[pos] = repl[:m]
            h2 = np.bincount(e2, minlength=256)
            cov = np.sort(h2)[::-1][:16].sum() / n
            return e2, cov

        lo_q, hi_q = 0.0, 0.05
        best = apply(0.0)
        for _ in range(30):
            mid = (lo_q + hi_q) / 2
            e2, cov = apply(mid)
            best = (e2, cov)
            if cov > target:
                lo_q = mid
            else:
                hi_q = mid
        out.append((name, best[0]))
    return out


def report(title, tensors):
    tot_raw = sum(2 * len(ex) for _, ex in tensors)
    acc = {}
    rows = rows_hit = rare = 0
    dmax = 0
    vals = 0
    for _, ex in tensors:
        r = measure(ex)
        for k in ("entropy", "a", "b1", "b2", "c", "d"):
            acc[k] = acc.get(k, 0) + r[k]
        rows += r["rows"]
        rows_hit += r["rows_hit"]
        rare += r["rare"]
        vals += len(ex)
        dmax = max(dmax, r["dmax"])
    print(f"== {title}: {len(tensors)} BF16 tensors, {vals} values, raw {tot_raw} B")
    print(f"   values outside each tensor's top-16 palette: {rare} ({100 * rare / vals:.4f}%)")
    print(f"   rows of 64 holding a rare exponent: {rows_hit}/{rows} ({100 * rows_hit / rows:.2f}%, 1 in {rows / max(rows_hit, 1):.1f})")
    names = {
        "entropy": "order-0 entropy bound (8+H)/16, per tensor, no side info",
        "a": "(a) rows of 64, a row with a rare exponent stored verbatim",
        "b1": "(b) no ESC; exception list: u32 position + u8 exponent",
        "b2": "(b') ESC in stream; literals in a separate byte array + u32/chunk",
        "c": "(c) ESC + 8-bit literal inline (chosen)",
        "d": f"(d) full-alphabet Huffman, unlimited lengths (max {dmax} bits)",
    }
    for k in ("entropy", "a", "b1", "b2", "c", "d"):
        print(f"   {names[k]:<66} {acc[k] / tot_raw:.5f}  {16 * acc[k] / tot_raw:.4f} bits/weight")


def main():
    args = sys.argv[1:]
    path = "/work/shared/weights/all-minilm-l6-v2-full.safetensors"
    seed, target = 1, 0.997
    i = 0
    while i < len(args):
        if args[i] == "--seed":
            seed = int(args[i + 1]); i += 2
        elif args[i] == "--target":
            target = float(args[i + 1]); i += 2
        else:
            path = args[i]; i += 1
    t = load(path)
    report(f"real: {path}", t)
    report(f"hard: top-16 coverage {target} per tensor (seed {seed})", make_hard(t, target, seed))


if __name__ == "__main__":
    main()
