#!/bin/bash
# Continue one prior training on a lent GPU for MIN minutes (the GPU to itself), score it as a denoiser
# there, and carry the weights back in 15 MB shards: one device call of about MIN + 1.5 minutes.
# Each lease adds its minutes to the same network, so a run longer than one lease is built up session by session.
#
# Prepare once, here: runs/gpu/data as in benchmarks/gpu_prior_sweep.sh, then the same without the validation split:
#   mkdir -p runs/gpu/data350/{train,test} && cp runs/gpu/data/train/* runs/gpu/data350/train/ &&
#   for f in runs/gpu/data/test/*; do grep -qx "$(basename $f)" benchmarks/val_split.txt || cp $f runs/gpu/data350/test/; done
# Then:
#   device tool: command "NAME=r64d INIT=runs/gpu/init/r64c DATA=runs/gpu/data350 EVAL=0 bash benchmarks/gpu_prior_continue.sh",
#                carry ["runs/gpu/data350", "runs/gpu/init"], timeout 600
#   back here:   python benchmarks/gpu_shards.py merge /work/.device/N runs/gpu
# INIT's JSON gives the network's shape; the run warm-starts from its EMA weights with a fresh Adam.
# The device tool carries 64 MiB with the checkout (13 MB): INIT in float16 (restore.prior.weights.save_half_precision)
# and, for networks over ~10 M parameters, DATA=runs/gpu/data350 — the 350 training images without the
# validation split, which is then scored here instead (EVAL=0).
set -u
export PYTHONUNBUFFERED=1
: "${NAME:?name of the new run}" "${INIT:?earlier run to continue, without .safetensors}"
MIN=${MIN:-8} BATCH=${BATCH:-64} LR=${LR:-1e-4} LOW_T=${LOW_T:-0.6} COMPILE=${COMPILE:-}  # COMPILE=1: restore train --compile
export PYTHONPATH=$PWD  # training and prior_denoise.py need neither kornia nor lpips: no .whl to carry
nvidia-smi -L
D=${DATA:-runs/gpu/data}
shape=$(python3 -c "
import json; u = json.load(open('$INIT.json'))['unet']
print('--channels', u['num_channels'], '--channel-mult', u['channel_mult'], '--res-blocks', u['num_res_blocks'])")
echo "continuing $INIT ($shape) as $NAME: $MIN min, batch $BATCH, lr $LR, low-t fraction $LOW_T"
python3 cli.py train $D/train $D/test --exclude benchmarks/val_split.txt --device cuda --batch-size $BATCH \
    --minutes $MIN --anneal -q --out /tmp/$NAME/prior.safetensors --init-from $INIT.safetensors $shape \
    --lr $LR --low-t-fraction $LOW_T ${COMPILE:+--compile} > "$OUT/$NAME.log" 2>&1
tail -n 3 "$OUT/$NAME.log"
[ "${EVAL:-1}" = 1 ] && python3 benchmarks/prior_denoise.py --prior /tmp/$NAME/prior.safetensors --images $D/test --limit 50 --device cuda | tail -n 6
python3 benchmarks/gpu_shards.py split "$OUT" /tmp/$NAME/prior.safetensors
