"""The card's runnable entry: the `fss` command from a checkout, also under torchrun.

    python cli.py detect scenes/ --model best.onnx
    torchrun --nproc_per_node 2 cli.py detect scenes/ --model best.onnx --out runs/detect   # images sharded

It delegates to the package's CLI (``fss.cli``); the installed ``fss`` command is the same program.
"""

from fss.cli import app

if __name__ == "__main__":
    app(prog_name="fss")
