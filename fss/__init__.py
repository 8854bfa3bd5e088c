"""fss: train one-stage detectors with the FSS label assignment and deploy them fast.

The Python API (the ``fss`` command is a thin layer over it)::

    import fss
    run = fss.train("data.yaml", model="fss-s", assigner="fss", epochs=100, imgsz=1024)
    fss.evaluate(run.best, "data.yaml")["result"]["AP50"]
    fss.export(run.best, format="onnx", verify=True).onnx
    results = fss.Detector("runs/train/best.onnx", tile=1024, overlap=200)("scenes/")
    fss.benchmark("runs/train/best.onnx")["fps"]

Names are imported on first use, so ``import fss`` (and the CLI's start-up) stays light.
"""

from __future__ import annotations

from importlib import import_module

from fss_core import __version__  # noqa: F401 (the package's version, owned there)

_API = {"Detector": "fss.detector", "Result": "fss.detector", "train": "fss.api", "TrainResult": "fss.api",
        "evaluate": "fss.api", "export": "fss.api", "Exported": "fss.api", "compare": "fss.api",
        "benchmark": "fss.api", "synth": "fss.api", "benchmark_overhead": "fss.api", "benchmark_tiled": "fss.api",
        "convert": "fss.api", "SAMPLE_IMAGE": "fss_deploy.detect"}
__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'fss' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
