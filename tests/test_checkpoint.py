"""Checkpoint format 2: method + detector entries, a content digest that refuses damaged files, and
format-1 files loaded for inference only."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from wsi_pipeline.config import ModelConfig, PipelineConfig, TrainConfig, config_to_dict
from wsi_pipeline.methods import build_method
from wsi_pipeline.modeling.checkpoint import content_digest, load_checkpoint, model_from_checkpoint, save_checkpoint

TINY = ModelConfig(backbone="tiny", fpn_channels=16)


def _save(path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    config = PipelineConfig(model=TINY, train=TrainConfig(val_json=None))
    method = build_method(config)
    state = {"iteration": 3, "model": method.state_dict(), "method": method.name,
             "detector": method.inference_detector().state_dict()}  # fmt: skip
    return method, save_checkpoint(path, state, config_to_dict(config))


def test_a_checkpoint_rebuilds_its_inference_detector(tmp_path: Path):
    method, path = _save(tmp_path / "c.pt")
    data = load_checkpoint(path)
    assert data["method"] == "supervised" and data["iteration"] == 3 and "sha256" not in data
    detector, config = model_from_checkpoint(path)
    assert config.model == TINY and not detector.training
    assert all(torch.equal(v, method.detector.state_dict()[k]) for k, v in detector.state_dict().items())


def test_the_digest_covers_every_value():
    a = {"x": torch.arange(4.0), "y": {"b": 1, "a": [1, 2]}}
    assert content_digest(a) == content_digest({"y": {"a": [1, 2], "b": 1}, "x": torch.arange(4.0)})  # key order
    assert content_digest(a) != content_digest({**a, "x": torch.tensor([0.0, 1.0, 2.0, 3.5])})
    assert content_digest(a) != content_digest({**a, "x": torch.arange(4)})  # dtype
    assert content_digest(a) != content_digest({**a, "y": {"b": 1, "a": [2, 1]}})


def test_flipped_bytes_in_the_weights_are_refused(tmp_path: Path):
    _, path = _save(tmp_path / "c.pt")
    with zipfile.ZipFile(path) as zf:  # torch.save writes a zip: find the largest tensor's bytes
        info = max(zf.infolist(), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # local header + name + extra
    start += (info.file_size - 4096) // 2
    raw[start : start + 4096] = bytes(b ^ 0xFF for b in raw[start : start + 4096])  # 4 KiB, inside the data
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"c\.pt: checksum mismatch: the file is damaged; not loaded"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="checksum mismatch"):
        model_from_checkpoint(path)


def test_a_pickle_that_would_run_code_is_refused_as_such(tmp_path: Path):
    torch.save({"format": "wsi-pipeline-checkpoint/2", "obj": zipfile.ZipInfo("x")}, tmp_path / "p.pt")
    with pytest.raises(ValueError, match=r"p\.pt: not a weights-only checkpoint \(it pickles .*ZipInfo"):
        load_checkpoint(tmp_path / "p.pt")


def test_a_format_1_checkpoint_loads_for_inference_with_a_warning_and_is_not_resumed(tmp_path: Path, caplog):
    torch.manual_seed(0)
    detector = build_method(PipelineConfig(model=TINY)).detector
    model_cfg = {**config_to_dict(PipelineConfig(model=TINY))["model"], "projection_dims": [512, 128]}
    model_cfg.pop("classifier_loss")
    old_state = {f"detector.{k}": v for k, v in detector.state_dict().items()}
    old_state["projection.net.0.weight"] = torch.zeros(512, 1024)
    config = {**config_to_dict(PipelineConfig(model=TINY)), "model": model_cfg}
    old = {"format": "wsi-pipeline-checkpoint/1", "version": "0.1.0", "classes": ["ASC-US", "LSIL", "HSIL", "AGC"],
           "config": config, "model": old_state, "iteration": 5, "optimizer": {}, "rng": {}, "hooks": {}}  # fmt: skip
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(old, run / "checkpoints" / "last.pt")
    loaded, _ = model_from_checkpoint(run / "checkpoints" / "last.pt")
    assert "format-1 checkpoint" in caplog.text and "cannot be resumed" in caplog.text
    assert all(torch.equal(v, detector.state_dict()[k]) for k, v in loaded.state_dict().items())

    from wsi_pipeline.engine.run import run_training

    with pytest.raises(ValueError, match="format-1 checkpoint cannot be resumed"):
        run_training(PipelineConfig(model=TINY), run, resume=True, progress=False)


def test_a_run_starts_from_another_checkpoints_detector_and_fresh_method_parts(tmp_path: Path, caplog):
    """``train.init_checkpoint``: the detector (here inside dual alignment) takes the saved supervised weights;
    the projection head and proxies are the method's own fresh ones; a resumed run does not read the file."""
    from dataclasses import replace

    from wsi_pipeline.distributed import DistInfo
    from wsi_pipeline.engine.run import build_model

    saved, path = _save(tmp_path / "c.pt")
    config = PipelineConfig(model=TINY, train=TrainConfig(val_json=None, method="dual_alignment", seed=5))
    fresh = build_model(config, torch.device("cpu"), DistInfo())
    started = build_model(replace(config, train=replace(config.train, init_checkpoint=str(path))),
                          torch.device("cpu"), DistInfo())  # fmt: skip
    assert all(torch.equal(v, started.detector.state_dict()[k]) for k, v in saved.detector.state_dict().items())
    assert not torch.equal(fresh.detector.state_dict()["roi_heads.box_predictor.cls_score.weight"],
                           started.detector.state_dict()["roi_heads.box_predictor.cls_score.weight"])  # fmt: skip
    fresh_rest = {k: v for k, v in fresh.state_dict().items() if not k.startswith("detector.")}
    assert fresh_rest and all(torch.equal(v, started.state_dict()[k]) for k, v in fresh_rest.items())
    path.unlink()  # resuming never needs the file
    resumed = build_model(replace(config, train=replace(config.train, init_checkpoint=str(path))),
                          torch.device("cpu"), DistInfo(), resuming=True)  # fmt: skip
    assert torch.equal(resumed.detector.state_dict()["roi_heads.box_predictor.cls_score.weight"],
                       fresh.detector.state_dict()["roi_heads.box_predictor.cls_score.weight"])  # fmt: skip
    with pytest.raises(ValueError, match=r"c\.pt: checkpoint not found"):
        build_model(replace(config, train=replace(config.train, init_checkpoint=str(path))),
                    torch.device("cpu"), DistInfo())  # fmt: skip


def test_an_init_checkpoint_for_another_model_is_refused_and_another_mpp_warned(tmp_path: Path, caplog):
    from wsi_pipeline.modeling import build_detector
    from wsi_pipeline.modeling.checkpoint import init_detector_from

    _, path = _save(tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"c\.pt: the detector weights do not fit model settings"):
        init_detector_from(build_detector(ModelConfig(backbone="tiny", fpn_channels=32)), path, TINY.mpp)
    init_detector_from(build_detector(TINY), path, 0.5)
    assert "trained at 0.25 um/px, this run works at 0.5 um/px" in caplog.text


def test_a_missing_init_checkpoint_stops_a_run_before_its_training_set_is_read(tmp_path: Path) -> None:
    from wsi_pipeline.engine.run import run_training

    config = PipelineConfig(
        model=TINY,
        train=TrainConfig(
            train_json=str(tmp_path / "absent.json"), val_json=None, init_checkpoint=str(tmp_path / "c.pt")
        ),
    )
    with pytest.raises(ValueError, match=r"c\.pt: checkpoint not found"):  # not the missing training set's error
        run_training(config, tmp_path / "run", progress=False)
