#!/usr/bin/env python3
"""Writes a ~4 GB BF16 safetensors model for memory measurements.

It repeats the real tensors of a source model (by default the shared
all-MiniLM-L6-v2 BF16 file) under new names (`copy<k>.<name>`) until the
data reaches the target size, so the values are real trained weights and
every tensor is a whole source tensor. Standard library only.

    python3 bench/make_big_model.py [--source FILE] [--out FILE] [--gib 4]

The output (default /tmp/uw-big/model-4g.safetensors) is not meant to be
committed.
"""
import argparse
import json
import os
import struct
import sys

DEFAULT_SOURCE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..", "..", "shared", "weights", "all-minilm-l6-v2-full.safetensors",
)


def read_safetensors(path):
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    meta = header.pop("__metadata__", None)
    tensors = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return meta, [(name, info, data[info["data_offsets"][0]:info["data_offsets"][1]])
                  for name, info in tensors]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=DEFAULT_SOURCE)
    ap.add_argument("--out", default="/tmp/uw-big/model-4g.safetensors")
    ap.add_argument("--gib", type=float, default=4.0, help="target data size in GiB")
    args = ap.parse_args()

    meta, tensors = read_safetensors(args.source)
    target = int(args.gib * (1 << 30))
    header, order, offset, copy = {}, [], 0, 0
    while offset < target:
        for name, info, data in tensors:
            new = f"copy{copy}.{name}"
            header[new] = {"dtype": info["dtype"], "shape": info["shape"],
                           "data_offsets": [offset, offset + len(data)]}
            order.append(data)
            offset += len(data)
        copy += 1
    header["__metadata__"] = {"source": os.path.basename(args.source),
                              "made_by": "bench/make_big_model.py",
                              "copies": str(copy)}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep the data 8-byte aligned
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for data in order:
            f.write(data)
    total = 8 + len(blob) + offset
    print(f"{args.out}: {len(order)} tensors ({copy} copies of {len(tensors)}), "
          f"{offset} data bytes, {total} bytes in all", file=sys.stderr)


if __name__ == "__main__":
    main()
