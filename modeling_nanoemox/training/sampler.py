# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Weighted multi-dataset sampling: the recipe's mixture weights are the expected share of each dataset in a batch.

The authors' `ratio` subsamples each dataset once and then draws uniformly per dataset, so their numbers are not
mixing weights. Here every draw picks dataset `d` with probability `w_d / Σw` and then one of its samples uniformly,
i.e. sample `i` of dataset `d` has probability `w_d / (Σw · n_d)`; draws are with replacement, so a small dataset with
a large weight repeats within an epoch, as mixing requires.

With `batch_size`, every batch is drawn from one dataset (picked with probability `w_d / Σw`, then `batch_size` of
its samples uniformly): each dataset's expected share of the samples is the same, and a batch is padded only to the
longest sample of one task, not to the longest of any task (a short classification answer no longer pays for a long
dialogue's padding).
"""

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class MixtureSampler(Sampler[int]):
    """
    Args:
        dataset_names: the source dataset of every sample, in dataset order.
        weights: mixture weight per dataset name (need not sum to 1). Every name in `dataset_names` needs a weight.
        num_samples: indices per epoch (default: the dataset length).
        seed: base seed; epoch `e` draws with `seed + e`, so every process of a distributed run draws the same
            sequence (the accelerator then hands each process its own slice of it).
        batch_size: when given, each run of `batch_size` consecutive indices (one per-device batch) comes from one
            dataset; its samples are distinct when the dataset has that many.
    """

    def __init__(
        self,
        dataset_names: Sequence[str],
        weights: dict[str, float],
        num_samples=None,
        seed: int = 0,
        batch_size: int | None = None,
    ):
        missing = sorted(set(dataset_names) - set(weights))
        if missing:
            raise ValueError(f"No mixture weight for datasets {missing}; weights were given for {sorted(weights)}.")
        if any(weight < 0 for weight in weights.values()):
            raise ValueError(f"Mixture weights must be non-negative, got {weights}.")
        counts = {name: 0 for name in weights}
        for name in dataset_names:
            counts[name] += 1
        present = {name: weight for name, weight in weights.items() if counts[name] > 0}
        total = sum(present.values())
        if total <= 0:
            raise ValueError(f"The mixture weights of the datasets present sum to {total}; nothing can be drawn.")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.probabilities = torch.tensor(
            [present.get(name, 0.0) / (total * counts[name]) for name in dataset_names], dtype=torch.float64
        )
        self.num_samples = len(dataset_names) if num_samples is None else int(num_samples)
        self.seed = seed
        self.epoch = 0
        self.batch_size = batch_size
        names = list(present)
        self.dataset_probabilities = torch.tensor([present[name] / total for name in names], dtype=torch.float64)
        self.members = [torch.tensor([i for i, n in enumerate(dataset_names) if n == name]) for name in names]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.batch_size is None:
            indices = torch.multinomial(self.probabilities, self.num_samples, replacement=True, generator=generator)
            return iter(indices.tolist())
        batches = -(-self.num_samples // self.batch_size)
        chosen = torch.multinomial(self.dataset_probabilities, batches, replacement=True, generator=generator)
        indices = []
        for dataset in chosen.tolist():
            members = self.members[dataset]
            if len(members) >= self.batch_size:
                rows = torch.randperm(len(members), generator=generator)[: self.batch_size]
            else:
                rows = torch.randint(len(members), (self.batch_size,), generator=generator)
            indices += members[rows].tolist()
        return iter(indices[: self.num_samples])
