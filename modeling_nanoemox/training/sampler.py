# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Weighted multi-dataset sampling: the recipe's mixture weights are the expected share of each dataset in a batch.

The authors' `ratio` subsamples each dataset once and then draws uniformly per dataset, so their numbers are not
mixing weights. Here every draw picks dataset `d` with probability `w_d / Σw` and then one of its samples uniformly,
i.e. sample `i` of dataset `d` has probability `w_d / (Σw · n_d)`; draws are with replacement, so a small dataset with
a large weight repeats within an epoch, as mixing requires.
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
    """

    def __init__(self, dataset_names: Sequence[str], weights: dict[str, float], num_samples=None, seed: int = 0):
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
        self.probabilities = torch.tensor(
            [present.get(name, 0.0) / (total * counts[name]) for name in dataset_names], dtype=torch.float64
        )
        self.num_samples = len(dataset_names) if num_samples is None else int(num_samples)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        indices = torch.multinomial(self.probabilities, self.num_samples, replacement=True, generator=generator)
        return iter(indices.tolist())
