import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fss.cli import app
from fss_deploy.detect import DEFAULT_MODEL
from fss_train.data import read_dataset
from fss_train.metrics import coco_eval, dota_eval, read_dota_task2, voc07_ap

runner = CliRunner()
REF = [0.504581, 0.696973, 0.572982, 0.585626, 0.519400, 0.501398, 0.386813, 0.593680, 0.595353, 0.639811,
       0.566421, 0.564291]
SYN = [0.694719, 0.694719, 0.694719, -1.0, 0.792079, 0.0, 0.666667, 0.75, 0.75, -1.0, 0.791667, 0.0]


@pytest.mark.parametrize("engine", ["faster-coco-eval", "pycocotools"])
def test_coco_reference_stats(shared_data, engine):
    ref = shared_data / "coco_eval_reference/tests/dataset"
    stats = coco_eval(ref / "cocoapi/instances_val2014_100.json",
                      ref / "cocoapi/instances_val2014_fakebbox100_results.json", engine=engine)
    assert list(stats.values()) == pytest.approx(REF, abs=1e-4)
    stats = coco_eval(ref / "gt_dataset.json", ref / "dt_dataset.json", engine=engine)
    assert list(stats.values()) == pytest.approx(SYN, abs=1e-4)


def _dense_scene(seed=0, images=3, objects=400):
    """Dense small objects (8–40 px) with some crowd/difficult ones, and jittered, duplicated and false
    detections: more detections per image than COCO's cap of 100."""
    rng = np.random.default_rng(seed)
    imgs, anns, preds = [], [], []
    for i in range(1, images + 1):
        imgs.append({"id": i, "file_name": f"{i}.png", "width": 2000, "height": 2000})
        for _ in range(objects):
            w, h = rng.uniform(8, 40, 2)
            x, y = rng.uniform(0, 1950, 2)
            c = int(rng.integers(1, 4))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": int(rng.random() < 0.05)})
            for _ in range(int(rng.integers(0, 3))):
                j = rng.normal(0, 0.15, 4) * [w, h, w, h]
                preds.append({"image_id": i, "category_id": c if rng.random() < 0.9 else int(rng.integers(1, 4)),
                              "bbox": [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])],
                              "score": float(rng.random())})
        for _ in range(objects // 4):
            preds.append({"image_id": i, "category_id": int(rng.integers(1, 4)),
                          "bbox": [*rng.uniform(0, 1950, 2), *rng.uniform(8, 40, 2)], "score": float(rng.random())})
    cats = [{"id": c, "name": n} for c, n in zip((1, 2, 3), ("car", "ship", "plane"))]
    return {"images": imgs, "annotations": anns, "categories": cats}, preds


@pytest.mark.parametrize("max_dets", [100, 1000])
def test_coco_engines_agree_on_dense_scenes(max_dets):
    """faster-coco-eval (the default engine) computes what pycocotools computes: every stat, every class's AP and
    AP50 and the PR curves, on dense scenes with crowd objects, beyond COCO's cap of 100 detections."""
    from fss_train.metrics import coco_eval_details

    gt, preds = _dense_scene()
    assert len(preds) > 3 * max(100, max_dets) // 2
    fast, fast_details = coco_eval_details(gt, preds, max_dets=max_dets, engine="faster-coco-eval")
    ref, ref_details = coco_eval_details(gt, preds, max_dets=max_dets, engine="pycocotools")
    assert fast_details["engine"].startswith("faster-coco-eval") and ref_details["engine"].startswith("pycocotools")
    assert 0.05 < ref["AP50"] < 0.95
    assert list(fast.values()) == pytest.approx(list(ref.values()), abs=1e-12)
    assert fast_details["per_class"].keys() == ref_details["per_class"].keys()
    for name, v in ref_details["per_class"].items():
        assert fast_details["per_class"][name] == pytest.approx(v, abs=1e-12)
    for name in ref_details["pr"]:
        assert fast_details["pr"][name] == pytest.approx(ref_details["pr"][name], abs=1e-12)


def test_eval_warns_when_images_hold_more_objects_than_the_detection_cap(tmp_path):
    """400 objects an image scored with COCO's 100 detections: recall cannot reach 1; fss eval says so and how to
    raise the cap (dense aerial data), and says nothing once the cap fits."""
    from fss_train.metrics import detection_cap_advice

    gt, preds = _dense_scene(images=2)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    most = max(sum(1 for a in gt["annotations"] if a["image_id"] == i and not a["iscrowd"]) for i in (1, 2))
    advice = detection_cap_advice(gt, 100)
    assert advice.startswith(f"2 of 2 images hold more ground-truth objects than the 100 detections per image COCO "
                             f"scores (up to {most}):") and advice.endswith(f"(--max-dets {-(-most * 3 // 200) * 100})")
    assert detection_cap_advice(gt, most) is None
    r = runner.invoke(app, ["eval", "--predictions", str(tmp_path / "preds.json"), "--data", str(tmp_path / "gt.json"),
                            "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert "warning: 2 of 2 images hold more ground-truth objects than the 100" in " ".join(r.output.split())
    assert json.loads((tmp_path / "a/metrics.json").read_text())["max_dets_advice"] == advice
    r = runner.invoke(app, ["eval", "--predictions", str(tmp_path / "preds.json"), "--data", str(tmp_path / "gt.json"),
                            "--out", str(tmp_path / "b"), "--max-dets", "1000"])
    assert r.exit_code == 0 and "ground-truth objects than" not in r.output


def test_an_unknown_coco_engine_is_refused(tmp_path, shared_data):
    ref = shared_data / "coco_eval_reference/tests/dataset/cocoapi"
    with pytest.raises(ValueError, match="COCO engine must be one of auto, faster-coco-eval, pycocotools"):
        coco_eval(ref / "instances_val2014_100.json", ref / "instances_val2014_fakebbox100_results.json",
                  engine="cocoapi")
    result = runner.invoke(app, ["eval", "--predictions", str(ref / "instances_val2014_fakebbox100_results.json"),
                                 "--data", str(ref / "instances_val2014_100.json"), "--coco-engine", "cocoapi",
                                 "--out", str(tmp_path / "eval")])
    assert result.exit_code != 0 and "cocoapi" in result.output and not (tmp_path / "eval").exists()


@pytest.mark.parametrize("engine", ["faster-coco-eval", "pycocotools"])
def test_max_dets_path_reproduces_the_engines_summary_at_100(shared_data, monkeypatch, engine):
    import fss_train.metrics as metrics
    ref = shared_data / "coco_eval_reference/tests/dataset/cocoapi"
    gt, dt = ref / "instances_val2014_100.json", ref / "instances_val2014_fakebbox100_results.json"
    standard = coco_eval(gt, dt, engine=engine)
    # our array-reading summary, forced at 100, equals the engine's own summarize()
    real = metrics._stats_at
    calls = []
    monkeypatch.setattr(metrics, "_stats_at", lambda ev, m: calls.append(m) or real(ev, m))
    COCOeval = metrics.coco_engine(engine)[2]
    monkeypatch.setattr(COCOeval, "summarize", lambda self: setattr(self, "stats", real(self, 100)))
    ours = coco_eval(gt, dt, engine=engine)
    assert list(ours.values()) == pytest.approx(list(standard.values()), abs=1e-12)
    # a larger cap can only keep or raise recall
    wide = coco_eval(gt, dt, max_dets=1000, engine=engine)
    assert calls == [1000]
    assert wide["AR100"] >= standard["AR100"] - 1e-12 and wide["AP"] >= 0


def test_eval_cli_scores_saved_predictions(shared_data, tmp_path):
    ref = shared_data / "coco_eval_reference/tests/dataset/cocoapi"
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["eval", "--predictions", str(ref / "instances_val2014_fakebbox100_results.json"),
                                 "--data", str(ref / "instances_val2014_100.json"), "--json", str(out),
                                 "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["result"]["AP"] == pytest.approx(0.504581, abs=1e-4)


def test_voc07_eleven_points():
    assert voc07_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)


def _write_task2(folder, ds, preds):
    folder.mkdir()
    names = {r.image_id: r.path.stem for r in ds.records}
    for c, name in enumerate(ds.classes):
        lines = [f"{names[p['image_id']]} {p['score']} {p['bbox'][0]} {p['bbox'][1]} "
                 f"{p['bbox'][0] + p['bbox'][2]} {p['bbox'][1] + p['bbox'][3]}" for p in preds
                 if p["category_id"] == c + 1]
        if lines:
            (folder / f"Task2_{name}.txt").write_text("\n".join(lines) + "\n")


def test_dota_metric_perfect_partial_and_difficult(shared_data, tmp_path):
    ds = read_dataset(shared_data / "dota_devkit_yolo_demo/DOTA_demo")
    perfect = [{"image_id": r.image_id, "category_id": int(c) + 1, "score": 0.9,
                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
               for r in ds.records for b, c, d in zip(r.boxes, r.labels, r.difficult) if d == 0]
    result = dota_eval(ds, perfect)
    assert result["mAP50"] == pytest.approx(1.0)
    # detections of difficult objects are neither rewarded nor penalised
    with_difficult = perfect + [{"image_id": r.image_id, "category_id": int(c) + 1, "score": 0.95,
                                 "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
                                for r in ds.records for b, c, d in zip(r.boxes, r.labels, r.difficult) if d > 0]
    assert dota_eval(ds, with_difficult)["mAP50"] == pytest.approx(1.0)
    # half the non-difficult objects found -> recall 0.5, precision 1 -> 6/11
    half = [p for i, p in enumerate(perfect) if i % 2 == 0]
    per_class = dota_eval(ds, half)["per_class"]
    assert all(abs(v - 6 / 11) < 0.1 for v in per_class.values())
    # Task2 folders through the CLI, from labels alone
    _write_task2(tmp_path / "task2", ds, perfect)
    assert len(read_dota_task2(tmp_path / "task2", ds)) == len(perfect)
    result = runner.invoke(app, ["eval", "--predictions", str(tmp_path / "task2"), "--data",
                                 str(shared_data / "dota_devkit_yolo_demo/DOTA_demo"), "--metric", "dota",
                                 "--out", str(tmp_path / "eval1")])
    assert result.exit_code == 0, result.output
    assert "mAP50 (VOC07, DOTA devkit) 1.0000" in result.output
    # from labels alone: a copy of the folder without images/
    import shutil
    labels_only = tmp_path / "labels_only"
    shutil.copytree(shared_data / "dota_devkit_yolo_demo/DOTA_demo/labelTxt", labels_only / "labelTxt")
    result = runner.invoke(app, ["eval", "--predictions", str(tmp_path / "task2"), "--data", str(labels_only),
                                 "--metric", "dota", "--out", str(tmp_path / "eval2")])
    assert result.exit_code == 0, result.output
    assert "mAP50 (VOC07, DOTA devkit) 1.0000" in result.output


def test_eval_errors(tmp_path, shared_data):
    bad = tmp_path / "Task2_plane.txt"
    tmp_path.joinpath("t").mkdir()
    (tmp_path / "t/Task2_large-vehicle.txt").write_text("P0003 0.9 1 2 3\n")
    result = runner.invoke(app, ["eval", "--predictions", str(tmp_path / "t"), "--data",
                                 str(shared_data / "dota_devkit_yolo_demo/DOTA_demo"), "--metric", "dota"])
    assert result.exit_code == 1 and "Task2_large-vehicle.txt:1" in result.output
    del bad
    result = runner.invoke(app, ["eval", "--data", "x"])
    assert result.exit_code == 1 and "model checkpoint or predictions" in result.output


@pytest.fixture(scope="module")
def detected(tmp_path_factory):
    """Four synthetic scenes, the bundled model's `fss detect` run over them, and the scenes' COCO json rewritten
    with other image and category ids (categories in another order)."""
    root = tmp_path_factory.mktemp("evalmap")
    r = runner.invoke(app, ["data", "synth", str(root / "s"), "--num-images", "4", "--size", "512", "--objects", "30",
                            "--seed", "5"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["detect", str(root / "s/images"), "--out", str(root / "det"), "--device", "cpu",
                            "--conf", "0.05"])
    assert r.exit_code == 0, r.output
    gt = json.loads((root / "s/annotations.json").read_text())
    new_cat = {c["id"]: 100 - 10 * c["id"] for c in gt["categories"]}          # 90, 80, …: reversed order
    new_img = {im["id"]: im["id"] + 1000 for im in gt["images"]}
    for c in gt["categories"]:
        c["id"] = new_cat[c["id"]]
    for im in gt["images"]:
        im["id"] = new_img[im["id"]]
    for a in gt["annotations"]:
        a["category_id"], a["image_id"] = new_cat[a["category_id"]], new_img[a["image_id"]]
    (root / "s/other_ids.json").write_text(json.dumps(gt))
    return root


def test_detect_predictions_are_matched_by_file_and_class_name(detected, tmp_path):
    """The same fss detect run scores the same against the dataset's own COCO json, a COCO json with other ids,
    and the DOTA labels (it scored 0.0000 before ids were mapped, and pycocotools failed on the DOTA folder)."""
    root = detected
    scores = {}
    for name, data in [("own", root / "s/annotations.json"), ("other", root / "s/other_ids.json"),
                       ("dota", root / "s")]:
        out = tmp_path / name
        r = runner.invoke(app, ["eval", "--predictions", str(root / "det"), "--data", str(data), "--out", str(out),
                                "--max-dets", "300"])
        assert r.exit_code == 0, r.output
        m = json.loads((out / "metrics.json").read_text())
        scores[name] = m["result"]["AP50"]
        assert m["max_dets"] == 300 and m["coco_engine"].startswith("faster-coco-eval")
        assert "AR@300 " in r.output and "AR100" not in r.output       # the recall at the cap it was given
        assert set(m["per_class"]) == {"small-vehicle", "large-vehicle", "ship", "plane", "storage-tank"}
        for png in ("PR_curve.png", "confusion_matrix.png"):
            assert (out / png).stat().st_size > 10_000
        cm = json.loads((out / "confusion_matrix.json").read_text())
        matrix = np.array(cm["rows_predicted_columns_true"])
        assert cm["classes"][-1] == "background" and np.trace(matrix[:-1, :-1]) > matrix[:-1, :-1].sum() * 0.8
    assert scores["own"] > 0.5 and scores["own"] == pytest.approx(scores["other"], abs=1e-9)
    # the DOTA labels are boxes around the objects' oriented outlines, a few px off the COCO boxes: close, not equal
    assert abs(scores["dota"] - scores["own"]) < 0.05
    # the per-class APs agree with a hand count: the mean of the per-class AP50 is the AP50
    per = [v["AP50"] for v in json.loads((tmp_path / "own/metrics.json").read_text())["per_class"].values()
           if v["AP50"] >= 0]
    assert np.mean(per) == pytest.approx(scores["own"], abs=1e-9)


def test_checkpoint_classes_are_mapped_by_name(detected, tmp_path, shared_data):
    """The bundled model (5 synthetic classes) on the same scenes labelled with the classes in another order,
    and on DOTA labels that share only some names: mapped by name, the difference said; none shared: refused."""
    root = detected
    ds = read_dataset(root / "s")
    base = runner.invoke(app, ["eval", str(DEFAULT_MODEL), "--data", str(root / "s/annotations.json"),
                               "--out", str(tmp_path / "a"), "--device", "cpu", "--max-dets", "300"])
    assert base.exit_code == 0, base.output
    other = runner.invoke(app, ["eval", str(DEFAULT_MODEL), "--data", str(root / "s/other_ids.json"),
                                "--out", str(tmp_path / "b"), "--device", "cpu", "--max-dets", "300"])
    assert other.exit_code == 0, other.output
    a = json.loads((tmp_path / "a/metrics.json").read_text())["result"]["AP"]
    b = json.loads((tmp_path / "b/metrics.json").read_text())["result"]["AP"]
    assert a > 0.3 and a == pytest.approx(b, abs=1e-9) and len(ds.classes) == 5
    dota = runner.invoke(app, ["eval", str(DEFAULT_MODEL), "--data",
                               str(shared_data / "dota_devkit_yolo_demo/DOTA_demo"), "--out", str(tmp_path / "c"),
                               "--device", "cpu"])
    assert dota.exit_code == 0, dota.output
    assert "ground-truth classes the predictions do not know" in dota.output and "baseball-diamond" in dota.output
    coco8 = runner.invoke(app, ["eval", str(DEFAULT_MODEL), "--data",
                                str(shared_data / "coco8/annotations/instances_val.json"),
                                "--out", str(tmp_path / "d"), "--device", "cpu"])
    assert coco8.exit_code == 1 and "share no name" in coco8.output


def test_results_json_in_other_ids_is_refused_with_the_reason(detected, tmp_path):
    root = detected
    preds = json.loads((root / "det/predictions.json").read_text())
    (tmp_path / "plain.json").write_text(json.dumps(preds))                 # no images.json beside it
    r = runner.invoke(app, ["eval", "--predictions", str(tmp_path / "plain.json"), "--data",
                            str(root / "s/other_ids.json"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "category ids [1, 2, 3, 4, 5] are not among" in r.output
    r = runner.invoke(app, ["eval", "--predictions", str(tmp_path / "plain.json"), "--data", str(root / "s"),
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "images.json" in r.output
    # an explicit --out that holds files is not written into unless asked
    (tmp_path / "full").mkdir()
    (tmp_path / "full/keep.txt").write_text("x")
    r = runner.invoke(app, ["eval", "--predictions", str(root / "det"), "--data", str(root / "s"),
                            "--out", str(tmp_path / "full")])
    assert r.exit_code == 1 and "--exist-ok" in r.output


def test_evaluate_api_maps_and_writes_the_same(detected, tmp_path):
    import fss

    root = detected
    record = fss.evaluate(predictions=root / "det" / "predictions.json", data=str(root / "s/other_ids.json"),
                          max_dets=300, out=tmp_path / "api")
    assert record["result"]["AP50"] > 0.5 and record["classes_note"] is None
    assert set(record["per_class"]["ship"]) == {"AP", "AP50"}
    saved = json.loads((tmp_path / "api/predictions.json").read_text())
    assert {p["category_id"] for p in saved} <= {90, 80, 70, 60, 50}        # in the ground truth's own ids
    assert {p["image_id"] for p in saved} <= {1000, 1001, 1002, 1003, 1004}
    calls = []
    fss.evaluate(str(DEFAULT_MODEL), str(root / "s"), device="cpu", progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] == calls[-1][1]


def test_an_unreadable_image_is_left_out_of_the_evaluation(detected, tmp_path):
    """A checkpoint's evaluation over data with a corrupt image scores exactly what the same data without that image
    scores (the loader used to put another image in its place: scored twice under one id, its objects missed),
    lists it in metrics.json and exits 1; for a DOTA folder and for a COCO json with its own ids."""
    import shutil


    bad, ref = tmp_path / "bad", tmp_path / "ref"
    shutil.copytree(detected / "s", bad)
    shutil.copytree(detected / "s", ref)
    victim = bad / "images/synth_00002.png"
    victim.write_bytes(victim.read_bytes()[:2000])                 # header intact, the pixels cut off
    (ref / "images/synth_00002.png").unlink()
    (ref / "labelTxt/synth_00002.txt").unlink()
    gt = json.loads((ref / "other_ids.json").read_text())          # the json without the image either
    gone = {im["id"] for im in gt["images"] if im["file_name"].endswith("synth_00002.png")}
    gt["images"] = [im for im in gt["images"] if im["id"] not in gone]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] not in gone]
    (ref / "other_ids.json").write_text(json.dumps(gt))
    for data in ("", "other_ids.json"):
        outs = {}
        for name, root in (("bad", bad), ("ref", ref)):
            r = runner.invoke(app, ["eval", str(DEFAULT_MODEL), "--data", str(root / data), "--imgsz", "512",
                                    "--device", "cpu", "--out", str(tmp_path / f"e-{name}-{data or 'dota'}")])
            outs[name] = (r, json.loads((tmp_path / f"e-{name}-{data or 'dota'}/metrics.json").read_text()))
        (rb, mb), (rr, mr) = outs["bad"], outs["ref"]
        assert rr.exit_code == 0, rr.output
        assert rb.exit_code == 1 and "1 unreadable image(s) left out" in rb.output and "synth_00002.png" in rb.output
        assert mb["unreadable_images"] == [str(victim)] and "unreadable_images" not in mr
        assert mb["result"]["AP"] > 0 and mb["result"] == pytest.approx(mr["result"])


def test_scale_advice_names_the_images_shrunk_beyond_twice_and_the_tiled_way():
    from types import SimpleNamespace

    from fss_train.scoring import scale_advice

    ds = SimpleNamespace(records=[SimpleNamespace(width=w, height=h) for w, h in ((640, 480), (4000, 3000))])
    advice = scale_advice(ds, 640)
    assert advice.startswith("1 of 2 images are larger than the model's 640 px input (up to 6.2×)")
    assert "fss eval --predictions DIR" in advice
    assert scale_advice(ds, 2048) is None                # 4000 / 2048 < 2: scored whole, as it should be
