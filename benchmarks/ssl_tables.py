"""The paper's two tables on synthpap-v3 with the CPU learning-curve detector (configs/curve-cpu.yaml).

Table 1: test mAP (AP10-70) with 25/50/75/100% of the labeled slides, supervised vs dual alignment.
Table 2, 100% of the labels: supervised, CSD, Mean Teacher, Soft Teacher, the three dual-alignment
ablations, dual alignment, and Soft Teacher with the alignment terms. Three seeds; a seed fixes the
labeled slides and the initialisation for every method, so gains are reported paired (the mean +- std
of the per-seed differences to supervised).

The unlabeled pool is mined once from v3's 50 unlabeled slides by the 100% supervised model (seed 0) and
kept fixed. Every run is cached in ``OUT/<preset>/frac<f>_seed<s>/result.json`` and resumes from its last
checkpoint; supervised runs are shared with ``benchmarks/learning_curve.py`` (``--supervised-out``).

    python benchmarks/ssl_tables.py --quick                  # 25%: supervised vs dual alignment, 3 seeds
    python benchmarks/ssl_tables.py --rows table1 --rows table2
    python benchmarks/ssl_tables.py --rows noise             # one labeled subset, three init seeds
    python benchmarks/ssl_tables.py --rows quick-soft        # Soft Teacher (+ alignment) at 25%, 3 seeds
    OMP_NUM_THREADS=1 python benchmarks/ssl_tables.py --rows table2 --only csd --jobs 1   # beside another
    python benchmarks/ssl_tables.py --rows oracle            # 25% + the pool with its hidden labels, 2 + 2 a batch
    python benchmarks/ssl_tables.py --rows true-pseudo       # dual alignment, the hidden labels as pseudo-labels
    python benchmarks/ssl_tables.py --rows background        # the same and dual alignment, with background rows
    python benchmarks/ssl_tables.py --rows continued         # 1,000 more iterations from the 100% supervised runs
    python benchmarks/ssl_tables.py --rows continued-noise   # the same from seed 0's run, other data orders
    python benchmarks/ssl_tables.py --rows continued-tune    # dual alignment's settings there, seed 0, on validation
    python benchmarks/ssl_tables.py --rows continued-25      # the chosen setting and the preset, from the 25% runs
    python benchmarks/ssl_tables.py --rows continued-25-tune --val-json data/synthpap-v5/patches/val.json
                                                             # larger weights there, seed 0, on v5's 50 val slides
    python benchmarks/ssl_tables.py --rows continued-no-pseudo  # the alignment terms without pseudo-labels, 100%
    python benchmarks/ssl_tables.py --rows tune              # lambda on the validation slides (25%, seed 0)
    python benchmarks/ssl_tables.py --rows step-time         # one training step of each method, one process
    python benchmarks/ssl_tables.py --rows gradients         # each term's gradient size on the detector
    python benchmarks/ssl_tables.py --report                 # the tables from what is cached, nothing trained
    python benchmarks/ssl_tables.py --rescore --test-json data/synthpap-v4/patches/test.json  # 100 test slides

Markdown goes to stdout and ``OUT/tables.md``, everything to ``OUT/tables.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from wsi_pipeline.config import load_config
from wsi_pipeline.io import write_json_atomic, write_text_atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curve import in_workers, run_one, score, scored_files, split_tag
from ssl_pool import ORACLE, V3, oracle_json, pseudo_label_quality, truth_pool_json
from ssl_probes import step_times, term_gradients

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "bench" / "ssl"
CURVE = ROOT / "data" / "bench" / "curve-cpu-redesign"  # benchmarks/learning_curve.py --out: the supervised runs
# the pool's miner: the 100% seed-0 supervised run on 2 threads (learning_curve.py --jobs 1), kept apart from
# the tables' one-thread runs, which a thread count moves by about a step of the curve
MINER = ROOT / "data" / "bench" / "curve-cpu-2threads" / "frac1_seed0" / "checkpoints" / "last.pt"
SUPERVISED = "curve-cpu"
# dual alignment whose unlabeled terms take the pool's hidden labels as pseudo-labels: what the terms pass on
# when every pseudo-label is right
TRUE_PSEUDO = "dual_alignment-true-pseudo-labels"
# the same, and dual alignment itself, with background rows (a background proxy and prototype): can the metric
# terms teach a mimic to be background?
TRUE_PSEUDO_BG = "dual_alignment-true-pseudo-labels-background"
DA_BG = "dual_alignment-background"
GIVEN, BACKGROUND = "train.ssl.dual_alignment.pseudo_labels=given", "train.ssl.dual_alignment.background_rows=true"
VARIANTS = {  # rows that are the dual_alignment preset with settings: (settings, the pool with its hidden labels)
    TRUE_PSEUDO: ((GIVEN,), True),
    TRUE_PSEUDO_BG: ((GIVEN, BACKGROUND), True),
    DA_BG: ((BACKGROUND,), False),
}
# the burn-in protocol of most semi-supervised detectors: start from the finished supervised run of the same
# fraction and seed, then train 1,000 more iterations, supervised alone or with the pool (chosen before any
# run, not tuned: the middle step of curve-cpu's learning rate, one step down at 800, each method's preset
# weight reached over 200 iterations; the EMA teacher of Soft Teacher starts as the supervised detector)
SUPERVISED_CONTINUED = "curve-cpu-continued"
DA_THRESHOLD = "train.ssl.dual_alignment.threshold"
# row -> (preset, settings). CONTINUED_TUNE: dual alignment's pseudo-labels at 0.9 (about twice as precise as at
# 0.5 on the pool) with a larger weight, tried on seed 0 and judged on the validation slides (--rows
# continued-tune at 100%: 0.1 and 0.3; continued-25-tune at 25%, on synthpap-v5's 50 slides: 0.3 and 1) before
# their other seeds run
CONTINUED_TUNE = {
    f"dual_alignment-continued-t0.9-w{w}": ("dual_alignment", (f"{DA_THRESHOLD}=0.9", f"train.ssl.weight={w}"))
    for w in (0.1, 0.3, 1)
}
TUNED_AT_100 = ["dual_alignment-continued-t0.9-w0.1", "dual_alignment-continued-t0.9-w0.3"]
TUNED_AT_25 = ["dual_alignment-continued-t0.9-w0.3", "dual_alignment-continued-t0.9-w1"]
# the alignment terms on the labeled images alone: no score reaches a threshold of 1, so no pseudo-label
# (the run's diagnostics count them), and what is left is the metric space as a supervised regulariser
NO_PSEUDO = "dual_alignment-continued-no-pseudo-w0.1"
CONTINUED = {
    SUPERVISED_CONTINUED: (SUPERVISED, ()),
    "dual_alignment-continued": ("dual_alignment", ()),
    "soft_teacher-continued": ("soft_teacher", ()),
    **CONTINUED_TUNE,
    NO_PSEUDO: ("dual_alignment", (f"{DA_THRESHOLD}=1", "train.ssl.weight=0.1")),
}
# the better of the two on validation (seed 0, minus supervised continued: -0.0 at weight 0.1, -2.6 at 0.3, the
# preset -2.5), so its other seeds are in the continued rows
CONTINUED_CHOSEN = "dual_alignment-continued-t0.9-w0.1"
CONTINUE = ("train.max_iter=1000", "train.lr=0.002", "train.warmup_iters=0", "train.lr_steps=[800]",
            "train.ssl.start_iter=0", "train.ssl.ramp_iters=200")  # fmt: skip
TABLE2 = ["curve-cpu", "csd", "mean_teacher", "soft_teacher", "soft_teacher-burn-in", "dual_alignment-no-prototype",
          "dual_alignment-no-proposal", "dual_alignment-no-bank", "dual_alignment",
          "soft_teacher_alignment"]  # fmt: skip
FRACTIONS = [0.25, 0.5, 0.75, 1.0]
# pseudo-labels from an EMA teacher (decay 0.99 over 2,000 iterations) instead of the model itself
EMA = ("train.ssl.dual_alignment.pseudo_labels=ema", "train.ssl.ema_decay=0.99")
TUNE = [  # settings tried on the validation slides (25%, seed 0); each preset takes its best
    ("dual_alignment", ("train.ssl.weight=1",)),  # the paper's lambda
    ("dual_alignment", ("train.ssl.weight=0.1",)),
    ("dual_alignment", ("train.ssl.weight=0.03",)),
    ("dual_alignment", ("train.ssl.weight=0.03", "train.ssl.dual_alignment.threshold=0.9")),  # pool: 0.69 precise
    ("dual_alignment", ("train.ssl.weight=0.1", "train.ssl.dual_alignment.threshold=0.9")),
    ("dual_alignment", ("train.ssl.weight=0.03", *EMA)),
    ("dual_alignment", ("train.ssl.weight=0.03", *EMA, "train.ssl.dual_alignment.threshold=0.7")),
    # Soft Teacher at its preset (weight 2, threshold 0.9) found almost no pseudo-box at 25% and trained the
    # pool's lesions as background (test mAP 32.3 against 53.3 supervised, seed 0)
    ("soft_teacher", ("train.ssl.weight=0.5",)),
    ("soft_teacher", ("train.ssl.weight=0.5", "train.ssl.soft_teacher.threshold=0.7")),
]
SEEDS = [0, 1, 2]
log = logging.getLogger("ssl_tables")


def runs_of(rows: list[str]) -> list[tuple[str, float, int, tuple[str, ...]]]:
    """``(preset, fraction, seed, extra overrides)`` of the named rows, without repeats."""
    runs: list[tuple[str, float, int, tuple[str, ...]]] = []
    for row in rows:
        if row in ("quick", "table1"):
            fractions = [0.25] if row == "quick" else FRACTIONS
            runs += [(p, f, s, ()) for f in fractions for p in (SUPERVISED, "dual_alignment") for s in SEEDS]
        elif row == "table2":
            runs += [(p, 1.0, s, ()) for p in TABLE2 for s in SEEDS]
        elif row == "tune":  # lambda for dual alignment, 25% of the labels, seed 0, judged on validation
            runs += [(preset, 0.25, 0, settings) for preset, settings in TUNE]
        elif row == "quick-soft":  # the strongest baseline where labels are scarce, and the combination
            runs += [(p, 0.25, s, ()) for p in ("soft_teacher", "soft_teacher_alignment") for s in SEEDS]
        elif row == "oracle":  # the ceiling of what the pool can teach at 25%
            runs += [(ORACLE, 0.25, s, ()) for s in SEEDS]
        elif row == "true-pseudo":  # dual alignment, every pseudo-label right (25%); does lambda then help?
            runs += [(TRUE_PSEUDO, 0.25, s, ()) for s in SEEDS]
            runs += [(TRUE_PSEUDO, 0.25, 0, (f"train.ssl.weight={w}",)) for w in (0.1, 1)]
        elif row == "background":  # the metric terms with background rows (25%): true, then own pseudo-labels
            runs += [(p, 0.25, s, ()) for p in (TRUE_PSEUDO_BG, DA_BG) for s in SEEDS]
        elif row == "continued":  # from the 100% supervised runs: 1,000 more iterations without and with the pool
            picked = (SUPERVISED_CONTINUED, "dual_alignment-continued", "soft_teacher-continued", CONTINUED_CHOSEN)
            runs += [(p, 1.0, s, ()) for s in SEEDS for p in picked]
        elif row == "continued-25":  # the same from the 25% runs, where the target lies: the variant chosen at 100%
            picked = (SUPERVISED_CONTINUED, CONTINUED_CHOSEN, "dual_alignment-continued")  # and the preset
            runs += [(p, 0.25, s, ()) for s in SEEDS for p in picked]
        elif row == "continued-tune":  # dual alignment's settings under this protocol, seed 0, on validation
            runs += [(p, 1.0, 0, ()) for p in (SUPERVISED_CONTINUED, "dual_alignment-continued", *TUNED_AT_100)]
        elif row == "continued-25-tune":  # the same from seed 0's 25% run, beside the chosen variant and preset
            runs += [(p, 0.25, 0, ()) for p in (*TUNED_AT_25, NO_PSEUDO)]
        elif row == "continued-no-pseudo":  # at 100%: is the chosen variant's gain the pool's or the metric space's?
            runs += [(NO_PSEUDO, 1.0, s, ()) for s in SEEDS]
        elif row == "continued-noise":  # the continuation's own noise: seed 0's start, data-order seeds 1 and 2
            runs += [(SUPERVISED_CONTINUED, 1.0, s, ("train.subset_seed=0",)) for s in SEEDS[1:]]
        elif row == "noise":  # the labeled subset of seed 0, three initialisation / data-order seeds
            runs += [(SUPERVISED, 0.25, s, ("train.subset_seed=0",) if s else ()) for s in SEEDS]
    return list(dict.fromkeys(runs))


def folder_of(out: Path, supervised_out: Path, preset: str, fraction: float, seed: int, extra: tuple[str, ...]) -> Path:
    tag = f"frac{fraction:g}_seed{seed}"
    if any(e.startswith("train.ssl.") for e in extra):  # tuning: judged on the validation slides
        settings = "".join(f"-{key.rsplit('.', 1)[1]}{value}" for key, value in (e.split("=") for e in extra))
        return out / "tune" / f"{preset}{settings}" / tag
    return (supervised_out if preset == SUPERVISED else out / preset) / (tag + ("_subset0" if extra else ""))


def ensure_pool(pool: Path, checkpoint: Path) -> None:
    """Mine the pool once (the 100% supervised model, seed 0) unless it is there."""
    if (pool / "pool.json").is_file() or any(pool.glob("*.zarr")):  # mined, or a folder of tile stores
        return
    if not checkpoint.is_file():
        run = checkpoint.parents[1]  # <out>/frac1_seed0/checkpoints/last.pt
        raise SystemExit(f"{checkpoint}: missing; train the miner first: python benchmarks/learning_curve.py "
                         f"--jobs 1 --fractions 1 --seeds 0 --out {run.parent}")  # fmt: skip
    slides = sorted(str(p) for p in (V3 / "slides").glob("U*.tiff"))
    labeled = [a for split in ("train", "val", "test") for a in ("--labeled", str(V3 / "patches" / f"{split}.json"))]
    command = [sys.executable, "-m", "wsi_pipeline", "mine", *slides, "--checkpoint", str(checkpoint),
               "--out", str(pool), *labeled]  # fmt: skip
    log.info("mining the pool: %s", " ".join(command))
    started = time.perf_counter()
    subprocess.run(command, check=True)
    write_text_atomic(pool / "mine_seconds.txt", f"{time.perf_counter() - started:.0f}\n")


def labeled_only(preset: str) -> bool:
    """Whether a row's runs train on labeled patches only (no pool, no pseudo-labels to score)."""
    return preset in (SUPERVISED, ORACLE) or CONTINUED.get(preset, (preset,))[0] == SUPERVISED


def run_args(runs: list, out: Path, supervised_out: Path, pool: Path, test: Path) -> list[tuple]:
    """:func:`learning_curve.run_one`'s arguments (preset, overrides, fraction, seed, test, folder) per run."""
    args = []
    for preset, fraction, seed, extra in runs:
        overrides = list(extra) + ([] if labeled_only(preset) else [f"train.unlabeled={pool}"])
        folder = folder_of(out, supervised_out, preset, fraction, seed, extra)
        if preset == ORACLE:  # the subset is in the file: train on all of it
            overrides += [f"train.train_json={oracle_json(out, pool, fraction, seed)}", "train.batch_size=4"]
            args.append((SUPERVISED, overrides, 1.0, seed, test, folder))
            continue
        if preset in CONTINUED:
            start_seed = 0 if extra else seed  # a noise run starts where seed 0 does
            start = folder_of(out, supervised_out, SUPERVISED, fraction, start_seed, ()) / "checkpoints" / "last.pt"
            if not start.is_file():
                raise SystemExit(f"{start}: missing; train the supervised run first (--rows table1 --only curve-cpu)")
            method, settings = CONTINUED[preset]
            overrides += [*CONTINUE, *settings, f"train.init_checkpoint={start}"]
            args.append((method, overrides, fraction, seed, test, folder))
            continue
        if preset in VARIANTS:
            settings, truth = VARIANTS[preset]
            overrides = [*extra, f"train.unlabeled={truth_pool_json(out, pool) if truth else pool}", *settings]
            args.append(("dual_alignment", overrides, fraction, seed, test, folder))
            continue
        args.append((preset, overrides, fraction, seed, test, folder))
    return args


def train_runs(runs: list, out: Path, supervised_out: Path, pool: Path, jobs: int, test: Path) -> dict:
    args = run_args(runs, out, supervised_out, pool, test)
    results = in_workers(run_one, [(*a, jobs == 1) for a in args], jobs)  # progress bars only in this process
    return {(run[0], run[1], run[2], a[5]): res for run, a, res in zip(runs, args, results, strict=True)}


def cached(runs: list, out: Path, supervised_out: Path, test: Path) -> dict:
    """The scores on ``test`` of the runs that have them, keyed ``(preset, fraction, seed, folder)``."""
    found = {}
    for preset, fraction, seed, extra in runs:
        folder = folder_of(out, supervised_out, preset, fraction, seed, extra)
        path = scored_files(folder, test)[0]
        if path.is_file():
            found[(preset, fraction, seed, folder)] = json.loads(path.read_text())
    return found


VAL3 = V3 / "patches" / "val.json"  # the validation split the tables were tuned on: v3's (and v4's) 5 slides


def validation_file(folder: Path, val: Path) -> Path:
    """Where a run's scores on the validation split ``val`` are cached: ``result_val.json`` for v3's (and
    v4's, the same patches), ``result_val-<dataset>.json`` for another dataset's."""
    return folder / f"result_val{split_tag(val)}.json"


def _score_validation(folder: Path, val: Path) -> None:
    write_json_atomic(validation_file(folder, val), score(folder, val).summary(), indent=1)


def score_validation(folders: list[Path], val: Path, jobs: int) -> None:
    """Score on ``val`` the finished runs in ``folders`` that lack its cached scores, each once (a reference
    run is named by every pair it is in), ``jobs`` at a time."""
    todo = [f for f in dict.fromkeys(folders)
            if not validation_file(f, val).is_file() and (f / "checkpoints" / "last.pt").is_file()]  # fmt: skip
    in_workers(_score_validation, [(folder, val) for folder in todo], jobs)


def validation_map(folder: Path, val: Path = VAL3) -> float:
    """mAP of a run on the validation split ``val`` (scored once, then cached): what tuning looks at."""
    if not validation_file(folder, val).is_file():
        _score_validation(folder, val)
    return json.loads(validation_file(folder, val).read_text())["overall"]["mAP"]


def validation_slides(val: Path) -> int:
    """How many slides the validation split ``val`` (COCO with ``slide_id`` per image) draws its patches from."""
    return len({img.get("slide_id") for img in json.loads(val.read_text())["images"]})


def paired_with_continued(results: dict) -> list[tuple[str, float, int, Path, Path]]:
    """``(preset, fraction, seed, folder, supervised-continued folder)`` of every continued dual-alignment
    table run (what tuning chooses among; Soft Teacher continued runs away) whose supervised-continued run
    of the same fraction and seed has its scores."""
    reference = {(f, s): folder for (p, f, s, folder), _ in results.items() if p == SUPERVISED_CONTINUED
                 and table_run(folder)}  # fmt: skip
    return [
        (p, f, s, folder, reference[(f, s)])
        for (p, f, s, folder), _ in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2]))
        if CONTINUED.get(p, ("",))[0] == "dual_alignment" and table_run(folder) and (f, s) in reference
    ]


def validation_agreement(results: dict, val: Path) -> tuple[list[str], dict]:
    """Whether the validation split ``val`` ranks what the test split ranks: for each continued run with the
    pool, its mAP minus supervised continued's (same fraction and seed) on validation and on test, then how
    often the two differences agree in sign and their Pearson correlation. Scores must be cached
    (:func:`score_validation`). Returns markdown lines and the same as JSON."""
    rows, val_gain, test_gain = [], [], []
    for preset, fraction, seed, folder, base in paired_with_continued(results):
        v = validation_map(folder, val) - validation_map(base, val)
        t = results[(preset, fraction, seed, folder)]["overall"]["mAP"]
        t -= results[(SUPERVISED_CONTINUED, fraction, seed, base)]["overall"]["mAP"]
        rows.append({"preset": preset, "fraction": fraction, "seed": seed, "validation": v, "test": t})
        val_gain.append(v)
        test_gain.append(t)
    if not rows:
        return [], {}
    lines = ["| run | labeled | seed | validation gain | test gain | same sign |", "|---|---|---|---|---|---|"]
    for r in rows:
        same = "yes" if r["validation"] * r["test"] > 0 else "no"
        lines.append(f"| {r['preset']} | {r['fraction']:.0%} | {r['seed']} | {100 * r['validation']:+.1f} | "
                     f"{100 * r['test']:+.1f} | {same} |")  # fmt: skip
    agree = sum(v * t > 0 for v, t in zip(val_gain, test_gain, strict=True))
    corr = float(np.corrcoef(val_gain, test_gain)[0, 1]) if len(rows) > 2 and np.std(val_gain) > 0 else float("nan")
    lines.append(f"\nSame sign in {agree} of {len(rows)} pairs; Pearson correlation of the two gains {corr:.2f}.")
    return lines, {"pairs": rows, "same_sign": agree, "correlation": corr}


def table_run(folder: Path) -> bool:
    """Whether a run folder belongs in the tables: not a noise-floor rerun of seed 0's subset, not tuning."""
    return "subset0" not in folder.name and folder.parent.parent.name != "tune"


def continued_tuning(results: dict, val: Path = VAL3, fraction: float = 1.0) -> list[str]:
    """Validation mAP of seed 0's continued runs at ``fraction`` with the pool, paired against supervised
    continued: what chooses a continued variant (empty until a variant of ``CONTINUED_TUNE`` has run there)."""
    rows = {preset for preset, *_ in runs_of(["continued-tune", "continued-25-tune", "continued-25"])}
    runs = {p: folder for (p, f, s, folder), _ in sorted(results.items(), key=lambda kv: kv[0][0])
            if p in rows and f == fraction and s == 0 and table_run(folder)}  # fmt: skip
    if SUPERVISED_CONTINUED not in runs or not any(p in CONTINUED_TUNE for p in runs):
        return []
    base = validation_map(runs[SUPERVISED_CONTINUED], val)
    lines = ["| run | settings | validation mAP | minus curve-cpu-continued |", "|---|---|---|---|"]
    for preset, folder in runs.items():
        mean_ap, settings = validation_map(folder, val), " ".join(CONTINUED[preset][1]) or "preset"
        lines.append(f"| {preset} | {settings} | {100 * mean_ap:.1f} | {100 * (mean_ap - base):+.1f} |")
    return lines


def pseudo_threshold(folder: Path) -> float:
    """The score at which a run takes its pseudo-labels, from its saved config: dual alignment's or Soft
    Teacher's threshold; 0.5 for the consistency methods, which take none."""
    train = load_config(folder / "config.yaml").train
    if train.method == "dual_alignment":
        return train.ssl.dual_alignment.threshold
    return train.ssl.soft_teacher.threshold if train.method.startswith("soft_teacher") else 0.5


def _pm(values: list[float]) -> str:
    v = np.asarray(values, float) * 100
    return "-" if not len(v) else f"{v.mean():.1f} +- {v.std():.1f}"


def _value(result: dict, metric: str) -> float:
    """A run's mAP (``metric`` "mAP") or one class's AP10-70."""
    return result["overall"]["mAP"] if metric == "mAP" else result["classes"][metric]["mAP"] or 0.0


def _paired(by: dict, preset: str, reference: str, seeds: list[int], metric: str) -> list[float]:
    """``preset`` minus ``reference`` on ``metric``, per seed that both have."""
    return [_value(by[(preset, s)], metric) - _value(by[(reference, s)], metric) for s in seeds if (reference, s) in by]


def table(
    results: dict, presets: list[str], fraction: float, classes: list[str], versus: str | None = None
) -> tuple[list[str], list[dict]]:
    """Markdown lines (header, rule, rows; none without runs) and JSON rows for ``presets`` at ``fraction``:
    mean +- std per class and mAP, the paired gain over supervised (seeds both have) and, with ``versus``, the
    paired mAP difference to that preset."""
    by = {(p, s): r for (p, f, s, folder), r in results.items() if f == fraction and table_run(folder)}
    lines, rows = [], []
    for preset in presets:
        seeds = sorted(s for p, s in by if p == preset)
        if not seeds:
            continue
        metrics = {m: [_value(by[(preset, s)], m) for s in seeds] for m in [*classes, "mAP"]}
        gains = {}
        if preset != SUPERVISED and any((SUPERVISED, s) in by for s in seeds):
            gains = {m: _paired(by, preset, SUPERVISED, seeds, m) for m in [*classes, "mAP"]}
        against = _paired(by, preset, versus, seeds, "mAP") if versus and preset != versus else []
        quality = [by[(preset, s)].get("pseudo_quality") for s in seeds]
        precision = [q["precision"] for q in quality if q and q["precision"] is not None]
        recall = [q["recall"] for q in quality if q and q["recall"] is not None]
        cpu = np.mean([by[(preset, s)]["seconds"] for s in seeds]) / 60
        lines.append(
            f"| {preset} | {len(seeds)} | {_pm(metrics['mAP'])} | {_pm(gains['mAP']) if gains else '-'} | "
            + (f"{_pm(against)} | " if versus else "")
            + " | ".join(f"{_pm(metrics[c])}" + (f" ({_pm(gains[c])})" if gains else "") for c in classes)
            + f" | {_pm(precision)} / {_pm(recall)} | {cpu:.0f} |"
        )
        rows.append({"preset": preset, "fraction": fraction, "seeds": seeds, "metrics": metrics, "gains": gains,
                     "pseudo_precision": precision, "pseudo_recall": recall, "minutes": cpu,
                     **({"versus": {versus: against}} if versus else {})})  # fmt: skip
    if not lines:
        return [], []
    columns = ["method", "seeds", "mAP", "paired gain", *([f"paired vs {versus}"] if versus else []),
               *(f"{c} (gain)" for c in classes), "pseudo-label precision / recall", "minutes"]  # fmt: skip
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *lines], rows


def pseudo_class_table(results: dict, classes: list[str]) -> list[str]:
    """Markdown rows: each semi-supervised run group's pseudo-labels on the pool per class, precision /
    recall over its seeds' pooled counts (a class has few lesions in the 120 sampled patches)."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for (preset, fraction, _s, folder), result in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        quality = result.get("pseudo_quality", {})
        if "classes" in quality and table_run(folder):
            groups.setdefault((preset, fraction), []).append(quality["classes"])
    lines = []
    for (preset, fraction), runs in groups.items():
        cells = []
        for c in classes:
            made = sum(r[c]["pseudo_labels"] for r in runs)
            hits = sum(round((r[c]["precision"] or 0) * r[c]["pseudo_labels"]) for r in runs)
            lesions = sum(r[c]["lesions"] for r in runs)
            cells.append(f"{hits / made if made else 0:.2f} / {hits / lesions if lesions else 0:.2f} ({made})")
        lines.append(f"| {preset} | {fraction:.0%} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def confusions(results: dict, test: Path, min_score: float) -> dict:
    """``(preset, fraction, seed) -> `` the evaluator's confusion of each table run on ``test`` (each test lesion
    paired with its best-scoring detection at IoU >= 0.3): the one in its scores at ``min_score`` 0, else
    recomputed from its saved test detections with those scoring below ``min_score`` left out."""
    from wsi_pipeline.evaluation.detection import class_confusion
    from wsi_pipeline.evaluation.inputs import load_coco
    from wsi_pipeline.taxonomy import CLASS_NAMES

    found = {}
    for (p, f, s, folder), r in results.items():
        if not table_run(folder):
            continue
        if not min_score:
            if "confusion" in r:
                found[(p, f, s)] = r["confusion"]
            continue
        detections = scored_files(folder, test)[1]
        if not detections.is_file():
            log.warning("%s: no saved test detections; left out of the score >= %g confusion", folder, min_score)
            continue
        gts, preds = load_coco(test, detections)[:2]
        found[(p, f, s)] = class_confusion(gts, preds, CLASS_NAMES, min_score=min_score)
    return found


def confusion_table(by: dict, classes: list[str]) -> list[str]:
    """Markdown rows: where each semi-supervised run group's detections go against its paired supervised runs
    (``by``: :func:`confusions`), counts summed over the seeds both have, as ``supervised -> method``."""
    lines = []
    for preset, fraction in sorted({(p, f) for p, f, _ in by if p not in (SUPERVISED, ORACLE)}, key=lambda k: k[::-1]):
        seeds = [s for p, f, s in by if (p, f) == (preset, fraction) and (SUPERVISED, f, s) in by]
        if not seeds:
            continue
        pair = [[by[(SUPERVISED, fraction, s)] for s in seeds], [by[(preset, fraction, s)] for s in seeds]]
        right = [[sum(m[c][c] for m in runs) for runs in pair] for c in classes]
        other = [sum(m[c][d] for m in runs for c in classes for d in classes if c != d) for runs in pair]
        missed = [sum(m[c]["missed"] for m in runs for c in classes) for runs in pair]
        background = [sum(m["background"][d] for m in runs for d in classes) for runs in pair]
        cells = [f"{a} -> {b}" for a, b in [*right, other, missed, background]]
        lines.append(f"| {preset} | {fraction:.0%} | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows",
        action="append",
        default=[],
        choices=[
            "quick",
            "quick-soft",
            "table1",
            "table2",
            "noise",
            "tune",
            "oracle",
            "true-pseudo",
            "background",
            "continued",
            "continued-noise",
            "continued-tune",
            "continued-25",
            "continued-25-tune",
            "continued-no-pseudo",
            "step-time",
            "gradients",
        ],
    )
    parser.add_argument("--quick", action="store_true", help="the same as --rows quick")
    parser.add_argument("--only", action="append", default=[], help="train only these presets of the rows")
    parser.add_argument("--seeds", type=int, nargs="+", help="train only these seeds of the rows")
    parser.add_argument("--report", action="store_true", help="tables from cached runs only")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--supervised-out", type=Path, default=CURVE)
    parser.add_argument("--pool", type=Path, default=OUT / "pool")
    parser.add_argument("--mining-checkpoint", type=Path, default=MINER)
    parser.add_argument("--test-json", type=Path, default=V3 / "patches" / "test.json",
                        help="the test split scored (synthpap-v4's: the same training, 100 test slides)")  # fmt: skip
    parser.add_argument("--val-json", type=Path,
                        help="the validation split tuning reads (default v3's 5 slides; synthpap-v5's: the same "
                             "training and test, 50 validation slides); given, the report also checks it "
                             "against the test split on every continued run")  # fmt: skip
    parser.add_argument("--confusion-score", type=float, default=0.0,
                        help="also the confusion table of the detections scoring at least this (from the saved "
                             "test detections; 0: only the any-score table, from the cached scores)")  # fmt: skip
    parser.add_argument("--rescore", action="store_true",
                        help="score every trained run of the tables that lacks this test split's scores")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(message)s")
    rows = args.rows + (["quick"] if args.quick else [])
    if not rows and not args.report and not args.rescore:
        parser.error("name --rows (or --quick, --report)")
    training = [r for r in rows if r not in ("step-time", "gradients")]
    every = runs_of(["table1", "table2", "noise", "tune", "oracle", "true-pseudo", "background", "quick-soft",
                     "continued", "continued-noise", "continued-tune", "continued-25",
                     "continued-25-tune", "continued-no-pseudo"])  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    if training and not args.report:
        ensure_pool(args.pool, args.mining_checkpoint)
        runs = [r for r in runs_of(training) if (not args.only or r[0] in args.only)
                and (args.seeds is None or r[2] in args.seeds)]  # fmt: skip
        train_runs(runs, args.out, args.supervised_out, args.pool, args.jobs, args.test_json)
    if args.rescore:  # trained runs only: a run with a score on some test split has finished training
        trained = [r for r in every if any(folder_of(args.out, args.supervised_out, *r[:3], r[3]).glob("result*.json"))]
        train_runs(trained, args.out, args.supervised_out, args.pool, args.jobs, args.test_json)
    results = cached(every, args.out, args.supervised_out, args.test_json)
    for (preset, _f, _s, folder), result in results.items():  # pseudo-label quality of each SSL run, cached
        checkpoint = folder / "checkpoints" / "last.pt"
        if labeled_only(preset) or not checkpoint.is_file():
            continue
        quality, threshold = result.get("pseudo_quality", {}), pseudo_threshold(folder)
        # older caches lack the per-class counts, or scored at 0.5 whatever the run's threshold
        if "classes" not in quality or quality.get("threshold", 0.5) != threshold:
            quality = pseudo_label_quality(checkpoint, args.pool, (threshold,))[f"{threshold:g}"]
            result["pseudo_quality"] = {**quality, "threshold": threshold}
            write_json_atomic(scored_files(folder, args.test_json)[0], result, indent=1)
    md: list[str] = []
    out_json: dict = {"tables": {}}
    if (args.pool / "pool.json").is_file() and args.mining_checkpoint.is_file():
        cache = args.out / "pool_quality.json"
        quality = json.loads(cache.read_text()) if cache.is_file() else {}
        if "classes" not in quality.get("0.5", {}):  # absent, or cached before the per-class counts
            quality = pseudo_label_quality(args.mining_checkpoint, args.pool, (0.5, 0.7, 0.9))
            write_json_atomic(cache, quality, indent=1)
        mined = json.loads((args.pool / "pool.json").read_text())["slides"]
        timing = args.pool / "mine_seconds.txt"
        seconds = timing.read_text().strip() if timing.is_file() else "?"
        first = next(iter(quality.values()))
        md += [
            f"Pool: {sum(e.get('patches', 0) for e in mined.values())} patches from {len(mined)} unlabeled slides "
            f"(mined in {seconds} s), {first['lesions']} hidden lesions in {first['patches']} sampled patches. "
            "The mining model's detections on them:\n",
            "| score >= | detections | precision | recall | on a lesion (any class) |", "|---|---|---|---|---|",
            *[f"| {t} | {q['pseudo_labels']} | {q['precision'] or 0:.2f} | {q['recall'] or 0:.2f} | "
              f"{q['lesion_precision'] or 0:.2f} |" for t, q in quality.items()],
        ]  # fmt: skip
        out_json["pool"] = {"quality": quality, "mine_seconds": seconds}
    if results:
        classes = list(next(iter(results.values()))["classes"])
        for fraction in FRACTIONS:  # every row trained at the fraction; at 100% Table 2 below has the others
            presets = [*(TABLE2 if fraction < 1 else (SUPERVISED, "dual_alignment")), ORACLE, *VARIANTS]
            lines, table_rows = table(results, presets, fraction, classes)
            if lines:
                md += [f"\n**Table 1, {fraction:.0%} labeled**\n", *lines]
                out_json["tables"][f"table1_{fraction:g}"] = table_rows
        lines, table_rows = table(results, TABLE2, 1.0, classes, versus="dual_alignment")
        if lines:
            md += ["\n**Table 2, 100% labeled**\n", *lines]
            out_json["tables"]["table2"] = table_rows
        for fraction in FRACTIONS:
            lines, table_rows = table(results, [SUPERVISED, *CONTINUED], fraction, classes, SUPERVISED_CONTINUED)
            if any(row["preset"] == SUPERVISED_CONTINUED for row in table_rows):  # the reference row has run
                md += [f"\n**1,000 more iterations from the {fraction:.0%} supervised runs** (gain: over the runs they "
                       f"start from; paired vs {SUPERVISED_CONTINUED}: the pool's part)\n", *lines]  # fmt: skip
                out_json["tables"]["continued" + ("" if fraction == 1 else f"_{fraction:g}")] = table_rows
        per_class = pseudo_class_table(results, classes)
        if per_class:
            md += ["\n**Pseudo-labels on the pool per class** (at each run's pseudo-label threshold, seeds pooled): "
                   "precision / recall (pseudo-labels made)\n", f"| method | labeled | seeds | {' | '.join(classes)} |",
                   "|---|---|---|" + "---|" * len(classes), *per_class]  # fmt: skip
        for min_score in dict.fromkeys([0.0, args.confusion_score]):
            confusion = confusion_table(confusions(results, args.test_json, min_score), classes)
            if confusion:
                scores = f"detections scoring >= {min_score:g}" if min_score else "detections of any score"
                md += [f"\n**Where the test lesions go, {scores}** (the evaluator's confusion at IoU >= 0.3, "
                       "seeds pooled, supervised -> method): lesions given their class, given another lesion class, "
                       "missed; detections on no lesion\n",
                       f"| method | labeled | seeds | {' | '.join(classes)} | another class | missed | on no lesion |",
                       "|---|---|---|" + "---|" * (len(classes) + 3), *confusion]  # fmt: skip
        noise = [r["overall"]["mAP"] for (p, f, s, folder), r in results.items()
                 if p == SUPERVISED and f == 0.25 and (s == 0 or "subset0" in folder.name)]  # fmt: skip
        if len(noise) > 1:
            md += [f"\nNoise floor (25%, seed 0's labeled slides, {len(noise)} init seeds): mAP {_pm(noise)}"]
            out_json["noise_floor"] = noise
        again = [r["overall"]["mAP"] for (p, f, s, folder), r in results.items() if p == SUPERVISED_CONTINUED
                 and f == 1 and ((s == 0 and table_run(folder)) or "subset0" in folder.name)]  # fmt: skip
        if len(again) > 1:
            md += [f"\nContinuation noise floor (seed 0's 100% run continued, {len(again)} data-order seeds): "
                   f"mAP {_pm(again)}"]  # fmt: skip
            out_json["continued_noise_floor"] = again
    val = args.val_json or VAL3
    n_val = validation_slides(val)
    tuning = [
        (p, folder)
        for (p, f, s, folder), _ in results.items()
        if f == 0.25 and s == 0 and "subset0" not in folder.name and p != ORACLE
    ]
    if any(folder.parent.parent.name == "tune" for _, folder in tuning):
        md += [f"\n**Tuning on the {n_val} validation slides (25% of the labels, seed 0)**\n",
               "| run | settings | validation mAP |", "|---|---|---|"]  # fmt: skip
        for preset, folder in sorted(tuning, key=lambda t: str(t[1])):
            mean_ap = validation_map(folder, val)
            tuned = folder.parent.parent.name == "tune"
            settings = folder.parent.name.removeprefix(preset).lstrip("-") if tuned else "preset"
            md.append(f"| {folder.parent.name}/{folder.name} | {settings} | {100 * mean_ap:.1f} |")
            out_json.setdefault("tuning", {})[str(folder)] = mean_ap
    if args.val_json:
        score_validation([pair[k] for pair in paired_with_continued(results) for k in (3, 4)], val, args.jobs)
        lines, agreement = validation_agreement(results, val)
        if lines:
            md += [f"\n**Validation ({n_val} slides) against test: each continued run minus supervised continued**\n",
                   *lines]  # fmt: skip
            out_json["validation_agreement"] = agreement
    for fraction in (1.0, 0.25):
        lines = continued_tuning(results, val, fraction)
        if lines:
            md += [f"\n**The continuation's settings on the {n_val} validation slides ({fraction:.0%}, seed 0)**\n",
                   *lines]  # fmt: skip
    if "gradients" in rows:
        at = args.supervised_out / "frac0.25_seed0" / "checkpoints" / "last.pt"
        md += [f"\n**Gradient of each term on the detector ({at.parent.parent.name}'s weights, lambda 1)**\n",
               *term_gradients(args.pool, at)]  # fmt: skip
    if "step-time" in rows:
        lines = step_times(args.pool, args.mining_checkpoint)
        md += ["\n**One training step (2 labeled + 2 unlabeled patches)**\n", *lines]
        out_json["step_time"] = lines
    text = "\n".join(md)
    print(text)
    tag = split_tag(args.test_json)
    write_text_atomic(args.out / f"tables{tag}.md", text + "\n")
    write_json_atomic(args.out / f"tables{tag}.json", out_json, indent=1)


if __name__ == "__main__":
    main()
