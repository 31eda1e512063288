"""Datasets and augmentations: box geometry, determinism, negatives, label mapping, unlabeled stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wsi_pipeline.config import AugmentConfig
from wsi_pipeline.data.augment import augment, colour_jitter, hflip, random_crop, rot90, vflip
from wsi_pipeline.data.datasets import CocoPatchDataset, PatchStoreDataset


@pytest.mark.parametrize("transform", [hflip, vflip, rot90])
def test_geometric_transforms_move_boxes_with_pixels(transform):
    img = np.zeros((100, 200, 3), np.uint8)
    img[10:20, 30:50] = 255
    out, boxes = transform(img, np.array([[30, 10, 50, 20]], np.float32))
    ys, xs = np.nonzero(out[..., 0])
    assert boxes.tolist() == [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]


def test_augment_is_deterministic_for_a_seed_and_keeps_boxes_on_their_pixels():
    rng = np.random.default_rng(0)
    img = np.full((64, 96, 3), 230, np.uint8)
    img[5:15, 40:60] = 20
    boxes = np.array([[40, 5, 60, 15]], np.float32)
    cfg = AugmentConfig(hue=0.0)
    a = augment(img, boxes, cfg, np.random.default_rng(7))
    b = augment(img, boxes, cfg, np.random.default_rng(7))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for seed in range(8):
        out, bx = augment(img, boxes, cfg, np.random.default_rng(seed + int(rng.integers(100))))
        x0, y0, x1, y1 = bx[0].astype(int)
        assert out[y0:y1, x0:x1].mean() < 120 and out.mean() > 150  # the dark object is still in its box


def test_colour_jitter_single_pass_equals_the_ops_applied_one_by_one():
    """The composed affine map gives what brightness, contrast and saturation give applied in turn."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    cfg = AugmentConfig(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.0)
    for seed in range(5):
        draws = np.random.default_rng(seed)
        ops, factors = draws.permutation(4), [draws.uniform(0.7, 1.3) for _ in range(3)]
        ref = img.astype(np.float64)
        for op in ops:
            if op == 0:
                ref = ref * factors[0]
            elif op == 1:
                ref = (ref - ref.mean()) * factors[1] + ref.mean()
            elif op == 2:
                grey = (ref @ np.array([0.299, 0.587, 0.114]))[..., None]
                ref = (ref - grey) * factors[2] + grey
        ref = np.clip(np.rint(ref), 0, 255)
        out = colour_jitter(img, cfg, np.random.default_rng(seed))
        assert np.abs(out.astype(int) - ref).max() <= 1


class _Draws:
    """A stand-in generator: a fixed order of the four colour ops and fixed factors."""

    def __init__(self, order: list[int], factors: list[float]):
        self.order, self.factors = order, list(factors)

    def permutation(self, n: int) -> np.ndarray:
        return np.array(self.order)

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        return self.factors.pop(0)


def test_colour_jitter_by_hand():
    """Factors (brightness, contrast, saturation, hue) chosen by hand on tiny images."""
    cfg = AugmentConfig()
    grey = np.full((2, 2, 3), 100, np.uint8)
    assert np.array_equal(colour_jitter(grey, cfg, _Draws([0, 1, 2, 3], [1.2, 1.0, 1.0, 0.0])), grey + 20)
    two = np.array([[[50, 50, 50], [150, 150, 150]]], np.uint8)  # mean 100: contrast 0.5 gives 75 / 125
    out = colour_jitter(two, cfg, _Draws([1, 0, 2, 3], [1.0, 0.5, 1.0, 0.0]))
    assert out[0, :, 0].tolist() == [75, 125]
    # brightness 2 then contrast 0.5: the contrast centre is the brightened mean, 200 -> 150 / 250
    out = colour_jitter(two, cfg, _Draws([0, 1, 2, 3], [2.0, 0.5, 1.0, 0.0]))
    assert out[0, :, 0].tolist() == [150, 250]
    red = np.array([[[200, 0, 0]]], np.uint8)  # saturation 0: every channel becomes the luma 0.299 * 200
    assert colour_jitter(red, cfg, _Draws([2, 0, 1, 3], [1.0, 1.0, 0.0, 0.0]))[0, 0].tolist() == [60, 60, 60]
    shifted = colour_jitter(red, cfg, _Draws([3, 0, 1, 2], [1.0, 1.0, 1.0, 1 / 3]))  # hue +120 deg: red -> green
    assert shifted[0, 0].argmax() == 1 and shifted[0, 0, 0] < 10


class _Ints:
    """A stand-in generator for crops: scripted ``integers`` draws; records the bounds it was asked for."""

    def __init__(self, values: list[int]):
        self.values, self.calls = list(values), []

    def integers(self, low: int, high: int | None = None) -> int:
        self.calls.append((low, high))
        return self.values.pop(0)


def test_random_crop_window_and_clipped_boxes():
    image = np.arange(100 * 100 * 3, dtype=np.uint32).reshape(100, 100, 3)
    rng = _Ints([30, 20])
    crop, boxes, labels = random_crop(image, np.array([[50, 50, 70, 60]]), np.array([3]), 40, 0.5, rng)  # type: ignore[arg-type]
    assert rng.calls == [(61, None), (61, None)]  # x0 and y0 uniform in [0, 100 - 40]
    assert np.array_equal(crop, image[20:60, 30:70])
    assert boxes.tolist() == [[20, 30, 40, 40]] and labels.tolist() == [3]


def test_random_crop_redraws_windows_that_cut_a_lesion_below_min_visible():
    boxes, labels = np.array([[10, 10, 30, 30], [35, 10, 55, 30]]), np.array([1, 2])
    image = np.zeros((100, 100, 3), np.uint8)
    # 1st window (0, 0): box 1 is 5/20 inside, cut; 2nd window (20, 0): box 0 is exactly half inside, kept
    _, out, lab = random_crop(image, boxes, labels, 40, 0.5, _Ints([0, 0, 20, 0]))  # type: ignore[arg-type]
    assert out.tolist() == [[0, 10, 10, 30], [15, 10, 35, 30]] and lab.tolist() == [1, 2]
    # with one try the cutting window stays, and the cut lesion is dropped rather than kept as a sliver
    _, out, lab = random_crop(image, boxes, labels, 40, 0.5, _Ints([0, 0]), tries=1)  # type: ignore[arg-type]
    assert out.tolist() == [[10, 10, 30, 30]] and lab.tolist() == [1]
    # no window avoids every cut: the one cutting fewest is kept ((0, 25) cuts both boxes to 5/20)
    _, out, lab = random_crop(image, boxes, labels, 40, 0.5, _Ints([0, 0, 0, 25]), tries=2)  # type: ignore[arg-type]
    assert out.tolist() == [[10, 10, 30, 30]] and lab.tolist() == [1]


def test_random_crop_without_boxes_and_on_small_images():
    image = np.zeros((30, 100, 3), np.uint8)
    rng = _Ints([7, 0])
    crop, boxes, labels = random_crop(image, np.zeros((0, 4)), np.zeros(0), 40, 0.5, rng)  # type: ignore[arg-type]
    assert rng.calls == [(61, None), (1, None)] and crop.shape == (30, 40, 3)
    assert boxes.shape == (0, 4) and labels.shape == (0,)


def test_coco_dataset_crops_and_checks_the_resolution(tiny_dataset: Path):
    coco = tiny_dataset / "patches" / "train.json"
    full = CocoPatchDataset(coco)
    cropped = CocoPatchDataset(coco, seed=1, crop_size=320)
    for i in range(len(cropped)):
        image, target = cropped[i]
        assert image.shape[1:] == (min(320, full.images[i]["height"]), min(320, full.images[i]["width"]))
        b = target["boxes"]
        assert len(b) == len(target["labels"]) and ((b >= 0) & (b <= 320)).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    assert torch.equal(cropped[1][0], CocoPatchDataset(coco, seed=1, crop_size=320)[1][0])
    full.check_mpp(0.25)
    with pytest.raises(ValueError, match=r"train\.json: patch .* is at 0\.25 um/px but the model takes 0\.5"):
        full.check_mpp(0.5)


def test_coco_dataset_targets_negatives_and_determinism(tiny_dataset: Path):
    coco = tiny_dataset / "patches" / "train.json"
    plain = CocoPatchDataset(coco)
    data = json.loads(coco.read_text())
    assert len(plain) == len(data["images"])
    crowd = sum(a["iscrowd"] for a in data["annotations"])
    assert plain.ignored == crowd
    image, target = plain[0]
    assert image.dtype == torch.float32 and image.shape[0] == 3 and 0 <= image.min() <= image.max() <= 1
    assert target["boxes"].shape[1] == 4 and target["labels"].dtype == torch.int64
    assert set(target["labels"].tolist()) <= {1, 2, 3, 4}
    aug = CocoPatchDataset(coco, augment_cfg=AugmentConfig(), seed=3)
    first = aug[1][0]
    assert torch.equal(first, CocoPatchDataset(coco, augment_cfg=AugmentConfig(), seed=3)[1][0])
    assert torch.equal(first, aug[(1, 0)][0]) and not torch.equal(first, aug[(1, 1)][0])  # the epoch reseeds


def test_only_slides_keeps_those_slides_patches_and_boxes(tiny_dataset: Path):
    full = CocoPatchDataset(tiny_dataset / "patches" / "train.json")
    keep = set(full.slide_ids()[:1])
    part = full.only_slides(keep)
    assert part.slide_ids() == sorted(keep) and 0 < len(part) < len(full)
    assert {part.image_id(i) for i in range(len(part))} == set(part.annotations)
    first = next(i for i in range(len(full)) if full.images[i]["slide_id"] in keep)
    assert np.array_equal(part.load(0)[1], full.load(first)[1])  # same patch, same boxes


def test_negative_patches_have_empty_targets(tmp_path: Path):
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 240, np.uint8)).save(tmp_path / "neg.png")
    (tmp_path / "c.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "neg.png", "width": 64, "height": 64}],
                "annotations": [],
                "categories": [
                    {"id": 7, "name": "Low-grade squamous intraepithelial lesion"},
                    {"id": 8, "name": "NILM"},
                ],
            }
        )
    )
    ds = CocoPatchDataset(tmp_path / "c.json", image_root=tmp_path)
    _, target = ds[0]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert ds.categories == {7: 2, 8: None}  # Bethesda name -> LSIL; NILM is not a detector class


def test_unreadable_coco_is_a_clear_error(tmp_path: Path):
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match=r"bad\.json: not a COCO file"):
        CocoPatchDataset(tmp_path / "bad.json")


def test_patch_store_dataset(tiny_dataset: Path, tmp_path: Path):
    from wsi_pipeline.config import load_config
    from wsi_pipeline.tiling.batch import tile_slides

    tile_slides(
        [tiny_dataset / "slides" / "U0001.tiff"], tmp_path, load_config(None, ["tile.patch_size=512"]), progress=False
    )
    ds = PatchStoreDataset([tmp_path / "U0001.zarr"], augment_cfg=AugmentConfig(), seed=1)
    image, meta = ds[0]
    assert image.shape == (3, 512, 512) and meta["slide_id"] == "U0001" and "foreground" in meta


def test_geojson_images_dataset_on_the_cric_fields(shared_data: Path):
    from wsi_pipeline.data.datasets import GeoJsonImageDataset

    ds = GeoJsonImageDataset(shared_data / "cric-sample", augment_cfg=AugmentConfig(), seed=0)
    assert len(ds) == 2
    assert ds.tally.mapped == {"LSIL": 13} and sum(ds.tally.other.values()) == 42
    sizes = sorted(len(ds[i][1]["labels"]) for i in range(2))
    assert sizes == [0, 13]  # the NILM-only field is a negative
    image, target = ds[(0, 3)]
    assert image.shape == (3, 1020, 1376) or image.shape == (3, 1376, 1020)  # rot90 may turn it
    assert (target["labels"] == 2).all()
