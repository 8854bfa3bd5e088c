import pickle
from pathlib import Path

import pytest
import torch

from fss_core.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    load_model,
    make_checkpoint,
    save_checkpoint,
)
from fss_core.nn import build_model, load_card


@pytest.fixture()
def tiny_ckpt(tmp_path):
    torch.manual_seed(0)
    model = build_model(load_card("fss-n").with_classes(2))
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    model(torch.rand(1, 3, 64, 64)).mean().backward()
    opt.step()
    ckpt = make_checkpoint(model, ["car", "ship"], ema_state=ema, assigner={"name": "fss", "params": {"gamma": 1.0}},
                           train_config={"epochs": 3, "imgsz": [64, 64]}, optimizer=opt.state_dict(),
                           scheduler={"last_epoch": 2}, epoch=2, metrics={"AP": 0.1})
    path = save_checkpoint(ckpt, tmp_path / "last.pt")
    return model, ema, path


def test_round_trip_rebuilds_identical_model(tiny_ckpt):
    model, ema, path = tiny_ckpt
    # the file alone is enough, and it loads with the safe unpickler
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == FORMAT_VERSION and raw["class_names"] == ["car", "ship"]
    rebuilt, ckpt = load_model(path, weights="raw")
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v)
    rebuilt_ema, _ = load_model(path, weights="ema")
    for k, v in ema.items():
        assert torch.equal(rebuilt_ema.state_dict()[k], v)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model.eval()(x))
    assert ckpt["assigner"]["name"] == "fss" and ckpt["epoch"] == 2
    assert set(ckpt["versions"]) >= {"fss", "torch", "numpy", "python"}
    # optimizer state restores into a fresh optimizer
    opt = torch.optim.SGD(rebuilt.parameters(), lr=0.01, momentum=0.9)
    opt.load_state_dict(ckpt["optimizer"])


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, (f"touch {Path.cwd() / 'PWNED'}",))


def test_pickled_object_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"kind": "fss-checkpoint", "format_version": 1, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        load_checkpoint(plain)
    assert not (tmp_path / "PWNED").exists()


def test_truncated_file_gives_clear_error(tiny_ckpt, tmp_path):
    _, _, path = tiny_ckpt
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable torch file"):
        load_checkpoint(cut)


def test_other_files_and_versions(tmp_path, tiny_ckpt):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(text)
    other = tmp_path / "other.pt"
    torch.save({"a": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not an fss checkpoint"):
        load_checkpoint(other)
    _, _, path = tiny_ckpt
    ckpt = torch.load(path, weights_only=True)
    ckpt["format_version"] = 99
    future = save_checkpoint(ckpt, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(future)


def test_save_is_atomic(tmp_path, tiny_ckpt, monkeypatch):
    _, _, path = tiny_ckpt
    before = path.read_bytes()
    ckpt = torch.load(path, weights_only=True)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(ckpt, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_non_plain_values_are_refused_at_save(tmp_path):
    model = build_model(load_card("fss-n").with_classes(1))
    ckpt = make_checkpoint(model, ["x"], train_config={"path": Path("/tmp")})
    with pytest.raises(TypeError, match=r"\['train_config'\]\['path'\] is a pathlib"):
        save_checkpoint(ckpt, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_init_parts_copy_only_the_body_asked_for(tiny_ckpt):
    """weights_parts: "backbone+neck" takes the pretrained body and leaves the whole head freshly initialised
    (the assignment study's DOTA arm: every assigner starts from the same body, none from a trained head)."""
    from fss_core.checkpoint import init_from_checkpoint

    _, ema, path = tiny_ckpt
    for parts, prefixes in (("backbone", ("backbone.",)), ("backbone+neck", ("backbone.", "neck.")),
                            ("all", ("backbone.", "neck.", "head."))):
        torch.manual_seed(1)
        fresh = build_model(load_card("fss-n").with_classes(2))
        before = {k: v.clone() for k, v in fresh.state_dict().items()}
        record = init_from_checkpoint(fresh, path, ["car", "ship"], parts)
        after = fresh.state_dict()
        assert record["parts"] == parts
        for k, v in after.items():
            if not v.is_floating_point():
                continue
            source = ema[k] if k.startswith(prefixes) else before[k]
            assert torch.equal(v, source), (parts, k)
        assert record["loaded"] == sum(k.startswith(prefixes) for k in after)
    with pytest.raises(ValueError, match="weights_parts must be one of"):
        init_from_checkpoint(fresh, path, ["car", "ship"], "head")


def test_slim_keeps_the_weights_and_drops_this_machines_paths(tmp_path):
    from fss_core.checkpoint import make_checkpoint, save_checkpoint, slim_checkpoint
    from fss_core.nn.card import ModelCard
    from fss_core.nn.detector import build_model

    model = build_model(ModelCard.from_dict({"name": "pico", "backbone": "cspdarknet", "depth": 0.33, "width": 0.125,
                                             "num_classes": 2}))
    ckpt = make_checkpoint(model, ["a", "b"], input_size=(64, 64))
    ckpt["train_config"] = {"init": {"from": str(tmp_path / "deep/start.pt"), "parts": "all"}}
    src = save_checkpoint(ckpt, tmp_path / "full.pt")
    slim = load_checkpoint(slim_checkpoint(src, tmp_path / "slim.pt"))
    assert slim["train_config"]["init"] == {"from": "start.pt", "parts": "all"} and slim["optimizer"] is None
    assert all(torch.equal(v, ckpt["weights_raw"][k]) for k, v in slim["weights_raw"].items())
