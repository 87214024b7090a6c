#!/bin/sh
# Round-trip and negative self-test of the independent Python reader/writer (spec/uw-v1.md).
# usage: sh spec/tools/selftest.sh [--big]
#   --big  also round-trips the 5 MB MiniLM sample (../shared/weights or $UW_SAMPLE) if present.
# Exits non-zero on the first mismatch.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
W="python3 $HERE/uw_write_tiny.py"
R="python3 $HERE/uw_read.py"
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT INT TERM

roundtrip() { # name src opts...
    name=$1; src=$2; shift 2
    $W "$src" "$D/$name.uw" "$@"
    $R "$D/$name.uw" --quiet --out "$D/$name.out"
    if ! cmp -s "$src" "$D/$name.out"; then
        echo "FAIL $name: reconstruction differs from $src"; exit 1
    fi
    echo "ok   round trip $name ($*)"
}

$W sample "$D/canon.safetensors"
$W sample "$D/pretty.safetensors" --pretty

roundtrip auto      "$D/canon.safetensors"
roundtrip huffman   "$D/canon.safetensors"  --encoding huffman
roundtrip palette4  "$D/canon.safetensors"  --encoding palette4
roundtrip raw       "$D/canon.safetensors"  --encoding raw
roundtrip t2        "$D/canon.safetensors"  --encoding huffman --tables 2 --block-log2 6 --chunk-log2 6
roundtrip t3        "$D/canon.safetensors"  --encoding huffman --tables 3 --block-log2 6 --chunk-log2 8
roundtrip t4        "$D/canon.safetensors"  --encoding huffman --tables 4 --block-log2 7 --chunk-log2 9 --max-code-len 5
roundtrip mixed     "$D/pretty.safetensors" --encoding mixed --tables 2 --block-log2 6 --chunk-log2 7
roundtrip stream    "$D/pretty.safetensors" --stream --align 4096 --extra-pad
# no source header: the reader builds the canonical header (spec 6.4), equal to canon's
roundtrip nosrc     "$D/canon.safetensors"  --no-source-header --encoding mixed --tables 3 --block-log2 6 --chunk-log2 7

# negative tests
$W "$D/canon.safetensors" "$D/mut-src.uw" --encoding mixed --tables 3 --block-log2 6 --chunk-log2 7
python3 "$HERE/selftest_mutate.py" "$D/mut-src.uw" "$D" > "$D/mutate.log" || { cat "$D/mutate.log"; exit 1; }
tail -n 1 "$D/mutate.log"

# a non-.uw file must be rejected with a non-zero exit
if $R "$D/canon.safetensors" --quiet 2>/dev/null; then echo "FAIL: safetensors file accepted"; exit 1; fi
echo "ok   non-.uw input rejected"

if [ "${1:-}" = "--big" ]; then
    S=${UW_SAMPLE:-$HERE/../../../shared/weights/all-minilm-l6-v2-mlp-sample.safetensors}
    if [ -f "$S" ]; then
        roundtrip big    "$S" --tables 4
        roundtrip bigp4  "$S" --encoding palette4
    else
        echo "skip big round trip: $S not found"
    fi
fi
echo "selftest passed"
