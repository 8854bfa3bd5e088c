"""Which process of a run this is: the one reading of torchrun's RANK / WORLD_SIZE / LOCAL_RANK (they were parsed
with a bare int() in six places: WORLD_SIZE=abc was a traceback, a stray WORLD_SIZE=2 an obscure rendezvous error)."""

from __future__ import annotations

import os


def _int(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    try:
        return int(text) if text.strip() else default
    except ValueError:
        raise ValueError(f"the environment variable {name}={text!r} is not a whole number") from None


def rank_and_world() -> tuple[int, int]:
    """(rank, world size): (0, 1) outside torchrun. Raises ValueError naming the variables when they do not
    describe a launch (rank outside 0…world−1, or a world of several processes without torchrun's MASTER_ADDR)."""
    rank, world = _int("RANK", 0), _int("WORLD_SIZE", 1)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} do not describe a launch (need 0 <= RANK < "
                         "WORLD_SIZE); unset them, or start the run with torchrun")
    if world > 1 and not os.environ.get("MASTER_ADDR"):
        raise ValueError(f"WORLD_SIZE={world} is set but this process was not started by torchrun (no MASTER_ADDR);"
                         " unset WORLD_SIZE and RANK, or launch with `torchrun --nproc_per_node N …`")
    return rank, world


def local_rank() -> int:
    """This process's GPU index on its machine under torchrun (0 otherwise)."""
    return _int("LOCAL_RANK", 0)
