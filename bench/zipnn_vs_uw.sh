#!/usr/bin/env bash
# ZipNN and uw side by side on the same BF16 safetensors file, in one run:
# compression ratio, compress and decompress throughput (GB/s = 1e9 raw bytes
# per second, data held in memory, best of N runs), one thread and all threads.
#
#   bench/zipnn_vs_uw.sh [FILE] [REPEATS]
#
# FILE defaults to ../shared/weights/all-minilm-l6-v2-full.safetensors.
# ZipNN (which pulls in PyTorch) is installed into a virtual environment
# outside the repository: $ZIPNN_VENV, default /tmp/zipnn-venv.
# Both tools work tensor by tensor: ZipNN in its bf16 byte mode (its default
# method, 256 KiB chunks), uw in its default bf16-huffman form, with CRCs.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
file=${1:-$here/../shared/weights/all-minilm-l6-v2-full.safetensors}
repeats=${2:-5}
venv=${ZIPNN_VENV:-/tmp/zipnn-venv}
threads=$(nproc)

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import zipnn' 2>/dev/null; then
    echo "installing zipnn into $venv (pulls PyTorch) ..." >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet zipnn
fi

echo "== machine"
echo "nproc: $threads"
lscpu | head -n 20
echo
echo "== versions"
"$venv/bin/python" -c 'import importlib.metadata as m; print("zipnn", m.version("zipnn"))'
(cd "$here" && cargo build --release -q -p uw-encode)
uw=${CARGO_TARGET_DIR:-$here/target}/release/uw
"$uw" --version
echo
echo "== file: $file"

echo
echo "== ZipNN (bf16 byte mode)"
for t in 1 "$threads"; do
    "$venv/bin/python" - "$file" "$t" "$repeats" <<'PY'
import json, struct, sys, time
from zipnn import ZipNN

path, threads, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
    data = f.read()
header.pop("__metadata__", None)
tensors = [data[a:b] for a, b in sorted(v["data_offsets"] for v in header.values())]
raw = sum(len(t) for t in tensors)
zc = ZipNN(bytearray_dtype="bfloat16", input_format="byte", threads=threads)
zd = ZipNN(bytearray_dtype="bfloat16", input_format="byte", threads=threads)

def best(fn, prepare=lambda: None):
    times, out = [], None
    for _ in range(repeats):
        arg = prepare()
        t0 = time.perf_counter()
        out = fn(arg)
        times.append(time.perf_counter() - t0)
    return min(times), out

# zipnn 0.5.4 with one thread reorders the bits of its input in place, so
# each run compresses fresh copies (made outside the timed part).
ct, comp = best(lambda ts: [zc.compress(t) for t in ts],
                lambda: [bytearray(t) for t in tensors])
dt, back = best(lambda _: [zd.decompress(c) for c in comp])
assert all(bytes(b) == t for b, t in zip(back, tensors)), "ZipNN round trip failed"
stored = sum(len(c) for c in comp)
print(f"zipnn threads {threads}: ratio {stored / raw:.4f}  "
      f"compress {raw / ct / 1e9:.3f} GB/s  decompress {raw / dt / 1e9:.3f} GB/s  "
      f"({len(tensors)} tensors, {raw} raw bytes, best of {repeats})")
PY
done

echo
echo "== uw (bf16-huffman; palette-4, memcpy and zstd -3 for reference)"
for t in 1 "$threads"; do
    "$uw" bench "$file" --threads "$t" --repeats "$repeats"
    echo
done
