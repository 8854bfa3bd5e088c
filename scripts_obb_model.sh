#!/usr/bin/env bash
# The recipe of the embedded oriented model fss_core/models/fss-n-obb.pt (run by `make obb-model`): the same
# synthetic scenes as the default model (their DOTA polygons), fine-tuned from the embedded horizontal model
# (fss-n-aerial.pt: body, class head and the x/y/w/h box channels; the angle channel starts flat).
set -euo pipefail
FSS=${FSS:-.venv/bin/fss}
OUT=${OUT:-runs/obb-model}
$FSS data synth "$OUT/train" --num-images 320 --size 512 --objects 30 --min-size 10 --max-size 72 --seed 1
$FSS data synth "$OUT/val" --num-images 32 --size 512 --objects 30 --min-size 10 --max-size 72 --seed 2
$FSS train --data "$OUT/train" --val "$OUT/val" --model fss-n --task obb --assigner fss --epochs 12 --batch 16 \
  --imgsz 512 --weights fss_core/models/fss-n-aerial.pt --out "$OUT/run" --workers 1 --set lr_per_64=0.02 \
  --set no_mosaic_epochs=3 --set eval_interval=3 --set rot90=0.5 --set seed=0
