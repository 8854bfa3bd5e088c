"""What every ``fss`` sub-command file shares: the consoles, the error rule, common options."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from fss.progress import err

console = Console(soft_wrap=True)
HELP = {"help_option_names": ["-h", "--help"]}


def first_word_optional(default: str) -> type[TyperGroup]:
    """A verb group whose sub-command word may be left out: ``fss export CKPT`` = ``fss export model CKPT``."""
    class Group(TyperGroup):
        def parse_args(self, ctx, args):
            if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
                args = [default, *args]
            return super().parse_args(ctx, args)
    return Group


def one_line_summaries(app: typer.Typer) -> None:
    """Each command's line in a ``--help`` listing is its docstring's first paragraph on one line: Typer's rich
    listing keeps the docstring's hard line breaks (a two-line summary printed as a ragged break mid-sentence)."""
    import inspect

    for info in app.registered_commands:
        text = info.help or (info.callback.__doc__ if info.callback else None)
        if info.short_help is None and text:
            info.short_help = " ".join(inspect.cleandoc(text).split("\n\n")[0].split())
    for group in app.registered_groups:
        if group.typer_instance is not None:
            one_line_summaries(group.typer_instance)


Device = Annotated[str, typer.Option(help="auto (cuda when a GPU is visible) | cpu | cuda | cuda:N")]
def size_option(help: str):
    """An input-size option: 32 px … MAX_INPUT_SIDE, or left out (0 meant "the model's" and negative sizes reached
    numpy)."""
    from fss_core.defaults import MAX_INPUT_SIDE

    return typer.Option(help=help, min=32, max=MAX_INPUT_SIDE)


Imgsz = Annotated[int | None, size_option("input size (default: the model's)")]
Backend = Annotated[str | None, typer.Option(help="torch | onnxruntime | openvino | tensorrt (default: by file)")]
Precision = Annotated[str, typer.Option(help="fp32 | bf16 | auto: OpenVINO's inference precision (bf16 needs a CPU "
                                             "with native BF16; auto takes it there)")]
def runs_option(help: str, least: int):
    """A count of bench runs: ``least`` … MAX_RUNS (``--iters 10**9`` ran for days)."""
    from fss_core.defaults import MAX_RUNS

    return typer.Option(help=help, min=least, max=MAX_RUNS)


Threads = Annotated[int, typer.Option(help="CPU threads (0: library default)", min=0)]
Warmup = Annotated[int, runs_option("untimed runs first", 0)]
Iters = Annotated[int, runs_option("timed runs", 1)]
DatasetArg = Annotated[str, typer.Argument(help="COCO json, YOLO data.yaml or DOTA folder")]
def fail(message: str, code: int = 1) -> None:
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def user_errors():
    """Bad input (a file, a value, an existing output) -> one line on stderr and exit status 1."""
    from fss_deploy.folder_run import OutputConflict

    try:
        yield
    except typer.Exit:
        raise                                               # typer's Exit is a RuntimeError: let it through
    except KeyError as exc:                                 # str() of a KeyError is the bare key: say what it is
        fail(f"missing or unknown key {exc.args[0]!r}" if exc.args else "missing key")
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, OutputConflict,
            RuntimeError, ImportError) as exc:                 # ImportError: an optional extra (fss[geo]) is missing
        fail(str(exc))
    except OSError as exc:                                  # a full disk mid-write (export, convert, train)
        fail(f"{exc.filename or 'a file'}: cannot write ({exc.strerror or exc})")


def report_folder(out: str, default: str, exist_ok: bool) -> str:
    """Where a report goes: the default folder moves on to the first free one (runs/bench, runs/bench2, …); a folder
    named with --out that holds files is written into only with --exist-ok."""
    from fss.api import free_folder

    if out == default:
        return str(free_folder(out))
    if Path(out).is_dir() and any(Path(out).iterdir()) and not exist_ok:
        fail(f"{out} holds files; pass another --out, or --exist-ok to write into it")
    return out


def report_file(path: str, exist_ok: bool, option: str = "--out") -> None:
    """A report file named by the user is replaced only with --exist-ok (``eval --json`` replaced a ground-truth
    json). With :func:`report_folder` the one policy for the reports of every verb; run folders (train, detect),
    conversions and exports judge their own folders (resume, the run's identity, an earlier conversion, the same
    checkpoint)."""
    if Path(path).exists() and not exist_ok:
        fail(f"{option} {path} exists; pass another file, or --exist-ok to replace it")


def writable_out(out: str) -> None:
    from fss_deploy.folder_run import check_output_dir

    with user_errors():
        check_output_dir(Path(out))
