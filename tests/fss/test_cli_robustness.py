"""Bad options and inputs get a one-line error naming the value and a non-zero exit, never a traceback
(issue #15). Each case runs the real CLI on the bundled model and real images."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fss.cli import app
from fss_deploy.detect import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[2]
MODEL = DEFAULT_MODEL
IMAGE = ROOT.parent / "shared/data/dota_devkit_example/images/P1888.png"
runner = CliRunner()


def invoke(args):
    r = runner.invoke(app, [str(a) for a in args])
    # an uncaught exception would surface as r.exception of another type (the CLI would print a traceback)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "m.onnx"
    assert invoke(["export", MODEL, "--out", out]).exit_code == 0
    return out


@pytest.mark.parametrize("args,message", [
    (["--overlap", "-50"], "--overlap must be a finite number, 0 or more"),
    (["--batch", "0"], "--batch must be at least 1"),
    (["--tile", "0"], "--tile must be at least 32"),
    (["--conf", "1.5"], "--conf must lie in [0, 1]"),
    (["--iou", "-0.1"], "--iou must lie in [0, 1]"),
    (["--max-det", "0"], "--max-det must be at least 1"),
    (["--overlap", "600"], "--overlap (600) must lie in 0…448 px for a 512 px tile"),
    (["--overlap", "511"], "--overlap (511) must lie in 0…448 px for a 512 px tile"),     # 7,921 tiles of 600 px
    (["--overlap", "inf"], "--overlap must be a finite number, 0 or more"),
    (["--overlap", "nan"], "--overlap must be a finite number, 0 or more"),
    (["--overlap", "-0.5"], "--overlap must be a finite number, 0 or more"),      # was taken as 0
    (["--tile", "100000"], "--tile 100000 exceeds the largest network input, 8192 px"),
    (["--batch", "100000"], "--batch 100000 of 512 px inputs needs 293.0 GB for one batch; at most 682"),
    (["--threads", "-1"], "--threads must be 0 (all cores) or more"),
    (["--formats", ""], "formats: give at least one of"),
])
def test_detect_rejects_bad_settings(tmp_path, args, message):
    r = invoke(["detect", IMAGE, "--model", MODEL, "--out", tmp_path / "o", *args])
    assert r.exit_code != 0 and message in r.output


@pytest.mark.parametrize("args,message", [
    (["--iters", "0"], "Invalid value for '--iters'"),
    (["--iters", "1000000000"], "Invalid value for '--iters'"),          # ran for days
    (["--batch", "0"], "batch at least 1"),
    (["--warmup", "-1"], "Invalid value for '--warmup'"),
    (["--threads", "-1"], "Invalid value for '--threads'"),              # torch: "expects a positive integer"
])
def test_bench_rejects_bad_counts(tmp_path, args, message):
    r = invoke(["bench", MODEL, "--out", tmp_path / "b", *args])
    assert r.exit_code != 0 and message in r.output


@pytest.mark.parametrize("kwargs,message", [
    ({"iters": 10**9}, "iters must be 1 … 100,000"),
    ({"warmup": -1}, "warmup 0 … 100,000"),
    ({"threads": -1}, "threads must be 0 (the library default) or more, got -1"),
])
def test_the_bench_api_bounds_its_counts(kwargs, message):
    import fss

    with pytest.raises(ValueError, match=re.escape(message)):
        fss.benchmark(MODEL, **kwargs)


@pytest.mark.parametrize("opset", ["5", "99"])
def test_export_rejects_unsupported_opsets(tmp_path, opset):
    r = invoke(["export", MODEL, "--out", tmp_path / "x.onnx", "--opset", opset])
    assert r.exit_code != 0 and f"--opset {opset} is not supported" in r.output
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "epochs and batch must be at least 1"),
    (["--batch", "0"], "epochs and batch must be at least 1"),
    (["--imgsz", "0"], "imgsz must be a positive multiple of 32"),
    (["--imgsz", "100"], "imgsz must be a positive multiple of 32"),
])
def test_train_rejects_bad_numbers(tmp_path, args, message):
    r = invoke(["train", "--data", ROOT.parent / "shared/data/dota_devkit_example", "--out", tmp_path / "t", *args])
    assert r.exit_code != 0 and message in r.output


def test_info_on_an_exported_onnx_file(onnx_file):
    r = invoke(["info", onnx_file])
    assert r.exit_code == 0 and "params" in r.output and " M" in r.output


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    import struct
    import zlib

    # a valid PNG header claiming 30,000 × 30,000 px: refused before any decoding, the rest of the run goes on
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    bomb = tmp_path / "imgs/bomb.png"
    bomb.parent.mkdir()
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))
    (tmp_path / "imgs/ok.png").write_bytes(IMAGE.read_bytes())
    r = invoke(["detect", tmp_path / "imgs", "--model", MODEL, "--out", tmp_path / "o"])
    assert r.exit_code == 1 and "30000 × 30000 px exceeds the 400,000,000-pixel limit" in r.output
    assert "1 processed" in r.output
    r = invoke(["detect", tmp_path / "imgs/ok.png", "--model", MODEL, "--out", tmp_path / "o2", "--max-pixels", "1000"])
    assert r.exit_code == 1 and "exceeds the 1,000-pixel limit" in r.output


@pytest.mark.parametrize("card", ["depth: 50\nwidth: 40", "width: 0", "num_classes: 0", "input_size: 100000",
                                  "width: '0.25'", "num_classes: true", "num_classes: 3.7", "depthwise: 'false'"])
def test_absurd_model_cards_are_refused(tmp_path, card):
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: evil\nbackbone: cspdarknet\n{card}\n")
    r = invoke(["info", path])
    assert r.exit_code != 0 and "card 'evil'" in r.output


def test_onnx_with_a_renamed_input_is_refused(tmp_path, onnx_file):
    import onnx

    m = onnx.load(str(onnx_file))
    old = m.graph.input[0].name
    m.graph.input[0].name = "pixels"
    for node in m.graph.node:
        node.input[:] = ["pixels" if i == old else i for i in node.input]
    bad = tmp_path / "renamed.onnx"
    onnx.save(m, str(bad))
    r = invoke(["detect", IMAGE, "--model", bad, "--out", tmp_path / "o"])
    assert r.exit_code != 0 and "expected input 'images'" in r.output and "pixels" in r.output


def test_checkpoint_with_fewer_class_names_than_its_head_is_refused(tmp_path):
    import torch

    ckpt = torch.load(MODEL, weights_only=True)
    ckpt["class_names"] = ckpt["class_names"][:-1]
    bad = tmp_path / "fewer.pt"
    torch.save(ckpt, bad)
    r = invoke(["detect", IMAGE, "--model", bad, "--out", tmp_path / "o"])
    assert r.exit_code != 0 and "classes but its model card has" in r.output
    assert not (tmp_path / "o/predictions.json").exists()            # refused before any inference


@pytest.mark.parametrize("verb", [["train", "--data", ROOT.parent / "shared/data/dota_devkit_example", "--epochs", "1"],
                                  ["data", "convert", ROOT.parent / "shared/data/dota_devkit_example", "--to", "yolo"],
                                  ["detect", IMAGE, "--model", MODEL]])
def test_out_that_is_a_file_is_refused_before_work(tmp_path, verb):
    target = tmp_path / "afile"
    target.write_text("keep me")
    r = invoke([*verb, "--out", target])
    assert r.exit_code != 0 and "--out is a file" in r.output and target.read_text() == "keep me"


def test_eval_predictions_for_unknown_images_name_them(tmp_path):
    preds = tmp_path / "p.json"
    preds.write_text('[{"image_id": 999, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.9}]')
    r = invoke(["eval", "--predictions", preds, "--data",
                ROOT.parent / "shared/data/dota_devkit_example/coco_hbb.json"])
    assert r.exit_code != 0 and "image id(s) the ground truth does not have (first: [999])" in r.output


def test_an_exported_onnx_file_detects(tmp_path, onnx_file):
    r = invoke(["detect", IMAGE, "--model", onnx_file, "--out", tmp_path / "o"])
    assert r.exit_code == 0, r.output


def test_checkpoint_whose_weights_do_not_fit_its_card(tmp_path):
    import torch

    from fss_core.nn import load_card

    ckpt = torch.load(MODEL, weights_only=True)
    ckpt["card"] = load_card("fss-s").with_classes(len(ckpt["class_names"])).to_dict()
    bad = tmp_path / "other.pt"
    torch.save(ckpt, bad)
    for verb in (["info", bad], ["detect", IMAGE, "--model", bad, "--out", tmp_path / "o"]):
        r = invoke(verb)
        assert r.exit_code != 0 and "do not fit its model card 'fss-s'" in r.output and "tensors of another shape" \
            in r.output


DOTA = ROOT.parent / "shared/data/dota_devkit_example"


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    d = tmp_path_factory.mktemp("broken")
    (d / "trunc.pt").write_bytes(MODEL.read_bytes()[:1000])
    (d / "bad.onnx").write_text("garbage")
    (d / "model.txt").write_text("x")
    (d / "u16.txt").write_bytes("a.png\n".encode("utf-16"))
    (d / "folder.onnx").mkdir()
    (d / "text.pt").write_text("hello text")
    (d / "nested.txt").write_text("u16.txt\n")
    return d


@pytest.mark.parametrize("args,message", [
    (["detect", "{b}/missing.png", "--model", MODEL], "1 failed"),
    (["detect", IMAGE, "--model", "{b}/missing.pt"], "no such model file"),
    (["detect", IMAGE, "--model", "{b}/trunc.pt"], "not a readable torch file"),
    (["detect", IMAGE, "--model", "{b}/bad.onnx"], "not a readable ONNX model"),
    (["detect", IMAGE, "--model", "{b}/model.txt"], "unknown model type"),
    (["detect", IMAGE, "--model", MODEL, "--formats", "coco,xml"], "formats: unknown ['xml']"),
    (["detect", IMAGE, "--model", MODEL, "--backend", "foo"], "--backend must be one of"),
    (["train", "--data", "{b}/missing"], "no such dataset"),
    (["train", "--data", DOTA, "--assigner", "nope"], "unknown assigner 'nope'"),
    (["train", "--data", DOTA, "--set", "nope=1"], "unknown config key 'nope'"),
    (["train", "--data", DOTA, "--set", "assigner_params.nope=1"], "has no parameter(s) ['nope']"),
    (["train", "--data", DOTA, "--set", "mosaic=-5"], "config mosaic must be 0…1, got -5.0"),     # trained a run
    (["train", "--data", DOTA, "--set", "lr_per_64=-1"], "config lr_per_64 must be above 0, got -1.0"),
    (["train", "--data", DOTA, "--set", "eval_iou=2"], "config eval_iou must be 0…1, got 2.0"),
    (["train", "--data", DOTA, "--set", "scale=.nan"], "config scale must be 0…0.99, got nan"),
    (["train", "--data", DOTA, "--model", "nope"], "no model card 'nope'"),
    (["train", "--data", DOTA, "--val", ROOT.parent / "shared/data/coco8/annotations/instances_val.json"],
     "the validation set shares no class name with the training data"),            # trained, best.pt on AP 0
    (["eval", "--predictions", "{b}/missing.json", "--data", DOTA], "missing.json"),
    (["eval", MODEL, "--data", "{b}/missing"], "no such dataset"),
    (["export", "{b}/trunc.pt"], "not a readable torch file"),
    (["export", "{b}/missing.pt"], "no such checkpoint file"),
    (["export", MODEL, "--out", "{b}/model.txt"], "an ONNX export is named *.onnx"),      # written, then unreadable
    (["export", MODEL, "--out", "{b}/folder.onnx"], "exists and is not a regular file"),   # /dev/null was offered
    (["detect", "{b}/u16.txt", "--model", MODEL], "u16.txt: not UTF-8 text"),
    (["detect", "{b}/nested.txt", "--model", MODEL], "nested.txt:1: "),          # expanded twice, counted wrong
    (["export", MODEL, "--imgsz", "100000", "--out", "{out}.onnx"], "Invalid value for '--imgsz'"),   # 5 GB before
    (["eval", MODEL, "--data", DOTA, "--max-dets", "0"], "--max-dets must be at least 1, got 0"),
    (["eval", MODEL, "--data", DOTA, "--max-dets", "-3"], "--max-dets must be at least 1, got -3"),
    (["info", "{b}/missing.pt"], "no such checkpoint file"),
    (["info", "{b}/trunc.pt"], "not a readable torch file"),
    (["info", "{b}/text.pt"], "text.pt: not a torch file"),              # was "pickled objects other than tensors"
    (["data", "check", DOTA, "--imgsz", "-5"], "Invalid value for '--imgsz'"),   # advised --tile -5
    (["info", "{b}/bad.onnx"], "not a readable ONNX model"),
    (["bench", "{b}/missing.pt"], "no such model file"),
    (["data", "convert", "{b}/missing", "--to", "yolo"], "no such dataset"),
    (["data", "convert", DOTA, "--to", "xml"], "--to must be one of coco, yolo, yolo-obb, dota"),
    (["data", "split", "{b}/missing"], "no such dataset"),
    (["data", "split", DOTA, "--tile", "1", "--gap", "0"], "--tile must lie in 32…65536 px, got 1"),   # 61,207 tiles
    (["data", "split", DOTA, "--tile", "100", "--gap", "100"], "--gap (100) must lie in 0…88 px for a 100 px tile"),
    (["data", "split", DOTA, "--keep-ratio", "nan"], "--keep-ratio must lie in (0, 1], got nan"),
    (["data", "split", DOTA, "--workers", "-1"], "--workers must be at least 1"),
    (["info", "fss-s", "--imgsz", "0"], "Invalid value for '--imgsz'"),             # 0 meant the default
    (["export", MODEL, "--imgsz", "-64", "--out", "{out}.onnx"], "Invalid value for '--imgsz'"),
    (["detect", IMAGE, "--model", MODEL, "--max-pixels", "0"], "Invalid value for '--max-pixels'"),
    (["data", "check", "{b}/missing"], "no such dataset"),
    (["data", "synth", "{out}", "--num-images", "0"], "num_images >= 1"),
    (["data", "synth", "{out}", "--size", "10"], "size must be within 64"),
    (["data", "synth", "{out}", "--size", "20000"], "size must be within 64…10000 px"),     # ~11 GB drawn in memory
    (["data", "synth", "{out}", "--size", "256", "--objects", "100000000"], "at most 1024 objects of 8 px fit"),
    (["data", "synth", "{out}", "--max-size", "inf"], "need 1 <= min_size <= max_size <= size"),   # numpy's error
    (["data", "synth", "{out}", "--occlusion", "nan"], "occlusion must lie in 0…1, got nan"),
    (["data", "synth", "{out}", "--truncation", "2"], "truncation must lie in 0…1, got 2.0"),
    (["detect", IMAGE, "--model", MODEL, "--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N"),
    (["assign", IMAGE, "--model", MODEL, "--gt", "{b}/missing.txt"], "missing.txt"),
])
def test_missing_corrupt_and_unknown_inputs(broken, tmp_path, args, message):
    out_verbs = {"detect", "train", "convert", "split"}
    args = [str(a).replace("{b}", str(broken)).replace("{out}", str(tmp_path / "o")) for a in args]
    if out_verbs & set(args[:2]):
        args += ["--out", str(tmp_path / "o")]
    r = invoke(args)
    assert r.exit_code != 0 and message in r.output, r.output


def test_demo_out_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "afile"
    target.write_text("keep me")
    r = invoke(["demo", "--quick", "--out", target])
    assert r.exit_code != 0 and "--out is a file" in r.output and target.read_text() == "keep me"


def test_absurd_card_inside_a_checkpoint_is_refused(tmp_path):
    import torch

    ckpt = torch.load(MODEL, weights_only=True)
    ckpt["card"]["depth"], ckpt["card"]["width"] = 50, 40
    bad = tmp_path / "evil.pt"
    torch.save(ckpt, bad)
    for verb in (["info", bad], ["detect", IMAGE, "--model", bad, "--out", tmp_path / "o"], ["export", bad]):
        r = invoke(verb)
        assert r.exit_code != 0 and "depth 50 is outside the supported range" in r.output


@pytest.mark.parametrize("env,message", [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' is not a whole number"),
    ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK=5 and WORLD_SIZE=2 do not describe a launch"),
    ({"WORLD_SIZE": "2", "RANK": "1"}, "WORLD_SIZE=2 is set but this process was not started by torchrun"),
])
def test_stray_launch_variables_are_named(tmp_path, monkeypatch, env, message):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    r = invoke(["detect", IMAGE, "--model", MODEL, "--out", tmp_path / "o"])
    assert r.exit_code != 0 and message in r.output, r.output


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path):
    import torch

    from fss_core.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(MODEL)
    for state in (ckpt["weights_raw"], ckpt["weights_ema"]):
        if state:
            state["head.cls_preds.0.bias"] = torch.full_like(state["head.cls_preds.0.bias"], float("nan"))
    save_checkpoint(ckpt, tmp_path / "nan.pt")
    r = invoke(["detect", IMAGE, "--model", tmp_path / "nan.pt", "--out", tmp_path / "o"])
    assert r.exit_code != 0 and "hold NaN or infinite values (first: head.cls_preds.0.bias)" in r.output, r.output
    r = invoke(["train", "--data", DOTA, "--weights", tmp_path / "nan.pt", "--epochs", "1", "--imgsz", "64",
                "--out", tmp_path / "t"])                 # was "non-finite loss (nan) at epoch 1", the file unnamed
    assert r.exit_code != 0 and "nan.pt: its weights hold NaN" in r.output, r.output


def test_a_bomb_in_another_format_is_refused_from_its_header(tmp_path):
    """A 1 KB RLE8 BMP named .png declares 30,000² px; only PNG and JPEG headers were read, so it was decoded."""
    import struct

    bmp = b"BM" + struct.pack("<IHHI", 1080, 0, 0, 1078) + struct.pack("<IiiHHIIiiII", 40, 30000, 30000, 1, 8, 1, 2,
                                                                          0, 0, 256, 0) + b"\0" * 1026
    (tmp_path / "bomb.png").write_bytes(bmp)
    r = invoke(["detect", tmp_path / "bomb.png", "--model", MODEL, "--out", tmp_path / "o"])
    assert r.exit_code == 1 and "30000 × 30000 px exceeds the 400,000,000-pixel limit" in r.output, r.output
