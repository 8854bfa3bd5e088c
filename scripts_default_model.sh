#!/usr/bin/env bash
# The recipe of the embedded default model fss_core/models/fss-n-aerial.pt (run by `make default-model`).
set -euo pipefail
FSS=${FSS:-.venv/bin/fss}
OUT=${OUT:-runs/default-model}
$FSS data synth "$OUT/train" --num-images 320 --size 512 --objects 30 --min-size 10 --max-size 72 --seed 1
$FSS data synth "$OUT/val" --num-images 32 --size 512 --objects 30 --min-size 10 --max-size 72 --seed 2
$FSS train --data "$OUT/train" --val "$OUT/val" --model fss-n --assigner fss --epochs 30 --batch 16 --imgsz 512 \
  --out "$OUT/run" --workers 1 --set lr_per_64=0.04 --set no_mosaic_epochs=5 --set eval_interval=5 --set seed=0
# the bundled sample scene (held out: another seed) and its DOTA labels
$FSS data synth "$OUT/sample" --num-images 1 --size 4000 --objects 1500 --min-size 10 --max-size 72 --seed 2026
.venv/bin/python -c "import cv2; cv2.imwrite('fss_core/models/sample-scene.jpg', cv2.imread('$OUT/sample/images/synth_00000.png'), [cv2.IMWRITE_JPEG_QUALITY, 90])"
cp "$OUT/sample/labelTxt/synth_00000.txt" fss_core/models/sample-scene.txt
