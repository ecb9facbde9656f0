"""The process group of a sharded run: join it from torchrun's environment, or do nothing.

``torchrun --nproc_per_node=N -m paperlib evaluate ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment. :func:`init`
joins that group -- NCCL when the device is CUDA (one GPU per process: ``cuda:$LOCAL_RANK``),
gloo on CPU -- and every helper here is a no-op in a single process (``WORLD_SIZE`` unset), so that
the same code runs both ways.

The evaluation exchanges no tensor between ranks: ranks compute disjoint shards of the images and
only meet to agree on the run (:func:`all_gather_object`), to learn what is already done
(:func:`broadcast_object`) and to wait for each other before rank 0 merges the shards
(:func:`barrier`). These go through a gloo group on the host, also under NCCL: the payloads are
Python objects (file lists, rows), and a rank waiting for a slower one then waits on the host, up
to :func:`timeout` (``$PAPERLIB_DIST_TIMEOUT_MIN`` minutes, default 120), not in a GPU kernel.
"""

from __future__ import annotations

import datetime as _dt
import os
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["TIMEOUT_ENV", "all_gather_object", "barrier", "broadcast_object", "device", "init",
           "is_distributed", "is_main", "local_rank", "rank", "shutdown", "timeout",
           "world_size"]

#: Environment variable: minutes a rank waits for the others at a barrier (default 120).
TIMEOUT_ENV = "PAPERLIB_DIST_TIMEOUT_MIN"

T = TypeVar("T")
_control: dict[str, Any] = {"group": None}


def timeout() -> _dt.timedelta:
    """How long a collective waits for the slowest rank (``$PAPERLIB_DIST_TIMEOUT_MIN``)."""
    value = os.environ.get(TIMEOUT_ENV, "120")
    try:
        minutes = float(value)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={value!r} is not a number of minutes") from None
    return _dt.timedelta(minutes=minutes)


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes of the group (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that merges and writes tables."""
    return rank() == 0


def local_rank() -> int:
    """This process's index on its machine (``$LOCAL_RANK``; 0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def device(requested: str | torch.device | None = "auto") -> torch.device:
    """The device of this process: ``"auto"`` -> CUDA when present, else CPU; a CUDA device
    without an index (``"cuda"``, ``"auto"``) -> ``cuda:$LOCAL_RANK``, one GPU per process."""
    d = torch.device("cuda" if torch.cuda.is_available() else "cpu") if requested in (
        None, "auto") else torch.device(requested)
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", local_rank())
    return d


def init(device_: str | torch.device | None = "auto") -> bool:
    """Join the process group described by torchrun's environment; ``False`` (and nothing done)
    when ``WORLD_SIZE`` is unset or 1, or the group is already initialised.

    Backend: NCCL for a CUDA ``device_`` (after ``torch.cuda.set_device(cuda:$LOCAL_RANK)``),
    gloo otherwise; plus a gloo group on the host for the object collectives (module docstring).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available()
                                                       and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE is set but this torch build has no torch.distributed")
    d = device(device_)
    if d.type == "cuda":
        torch.cuda.set_device(d)
    backend = "nccl" if d.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"device_id": d} if d.type == "cuda" else {}
    dist.init_process_group(backend=backend, timeout=timeout(), **kwargs)
    _control["group"] = (dist.new_group(backend="gloo", timeout=timeout())
                         if backend != "gloo" else None)
    return True


def shutdown() -> None:
    """Leave the process group (no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _control["group"] = None


def barrier() -> None:
    """Wait until every rank gets here (no-op when not distributed)."""
    if is_distributed():
        dist.barrier(group=_control["group"])


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (pickled; ``obj`` itself when not distributed)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src, group=_control["group"])
    return box[0]  # type: ignore[return-value]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj, group=_control["group"])
    return out
