# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""What the recipe does between ranks before and after the Trainer: barriers, the main process, shared failures.

Everything here is a no-op in a single process. In a distributed run (`torch.distributed.run`, `accelerate launch`)
the process group is the one the Trainer uses: the recipe initialises it early through `TrainingArguments`
(`training_args.world_size`), so the feature cache and the phase hand-over can synchronise before a Trainer exists.

The rule that keeps a run from hanging: work that can fail on one rank only (reading that rank's media, a lock held
elsewhere) runs under [`on_every_rank`] or [`on_main_process`], which exchange the outcome; when one rank fails,
every rank raises the same error naming the rank and its message, instead of the others waiting at the next
collective until the timeout.
"""

import os
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


class DistributedFailure(RuntimeError):
    """A step failed on at least one rank; raised on every rank with each failing rank's message."""


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if is_distributed() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


def all_gather_objects(value) -> list:
    """`value` of every rank, in rank order (a list of one in a single process)."""
    if not is_distributed():
        return [value]
    gathered = [None] * world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value):
    """The main process's `value` on every rank."""
    if not is_distributed():
        return value
    holder = [value]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def raise_if_any_failed(error: BaseException | None, what: str) -> None:
    """Exchanges each rank's error (or None); raises on every rank when any rank had one. A single process re-raises
    its own error unchanged."""
    if not is_distributed():
        if error is not None:
            raise error
        return
    messages = all_gather_objects(None if error is None else _describe(error))
    failed = [(r, message) for r, message in enumerate(messages) if message is not None]
    if not failed:
        return
    listing = "\n".join(f"  rank {r}: {message}" for r, message in failed)
    exception = DistributedFailure(f"{what} failed on {len(failed)} of {len(messages)} ranks:\n{listing}")
    if error is not None:
        raise exception from error
    raise exception


def on_every_rank(function: Callable[[], T], what: str) -> T:
    """Runs `function` on every rank; if it raised anywhere, raises `DistributedFailure` on every rank."""
    result, error = None, None
    try:
        result = function()
    except Exception as exception:  # noqa: BLE001 - shared with the other ranks, then raised
        error = exception
    raise_if_any_failed(error, what)
    return result


def on_main_process(function: Callable[[], T], what: str) -> T:
    """Runs `function` on the main process while the others wait; returns its (picklable) result on every rank, or
    raises `DistributedFailure` on every rank if it failed."""
    result, error = None, None
    if is_main_process():
        try:
            result = function()
        except Exception as exception:  # noqa: BLE001
            error = exception
    outcome = broadcast_object((result, None if error is None else _describe(error)))
    if outcome[1] is not None:
        if not is_distributed():
            raise error
        exception = DistributedFailure(f"{what} failed on the main process: {outcome[1]}")
        if error is not None:
            raise exception from error
        raise exception
    return outcome[0]


def model_parameters_local(module) -> bool:
    """Whether every parameter of `module` is materialised in full on this rank: not on the meta device (FSDP's
    `cpu_ram_efficient_loading` loads ranks other than 0 there) and not partitioned by DeepSpeed ZeRO-3 (`ds_id`)."""
    for parameter in module.parameters():
        if parameter.device.type == "meta" or hasattr(parameter, "ds_id"):
            return False
        if type(parameter).__name__ == "DTensor" or type(getattr(parameter, "data", None)).__name__ == "DTensor":
            return False
    return True
