"""The generated dataset: real WSI files, determinism, ground truth that matches the pixels."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from wsi_pipeline.config import SynthConfig, load_config
from wsi_pipeline.data.geojson_io import read_geojson
from wsi_pipeline.slide.backends import TiffReader
from wsi_pipeline.synth import GENERATOR_VERSION
from wsi_pipeline.synth.dataset import _params_hash, generate_dataset, make_slide, plan_slides, scene_annotations
from wsi_pipeline.synth.render import render_region
from wsi_pipeline.synth.style import SlideStyle


def _slides(root: Path) -> list[Path]:
    return sorted((root / "slides").glob("*.tiff"))


def test_layout_and_split_by_slide(tiny_dataset: Path):
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    roles = {s["slide_id"]: s["role"] for s in manifest["slides"]}
    assert roles == {"L0001": "train", "L0002": "test", "L0003": "train", "U0001": "unlabeled"} or sorted(
        roles.values()
    ) == ["test", "train", "train", "unlabeled"]
    for sid in roles:
        for suffix in (".tiff", ".geojson", ".json", ".quicklook.png"):
            assert (tiny_dataset / "slides" / f"{sid}{suffix}").is_file()
    assert (tiny_dataset / "config.yaml").is_file()
    assert manifest["generator_version"] == GENERATOR_VERSION
    assert not list(tiny_dataset.rglob(".tmp-*")), "temporary files left behind"


def test_openslide_and_tifffile_open_slides_with_mpp(tiny_dataset: Path):
    path = _slides(tiny_dataset)[0]
    slide = openslide.OpenSlide(path)
    assert slide.properties["openslide.vendor"] == "generic-tiff"
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(0.25)
    assert slide.level_dimensions == ((1600, 1400), (400, 350))
    assert slide.level_downsamples == pytest.approx((1.0, 4.0))
    region = np.asarray(slide.read_region((300, 200), 0, (256, 128)).convert("RGB"))
    with TiffReader(path) as tif:
        assert tif.info.mpp == pytest.approx(0.25) and tif.info.vendor == "generic-tiff"
        assert [(lv.width, lv.height) for lv in tif.info.levels] == [(1600, 1400), (400, 350)]
        same = tif.read_level_region(0, 300, 200, 256, 128)
    assert np.array_equal(region, same)  # both decode the same JPEG tiles
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        assert page.is_tiled and page.compression == tifffile.COMPRESSION.JPEG
        assert (page.tilewidth, page.tilelength) == (256, 256)


def test_pyramid_level_is_the_block_mean_of_level0(tiny_dataset: Path):
    with TiffReader(_slides(tiny_dataset)[0]) as tif:
        full = tif.read_level_region(0, 0, 0, 1600, 1400).astype(np.float32)
        small = tif.read_level(1).astype(np.float32)
    expected = full.reshape(350, 4, 400, 4, 3).mean(axis=(1, 3))
    error = np.abs(small - expected).mean()
    assert error < 3.0  # both levels are JPEG at quality 85
    assert np.abs(small[:, 1:] - expected[:, :-1]).mean() > 1.5 * error  # a one-pixel shift is worse


def test_same_seed_same_pixels_and_labels_different_seed_differs(tmp_path: Path, tiny_config):
    overrides = [
        "synth.labeled_slides=1",
        "synth.unlabeled_slides=0",
        "synth.width=700",
        "synth.height=600",
        "synth.negative_slide_fraction=0",
        "synth.lesions_per_mm2=80",
        "synth.quicklook_size=256",
    ]
    a = generate_dataset(load_config(None, overrides), tmp_path / "a", workers=1, progress=False)
    b = generate_dataset(load_config(None, overrides), tmp_path / "b", workers=1, progress=False)
    c = generate_dataset(load_config(None, [*overrides, "synth.seed=1"]), tmp_path / "c", workers=1, progress=False)

    def content(root: Path) -> tuple[np.ndarray, str]:
        return tifffile.imread(root / "slides" / "L0001.tiff"), (root / "slides" / "L0001.geojson").read_text()

    (pa, la), (pb, lb), (pc, lc) = content(a.out), content(b.out), content(c.out)
    assert np.array_equal(pa, pb) and la == lb
    assert a.manifests[0]["tiff_sha256"] == b.manifests[0]["tiff_sha256"]
    assert not np.array_equal(pa, pc) and la != lc


def test_extra_test_slides_extend_the_test_split_and_keep_every_other_slide():
    base = SynthConfig(seed=5, labeled_slides=10, unlabeled_slides=3, split=(0.6, 0.2, 0.2))
    plans = plan_slides(base)
    more = plan_slides(dataclasses.replace(base, extra_test_slides=4))
    assert [p for p in more if p.slide_id.startswith("U")] == [p for p in plans if p.slide_id.startswith("U")]
    assert more[:10] == plans[:10]  # same ids, roles, random streams: the same slides
    assert [(p.slide_id, p.role, p.stream, p.index) for p in more[10:14]] == [
        (f"L{i + 1:04d}", "test", 1, i) for i in range(10, 14)
    ]
    assert sum(p.role == "test" for p in more) == sum(p.role == "test" for p in plans) + 4 == 6
    # a generated slide of the smaller dataset stays current (not regenerated) in the larger one
    assert _params_hash(base, plans[0]) == _params_hash(dataclasses.replace(base, extra_test_slides=4), more[0])


def test_extra_val_slides_come_after_the_extra_test_slides_and_keep_every_other_slide():
    base = SynthConfig(seed=5, labeled_slides=10, unlabeled_slides=3, split=(0.6, 0.2, 0.2), extra_test_slides=4)
    plans = plan_slides(base)
    more = plan_slides(dataclasses.replace(base, extra_val_slides=3))
    assert more[:14] == plans[:14] and more[17:] == plans[14:]  # every slide of the smaller dataset, unchanged
    assert [(p.slide_id, p.role, p.stream, p.index) for p in more[14:17]] == [
        (f"L{i + 1:04d}", "val", 1, i) for i in range(14, 17)
    ]
    assert sum(p.role == "val" for p in more) == sum(p.role == "val" for p in plans) + 3 == 5
    assert _params_hash(base, plans[0]) == _params_hash(dataclasses.replace(base, extra_val_slides=3), more[0])


def test_ground_truth_boxes_inside_slide_and_around_nuclei(tiny_dataset: Path, tiny_config):
    cfg = tiny_config.synth
    for plan in plan_slides(cfg):
        _, scene, _ = make_slide(cfg, plan)
        written = read_geojson(tiny_dataset / "slides" / f"{plan.slide_id}.geojson")
        assert [(a.label, a.box) for a in written] == [(a.label, a.box) for a in scene_annotations(scene)]
        assert written, "positive tiny slides carry lesions"
        for lesion in scene.lesions:
            b = lesion.box
            assert 0 <= b.x0 < b.x1 <= cfg.width and 0 <= b.y0 < b.y1 <= cfg.height
            for idx in lesion.cells:
                for nucleus in scene.cells[idx].nuclei:
                    xs, ys = nucleus.outline[:, 0], nucleus.outline[:, 1]
                    assert b.x0 <= xs.min() and xs.max() <= b.x1 and b.y0 <= ys.min() and ys.max() <= b.y1


def test_drawn_lesion_pixels_lie_inside_their_boxes(tiny_config):
    """Render only the lesion cells: every stained pixel is inside a box (up to the blur margin),
    and every box holds dark nuclear pixels."""
    cfg = tiny_config.synth
    plan = plan_slides(cfg)[0]
    style, scene, _ = make_slide(cfg, plan)
    lesion_cells = sorted(i for les in scene.lesions for i in les.cells)
    only = scene.subset(lesion_cells)
    flat = SlideStyle(**{**style.__dict__, "noise_sigma": 0.0})
    img = render_region(only, flat).astype(np.float32)
    background = np.asarray(style.background, np.float32)
    stained = (background - img).max(axis=2) > 12  # clearly darker than the (illumination +-8%) glass
    inside = np.zeros_like(stained)
    for les in only.lesions:
        margin = int(np.ceil(3 * max(only.cells[i].blur for i in les.cells))) + 1
        b = les.box
        inside[max(int(b.y0) - margin, 0) : int(b.y1) + margin, max(int(b.x0) - margin, 0) : int(b.x1) + margin] = True
        nucleus_dark = (img[int(b.y0) : int(b.y1), int(b.x0) : int(b.x1)].mean(axis=2) < 150).sum()
        assert nucleus_dark > 20, f"no nucleus drawn in {les.label} box {b}"
    assert stained.sum() > 0
    assert not (stained & ~inside).any()


def test_coco_export_loads_and_matches_geojson(tiny_dataset: Path):
    from pycocotools.coco import COCO

    gt = {p.stem: read_geojson(p) for p in (tiny_dataset / "slides").glob("*.geojson")}
    n_images = 0
    for split in ("train", "val", "test"):
        coco = COCO(str(tiny_dataset / "patches" / f"{split}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["ASC-US", "LSIL", "HSIL", "AGC"]
        for img in coco.loadImgs(coco.getImgIds()):
            n_images += 1
            assert img["slide_id"].startswith("L")
            assert (tiny_dataset / "patches" / split / img["file_name"]).is_file()
            x0, y0 = img["x0"], img["y0"]
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
                x, y, w, h = ann["bbox"]
                assert x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
                slide_box = (x + x0, y + y0, x + w + x0, y + h + y0)
                cat = coco.loadCats(ann["category_id"])[0]["name"]
                matches = [
                    a
                    for a in gt[img["slide_id"]]
                    if a.label == cat
                    and a.box.x0 <= slide_box[0] + 1e-6
                    and a.box.y0 <= slide_box[1] + 1e-6
                    and slide_box[2] <= a.box.x1 + 1e-6
                    and slide_box[3] <= a.box.y1 + 1e-6
                ]
                assert matches, f"{img['file_name']}: {cat} {ann['bbox']} matches no ground-truth box"
                if not ann["iscrowd"]:
                    full = [a for a in matches if a.box.xyxy == slide_box]
                    clipped = x == 0 or y == 0 or x + w == img["width"] or y + h == img["height"]
                    assert full or clipped
    assert n_images > 0
    # every labeled lesion appears uncut in at least one patch of its slide's split
    manifest = {m["slide_id"]: m for m in json.loads((tiny_dataset / "manifest.json").read_text())["slides"]}
    for sid, anns in gt.items():
        if manifest[sid]["role"] == "unlabeled":
            continue
        split = manifest[sid]["role"]
        coco = json.loads((tiny_dataset / "patches" / f"{split}.json").read_text())
        imgs = {i["id"]: i for i in coco["images"] if i["slide_id"] == sid}
        placed = {
            (
                a["bbox"][0] + imgs[a["image_id"]]["x0"],
                a["bbox"][1] + imgs[a["image_id"]]["y0"],
                a["bbox"][2],
                a["bbox"][3],
            )
            for a in coco["annotations"]
            if a["image_id"] in imgs
        }
        for a in anns:
            assert (a.box.x0, a.box.y0, a.box.width, a.box.height) in placed


def test_negative_patches_are_exported_and_hold_cells(tmp_path: Path):
    cfg = load_config(
        None,
        [
            "synth.labeled_slides=1",
            "synth.width=3600",
            "synth.height=1300",
            "synth.negative_slide_fraction=0",
            "synth.lesions_per_mm2=1",
            "synth.min_lesions=1",
            "synth.export.negatives_per_slide=2",
            "synth.quicklook_size=128",
        ],
    )
    generate_dataset(cfg, tmp_path, workers=1, export_patches=True, progress=False)
    coco = json.loads((tmp_path / "patches" / "train.json").read_text())
    negatives = [img for img in coco["images"] if img["kind"] == "negative"]
    assert len(negatives) == 2
    for img in negatives:
        assert not [a for a in coco["annotations"] if a["image_id"] == img["id"]]
        from PIL import Image

        pixels = np.asarray(Image.open(tmp_path / "patches" / "train" / img["file_name"]))
        assert (pixels.min(axis=2) < 205).mean() > 0.03  # cells, not empty glass


def test_rerun_reuses_finished_slides_and_redoes_damaged_ones(tmp_path: Path):
    overrides = ["synth.labeled_slides=2", "synth.width=600", "synth.height=500", "synth.quicklook_size=128"]
    cfg = load_config(None, overrides)
    first = generate_dataset(cfg, tmp_path, workers=1, progress=False)
    tiff = tmp_path / "slides" / "L0002.tiff"
    untouched = tmp_path / "slides" / "L0001.tiff"
    stamp = untouched.stat().st_mtime_ns
    tiff.write_bytes(tiff.read_bytes()[:1000])  # truncated, as by a crash outside our atomic writes
    second = generate_dataset(cfg, tmp_path, workers=1, progress=False)
    assert untouched.stat().st_mtime_ns == stamp
    assert hashlib.sha256(tiff.read_bytes()).hexdigest() == first.manifests[1]["tiff_sha256"]
    assert second.manifests == first.manifests


def test_one_failing_slide_does_not_stop_the_batch(tmp_path: Path, monkeypatch):
    import wsi_pipeline.synth.dataset as ds

    real = ds.make_slide

    def flaky(cfg, plan):
        if plan.slide_id == "L0002":
            raise ValueError("simulated renderer fault")
        return real(cfg, plan)

    monkeypatch.setattr(ds, "make_slide", flaky)
    cfg = load_config(
        None, ["synth.labeled_slides=3", "synth.width=500", "synth.height=500", "synth.quicklook_size=128"]
    )
    result = generate_dataset(cfg, tmp_path, workers=1, progress=False)
    assert [m["slide_id"] for m in result.manifests] == ["L0001", "L0003"]
    assert result.failures == [("L0002", "ValueError: simulated renderer fault")]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["failures"] == [{"slide_id": "L0002", "reason": "ValueError: simulated renderer fault"}]


def test_golden_labels_for_a_fixed_seed(tiny_config):
    """Labels of a fixed seed are part of the benchmark's identity. If this fails, the generator's
    output changed: bump GENERATOR_VERSION and the synthpap version, then update the digest below."""
    plan = plan_slides(tiny_config.synth)[0]
    _, scene, _ = make_slide(tiny_config.synth, plan)
    payload = json.dumps([(les.label, les.box.xyxy) for les in scene.lesions])
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    assert digest == GOLDEN_LABELS, f"generator labels changed: new digest {digest!r}\n{payload}"


GOLDEN_LABELS = "50bd05185a967db1"
