"""Training datasets: labeled COCO patches and unlabeled patch stores, as torch tensors.

Images are ``(3, H, W)`` float32 in [0, 1]; targets follow torchvision detection (``boxes`` xyxy in patch
pixels, ``labels`` lesion class ids 1..4). Patches without lesions are valid negatives (empty targets).
COCO ``iscrowd`` boxes (lesions cut by the patch edge) are left out of the training targets: torchvision's
detector has no ignore regions. Labeled datasets can train on random crops (``crop_size``, see
:func:`~wsi_pipeline.data.augment.random_crop`); crops and augmentation are seeded by (seed, epoch, index), and the
training sampler hands every index its epoch (``dataset[(index, epoch)]``), so the same seed gives the same
samples in any worker layout and after a resume.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from wsi_pipeline.config import AugmentConfig
from wsi_pipeline.data.augment import augment, random_crop
from wsi_pipeline.data.coco import CocoFile, read_coco
from wsi_pipeline.data.image import read_rgb, to_tensor
from wsi_pipeline.taxonomy import LabelTally

log = logging.getLogger(__name__)


class _Seeded:
    """Items are addressed by ``(index, epoch)`` (the training sampler's keys) or by ``index`` (epoch 0);
    the epoch seeds the augmentation, so the sampler, not dataset state, decides it in any worker."""

    seed: int = 0

    def _key(self, key: int | tuple[int, int]) -> tuple[int, int]:
        return (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), 0)

    def _rng(self, index: int, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, index])


class _BoxDataset(_Seeded, Dataset):
    """Shared item assembly: subclasses provide ``load(index) -> (image, boxes, labels)``."""

    augment_cfg: AugmentConfig | None = None
    crop_size: int | None = None
    crop_min_visible: float = 0.5

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def image_id(self, index: int) -> int:
        return index

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index, epoch = self._key(key)
        image, boxes, labels = self.load(index)
        rng = self._rng(index, epoch)
        if self.crop_size is not None:
            image, boxes, labels = random_crop(image, boxes, labels, self.crop_size, self.crop_min_visible, rng)
        if self.augment_cfg is not None:
            image, boxes = augment(image, boxes, self.augment_cfg, rng)
        target = {
            "boxes": torch.from_numpy(np.asarray(boxes, np.float32)).reshape(-1, 4),
            "labels": torch.from_numpy(np.asarray(labels, np.int64)),
            "image_id": torch.tensor(self.image_id(index)),
        }
        return to_tensor(image), target


class CocoPatchDataset(_BoxDataset):
    """Labeled patches from a COCO file (``synth --export-patches``, ``tile --annotations``, or external).

    Category names are mapped through the taxonomy (``"Low-grade squamous intraepithelial lesion"``
    becomes LSIL); categories outside the four classes are counted and reported, their boxes dropped.
    """

    def __init__(
        self,
        coco: str | Path | CocoFile,
        image_root: str | Path | None = None,
        augment_cfg: AugmentConfig | None = None,
        seed: int = 0,
        crop_size: int | None = None,
        crop_min_visible: float = 0.5,
    ):
        coco = coco if isinstance(coco, CocoFile) else read_coco(coco)
        if any(v is None for v in coco.categories.values()):
            log.warning("%s: categories not used for training: %s", coco.path, coco.labels)
        self.ignored = 0
        annotations: dict[int, list[dict[str, Any]]] = {}
        for img in coco.images:
            kept = annotations[int(img["id"])] = []
            for ann in coco.annotations[int(img["id"])]:
                if ann.get("iscrowd") or coco.lesion_id(ann) is None:
                    self.ignored += 1
                else:
                    kept.append(ann)
        self.coco = coco
        self.path = coco.path
        self.info_mpp = coco.info.get("mpp")
        self.root = Path(image_root) if image_root else coco.path.parent / coco.info.get("image_root", coco.path.stem)
        self.images = list(coco.images)
        self.annotations = annotations
        self.categories = coco.categories
        self.augment_cfg = augment_cfg
        self.seed = seed
        self.crop_size, self.crop_min_visible = crop_size, crop_min_visible

    def __len__(self) -> int:
        return len(self.images)

    def image_id(self, index: int) -> int:
        return int(self.images[index]["id"])

    def check_mpp(self, expected: float) -> None:
        """Raise when the patches' recorded resolution (COCO image or ``info`` ``mpp``) is not ``expected``
        um/px (within 2%); patches without a recorded ``mpp`` (external COCO files) are taken as they are."""
        for img in self.images:
            mpp = img.get("mpp", self.info_mpp)
            if mpp is not None and abs(float(mpp) - expected) > 0.02 * expected:
                raise ValueError(
                    f"{self.path}: patch {img['file_name']} is at {float(mpp):g} um/px but the model takes "
                    f"{expected:g} um/px (model.input_mpp); tile at that resolution or set model.input_mpp"
                )

    def slide_ids(self) -> list[str]:
        return sorted({str(img.get("slide_id", "")) for img in self.images})

    def only_slides(self, slides: set[str]) -> CocoPatchDataset:
        """A copy holding only the patches of ``slides`` (by the images' ``slide_id``)."""
        subset = copy.copy(self)
        subset.images = [img for img in self.images if str(img.get("slide_id", "")) in slides]
        subset.annotations = {int(img["id"]): self.annotations[int(img["id"])] for img in subset.images}
        return subset

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw ``(image uint8 HWC, boxes (n, 4) xyxy, labels (n,))`` of one patch, unaugmented."""
        info = self.images[index]
        image = read_rgb(self.root / info["file_name"])
        anns = self.annotations[int(info["id"])]
        boxes = np.array(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
            np.float32,
        ).reshape(-1, 4)
        labels = np.array([self.categories[int(a["category_id"])] for a in anns], np.int64)
        return image, boxes, labels


class GeoJsonImageDataset(_BoxDataset):
    """Labeled images with QuPath (or third-party) GeoJSON next to them: ``<name>.<ext>`` and the GeoJSON
    that names ``<name>`` as a whole token (``cric-<name>-gt.geojson``; or ``pattern``, e.g.
    ``"{slide}-gt.geojson"``; :mod:`wsi_pipeline.data.annotation_match`). Boxes are the annotations'
    bounding boxes in image pixels; labels go through the taxonomy and the rest is counted in
    ``self.tally``. For training on whole fields without cutting patches first."""

    def __init__(
        self,
        folder: str | Path,
        augment_cfg: AugmentConfig | None = None,
        seed: int = 0,
        crop_size: int | None = None,
        crop_min_visible: float = 0.5,
        pattern: str | None = None,
    ):
        from wsi_pipeline.data.annotation_match import pair_annotations
        from wsi_pipeline.data.geojson_io import read_geojson
        from wsi_pipeline.slide.open import IMAGE_SUFFIXES
        from wsi_pipeline.taxonomy import BY_CODE

        folder = Path(folder)
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        pairing = pair_annotations([image.stem for image in images], folder, pattern)
        if pairing.problems:
            stem, reason = next(iter(pairing.problems.items()))
            image = next(i for i in images if i.stem == stem)
            raise ValueError(f"{image}: {reason}")
        self.tally = LabelTally()
        self.items: list[tuple[Path, np.ndarray, np.ndarray]] = []
        for image in images:
            anns = read_geojson(pairing.files[image.stem], self.tally)
            boxes = np.array([a.box.xyxy for a in anns], np.float32).reshape(-1, 4)
            labels = np.array([BY_CODE[a.label].id for a in anns], np.int64)
            self.items.append((image, boxes, labels))
        self.augment_cfg = augment_cfg
        self.seed = seed
        self.crop_size, self.crop_min_visible = crop_size, crop_min_visible

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        path, boxes, labels = self.items[index]
        return read_rgb(path), boxes.copy(), labels.copy()


class PatchStoreDataset(_Seeded, Dataset):
    """Unlabeled patches from ``tile`` patch stores (the unlabeled pool): ``(image, meta)`` pairs."""

    def __init__(self, stores: list, augment_cfg: AugmentConfig | None = None, seed: int = 0):
        """``stores``: paths, or :class:`~wsi_pipeline.data.patch_store.PatchStore` objects already open."""
        from wsi_pipeline.data.patch_store import PatchStore

        self.stores = [p if isinstance(p, PatchStore) else PatchStore(p) for p in stores]
        self.index = [(s, i) for s, store in enumerate(self.stores) for i in range(len(store))]
        self.augment_cfg = augment_cfg
        self.seed = seed

    def __len__(self) -> int:
        return len(self.index)

    def slide_ids(self) -> list[str]:
        return sorted({str(store.attrs["slide_id"]) for store in self.stores})

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, Any]]:
        index, epoch = self._key(key)
        s, i = self.index[index]
        store = self.stores[s]
        image = store[i]
        if self.augment_cfg is not None:
            image, _ = augment(image, np.zeros((0, 4), np.float32), self.augment_cfg, self._rng(index, epoch))
        return to_tensor(image), {"slide_id": store.attrs["slide_id"], **store.row(i)}
