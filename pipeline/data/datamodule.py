"""The training and validation splits as Lightning loads them: decoded once into memory when they fit
the trainer's `cache_mb` (else per sample as drawn), resized to the network's training resolution,
shuffled per epoch from the seed."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from pipeline.data.dataset import OcclusionDataset, SplitFiles, SplitTensors


class EpochShuffle(Sampler[int]):
    """A random order per epoch drawn from (seed, epoch), so a resumed run sees the same order in its
    remaining epochs as an uninterrupted one (Lightning calls `set_epoch` before each epoch)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class OcclusionDataModule(L.LightningDataModule):
    """Owns the train and val splits of one training stage and how they are loaded."""

    def __init__(self, train: SplitFiles | SplitTensors, val: SplitFiles | SplitTensors, resolution: int,
                 batch_size: int, seed: int, num_workers: int = 0, pin_memory: bool = False,
                 cache_bytes: int = 0) -> None:
        super().__init__()
        self.train = OcclusionDataset(train, resolution, cache_bytes)
        self.val = OcclusionDataset(val, resolution, max(0, cache_bytes - self.train_cached_bytes()))
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.pin_memory = pin_memory

    def train_cached_bytes(self) -> int:
        pixels = self.train.pixels
        return 0 if pixels is None else sum(t.numel() * t.element_size() for t in vars(pixels).values())

    def _loader(self, dataset: OcclusionDataset, **kwargs: object) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0, **kwargs)

    def train_dataloader(self) -> DataLoader:
        # A last batch of one would reach BatchNorm in training mode (an error, or statistics of one
        # sample): drop the incomplete batch whenever the split fills at least one.
        return self._loader(self.train, sampler=EpochShuffle(len(self.train), self.seed),
                            drop_last=len(self.train) >= self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val)
