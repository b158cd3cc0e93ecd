"""Pretraining batches: multi-view samples whose randomness depends only on (seed, epoch, index).

The sampler yields keys ``epoch * N + index``; the data set derives the image index and a per-sample
generator from the key, so views are the same whatever the number of workers or processes, and a
resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler

from core.data.base import ImageDataset
from core.seeding import sample_generator
from core.views import ViewMaker

#: A batch of images: stacked when they share a size, else one tensor each.
Images = torch.Tensor | list[torch.Tensor]


class ViewDataset(Dataset):
    """Batches of views (``render=True``), or of the raw images and the views' parameters, for the
    training device to render (``views.render: device``)."""

    def __init__(
        self,
        images: ImageDataset,
        views: ViewMaker,
        seed: int,
        render: bool = True,
        encoded: bool = False,
    ):
        if encoded and render:
            raise ValueError("undecoded images (encoded=True) need render=False")
        self.images, self.views, self.seed = images, views, seed
        self.render, self.encoded = render, encoded

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        views, params = self.__getitems__([key])
        return views[0], params[0]

    def __getitems__(self, keys: list[int]) -> tuple[Images, torch.Tensor]:
        """A whole batch, rendered at once (the DataLoader calls this with a batch's keys): views
        [B, V, 3, S, S] uint8 and parameters [B, V, P]; the same pixels as one key at a time.
        Unrendered: the images instead (uint8 [B, 3, H, W], or a list when their sizes differ);
        with ``encoded``, a list holding each JPEG's bytes (uint8 [N]) for ``decode_on``."""
        images, generators = [], []
        sizes: list[tuple[int, int]] = []
        for key in keys:
            epoch, index = divmod(int(key), len(self.images))
            raw = self.images.encoded(index) if self.encoded else None
            image = raw[0] if raw is not None else self.images[index][0]
            images.append(image)
            sizes.append(
                (raw[1], raw[2]) if raw is not None else (image.shape[-2], image.shape[-1])
            )
            generators.append(sample_generator(self.seed, epoch, index))
        if self.render:
            return self.views.batch(images, generators)
        params = self.views.sample_sizes(sizes, generators)
        same = all(image.shape == images[0].shape and image.dim() == 3 for image in images)
        return (torch.stack(images) if same else images), params


def collate_rendered(batch: tuple[Images, torch.Tensor]) -> tuple[Images, torch.Tensor]:
    """The DataLoader's collate for ``ViewDataset``: ``__getitems__`` already returns the batch."""
    return batch


class EpochSampler(Sampler[int]):
    """Shuffled keys of one epoch for this process (equal shares, remainder dropped), from ``skip``
    on.

    Call ``set_epoch(epoch, skip)`` before each epoch; ``skip`` drops that many of this process's
    samples (used when resuming in the middle of an epoch)."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.per_rank = (size // (batch_size * world_size)) * batch_size  # whole batches only
        if self.per_rank == 0:
            raise ValueError(
                f"{size} images cannot fill one batch of {batch_size} on {world_size} process(es): "
                "lower train.batch_size or use more data"
            )
        self.epoch, self.skip = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.per_rank // self.batch_size

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        if not 0 <= skip <= self.per_rank:
            raise ValueError(
                f"cannot skip {skip} samples of an epoch of {self.per_rank} on this process"
            )
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        order = torch.randperm(
            self.size, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        )
        mine = order[self.rank :: self.world_size][: self.per_rank]
        return iter((mine[self.skip :] + self.epoch * self.size).tolist())

    def __len__(self) -> int:
        return self.per_rank - self.skip
