"""Strip a training checkpoint to what inference needs (no optimizer state) for shipping.

    python -m fss_train.slim runs/x/best.pt models/name.pt
"""

from __future__ import annotations

import sys

from fss_train.checkpoint import load_checkpoint, save_checkpoint


def slim(src: str, dst: str) -> None:
    ckpt = load_checkpoint(src)
    ckpt["optimizer"] = None
    sched = dict(ckpt.get("scheduler") or {})
    sched.pop("rows", None)
    ckpt["scheduler"] = sched
    save_checkpoint(ckpt, dst)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m fss_train.slim SRC.pt DST.pt")
    slim(sys.argv[1], sys.argv[2])
