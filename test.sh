#!/usr/bin/env bash
# The project's whole test suite: formatting, lints, Rust tests, and the
# independent Python reader of spec/ checked against the Rust encoder.
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
if [ -x spec/tools/selftest.sh ]; then
  spec/tools/selftest.sh
fi
