import numpy as np
import pytest
import torch

from core.base.errors import ImageDecodeError
from core.pixels.images import ImageReader, list_images
from ssl.augment import pair_views
from ssl.dataset import EpochSampler, ViewDataset


def test_epoch_sampler_reshuffles_per_epoch_and_draws_subsets():
    sampler = EpochSampler(10, seed=1, per_epoch=4)
    first = list(sampler)
    assert len(first) == len(sampler) == 4 and all(0 <= i < 10 for i in first)
    assert list(sampler) == first  # same epoch, same draw
    sampler.set_epoch(3)
    third = list(sampler)
    assert all(30 <= i < 40 for i in third) and [i - 30 for i in third] != first
    assert sorted(EpochSampler(10, seed=1)) == list(range(10))  # no subset: a permutation


def test_corrupt_images_stop_with_the_file_named_or_are_replaced(tmp_path, sample_root):
    paths = list_images(sample_root / "images" / "studio")[:3]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    views = pair_views(32, (0.5, 1.0), (0.5,) * 3, (0.5,) * 3, photo_p=1.0, max_side=64)
    strict = ViewDataset([broken, *paths], ImageReader(), views, seed=0)
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        strict[0]
    lenient = ViewDataset([broken, *paths], ImageReader(), views, seed=0, skip_corrupt=True)
    replaced, next_image = lenient[0], lenient[1]
    assert all(torch.equal(a, b) for a, b in zip(replaced, next_image, strict=True))
    # The epoch travels inside the index: the same image in another epoch gets other views.
    assert not torch.equal(lenient[1][1], lenient[1 + 4][1])
    assert np.isfinite(lenient[2][0].numpy()).all()
