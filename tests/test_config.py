import dataclasses
from pathlib import Path

import pytest
import yaml

from wsi_pipeline.config import (
    ConfigError,
    PipelineConfig,
    SynthConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)


def test_defaults_are_defined_once_and_frozen():
    cfg = load_config()
    assert cfg == PipelineConfig()
    assert cfg.synth.width == SynthConfig().width == 20000
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.synth.width = 5  # type: ignore[misc]


def test_overrides_are_typed():
    cfg = load_config(
        None,
        [
            "synth.width=512",
            "synth.mpp=0.5",
            "synth.split=[0.5, 0.25, 0.25]",
            "synth.export.image_format=png",
        ],
    )
    assert cfg.synth.width == 512 and isinstance(cfg.synth.width, int)
    assert cfg.synth.mpp == 0.5
    assert cfg.synth.split == (0.5, 0.25, 0.25)
    assert cfg.synth.export.image_format == "png"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("synth.widht=5", "--set: unknown key 'synth.widht' (did you mean 'synth.width'?)"),
        ("synth.export.patch_sise=5", "unknown key 'synth.export.patch_sise'"),
        ("tiles.x=1", "unknown key 'tiles'"),
        ("synth.width=abc", "synth.width: Input should be a valid integer"),
        ("synth.width=1.5", "synth.width: Input should be a valid integer"),
        ("synth.export.image_format=gif", "synth.export.image_format: Input should be 'jpg' or 'png'"),
        ("synth.class_weights={FOO: 1}", "synth.class_weights: unknown class 'FOO'"),
        ("synth.split=[0.5, 0.5, 0.5]", "synth.split: train/val/test fractions must be >= 0 and sum to 1"),
        ("synth.width.x=3", "synth.width"),
    ],
)
def test_bad_overrides_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_override_syntax():
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        load_config(None, ["synth.width"])


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("synth:\n  width: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"{bad}: line \d+ invalid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("synth:\n  hieght: 5\n")
    with pytest.raises(ConfigError, match=rf"{wrong}: unknown key 'synth.hieght'"):
        load_config(wrong)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="no such config file or preset"):
        load_config("no-such-preset")


def test_presets_load_and_resolved_config_round_trips(tmp_path):
    cfg = load_config("synthpap-v1", ["synth.seed=3"])
    assert cfg.synth.dataset == "synthpap-v1" and cfg.synth.seed == 3
    path = save_config(cfg, tmp_path)
    assert load_config(path) == cfg
    assert config_from_dict(yaml.safe_load(path.read_text())) == cfg
    assert config_to_dict(cfg)["synth"]["split"] == list(cfg.synth.split)


def test_every_preset_loads_and_v3_is_v2_resplit_and_v4_v5_add_test_and_validation_slides():
    presets = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert len(presets) >= 6
    for preset in presets:
        load_config(preset)  # no stale or misspelt keys
    v2, v3, v4, v5 = (load_config(f"synthpap-v{k}").synth for k in (2, 3, 4, 5))
    assert v3.split != v2.split and dataclasses.replace(v3, dataset=v2.dataset, split=v2.split) == v2  # same slides
    assert dataclasses.replace(v4, dataset=v3.dataset, extra_test_slides=0) == v3 and v4.extra_test_slides == 75
    assert dataclasses.replace(v5, dataset=v4.dataset, extra_val_slides=0) == v4 and v5.extra_val_slides == 45


def test_constructors_validate_without_yaml():
    assert SynthConfig(width=64).width == 64
    with pytest.raises(ValueError, match="greater than 0"):
        SynthConfig(width=0)


def test_a_preset_extends_its_base_key_by_key(tmp_path):
    demo, curve = load_config("demo"), load_config("curve-cpu")
    assert demo.model == curve.model  # the demo's detector is the curve-cpu model, not a copy of its settings
    assert demo.train.max_iter == 400 and demo.train.lr == curve.train.lr and demo.synth.seed == 7
    ssl = load_config("demo-dual_alignment")  # the demo's second step goes on from the first one's detector
    assert ssl.model == demo.model and ssl.synth == demo.synth and ssl.train.method == "dual_alignment"
    final_lr = demo.train.lr * demo.train.lr_gamma ** len(demo.train.lr_steps)
    assert abs(ssl.train.lr - final_lr) < 1e-12 and ssl.train.ssl.start_iter == 0
    (tmp_path / "a.yaml").write_text("base: b.yaml\ntrain:\n  lr: 0.5\n")
    (tmp_path / "b.yaml").write_text("base: tiny\ntrain:\n  lr: 0.1\n  max_iter: 7\n")
    chained = load_config(tmp_path / "a.yaml")
    assert (chained.train.lr, chained.train.max_iter, chained.model.backbone) == (0.5, 7, "tiny")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle of bases"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: nope\n")
    with pytest.raises(ConfigError, match="nope: no such config file or preset"):
        load_config(tmp_path / "c.yaml")


def test_a_config_of_random_bytes_names_the_file(tmp_path):
    (tmp_path / "x.yaml").write_bytes(bytes(range(128, 256)))
    with pytest.raises(ConfigError, match=r"x\.yaml: not a YAML text file"):
        load_config(tmp_path / "x.yaml")


def test_a_wheel_install_ships_every_preset(tmp_path):
    """``pip install .`` (not editable) must carry the presets: configs/ is the one copy, shipped as
    wsi_pipeline/presets. Installed without dependencies into a folder (no second torch download)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    target = tmp_path / "site"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(root)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    shipped = sorted(p.name for p in (target / "wsi_pipeline" / "presets").glob("*.yaml"))
    assert shipped == sorted(p.name for p in (root / "configs").glob("*.yaml"))
    check = (
        "import wsi_pipeline.config as c, sys; assert 'site' in c.__file__, c.__file__; "
        "print(sorted(c.available_presets())); c.load_config('demo')"
    )
    env = {"PYTHONPATH": str(target), "PATH": ""}
    ran = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "curve-cpu" in ran.stdout and "demo" in ran.stdout
