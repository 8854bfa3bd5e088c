import pytest
import torch

from fss_core.nn import (
    available_cards,
    build_model,
    count_flops,
    count_params,
    decode,
    decode_for_inference,
    fuse_conv_bn,
    load_card,
    make_points,
)
from fss_core.nn.card import ModelCard

ALL_CARDS = ["fss-n", "fss-s", "fss-m", "fss-l", "fss-x", "fss-r50", "fss-r101"]


def test_all_cards_shipped():
    assert set(ALL_CARDS) <= set(available_cards())


@pytest.mark.parametrize("name", ALL_CARDS)
def test_forward_point_count_matches_strides(name):
    card = load_card(name).with_classes(3)
    model = build_model(card).eval()
    for size in (256, 320):
        with torch.no_grad():
            raw = model(torch.rand(1, 3, size, size))
        expected = sum((size // s) ** 2 for s in card.strides)
        assert raw.shape == (1, expected, 5 + 3)
        points, strides = model.points(size, size)
        assert points.shape == (expected, 2) and strides.shape == (expected,)


def test_parameter_counts_match_yolox(capsys):
    rows = {name: count_params(build_model(load_card(name))) for name in ALL_CARDS}
    with capsys.disabled():
        print("\ncard      params (M)  GFLOPs@640")
        for name, n in rows.items():
            print(f"{name:9s} {n / 1e6:10.3f}")
    assert abs(rows["fss-s"] / 8.97e6 - 1) < 0.05
    assert abs(rows["fss-n"] / 0.91e6 - 1) < 0.10


def test_flops_scale_with_area():
    model = build_model(load_card("fss-n"))
    f320, f640 = count_flops(model, 320, 320), count_flops(model, 640, 640)
    assert f320 > 0 and 3.9 < f640 / f320 < 4.1


def test_same_structure_in_train_and_eval():
    model = build_model(load_card("fss-n").with_classes(2))
    x = torch.rand(2, 3, 128, 128)
    train_out = model.train()(x)
    eval_out = model.eval()(x)
    assert type(train_out) is type(eval_out) and train_out.shape == eval_out.shape


@pytest.mark.parametrize("name", ["fss-n", "fss-s", "fss-r50"])
def test_fused_equals_unfused(name):
    torch.manual_seed(0)
    model = build_model(load_card(name).with_classes(4))
    # give every BN non-trivial statistics so the fold is really exercised
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    fused = fuse_conv_bn(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()), "original must be untouched"
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        a, b = model(x), fused(x)
    assert (a - b).abs().max().item() < 1e-4


def test_points_are_cell_centres():
    points, strides = make_points(64, 64, (8, 16, 32))
    assert points.shape == (64 + 16 + 4, 2)
    assert points[0].tolist() == [4.0, 4.0] and points[1].tolist() == [12.0, 4.0]
    assert points[64].tolist() == [8.0, 8.0] and strides[64].item() == 16
    assert points[-1].tolist() == [48.0, 48.0] and strides[-1].item() == 32


def test_points_reject_sizes_not_divisible_by_stride():
    with pytest.raises(ValueError, match="multiples of the largest stride 32"):
        make_points(100, 64, (8, 16, 32))


def test_decode_by_hand():
    points = torch.tensor([[4.0, 4.0], [24.0, 8.0]])
    strides = torch.tensor([8.0, 16.0])
    raw = torch.zeros(1, 2, 5 + 2)
    raw[0, 1, :4] = torch.tensor([0.5, -0.25, float(torch.log(torch.tensor(2.0))), 0.0])
    raw[0, 1, 4] = 0.0            # obj = 0.5
    raw[0, 1, 5:] = torch.tensor([0.0, 100.0])
    boxes, obj, cls = decode(raw, points, strides)
    assert torch.allclose(boxes[0, 0], torch.tensor([0.0, 0.0, 8.0, 8.0]))
    # centre (24 + 8, 8 - 4) = (32, 4); size (32, 16)
    assert torch.allclose(boxes[0, 1], torch.tensor([16.0, -4.0, 48.0, 12.0]))
    assert obj[0, 1].item() == pytest.approx(0.5)
    out = decode_for_inference(raw, points, strides)
    assert out.shape == (1, 2, 6)
    assert out[0, 1, 5].item() == pytest.approx(0.5) and out[0, 1, 4].item() == pytest.approx(0.25)


def test_card_rejects_unknown_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nbackbone: cspdarknet\ndepht: 0.33\n")
    with pytest.raises(ValueError, match=r"unknown model card keys \['depht'\]"):
        load_card(path)


def test_card_by_path_and_unknown_name(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\nbackbone: cspdarknet\ndepth: 0.33\nwidth: 0.125\nnum_classes: 2\n")
    card = load_card(str(path))
    assert card.name == "tiny" and card.num_classes == 2
    assert ModelCard.from_dict(card.to_dict()) == card
    with pytest.raises(FileNotFoundError, match="available: fss-l"):
        load_card("fss-q")
