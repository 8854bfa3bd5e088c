import json
import subprocess
import sys

import torch
from typer.testing import CliRunner

from fss.cli import app
from fss_core.checkpoint import make_checkpoint, save_checkpoint
from fss_core.nn import build_model, load_card

runner = CliRunner()


def test_help_lists_every_verb():
    import typer

    group = typer.main.get_command(app)
    assert set(group.commands) == {"train", "eval", "export", "detect", "bench", "data", "assign", "demo", "info",
                                   "convert"}
    assert set(group.commands["data"].commands) == {"convert", "split", "synth", "check"}
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in group.commands:
        assert f"│ {verb} " in result.output


def test_help_listings_keep_summaries_on_one_line():
    """A command's summary wraps only at the terminal's width, never at its docstring's line breaks."""
    import typer

    wide = CliRunner(env={"COLUMNS": "400"})
    group = typer.main.get_command(app)
    for args in ([], ["data"], ["export"], ["bench"]):
        out = wide.invoke(app, [*args, "--help"]).output
        names = group.commands[args[0]].commands if args else group.commands
        for name, command in names.items():
            line = next(row for row in out.splitlines() if f"│ {name} " in row)
            summary = " ".join((command.short_help or command.help or "").split("\n\n")[0].split())
            assert summary[:-1] in " ".join(line.split()), (args, name, line)


def test_info_on_card_and_checkpoint(tmp_path):
    result = runner.invoke(app, ["info", "fss-s", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["params"] == 8968255 and facts["input_size"] == "640x640"
    model = build_model(load_card("fss-n").with_classes(2))
    path = save_checkpoint(make_checkpoint(model, ["car", "ship"], assigner={"name": "fss", "params": {}}),
                           tmp_path / "m.pt")
    result = runner.invoke(app, ["info", str(path), "--imgsz", "320", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["classes"] == ["car", "ship"] and facts["assigner"] == "fss" and facts["input_size"] == "320x320"
    assert facts["flops"] > 0


def test_info_errors_exit_nonzero(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    result = runner.invoke(app, ["info", str(bad)])
    assert result.exit_code == 1 and "bad.pt" in result.output
    result = runner.invoke(app, ["info", "fss-nope"])
    assert result.exit_code == 1 and "no model card" in result.output


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "fss", "info", "fss-n", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["name"] == "fss-n"


def test_torch_is_cpu_build_here():
    # the setup pins the CPU wheel; a CUDA build here means the setup pulled GBs it should not have
    assert torch.version.cuda is None
