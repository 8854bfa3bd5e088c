"""Reading a torch file without executing anything: the one loader under checkpoints and foreign weights.

``torch.load(weights_only=True)`` rebuilds tensors and plain types only; anything else the pickle names is refused
before it is built. Every way a file can be wrong becomes one exception of the caller's type, naming the file.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch


def read_torch_file(path: str | Path, error: type[Exception], noun: str, allowed: list | tuple = ()) -> object:
    """The object in the torch file at ``path``; ``allowed``: further harmless globals the unpickler may rebuild
    (``torch.serialization.safe_globals``). Raises ``error`` ("<path>: no such <noun> file", "not a torch file",
    "pickles the global 'X' …", "not a readable torch file")."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such {noun} file")
    with open(path, "rb") as f:
        head = f.read(2)
    # neither torch's zip archive nor a bare pickle: e.g. a text file said to hold "pickled objects"
    if head[:2] != b"PK" and head[:1] != b"\x80":
        raise error(f"{path}: not a torch file (a {noun} file is a zip archive written by torch.save)")
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"the global {found.group(1)!r}" if found else "objects other than tensors and plain types"
        raise error(f"{path}: pickles {what}, which is not on the allow-list of harmless types; refusing to load "
                    "it (nothing was executed)") from None
    except Exception as exc:  # the unpickler raises KeyError, EOFError, RuntimeError… on garbage
        raise error(f"{path}: not a readable torch file (truncated or corrupt?): {exc}") from None
