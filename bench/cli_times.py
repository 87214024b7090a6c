#!/usr/bin/env python3
"""End-to-end times of `uw convert` and `uw decode`, next to `cp` of the same file.

Usage: bench/cli_times.py [UW_BINARY] [INPUT] [--runs N] [--out DIR ...]

Whole process runs (start to exit: opening, converting, writing, fsync,
rename), timed with time.perf_counter around subprocess.run, from the page
cache (the input is read once first). Prints GB/s of raw input bytes per
second, best of N runs, for 1 and 2 threads, in each output directory
(default /dev/shm, a tmpfs, and /tmp). Next to them: `cp` of the input,
and the input's bytes written from memory to a new file (the floor the
kernel sets for any tool that writes this many bytes there).
"""

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import time


def best(cmd, runs, output):
    """Fastest of `runs` runs, as (wall seconds, CPU seconds of that run).

    The output is removed before each run (untimed): every run writes a new
    file, as a user's conversion does, and none pays for freeing the
    previous run's pages."""
    results = []
    for _ in range(runs):
        if os.path.exists(output):
            os.remove(output)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        results.append((wall, cpu))
    return min(results)


def write_only(path, output, runs):
    """Fastest of `runs` times to write the input's bytes, already in memory,
    to a new file in 4 MiB write() calls with an fsync, as (wall, CPU):
    the kernel's side of writing the output alone, with no process to
    start, nothing to read and nothing to decode."""
    with open(path, "rb") as f:
        data = memoryview(f.read())
    results = []
    for _ in range(runs):
        if os.path.exists(output):
            os.remove(output)
        before = time.process_time()
        start = time.perf_counter()
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for at in range(0, len(data), 4 << 20):
                os.write(fd, data[at : at + (4 << 20)])
            os.fsync(fd)
        finally:
            os.close(fd)
        results.append((time.perf_counter() - start, time.process_time() - before))
    return min(results)


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
    print(f"{'':28}" + "".join(f"{d:>14}" for d in outs) + "   GB/s (cores busy)")
    rows = {}
    dirs = {d: tempfile.mkdtemp(prefix="uw-cli-", dir=d) for d in outs}
    try:
        for threads in (1, 2):
            for d, tmp in dirs.items():
                uw_file = os.path.join(tmp, "m.uw")
                back = os.path.join(tmp, "m.safetensors")
                t = best([a.uw, "convert", a.input, uw_file, "--threads", str(threads), "--quiet"], a.runs, uw_file)
                rows.setdefault(f"convert, {threads} thread(s)", []).append(t)
                t = best([a.uw, "decode", uw_file, back, "--threads", str(threads), "--quiet"], a.runs, back)
                rows.setdefault(f"decode, {threads} thread(s)", []).append(t)
                if threads == 1:
                    with open(a.input, "rb") as f1, open(back, "rb") as f2:
                        if f1.read() != f2.read():
                            raise SystemExit(f"{back}: decoded file differs from the input")
        for d, tmp in dirs.items():
            copy = os.path.join(tmp, "copy")
            rows.setdefault("cp of the input", []).append(best(["cp", a.input, copy], a.runs, copy))
            rows.setdefault("write() of it, in-process", []).append(write_only(a.input, copy, a.runs))
    finally:
        for tmp in dirs.values():
            shutil.rmtree(tmp, ignore_errors=True)
    # GB/s, and in brackets the cores the run kept busy (CPU time / wall
    # time): uw's writing thread works beside its --threads workers.
    for name, values in rows.items():
        print(f"{name:28}" + "".join(f"{size / w / 1e9:8.3f} ({c / w:.1f})" for w, c in values))


if __name__ == "__main__":
    main()
