"""Helper for test_ddp: two steps of training, then every rank saves its raw weights."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fss_train.config import make_config  # noqa: E402
from fss_train.train import Run  # noqa: E402


def main(data: str, card: str, out: str, freeze_bn: str = "1") -> None:
    freeze = freeze_bn == "1"
    torch.set_num_threads(1)
    cfg = make_config({"data": data, "model": card, "epochs": 2, "batch": 4, "imgsz": 128, "workers": 0,
                       "lr_per_64": 0.64, "warmup_epochs": 0.0, "mosaic": 0.0, "scale": 0.0, "translate": 0.0,
                       "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "fliplr": 0.0, "flipud": 0.0,
                       "eval_interval": 100, "precise_bn": 0, "freeze_bn": freeze})
    torch.manual_seed(0)
    run = Run(cfg, out)
    Path(out).mkdir(parents=True, exist_ok=True)
    rank = run.rank
    if rank == 0:
        torch.save({k: v.clone() for k, v in run.model.state_dict().items()}, Path(out) / "init.pt")
    run.cfg = make_config({**cfg.to_dict(), "eval_interval": 100})
    run.fit()
    torch.save(run.model.state_dict(), Path(out) / f"rank{rank}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:5])
