"""Optimisation pieces: the LR / momentum schedule, parameter groups, EMA, BatchNorm recalibration."""

import math

import pytest
import torch

from fss_train.config import make_config
from fss_train.evaluation import recalibrate_bn
from fss_train.optim import LRSchedule, ModelEMA, param_groups


def test_schedule_warms_up_then_follows_the_cosine_to_its_floor():
    cfg = make_config(overrides={"warmup_epochs": 2.0, "min_lr_ratio": 0.05, "warmup_bias_lr": 0.1})
    s = LRSchedule(base_lr=0.02, steps_per_epoch=100, epochs=10, cfg=cfg)
    assert s.warmup_steps == 200
    w0, n0, b0 = s(0)
    assert w0 == 0.0 and n0 == 0.0 and b0 == pytest.approx(0.1)             # biases start high, weights at 0
    w, n, b = s(100)                                                          # halfway through the warm-up
    assert w == pytest.approx(0.5 * s.cosine(100)) and b == pytest.approx(0.1 + (s.cosine(100) - 0.1) * 0.5)
    assert s(200) == [s.cosine(200)] * 3
    assert s.cosine(0) == pytest.approx(0.02) and s.cosine(1000) == pytest.approx(0.02 * 0.05)
    assert s.cosine(500) == pytest.approx(0.02 * (0.05 + 0.95 * 0.5))
    assert s.momentum_at(0) == pytest.approx(0.8) and s.momentum_at(200) == pytest.approx(cfg.momentum)


def test_short_runs_keep_half_the_steps_out_of_the_warm_up():
    s = LRSchedule(0.01, steps_per_epoch=4, epochs=2, cfg=make_config(overrides={"warmup_epochs": 3.0}))
    assert s.warmup_steps == 4
    assert LRSchedule(0.01, 4, 2, make_config(overrides={"warmup_epochs": 0.0})).warmup_steps == 0


def test_param_groups_decay_weights_only():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1))
    decay, norms, biases = param_groups(net, 5e-4)
    assert decay["weight_decay"] == 5e-4 and norms["weight_decay"] == 0 and biases["weight_decay"] == 0
    assert {id(p) for p in decay["params"]} == {id(net[0].weight), id(net[2].weight)}
    assert {id(p) for p in norms["params"]} == {id(net[1].weight)}
    assert {id(p) for p in biases["params"]} == {id(net[1].bias), id(net[2].bias)}
    assert sum(len(g["params"]) for g in (decay, norms, biases)) == len(list(net.parameters()))


def test_ema_ramps_up_and_copies_buffers():
    net = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    ema = ModelEMA(net, decay=0.9, tau=1.0)
    before = ema.ema[0].weight.clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net[1].num_batches_tracked += 5
    ema.update(net)
    d = 0.9 * (1 - math.exp(-1))
    assert torch.allclose(ema.ema[0].weight, before * d + net[0].weight * (1 - d))
    assert int(ema.ema[1].num_batches_tracked) == 5                       # integer buffers are copied
    assert not any(p.requires_grad for p in ema.ema.parameters())


def test_recalibrate_bn_replaces_stale_statistics_with_the_data_mean():
    bn = torch.nn.BatchNorm2d(1, momentum=0.03)
    bn.running_mean.fill_(100.0)
    model = torch.nn.Sequential(bn).eval()
    ok, grey = {}, {"unreadable": True}              # a grey stand-in for an unreadable image is left out
    loader = [(torch.tensor([3.0, 114.0]).view(2, 1, 1, 1).expand(2, 1, 4, 4), None, None, None, [ok, grey]),
              (torch.full((2, 1, 4, 4), 5.0), None, None, None, [ok, ok])]
    recalibrate_bn(model, loader, batches=2, device="cpu")
    assert bn.running_mean.item() == pytest.approx(4.0)                   # cumulative average of the batches
    assert bn.momentum == 0.03 and not model.training                      # restored
