#!/usr/bin/env bash
# Round 3's measurements (perf/README.md, "Round 3"), as one prepared run on
# a quiet machine: each command's output is captured to $OUT first and
# read after, so no parser competes for the cores while a run is timed.
#
#   TORCH_PYTHON=/path/to/venv-with-torch/bin/python \
#   SKLEARN_PYTHON=/path/to/venv-with-the-package-and-sklearn/bin/python \
#   SCIPY_PYTHON=/path/to/venv-with-scipy/bin/python \
#   BASELINE=/path/to/an/older/idx-softmax \
#   OUT=/tmp/round3 perf/round3.sh
#
# Builds the release binary and the examples it uses, then takes about 20
# minutes on 2 cores (the 30-epoch CNN run at the end about 5 of them).
# Pieces whose prerequisite is not given are skipped with a line saying so.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/round3}
mkdir -p "$OUT"
B=${CARGO_TARGET_DIR:-$PWD/target}/release/idx-softmax
EX=${CARGO_TARGET_DIR:-$PWD/target}/release/examples
T=${TORCH_PYTHON:-python3}
log() { echo "$(date +%T) $*" | tee -a "$OUT/progress.txt"; }

cargo build --release --example augment_bench --example fma_peak --example epoch_times \
    > "$OUT/build.txt" 2>&1 && cargo build --release >> "$OUT/build.txt" 2>&1 || {
    echo "build failed: see $OUT/build.txt" >&2
    exit 1
}
lscpu > "$OUT/lscpu.txt"
log start

# The floor, and every path's epoch in one process.
"$EX/fma_peak" 0.3 1.88e9 > "$OUT/fma_peak.txt" 2>&1
"$EX/epoch_times" 15 1,2 avx512,avx2,portable,gemm 100 > "$OUT/epoch_times.txt" 2>&1
"$EX/epoch_times" 5 2 avx512,avx2,portable,gemm 100 256 > "$OUT/epoch_times_mlp.txt" 2>&1
log epoch_times

# Softmax epoch against NumPy (and PyTorch), each path, 2 threads and 1.
for k in avx512 avx2 portable; do
    python3 perf/compare.py --kernel $k --runs 11 --threads 2 --bin "$B" --python "$T" \
        --json-out "$OUT/compare-$k-t2.json" > "$OUT/compare-$k-t2.txt" 2>&1
    python3 perf/compare.py --kernel $k --runs 11 --threads 1 --bin "$B" --python "$T" \
        --peers numpy --json-out "$OUT/compare-$k-t1.json" > "$OUT/compare-$k-t1.txt" 2>&1
    log compare $k
done

# MLP and CNN against PyTorch, each path.
for k in avx512 avx2; do
    IDX_SOFTMAX_KERNEL=$k python3 perf/mlp_compare.py --runs 5 --threads 2 --recipes one,cosine4 \
        --bin "$B" --torch-python "$T" --json-out "$OUT/mlp-$k.json" > "$OUT/mlp-$k.txt" 2>&1
    log mlp $k
done
python3 perf/cnn_compare.py --runs 3 --threads 2 --recipes one,cosine8 --bin "$B" \
    --torch-python "$T" --json-out "$OUT/cnn-avx512.json" > "$OUT/cnn-avx512.txt" 2>&1
IDX_SOFTMAX_KERNEL=avx2 python3 perf/cnn_compare.py --runs 3 --threads 2 --recipes one --bin "$B" \
    --torch-python "$T" --json-out "$OUT/cnn-avx2.json" > "$OUT/cnn-avx2.txt" 2>&1
log cnn

# Augmentation: the cost on an MLP epoch, and SciPy.
python3 perf/augment_targets.py cost --runs 7 --bin "$B" --json-out "$OUT/aug-cost.json" \
    > "$OUT/aug-cost.txt" 2>&1
if [ -n "${SCIPY_PYTHON:-}" ]; then
    "$SCIPY_PYTHON" perf/augment_compare.py --runs 5 > "$OUT/aug-scipy.txt" 2>&1
else
    log "skipped augment_compare.py: set SCIPY_PYTHON"
fi
log augment

# An older build against this one, same run.
if [ -n "${BASELINE:-}" ]; then
    python3 perf/ab_compare.py --a "$BASELINE" --b "$B" --runs 15 > "$OUT/ab.txt" 2>&1
else
    log "skipped ab_compare.py: set BASELINE"
fi

# Python against scikit-learn, float input.
if [ -n "${SKLEARN_PYTHON:-}" ]; then
    "$SKLEARN_PYTHON" perf/python_compare.py --runs 3 --bin "$B" --json-out "$OUT/python.json" \
        > "$OUT/python.txt" 2>&1
else
    log "skipped python_compare.py: set SKLEARN_PYTHON"
fi
python3 perf/under_load.py --runs 9 --bin "$B" > "$OUT/under_load.txt" 2>&1
log python, under_load

# The paper table's CNN with affine deformations (about 5 minutes).
"$B" --json --conv 16 --conv 32 --hidden 128 --augment affine --epochs 30 --lr 0.05 \
    --momentum 0.9 --schedule cosine > "$OUT/cnn_affine.json" 2> "$OUT/cnn_affine.err"
log done
