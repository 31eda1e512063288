"""Typed, frozen configuration: one dataclass per stage, defaults defined once, YAML presets.

* Each stage owns a frozen dataclass (``SynthConfig`` ...); :class:`PipelineConfig` has one field per
  stage, so YAML files and overrides address values as ``section.key`` (``synth.width``).
* The dataclass defaults are the only defaults. A YAML preset in ``configs/`` lists only what it changes,
  from the defaults or from another preset it names as its ``base:``.
* :func:`load_config` reads an optional YAML file, applies ``section.key=value`` overrides (values parsed
  as YAML scalars/lists) and validates everything with pydantic: an unknown key or a wrong type is a
  :class:`ConfigError` whose one-line message names the key.
* :func:`save_config` writes the resolved config next to every output; :func:`config_to_dict` is what
  checkpoints embed, and :func:`config_from_dict` rebuilds it.

Classes stay usable without YAML: ``SynthConfig(width=2048)`` validates the same way.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import field, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from wsi_pipeline.io import write_text_atomic
from wsi_pipeline.taxonomy import CLASS_CODES

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
T = TypeVar("T")


def _check_split(v: tuple[float, float, float]) -> tuple[float, float, float]:
    if min(v) < 0 or abs(sum(v) - 1.0) > 1e-6:
        raise ValueError("train/val/test fractions must be >= 0 and sum to 1")
    return v


def _check_range(v: tuple[float, float]) -> tuple[float, float]:
    if not 0 <= v[0] <= v[1]:
        raise ValueError("need 0 <= low <= high")
    return v


def _not_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("expected a number, got a boolean")
    return v


# Numbers: a YAML `true` is not 1, NaN and infinity are refused (allow_inf_nan=False below), and numeric
# strings still work (`--set train.lr=1e-3`, which YAML reads as a string).
_Number = BeforeValidator(_not_bool)
Int = Annotated[int, _Number]
Float = Annotated[float, _Number]
PositiveInt = Annotated[int, Field(gt=0), _Number]
Count = Annotated[int, Field(ge=0), _Number]
PositiveFloat = Annotated[float, Field(gt=0), _Number]
NonNegative = Annotated[float, Field(ge=0), _Number]
Fraction = Annotated[float, Field(ge=0, le=1), _Number]
JpegQuality = Annotated[int, Field(ge=1, le=100), _Number]
# microns per pixel: from 100x oil objectives (~0.05) to coarse thumbnails; beyond these, a typo
MPP_RANGE = (0.01, 100.0)
Mpp = Annotated[float, Field(ge=MPP_RANGE[0], le=MPP_RANGE[1]), _Number]
Split = Annotated[tuple[Fraction, Fraction, Fraction], AfterValidator(_check_split)]
Range = Annotated[tuple[NonNegative, NonNegative], AfterValidator(_check_range)]


class ConfigError(ValueError):
    """A configuration problem; ``str(err)`` is one line naming the file or key."""


@dataclass(frozen=True, config=_STRICT)
class PatchExportConfig:
    """Labeled 1200 x 1200 patches cut around lesions, written as COCO (``synth --export-patches``)."""

    patch_size: PositiveInt = 1200
    negatives_per_slide: Count = 4  # lesion-free patches sampled per labeled slide
    min_visible: Fraction = 0.5  # a box cut by the patch edge is kept when this fraction of it is inside
    jitter: Fraction = 0.6  # random offset of the lesion from the patch centre, fraction of half the free room
    image_format: Literal["jpg", "png"] = "jpg"
    jpeg_quality: JpegQuality = 95


@dataclass(frozen=True, config=_STRICT)
class SynthConfig:
    """Synthetic liquid-based Pap-smear slides ("synthpap"); see ``docs/datasets.md``."""

    dataset: str = "synthpap-custom"  # name written into manifests
    seed: Int = 0
    labeled_slides: Count = 1  # slides with exported ground truth, split train/val/test by slide
    unlabeled_slides: Count = 0  # slides of other "patients" for the unlabeled pool
    split: Split = (0.7, 0.1, 0.2)  # train/val/test fractions of labeled slides
    extra_test_slides: Count = 0  # labeled slides after those, all test: a larger test split, same train/val
    extra_val_slides: Count = 0  # labeled slides after the extra test ones, all validation: same train/test
    width: PositiveInt = 20000  # level-0 pixels
    height: PositiveInt = 20000
    mpp: Mpp = 0.25  # microns per level-0 pixel
    tile_size: PositiveInt = 256  # TIFF tile edge (pixels)
    jpeg_quality: JpegQuality = 85
    cells_per_mm2: NonNegative = 160.0  # mean squamous cellularity; varies per slide
    negative_slide_fraction: Fraction = 0.35  # slides without any lesion cell
    lesions_per_mm2: NonNegative = 1.0  # mean lesion density on a positive slide; varies per slide
    min_lesions: Count = 1  # at least this many lesions on a positive slide
    class_weights: dict[str, NonNegative] = field(
        default_factory=lambda: {"ASC-US": 0.42, "LSIL": 0.3, "HSIL": 0.18, "AGC": 0.1}
    )
    mimics: NonNegative = 1.0  # multiplier on hard mimics: parabasal, metaplastic, degenerated, endocervical
    lesion_variation: NonNegative = 0.0  # between-slide spread of lesion morphology (0: synthpap-v1's fixed one)
    inflammation: NonNegative = 1.0  # multiplier on neutrophils and lymphocytes
    debris: NonNegative = 1.0  # multiplier on debris, mucus and bacteria-like specks
    focus_sigma: Range = (0.3, 1.4)  # per-slide range of defocus blur sigma (level-0 px)
    quicklook_size: PositiveInt = 2048  # longest side of the quick-look PNG
    export: PatchExportConfig = field(default_factory=PatchExportConfig)

    @field_validator("tile_size")
    @classmethod
    def _tile_multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError("TIFF tiles must be a multiple of 16")
        return v

    @field_validator("class_weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(CLASS_CODES))
        if unknown:
            raise ValueError(f"unknown class {unknown[0]!r}; expected {', '.join(CLASS_CODES)}")
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return v


@dataclass(frozen=True, config=_STRICT)
class ForegroundConfig:
    """Cell-foreground detection on a thumbnail (``wsi_pipeline.slide.foreground``)."""

    mask_mpp: Mpp = 4.0  # thumbnail resolution, microns per pixel
    od_threshold: NonNegative = 0.06  # optical density above local glass that counts as stained
    saturation_threshold: Fraction = 0.08
    dilate_um: PositiveFloat = 8.0  # margin added around cells
    min_object_um2: NonNegative = 60.0  # smaller specks are dust
    glass_window_um: PositiveFloat = 200.0  # local glass estimate window (wider than any cell)


@dataclass(frozen=True, config=_STRICT)
class LabeledPatchesConfig:
    """``tile --annotations``: labeled patches cut around annotated lesions, COCO per split (by slide)."""

    split: Split = (0.7, 0.1, 0.2)
    seed: Int = 0
    export: PatchExportConfig = field(default_factory=PatchExportConfig)
    # explicit annotation file name per slide, e.g. "{slide}-gt.geojson"; None: the whole-token rule
    # of wsi_pipeline.data.annotation_match
    annotation_pattern: str | None = None
    point_box_um: PositiveFloat = 30.0  # a Point annotation (a cell's centre) becomes a box this wide

    @field_validator("annotation_pattern")
    @classmethod
    def _has_slide(cls, v: str | None) -> str | None:
        if v is not None and "{slide}" not in v:
            raise ValueError("must contain {slide}, e.g. {slide}-gt.geojson")
        return v


@dataclass(frozen=True, config=_STRICT)
class TileConfig:
    """``wsi-pipeline tile``: patches at a physical resolution, cell-foreground filtering, patch stores.

    The default target of 0.25 um/px is the native resolution of 40x cytology scans; for 20x scans
    (~0.5 um/px) set 0.5 rather than upsampling.
    """

    patch_size: PositiveInt = 1200  # pixels at target_mpp
    target_mpp: Mpp = 0.25
    overlap: Count = 0  # pixels (at target_mpp) shared by neighbouring patches
    edge: Literal["flush", "pad", "drop"] = "flush"  # last row/column: flush with the edge, padded, dropped
    min_foreground: Fraction = 0.01  # keep patches whose cell-foreground fraction is at least this
    coords_only: bool = False  # store the patch table only; later stages read pixels from the slide
    backend: Literal["auto", "tifffile", "openslide"] = "auto"
    compressor: Literal["lz4", "zstd", "none"] = "lz4"  # Blosc codec for stored patch pixels
    block_rows: PositiveInt = 2  # patches per parallel task: a block of grid rows x columns read in one go
    block_cols: PositiveInt = 4
    foreground: ForegroundConfig = field(default_factory=ForegroundConfig)
    labels: LabeledPatchesConfig = field(default_factory=LabeledPatchesConfig)

    @model_validator(mode="after")
    def _overlap(self) -> TileConfig:
        if not 0 <= self.overlap < self.patch_size:
            raise ValueError(f"overlap must be in [0, patch_size), got {self.overlap}")
        return self


@dataclass(frozen=True, config=_STRICT)
class AugmentConfig:
    """Box-aware training augmentations (``wsi_pipeline.data.augment``); the paper uses flip + colour jitter.

    Cytology patches have no up/down or left/right, so vertical flips and 90-degree rotations are safe.
    Colour jitter factors are drawn uniformly in ``[1 - x, 1 + x]`` (hue: a shift in ``[-x, x]`` turns).
    """

    hflip: Fraction = 0.5
    vflip: Fraction = 0.5
    rot90: bool = True
    brightness: Fraction = 0.15
    contrast: Fraction = 0.15
    saturation: Fraction = 0.15
    hue: Annotated[float, Field(ge=0, le=0.5), _Number] = 0.02
    blur: Fraction = 0.0  # probability of a mild Gaussian blur (focus variation)


@dataclass(frozen=True, config=_STRICT)
class ModelConfig:
    """The detector (``wsi_pipeline.modeling``): Faster R-CNN + FPN, built without downloads.

    The network works at ``mpp`` microns per pixel; it is given images at ``input_mpp`` (the resolution of
    ``tile`` and ``synth`` patches) and resamples them by the fixed factor ``input_mpp / mpp``, so images of
    any size go in (training crops, whole patches, edge tiles) and boxes come out in the input's pixels.
    torchvision's own transform would instead resize every image to 800 px, whatever its resolution.
    Anchors are given in microns and converted with ``mpp``, so a model working at 0.5 um/px keeps
    cell-sized anchors. ``norm: group`` trains from scratch with small batches; ``frozen_batch`` is for
    backbones loaded from ImageNet-style weights.
    """

    backbone: Literal["resnet50", "resnet101", "resnet18", "tiny"] = "resnet50"
    norm: Literal["group", "batch", "frozen_batch"] = "group"
    backbone_weights: str | None = None  # local torchvision-format ResNet state dict; never downloaded
    mpp: Mpp = 0.25  # resolution the network works at (microns per pixel)
    input_mpp: Mpp = 0.25  # resolution of the images it is given; resampled by input_mpp / mpp
    anchor_sizes_um: tuple[PositiveFloat, PositiveFloat, PositiveFloat, PositiveFloat, PositiveFloat] = (
        8.0,
        16.0,
        32.0,
        64.0,
        128.0,
    )  # per FPN level
    aspect_ratios: tuple[PositiveFloat, ...] = (0.5, 1.0, 2.0)
    fpn_channels: PositiveInt = 256
    box_score_thresh: Fraction = 0.05
    box_nms_thresh: Fraction = 0.5
    detections_per_image: PositiveInt = 100
    rpn_batch_size_per_image: PositiveInt = 256
    rpn_pre_nms_top_n: tuple[PositiveInt, PositiveInt] = (2000, 1000)  # (training, inference), per FPN level
    rpn_post_nms_top_n: tuple[PositiveInt, PositiveInt] = (2000, 1000)  # (training, inference), per image
    box_batch_size_per_image: PositiveInt = 512
    classifier_loss: str = "cross_entropy"  # the box classifier's loss: a name in losses.detection.CLASSIFIER_LOSSES


@dataclass(frozen=True, config=_STRICT)
class DualAlignmentConfig:
    """The dual-alignment method (``shared/method.md``): projection head, class proxies, prototypes and
    the memory bank. The three switches are the paper's ablations."""

    proposal_alignment: bool = True  # L_pml + L'_pml (proxies)
    prototype_alignment: bool = True  # L_pmb + L'_pmb (prototypes)
    memory_bank: bool = True  # off: the batch's ground-truth-guided prototypes stand in for the bank's
    bank_size: PositiveInt = 1024
    hidden_dim: PositiveInt = 512
    embed_dim: PositiveInt = 128
    proxy_lr: PositiveFloat = 0.01
    margin: PositiveFloat = 1.0
    threshold: Fraction = 0.5  # pseudo-label score
    # a no-grad pass of the model itself, an EMA teacher, or the boxes given with a COCO pool (score 1)
    pseudo_labels: Literal["self", "ema", "given"] = "self"
    # beyond the paper, which aligns lesion classes only: a background proxy and prototype too, whose rows
    # are the RoI sampler's background proposals on labeled images and, sampled against the pseudo-boxes,
    # on unlabeled ones (every sampled unlabeled proposal is then a row, matched or not)
    background_rows: bool = False
    weight: NonNegative = 1.0  # the four terms' weight relative to train.ssl.weight (for combined methods)


@dataclass(frozen=True, config=_STRICT)
class SoftTeacherConfig:
    """Soft Teacher (Xu et al. 2021): pseudo-boxes at ``threshold`` from the EMA teacher's weak view;
    background proposals weighted by the teacher's background score; a pseudo-box is a regression target
    when the teacher's refinements of ``jitter_copies`` jittered copies (offsets up to ``jitter_scale`` of
    the box size) spread less than ``max_jitter_std`` of the box size."""

    threshold: Fraction = 0.9
    jitter_copies: PositiveInt = 10
    jitter_scale: PositiveFloat = 0.06
    max_jitter_std: PositiveFloat = 0.02


@dataclass(frozen=True, config=_STRICT)
class SemiSupervisedConfig:
    """Settings shared by the semi-supervised methods (``train.method`` other than ``supervised``).

    ``weight`` is the unsupervised weight at the end of the ramp-up: lambda(t) = weight * exp(-5 (1 -
    t / ramp_iters)^2) for t < ramp_iters, then ``weight``. Strong views (Mean Teacher's student, Soft
    Teacher's student) are photometric: colour jitter of ``strong_jitter``, Gaussian noise and
    ``cutout`` boxes, so boxes map between views unchanged."""

    weight: NonNegative = 1.0
    ramp_iters: Count = 500
    start_iter: Count = 0  # unlabeled losses start here (a supervised burn-in before)
    ema_decay: Fraction = 0.999
    strong_jitter: Fraction = 0.3
    strong_noise: NonNegative = 0.03
    cutout: Count = 3
    diagnostics_every: PositiveInt = 50
    collapse_iters: PositiveInt = 200  # warn when no pseudo-label for this many iterations
    dual_alignment: DualAlignmentConfig = field(default_factory=DualAlignmentConfig)
    soft_teacher: SoftTeacherConfig = field(default_factory=SoftTeacherConfig)


@dataclass(frozen=True, config=_STRICT)
class TrainConfig:
    """``wsi-pipeline train`` (``wsi_pipeline.engine``). Defaults follow the paper: SGD momentum 0.9,
    lr 0.005, x0.1 every 40k iterations; plus a linear warm-up and gradient clipping."""

    method: str = "supervised"  # a name in wsi_pipeline.methods.METHODS
    train_json: str = "data/synthpap-v3/patches/train.json"
    val_json: str | None = "data/synthpap-v3/patches/val.json"
    batch_size: PositiveInt = 8
    workers: Count = 2
    max_iter: PositiveInt = 90000
    lr: PositiveFloat = 0.005
    momentum: Fraction = 0.9
    weight_decay: NonNegative = 1e-4
    warmup_iters: Count = 500
    warmup_factor: Fraction = 0.001
    lr_steps: tuple[Count, ...] = (40000, 80000)
    lr_gamma: PositiveFloat = 0.1
    clip_grad_norm: NonNegative = 10.0  # 0 disables
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    checkpoint_every: PositiveInt = 2000
    eval_every: PositiveInt = 2000
    log_every: PositiveInt = 20
    seed: Int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    labeled_fraction: Annotated[float, Field(gt=0, le=1), _Number] = 1.0  # share of labeled *slides* used
    subset_seed: Int | None = None  # seeds the choice of labeled slides (None: train.seed)
    # start from the detector of this checkpoint (any method's, e.g. the supervised one that mined the pool);
    # the method's own parts, the optimiser and the schedule start fresh. A resumed run keeps its own state.
    init_checkpoint: str | None = None
    crop_size: PositiveInt | None = None  # train on random crops of this many input pixels (None: whole patches)
    crop_min_visible: Fraction = 0.5  # a lesion cut by the crop stays a target when this fraction is inside
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    unlabeled: str | None = None  # the unlabeled pool: mine's output (pool.json) or a folder of tile stores
    unlabeled_batch_size: PositiveInt | None = None  # unlabeled images per step (None: batch_size, as the paper)
    ssl: SemiSupervisedConfig = field(default_factory=SemiSupervisedConfig)


@dataclass(frozen=True, config=_STRICT)
class TriageConfig:
    """Slide triage from the lesion scores (``wsi_pipeline.inference.summary``). The risk score is
    ``max over classes of severity[c] * mean(top_k scores of class c)`` (missing scores count as 0): one
    confident HSIL outweighs many doubtful ASC-US. Thresholds belong to a model: choose them on validation
    slides for the slide-level sensitivity you need (``docs/benchmarks.md``)."""

    top_k: PositiveInt = 3
    severity: dict[str, Fraction] = field(default_factory=lambda: {"ASC-US": 0.5, "LSIL": 0.7, "HSIL": 1.0, "AGC": 1.0})
    review_threshold: Fraction = 0.3  # risk at or above: review
    high_threshold: Fraction = 0.6  # risk at or above: high risk
    min_cell_area_mm2: NonNegative = 0.5  # less cell foreground: unsatisfactory, never negative
    # focus: a patch whose stained pixels have a mean |Laplacian| (half resolution, grey) below min_sharpness
    # is out of focus; more than max_blurred of the judged patches make the slide unsatisfactory. On synthpap
    # patches at 0.25 um/px: 7-14 in focus, 4-5 with a 0.5 um blur, ~2 with a 1 um blur.
    min_sharpness: NonNegative = 3.0
    max_blurred: Fraction = 0.5

    @model_validator(mode="after")
    def _ordered(self) -> TriageConfig:
        unknown = sorted(set(self.severity) ^ set(CLASS_CODES))
        if unknown:
            raise ValueError(f"severity needs exactly the classes {', '.join(CLASS_CODES)} (not {unknown[0]})")
        if self.review_threshold > self.high_threshold:
            raise ValueError("review_threshold must not exceed high_threshold")
        return self


@dataclass(frozen=True, config=_STRICT)
class InferConfig:
    """``wsi-pipeline infer`` and ``mine``: whole slides through the detector, patch by patch.

    Patches of ``patch_size`` input pixels (at ``model.input_mpp``) overlap by ``overlap`` pixels, so a
    lesion on a seam is also seen whole; the default 128 px (32 um, a large cell) reads
    (1200 / 1072)^2 = 1.25x the slide area. Seam merging (``inference.merge``) fuses what the seams cut.
    """

    patch_size: PositiveInt = 1200
    overlap: Count = 128
    batch_size: PositiveInt = 4
    workers: Count = 2  # threads reading patches ahead of the model
    device: str = "auto"
    min_score: Fraction = 0.1  # detections kept (the GeoJSON, the summary, evaluation)
    merge_ios: Fraction = 0.5  # seam merging: intersection over the smaller box
    block_rows: PositiveInt = 4  # patches merged together before merging across block borders
    block_cols: PositiveInt = 4
    min_foreground: Fraction = 0.01  # patches with less cell foreground are glass, not read
    object_type: Literal["detection", "annotation"] = "detection"  # QuPath object type of each lesion
    gzip: bool = False  # write <slide>.geojson.gz
    top_n: PositiveInt = 8  # lesions per class listed in the summary and shown in the report
    triage: TriageConfig = field(default_factory=TriageConfig)

    @model_validator(mode="after")
    def _overlap(self) -> InferConfig:
        if self.overlap >= self.patch_size // 2:
            raise ValueError(f"overlap must be below half the patch size, got {self.overlap}")
        return self


@dataclass(frozen=True, config=_STRICT)
class MineConfig:
    """``wsi-pipeline mine``: the unlabeled pool. The supervised detector screens unlabeled slides (with the
    ``infer`` settings); patches of ``infer.patch_size`` centred on its detections at or above
    ``score_threshold`` are kept, best first, at most ``top_k`` per slide and none overlapping a kept one by
    more than ``max_overlap`` (IoU); ``negative_share`` adds that many patches per positive one whose best
    detection stayed below the threshold (hard negatives: the detector was unsure)."""

    score_threshold: Fraction = 0.5
    top_k: PositiveInt = 32
    max_overlap: Fraction = 0.3
    negative_share: NonNegative = 0.0
    compressor: Literal["lz4", "zstd", "none"] = "lz4"


@dataclass(frozen=True, config=_STRICT)
class PipelineConfig:
    """All stages' settings; each field is one YAML section."""

    synth: SynthConfig = field(default_factory=SynthConfig)
    tile: TileConfig = field(default_factory=TileConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    mine: MineConfig = field(default_factory=MineConfig)


# --------------------------------------------------------------------------------------------------
# loading, overriding, saving


def _project_config_dir() -> Path:
    """The presets: ``configs/`` of the source tree, shipped inside the package as ``wsi_pipeline/presets``
    (a link to it in the source tree, real files in a wheel)."""
    return Path(__file__).resolve().parent / "presets"


def available_presets() -> list[str]:
    folder = _project_config_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def resolve_config_path(value: str | os.PathLike[str]) -> Path:
    """A YAML path as given, or a preset name looked up in the project's ``configs/`` folder."""
    path = Path(value)
    if path.is_file():
        return path
    if path.suffix == "" and len(path.parts) == 1:
        preset = _project_config_dir() / f"{path.name}.yaml"
        if preset.is_file():
            return preset
        raise ConfigError(f"{value}: no such config file or preset (presets: {', '.join(available_presets())})")
    raise ConfigError(f"{value}: config file not found")


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(err, 'problem', err)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a YAML text file (not UTF-8)") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data


def read_config_file(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's mapping with its ``base:`` resolved: ``base: curve-cpu`` (a preset name, or a path
    relative to the file) is read first and this file's values override it, section by section and key by
    key (lists and scalars are replaced whole). Bases may chain; a cycle is an error."""
    data = read_yaml_mapping(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base: expected a preset name or a config file path, got {base!r}")
    candidate = path.parent / base
    base_path = candidate if candidate.suffix and candidate.is_file() else resolve_config_path(base)
    if base_path.resolve() in _seen or base_path.resolve() == path.resolve():
        raise ConfigError(f"{path}: base: {base} extends itself (a cycle of bases)")
    return merge_mappings(read_config_file(base_path, (*_seen, path.resolve())), data)


def merge_mappings(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``changes``: nested mappings merged key by key, anything else replaced."""
    merged = _deep_copy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_mappings(merged[key], value)
        else:
            merged[key] = _deep_copy(value)
    return merged


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c=value`` overrides applied (values parsed as YAML)."""
    result = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = result
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return result


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def _format_validation_error(err: ValidationError, source: str, cls: type) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    if first["type"] in {"unexpected_keyword_argument", "extra_forbidden"}:
        # resolve nested field types from the annotations pydantic already evaluated
        suggestion = difflib.get_close_matches(loc, _all_keys(cls), n=1)
        hint = f" (did you mean {suggestion[0]!r}?)" if suggestion else ""
        return f"{source}: unknown key {loc!r}{hint}{more}"
    got = first.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    msg = first["msg"].removeprefix("Value error, ").rstrip(".")
    return f"{source}: {loc}: {msg}{shown}{more}"


def _all_keys(cls: type) -> list[str]:
    keys: list[str] = []
    hints = getattr(cls, "__pydantic_fields__", {})
    for name, info in hints.items():
        keys.append(name)
        sub = info.annotation
        if isinstance(sub, type) and is_dataclass(sub):
            keys.extend(f"{name}.{k}" for k in _all_keys(sub))
    return keys


def config_from_dict(data: Mapping[str, Any], cls: type[T] = PipelineConfig, source: str = "config") -> T:  # type: ignore[assignment]
    """Validate a plain mapping into the frozen dataclass ``cls``; :class:`ConfigError` on any problem."""
    try:
        return TypeAdapter(cls).validate_python(dict(data))
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source, cls)) from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON/YAML-ready plain dict of a config dataclass (tuples become lists)."""
    return TypeAdapter(type(config)).dump_python(config, mode="json")


def load_config(path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()) -> PipelineConfig:
    """Defaults <- YAML file (path or preset name) <- ``section.key=value`` overrides, validated."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        resolved = resolve_config_path(path)
        data = read_config_file(resolved)
        source = str(resolved)
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} + --set" if path is not None else "--set"
    return config_from_dict(data, PipelineConfig, source)


def save_config(config: Any, folder: str | os.PathLike[str], name: str = "config.yaml") -> Path:
    """Write the resolved config (every value, defaults included) atomically into ``folder``."""
    from wsi_pipeline import __version__

    target = Path(folder) / name
    header = f"# resolved wsi-pipeline {__version__} configuration; reload with --config {name}\n"
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)
    write_text_atomic(target, header + text)
    return target
