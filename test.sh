#!/usr/bin/env bash
# The project's whole test suite: formatting, lints, Rust tests, and the
# independent Python reader of spec/ checked against the Rust encoder.
set -euo pipefail
cd "$(dirname "$0")"
# NVRTC from PyPI, so every CUDA kernel is compiled even without a GPU.
nvrtc_dir="${UW_NVRTC_DIR:-$PWD/target/nvrtc}"
if [ ! -e "$nvrtc_dir/nvidia/cu13/lib/libnvrtc.so.13" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --target "$nvrtc_dir" nvidia-cuda-nvrtc==13.0.88
fi
export LD_LIBRARY_PATH="$nvrtc_dir/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export UW_REQUIRE_NVRTC=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
if [ -x spec/tools/selftest.sh ]; then
  spec/tools/selftest.sh
fi
