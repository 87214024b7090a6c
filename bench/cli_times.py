#!/usr/bin/env python3
"""End-to-end times of `uw convert` and `uw decode`, next to `cp` of the same file.

Usage: bench/cli_times.py [UW_BINARY] [INPUT] [--runs N] [--out DIR ...]

Whole process runs (start to exit: opening, converting, writing, fsync,
rename), timed with time.perf_counter around subprocess.run, from the page
cache (the input is read once first). Prints GB/s of raw input bytes per
second, best of N runs taken round by round (each row once per round),
for 1 and 2 threads, in each output directory
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


def run_once(cmd, output):
    """One run of `cmd`, as (wall seconds, CPU seconds).

    The output is removed before the run (untimed): every run writes a new
    file, as a user's conversion does, and none pays for freeing the
    previous run's pages."""
    if os.path.exists(output):
        os.remove(output)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def write_once(data, output):
    """The input's bytes, already in memory, written to a new file in 4 MiB
    write() calls with an fsync, as (wall, CPU): the kernel's side of
    writing the output alone, with no process to start, nothing to read
    and nothing to decode."""
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
    return time.perf_counter() - start, time.process_time() - before


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
    with open(a.input, "rb") as f:
        data = memoryview(f.read())
    rows = {}
    dirs = {d: tempfile.mkdtemp(prefix="uw-cli-", dir=d) for d in outs}
    try:
        for d, tmp in dirs.items():
            # Decoding reads a file of its own, converted once untimed.
            source = os.path.join(tmp, "source.uw")
            subprocess.run([a.uw, "convert", a.input, source, "--quiet"], check=True)
            jobs = []
            for threads in (1, 2):
                uw_file = os.path.join(tmp, f"m{threads}.uw")
                back = os.path.join(tmp, f"m{threads}.safetensors")
                convert = [a.uw, "convert", a.input, uw_file, "--threads", str(threads), "--quiet"]
                decode = [a.uw, "decode", source, back, "--threads", str(threads), "--quiet"]
                jobs.append((f"convert, {threads} thread(s)", lambda c=convert, o=uw_file: run_once(c, o)))
                jobs.append((f"decode, {threads} thread(s)", lambda c=decode, o=back: run_once(c, o)))
            copy = os.path.join(tmp, "copy")
            jobs.append(("cp of the input", lambda c=copy: run_once(["cp", a.input, c], c)))
            jobs.append(("write() of it, in-process", lambda c=copy: write_once(data, c)))
            # Round by round, every job once per round: a slow spell of this
            # shared machine then hits every row alike instead of one.
            times = {name: [] for name, _ in jobs}
            for _ in range(a.runs):
                for name, job in jobs:
                    times[name].append(job())
            for name, _ in jobs:
                rows.setdefault(name, []).append(min(times[name]))
            for threads in (1, 2):
                back = os.path.join(tmp, f"m{threads}.safetensors")
                with open(a.input, "rb") as f1, open(back, "rb") as f2:
                    if f1.read() != f2.read():
                        raise SystemExit(f"{back}: decoded file differs from the input")
    finally:
        for tmp in dirs.values():
            shutil.rmtree(tmp, ignore_errors=True)
    # GB/s, and in brackets the cores the run kept busy (CPU time / wall
    # time): uw's writing thread works beside its --threads workers.
    for name, values in rows.items():
        print(f"{name:28}" + "".join(f"{size / w / 1e9:8.3f} ({c / w:.1f})" for w, c in values))


if __name__ == "__main__":
    main()
