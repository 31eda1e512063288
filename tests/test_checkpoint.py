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
