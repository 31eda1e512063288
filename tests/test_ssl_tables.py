"""The report of ``benchmarks/ssl_tables.py`` on hand-made run results: mean +- std cells, paired gains over
the seeds both runs have, the paired difference to a reference method, runs left out of the tables, and the
confusion summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from ssl_tables import (
    CONTINUE,
    CONTINUED_CHOSEN,
    CONTINUED_TUNE,
    SUPERVISED,
    SUPERVISED_CONTINUED,
    _pm,
    confusion_table,
    continued_tuning,
    pseudo_threshold,
    run_args,
    runs_of,
    score_validation,
    table,
    validation_agreement,
    validation_file,
    validation_slides,
)

CLASSES = ["ASC-US", "LSIL"]


def _result(m: float, asc_us: float | None) -> dict:
    """A run's scores: mAP ``m`` (LSIL's AP too), ASC-US's AP, and 10 minutes of training."""
    return {"overall": {"mAP": m}, "classes": {"ASC-US": {"mAP": asc_us}, "LSIL": {"mAP": m}}, "seconds": 600.0}


def _results(out: Path) -> dict:
    runs = {
        (SUPERVISED, 0): _result(0.50, 0.40),
        (SUPERVISED, 1): _result(0.54, 0.44),
        ("dual_alignment", 0): _result(0.48, 0.42),
        ("dual_alignment", 1): _result(0.57, None),  # no ASC-US lesion found: AP 0
        ("dual_alignment", 2): _result(0.60, 0.50),  # no supervised seed 2: in the mean, not in the gains
    }
    results = {(p, 1.0, s, out / p / f"frac1_seed{s}"): r for (p, s), r in runs.items()}
    # a noise-floor rerun and a tuning run: never table rows
    results[(SUPERVISED, 1.0, 0, out / SUPERVISED / "frac1_seed0_subset0")] = _result(0.10, 0.10)
    results[("dual_alignment", 1.0, 0, out / "tune" / "dual_alignment-weight0.1" / "frac1_seed0")] = _result(0.9, 0.9)
    return results


def test_pm_is_mean_and_population_std_in_percent() -> None:
    assert _pm([0.5, 0.7]) == "60.0 +- 10.0"
    assert _pm([]) == "-"


def test_table_rows_gains_and_versus(tmp_path: Path) -> None:
    lines, rows = table(_results(tmp_path), [SUPERVISED, "dual_alignment", "csd"], 1.0, CLASSES, "dual_alignment")
    assert lines[0] == ("| method | seeds | mAP | paired gain | paired vs dual_alignment | ASC-US (gain) | LSIL (gain) "
                        "| pseudo-label precision / recall | minutes |")  # fmt: skip
    assert lines[1] == "|" + "---|" * 9
    assert len(lines) == 4 and len(rows) == 2  # csd has no run: no row
    supervised, ours = rows
    assert supervised["seeds"] == [0, 1] and supervised["gains"] == {}
    # supervised minus dual alignment per seed: +0.02, -0.03
    assert supervised["versus"]["dual_alignment"] == [0.50 - 0.48, 0.54 - 0.57]
    assert lines[2].startswith(f"| {SUPERVISED} | 2 | 52.0 +- 2.0 | - | -0.5 +- 2.5 | 42.0 +- 2.0 |")
    assert ours["seeds"] == [0, 1, 2]
    assert ours["metrics"]["ASC-US"] == [0.42, 0.0, 0.50]
    # gains over seeds 0 and 1 only: mAP -0.02, +0.03; ASC-US +0.02, -0.44
    assert ours["gains"]["mAP"] == [0.48 - 0.50, 0.57 - 0.54]
    assert ours["gains"]["ASC-US"] == [0.42 - 0.40, 0.0 - 0.44]
    assert lines[3] == ("| dual_alignment | 3 | 55.0 +- 5.1 | 0.5 +- 2.5 | - | 30.7 +- 21.9 (-21.0 +- 23.0) | "
                        "55.0 +- 5.1 (0.5 +- 2.5) | - / - | 10 |")  # fmt: skip


def test_table_without_runs_is_empty(tmp_path: Path) -> None:
    assert table(_results(tmp_path), ["csd"], 1.0, CLASSES) == ([], [])
    assert table(_results(tmp_path), [SUPERVISED], 0.25, CLASSES) == ([], [])


def _confusion(right: int, other: int, missed: int, background: int) -> dict:
    """Every class alike: ``right`` lesions given their class, ``other`` given the other class."""
    matrix = {c: {c: right, "missed": missed, **{d: other for d in CLASSES if d != c}} for c in CLASSES}
    return {**matrix, "background": {d: background for d in CLASSES}}


def test_confusion_table_sums_seeds_both_have() -> None:
    by = {
        (SUPERVISED, 1.0, 0): _confusion(10, 2, 1, 5),
        (SUPERVISED, 1.0, 1): _confusion(20, 4, 2, 10),
        ("dual_alignment", 1.0, 0): _confusion(9, 3, 0, 6),
        ("dual_alignment", 1.0, 1): _confusion(21, 1, 3, 12),
        ("dual_alignment", 1.0, 2): _confusion(99, 99, 99, 99),  # no supervised seed 2: left out
        ("csd", 0.25, 0): _confusion(1, 1, 1, 1),  # no supervised run at 25%: no row
    }
    # per class right 10+20 -> 9+21; another class 2 classes x (2+4) -> 2 x (3+1); missed 2 x (1+2) -> 2 x 3;
    # on no lesion 2 x (5+10) -> 2 x (6+12)
    assert confusion_table(by, CLASSES) == ["| dual_alignment | 100% | 2 | 30 -> 30 | 30 -> 30 | 12 -> 8 | 6 -> 6 | "
                                            "30 -> 36 |"]  # fmt: skip


def test_continued_runs_start_from_their_supervised_run_and_only_dual_alignment_reads_the_pool(tmp_path: Path) -> None:
    runs = [r for r in runs_of(["continued"]) if r[2] == 1]
    assert [r[0] for r in runs] == ["curve-cpu-continued", "dual_alignment-continued", "soft_teacher-continued",
                                    CONTINUED_CHOSEN]  # fmt: skip
    runs = runs[:2]
    start = tmp_path / "curve" / "frac1_seed1" / "checkpoints" / "last.pt"
    with pytest.raises(SystemExit, match=str(start)):  # a missing supervised run stops the row
        run_args(runs, tmp_path / "ssl", tmp_path / "curve", tmp_path / "pool", tmp_path / "test.json")
    start.parent.mkdir(parents=True)
    start.write_bytes(b"")
    (sup, sup_set, *_, sup_folder), (da, da_set, *_, da_folder) = run_args(
        runs, tmp_path / "ssl", tmp_path / "curve", tmp_path / "pool", tmp_path / "test.json"
    )
    assert (sup, da) == (SUPERVISED, "dual_alignment")
    assert sup_set == [*CONTINUE, f"train.init_checkpoint={start}"]
    assert da_set == [f"train.unlabeled={tmp_path / 'pool'}", *CONTINUE, f"train.init_checkpoint={start}"]
    assert sup_folder == tmp_path / "ssl" / "curve-cpu-continued" / "frac1_seed1"
    assert da_folder == tmp_path / "ssl" / "dual_alignment-continued" / "frac1_seed1"

    seed0 = tmp_path / "curve" / "frac1_seed0" / "checkpoints" / "last.pt"
    seed0.parent.mkdir(parents=True)
    seed0.write_bytes(b"")
    noise = run_args(runs_of(["continued-noise"]), tmp_path / "ssl", tmp_path / "curve", tmp_path / "pool", tmp_path)
    assert [(a[3], a[5].name, a[1][-1]) for a in noise] == [  # seed 0's start, other data orders, own folders
        (s, f"frac1_seed{s}_subset0", f"train.init_checkpoint={seed0}") for s in (1, 2)
    ]


def test_continued_variants_put_their_settings_after_the_protocol_and_tune_on_seed_0_only(tmp_path: Path) -> None:
    runs = runs_of(["continued-tune"])
    assert {r[2] for r in runs} == {0}
    tried = ["dual_alignment-continued-t0.9-w0.1", "dual_alignment-continued-t0.9-w0.3"]
    assert [r[0] for r in runs] == ["curve-cpu-continued", "dual_alignment-continued", *tried]
    # at 25%: the larger weights, seed 0 (supervised continued, the chosen variant and the preset are continued-25's)
    assert runs_of(["continued-25-tune"]) == [
        ("dual_alignment-continued-t0.9-w0.3", 0.25, 0, ()),
        ("dual_alignment-continued-t0.9-w1", 0.25, 0, ()),
        ("dual_alignment-continued-no-pseudo-w0.1", 0.25, 0, ()),
    ]
    assert runs_of(["continued-no-pseudo"]) == [
        ("dual_alignment-continued-no-pseudo-w0.1", 1.0, s, ()) for s in (0, 1, 2)
    ]
    # the other seeds of the one chosen on validation only
    assert set(CONTINUED_TUNE) & {r[0] for r in runs_of(["continued"])} == {CONTINUED_CHOSEN}
    start = tmp_path / "curve" / "frac1_seed0" / "checkpoints" / "last.pt"
    start.parent.mkdir(parents=True)
    start.write_bytes(b"")
    *_, (method, settings, *_, folder) = run_args(
        runs, tmp_path / "ssl", tmp_path / "curve", tmp_path / "pool", tmp_path
    )
    assert method == "dual_alignment"
    # the variant's weight comes after the protocol's, so it wins when the overrides are applied in order
    assert settings == [f"train.unlabeled={tmp_path / 'pool'}", *CONTINUE, "train.ssl.dual_alignment.threshold=0.9",
                        "train.ssl.weight=0.3", f"train.init_checkpoint={start}"]  # fmt: skip
    assert folder == tmp_path / "ssl" / "dual_alignment-continued-t0.9-w0.3" / "frac1_seed0"


def test_continued_at_25_percent_starts_from_the_25_percent_runs_into_its_own_folders(tmp_path: Path) -> None:
    runs = [r for r in runs_of(["continued-25"]) if r[2] == 2]
    assert runs == [(p, 0.25, 2, ()) for p in ("curve-cpu-continued", CONTINUED_CHOSEN, "dual_alignment-continued")]
    runs = runs[:2]
    start = tmp_path / "curve" / "frac0.25_seed2" / "checkpoints" / "last.pt"
    (tmp_path / "curve" / "frac1_seed2" / "checkpoints").mkdir(parents=True)
    (tmp_path / "curve" / "frac1_seed2" / "checkpoints" / "last.pt").write_bytes(b"")
    with pytest.raises(SystemExit, match=str(start)):  # the 100% run of the same seed is no substitute
        run_args(runs, tmp_path / "ssl", tmp_path / "curve", tmp_path / "pool", tmp_path)
    start.parent.mkdir(parents=True)
    start.write_bytes(b"")
    (_, sup_set, fraction, *_, folder), (_, da_set, *_) = run_args(
        runs, tmp_path / "ssl", tmp_path / "curve", tmp_path / "pool", tmp_path
    )
    assert fraction == 0.25 and folder == tmp_path / "ssl" / "curve-cpu-continued" / "frac0.25_seed2"
    assert sup_set[-1] == da_set[-1] == f"train.init_checkpoint={start}"
    assert "train.ssl.dual_alignment.threshold=0.9" in da_set


@pytest.mark.parametrize(
    ("method", "expected"),
    [("dual_alignment", 0.9), ("soft_teacher", 0.7), ("soft_teacher_alignment", 0.7), ("csd", 0.5)],
)
def test_pseudo_label_quality_is_scored_at_the_runs_own_threshold(tmp_path: Path, method: str, expected: float) -> None:
    ssl = {"dual_alignment": {"threshold": 0.9}, "soft_teacher": {"threshold": 0.7}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"train": {"method": method, "ssl": ssl}}))
    assert pseudo_threshold(tmp_path) == expected


def test_validation_agreement_pairs_each_continued_run_with_supervised_continued_of_its_fraction_and_seed(
    tmp_path: Path,
) -> None:
    val = tmp_path / "synthpap-v5" / "patches" / "val.json"
    val.parent.mkdir(parents=True)
    val.write_text(json.dumps({"images": [{"id": i, "slide_id": f"L{i % 3}"} for i in range(7)]}))
    assert validation_slides(val) == 3
    # (preset, fraction, seed): (test mAP, validation mAP)
    runs = {
        (SUPERVISED_CONTINUED, 1.0, 0): (0.50, 0.60),
        (SUPERVISED_CONTINUED, 0.25, 0): (0.40, 0.55),
        (CONTINUED_CHOSEN, 1.0, 0): (0.52, 0.61),  # +2 on test, +1 on validation: same sign
        (CONTINUED_CHOSEN, 0.25, 0): (0.39, 0.57),  # -1 on test, +2 on validation: not
        ("dual_alignment-continued", 1.0, 0): (0.47, 0.57),  # -3 / -3
        ("dual_alignment-continued", 1.0, 1): (0.60, 0.70),  # no supervised continued seed 1: left out
        ("soft_teacher-continued", 1.0, 0): (0.20, 0.30),  # not dual alignment: not what tuning ranks
    }
    results = {}
    for (preset, fraction, seed), (test_map, val_map) in runs.items():
        folder = tmp_path / "ssl" / preset / f"frac{fraction:g}_seed{seed}"
        folder.mkdir(parents=True)
        validation_file(folder, val).write_text(json.dumps({"overall": {"mAP": val_map}}))
        results[(preset, fraction, seed, folder)] = {"overall": {"mAP": test_map}}
    assert validation_file(folder, val).name == "result_val-synthpap-v5.json"
    lines, found = validation_agreement(results, val)
    pairs = [(r["preset"], r["fraction"], round(100 * r["validation"], 6), round(100 * r["test"], 6))
             for r in found["pairs"]]  # fmt: skip
    assert pairs == [
        (CONTINUED_CHOSEN, 0.25, 2.0, -1.0),  # by fraction, then preset, then seed
        ("dual_alignment-continued", 1.0, -3.0, -3.0),
        (CONTINUED_CHOSEN, 1.0, 1.0, 2.0),
    ]
    assert found["same_sign"] == 2
    assert found["correlation"] == pytest.approx(np.corrcoef([2, -3, 1], [-1, -3, 2])[0, 1])
    assert "| dual_alignment-continued-t0.9-w0.1 | 25% | 0 | +2.0 | -1.0 | no |" in lines
    assert lines[-1].startswith("\nSame sign in 2 of 3 pairs")
    assert validation_agreement({}, val) == ([], {})


def test_continued_tuning_reads_one_fraction_at_a_time(tmp_path: Path) -> None:
    val = tmp_path / "synthpap-v5" / "patches" / "val.json"
    results = {}
    for preset, fraction, val_map in [(SUPERVISED_CONTINUED, 1.0, 0.6), (SUPERVISED_CONTINUED, 0.25, 0.5),
                                      ("dual_alignment-continued-t0.9-w0.3", 1.0, 0.58),
                                      ("dual_alignment-continued-t0.9-w1", 0.25, 0.53)]:  # fmt: skip
        folder = tmp_path / preset / f"frac{fraction:g}_seed0"
        folder.mkdir(parents=True)
        validation_file(folder, val).write_text(json.dumps({"overall": {"mAP": val_map}}))
        results[(preset, fraction, 0, folder)] = {"overall": {"mAP": 0.0}}
    at_100, at_25 = continued_tuning(results, val, 1.0), continued_tuning(results, val, 0.25)
    assert at_100[2:] == [
        f"| {SUPERVISED_CONTINUED} | preset | 60.0 | +0.0 |",
        "| dual_alignment-continued-t0.9-w0.3 | train.ssl.dual_alignment.threshold=0.9 train.ssl.weight=0.3 | 58.0 "
        "| -2.0 |",
    ]
    assert at_25[-1].endswith("| 53.0 | +3.0 |") and len(at_25) == 4
    assert continued_tuning({k: v for k, v in results.items() if k[0] == SUPERVISED_CONTINUED}, val, 1.0) == []


def test_score_validation_scores_each_unscored_run_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl_tables

    val = tmp_path / "synthpap-v5" / "patches" / "val.json"
    done, fresh, unfinished = (tmp_path / name for name in ("done", "fresh", "unfinished"))
    for folder in (done, fresh):
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "checkpoints" / "last.pt").write_bytes(b"")
    validation_file(done, val).write_text("{}")
    scored: list[Path] = []
    monkeypatch.setattr(ssl_tables, "_score_validation", lambda folder, v: scored.append(folder))
    score_validation([fresh, done, fresh, unfinished, fresh], val, jobs=1)
    assert scored == [fresh]


@pytest.mark.parametrize("jobs", [1, 2])
def test_in_workers_returns_each_call_in_order_here_or_in_spawned_workers(jobs: int) -> None:
    import operator

    from learning_curve import in_workers

    assert in_workers(operator.add, [(1, 2), (10, 20), (100, 200)], jobs) == [3, 30, 300]
