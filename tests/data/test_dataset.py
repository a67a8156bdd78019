"""Splits decoded lazily, per sample; the data module's loaders never hand BatchNorm a batch of one."""

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data.datamodule import EpochShuffle, OcclusionDataModule
from pipeline.data.dataset import OcclusionDataset, SplitFiles, SplitTensors, load_split, write_manifest, write_sample
from pipeline.data.synthetic import render_sample

OCCLUDERS = {"face_mask": 1.0, "box": 1.0}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    rows = [write_sample(root, f"{i:03d}", render_sample(0, i, 32, OCCLUDERS, (0.1, 0.4)), "train" if i < 9 else "val")
            for i in range(12)]
    write_manifest(root, rows)
    return root


def test_a_split_holds_no_pixels_until_asked(dataset):
    train = load_split(dataset, "train")
    assert isinstance(train, SplitFiles) and len(train) == 9 and train.ids[0] == "000"
    assert train.mask_ratio.shape == (9,) and len(train.occluder_type) == 9
    assert not [name for name, value in vars(train).items() if isinstance(value, torch.Tensor) and value.dim() > 1]


def test_select_and_chunks_decode_the_files(dataset):
    train = load_split(dataset, "train")
    part = train.select(2, 5)
    assert isinstance(part, SplitTensors) and part.ids == ["002", "003", "004"]
    assert part.occluded_image.shape == (3, 3, 32, 32) and part.occluder_mask.shape == (3, 1, 32, 32)
    assert part.label_map.shape == (3, 32, 32) and part.label_map.dtype == torch.uint8
    png = np.asarray(Image.open(dataset / "images" / "003.png").convert("RGB"))
    torch.testing.assert_close(part.occluded_image[1], torch.from_numpy(png.copy()).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(part.mask_ratio, train.mask_ratio[2:5])
    chunks = list(train.chunks(4))
    assert [len(c) for c in chunks] == [4, 4, 1]
    assert sum((c.ids for c in chunks), []) == train.ids
    assert train.select(7, 100).ids == ["007", "008"]  # like slicing: stop clipped to the split


def test_the_dataset_decodes_and_resizes_one_sample(dataset):
    train = load_split(dataset, "train")
    item = OcclusionDataset(train, 16)[3]
    assert item["occluded_image"].shape == (3, 16, 16) and item["occluder_mask"].shape == (1, 16, 16)
    assert item["label_map"].shape == (16, 16) and item["label_map"].dtype == torch.long
    assert set(item["occluder_mask"].unique().tolist()) <= {0.0, 1.0}
    same_size = OcclusionDataset(train)[3]
    torch.testing.assert_close(same_size["clean_image"], train.select(3, 4).clean_image[0])


@pytest.mark.parametrize("resolution", [None, 32, 20])
def test_a_split_decoded_into_memory_gives_every_sample_bit_for_bit(dataset, resolution):
    train = load_split(dataset, "train")
    cached, from_files = OcclusionDataset(train, resolution, cache_bytes=2**20), OcclusionDataset(train, resolution)
    assert cached.pixels is not None and from_files.pixels is None
    assert cached.pixels.occluded_image.dtype == torch.uint8 and cached.pixels.occluder_mask.dtype == torch.bool
    for index in range(len(train)):
        a, b = cached[index], from_files[index]
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (index, key)


def test_only_a_split_that_fits_the_budget_is_held_in_memory(dataset):
    train, val = load_split(dataset, "train"), load_split(dataset, "val")   # 9 and 3 samples of 32 x 32
    per_sample = 32 * 32 * 8   # uint8 RGB twice, a bool mask, uint8 labels
    assert OcclusionDataset(train, cache_bytes=9 * per_sample).pixels is not None
    assert OcclusionDataset(train, cache_bytes=9 * per_sample - 1).pixels is None
    # The budget is the train and val splits' together: the train split first.
    both = OcclusionDataModule(train, val, 32, batch_size=4, seed=0, cache_bytes=12 * per_sample)
    assert both.train.pixels is not None and both.val.pixels is not None
    train_only = OcclusionDataModule(train, val, 32, batch_size=4, seed=0, cache_bytes=11 * per_sample)
    assert train_only.train.pixels is not None and train_only.val.pixels is None
    assert OcclusionDataModule(train, val, 32, batch_size=4, seed=0).train.pixels is None   # 0: decode as drawn


def test_training_batches_are_full_so_batch_norm_never_sees_one_sample(dataset):
    train, val = load_split(dataset, "train"), load_split(dataset, "val")   # 9 and 3 samples
    data = OcclusionDataModule(train, val, 32, batch_size=4, seed=0)
    assert [len(b["occluded_image"]) for b in data.train_dataloader()] == [4, 4]   # the 9th would be alone
    assert [len(b["occluded_image"]) for b in data.val_dataloader()] == [3]        # validation sees every sample
    small = OcclusionDataModule(val, val, 32, batch_size=8, seed=0)
    assert [len(b["occluded_image"]) for b in small.train_dataloader()] == [3]     # fewer than a batch: kept


def test_the_shuffle_depends_on_seed_and_epoch_only():
    first, again = EpochShuffle(50, seed=3), EpochShuffle(50, seed=3)
    orders = []
    for epoch in (0, 1):
        first.set_epoch(epoch)
        orders.append(list(first))
    again.set_epoch(1)
    assert orders[0] != orders[1] and list(again) == orders[1] and sorted(orders[0]) == list(range(50))
