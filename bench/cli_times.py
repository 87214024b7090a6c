#!/usr/bin/env python3
"""End-to-end times of `uw convert` and `uw decode`, next to `cp` of the same file.

Usage: bench/cli_times.py [UW_BINARY] [INPUT] [--runs N] [--out DIR ...]

Whole process runs (start to exit: opening, converting, writing, fsync,
rename), timed with time.perf_counter around subprocess.run, from the page
cache (the input is read once first). Prints GB/s of raw input bytes per
second, best of N runs, for 1 and 2 threads, in each output directory
(default /dev/shm, a tmpfs, and /tmp).
"""

import argparse
import os
import shutil
import subprocess
import tempfile
import time


def best(cmd, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("uw", nargs="?", default=os.path.join(here, "..", "target", "release", "uw"))
    p.add_argument(
        "input",
        nargs="?",
        default=os.path.join(here, "..", "..", "shared", "weights", "all-minilm-l6-v2-full.safetensors"),
    )
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--out", action="append", default=None)
    a = p.parse_args()
    outs = a.out or ["/dev/shm", "/tmp"]
    size = os.path.getsize(a.input)
    with open(a.input, "rb") as f:  # into the page cache
        while f.read(1 << 24):
            pass
    print(f"{a.input}: {size} bytes; best of {a.runs}; GB/s = 1e9 input bytes/s")
    print(f"{'':28}" + "".join(f"{d:>14}" for d in outs))
    rows = {}
    dirs = {d: tempfile.mkdtemp(prefix="uw-cli-", dir=d) for d in outs}
    try:
        for threads in (1, 2):
            for d, tmp in dirs.items():
                uw_file = os.path.join(tmp, "m.uw")
                back = os.path.join(tmp, "m.safetensors")
                t = best([a.uw, "convert", a.input, uw_file, "--threads", str(threads), "--force", "--quiet"], a.runs)
                rows.setdefault(f"convert, {threads} thread(s)", []).append(size / t / 1e9)
                t = best([a.uw, "decode", uw_file, back, "--threads", str(threads), "--force", "--quiet"], a.runs)
                rows.setdefault(f"decode, {threads} thread(s)", []).append(size / t / 1e9)
                if threads == 1:
                    with open(a.input, "rb") as f1, open(back, "rb") as f2:
                        if f1.read() != f2.read():
                            raise SystemExit(f"{back}: decoded file differs from the input")
        for d, tmp in dirs.items():
            t = best(["cp", a.input, os.path.join(tmp, "copy")], a.runs)
            rows.setdefault("cp of the input", []).append(size / t / 1e9)
    finally:
        for tmp in dirs.values():
            shutil.rmtree(tmp, ignore_errors=True)
    for name, values in rows.items():
        print(f"{name:28}" + "".join(f"{v:14.3f}" for v in values))


if __name__ == "__main__":
    main()
