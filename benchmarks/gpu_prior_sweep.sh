#!/bin/bash
# Two prior trainings side by side on one lent GPU, each scored as a denoiser on the GPU, then the
# weights carried back in 15 MB shards. One device call of about MIN + 1.5 minutes (MIN=8 by default).
#
# Prepare once, here (the GPU machine has no network and no ../shared):
#   echo /.whl/ >> .git/info/exclude          # runs/ is already ignored
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl kornia==0.9.0 kornia_rs==0.2.0 lpips==0.1.4
#   mkdir -p runs/gpu/data && cp -r ../shared/datasets/bsds500/{train,test} runs/gpu/data/
# Run (device tool): command "bash benchmarks/gpu_prior_sweep.sh", carry [".whl", "runs/gpu/data"]
# (64 MiB in all: carry only the data, not earlier weights), timeout 600.
# Back here: python benchmarks/gpu_shards.py merge /work/.device/N runs/gpu
#
# The two runs test why the prior stalls near 30.4 dB at σ = 0.1 (benchmarks/RESULTS.md, session 12):
#   deep  — two residual blocks per level (twice the convolutions at full resolution), from scratch
#   band  — the shipped network fine-tuned on low noise only (t < 120, which holds every σ ≤ 0.2 that
#           prior_denoise.py scores): does the network reach 31 dB when all its capacity goes there?
set -u
export PYTHONUNBUFFERED=1
MIN=${MIN:-8}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi -L
D=runs/gpu/data
common="$D/train $D/test --exclude benchmarks/val_split.txt --device cuda --batch-size 256 --minutes $MIN --anneal -q"
python3 cli.py train $common --out /tmp/deep/prior.safetensors --res-blocks 2 --lr 3e-4 --low-t-fraction 0.5 > "$OUT/deep.log" 2>&1 &
python3 cli.py train $common --out /tmp/band/prior.safetensors --init-from restore/prior/weights/default.safetensors \
    --lr 1e-4 --low-t-fraction 1.0 --low-t-max 120 > "$OUT/band.log" 2>&1 &
wait
tail -n 2 "$OUT"/*.log
for prior in restore/prior/weights/default.safetensors /tmp/deep/prior.safetensors /tmp/band/prior.safetensors; do
    echo "== $prior"; [ -f $prior ] && python3 benchmarks/prior_denoise.py --prior $prior --images $D/test --limit 50 --device cuda | tail -n 6
done
python3 benchmarks/gpu_shards.py split "$OUT" /tmp/deep/prior.safetensors /tmp/band/prior.safetensors
