#!/usr/bin/env bash
# Prepares what scripts/device_check.sh needs on the device machine, which has no network: wheels of
# the packages its image lacks (duckdb, torchattacks), built for its Python (3.12, x86-64 manylinux;
# /work/.library/device/KINDS.md), and real MNIST. Everything goes into one git-ignored folder, the one
# a device call names in `carry` (see docs/BENCHMARKS.md, "Device check").
#
#   scripts/prepare_device.sh [DEST]          # DEST defaults to .carry (in the repository root)
#
# The versions are the ones installed here, so the device runs what the tests ran. Needs PyPI (pip
# download) and $FOSC_DATA_ROOT/mnist.npz (default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=${1:-.carry}
DEVICE_PY=3.12                       # python3 on the device image (KINDS.md: Python 3.12.3)
LIMIT=$((64 * 1024 * 1024))          # what may travel in one call: working tree + carried paths
DATA_ROOT=${FOSC_DATA_ROOT:-../shared/data}
PY=${PYTHON:-python3}

die() { echo "error: $*" >&2; exit 2; }
[ -f "$DATA_ROOT/mnist.npz" ] || die "no $DATA_ROOT/mnist.npz (set FOSC_DATA_ROOT to the folder that holds it)"
version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1" 2>/dev/null ||
  die "$1 is not installed here; run scripts/test.sh's installs first"; }
DUCKDB=$(version duckdb)
TORCHATTACKS=$(version torchattacks)

rm -rf "$DEST/whl" "$DEST/data"
mkdir -p "$DEST/whl" "$DEST/data"
# --no-deps: torchattacks' needs (numpy, scipy, requests, tqdm) and duckdb's (none) are on the image.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$DEVICE_PY" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
  -d "$DEST/whl" "duckdb==$DUCKDB" "torchattacks==$TORCHATTACKS"
cp "$DATA_ROOT/mnist.npz" "$DEST/data/mnist.npz"   # a copy: a symbolic link would travel as a dangling link

# One wheel per package (two versions of one stop the whole install on the device).
for pkg in duckdb torchattacks; do
  n=$(find "$DEST/whl" -name "$pkg-*.whl" | wc -l)
  [ "$n" = 1 ] || die "expected one $pkg wheel in $DEST/whl, found $n"
done

# What travels: tracked and untracked-not-ignored files, plus the carried folder.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null |
  awk '{s += $1} END {print s + 0}')
carry=$(du -sb "$DEST" | cut -f1)
total=$((tree + carry))
ls -l "$DEST/whl" "$DEST/data"
echo "carry folder: $DEST, $((carry / 1024)) KiB; working tree: $((tree / 1024)) KiB;" \
  "together $((total / 1024)) KiB of the $((LIMIT / 1024)) KiB a call may send"
[ "$total" -lt "$LIMIT" ] || die "working tree + $DEST exceed the device's 64 MiB carry limit"
