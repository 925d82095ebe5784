#!/usr/bin/env bash
# The wheels gpu_check.py needs that the GPU machine lacks (it has torch and transformers, no network), fetched here
# for its Python (3.12, manylinux x86-64) into wheels/ (git-ignored; carried with the working tree, under 64 MiB).
# On the GPU machine: pip install --no-index --no-deps wheels/*.whl && python gpu_check.py --out_dir=$OUT
set -euo pipefail
cd "$(dirname "$0")"
rm -rf wheels && mkdir wheels
# trl (TRL's GRPOTrainer beside ours) needs accelerate and datasets; datasets needs pyarrow, pandas, dill, xxhash,
# multiprocess, fsspec; the cuda tests need pytest. --no-deps: torch, transformers and their own dependencies are
# already there, and resolving them would fetch torch itself. datasets 4.4 and pyarrow 21, not the 5.x and 26 of
# requirements.txt: pyarrow 26's wheel alone is 55 MB, and with it the set would not fit in 64 MiB (only TRL's
# import needs datasets there).
pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --implementation cp -d wheels \
  "trl>=0.24,<1" "accelerate>=1.10" "peft>=0.21,<1" datasets==4.4.1 pyarrow==21.0.0 pandas pytz tzdata \
  python-dateutil "dill<0.4.1" xxhash "multiprocess<0.70.19" "fsspec<=2025.10.0" pytest pluggy iniconfig
du -ch wheels/*.whl | tail -1
