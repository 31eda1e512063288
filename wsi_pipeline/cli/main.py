"""``wsi-pipeline``: the command group. Commands are imported lazily so ``--help`` is instant."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from wsi_pipeline import __version__

# command name -> (module, function, one-line help shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "synth": ("wsi_pipeline.cli.synth", "synth", "Generate synthetic Pap-smear slides with ground truth."),
    "tile": ("wsi_pipeline.cli.tile", "tile", "Cut slides into patches at a physical resolution (patch stores)."),
    "train": ("wsi_pipeline.cli.train", "train", "Train the detector (supervised baseline), resumable."),
    "infer": ("wsi_pipeline.cli.infer", "infer", "Detect lesions on whole slides: QuPath GeoJSON, summaries, ranking."),
    "mine": ("wsi_pipeline.cli.mine", "mine", "Build the unlabeled pool: patches around a detector's finds."),
    "eval": ("wsi_pipeline.cli.eval", "eval_cmd", "Evaluate detections: AP over IoU 0.10-0.70, recall, confusion."),
    "demo": (
        "wsi_pipeline.cli.demo",
        "demo",
        "The pipeline on a small embedded default: synth, tile, train, eval, infer, mine.",
    ),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, _, help_) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="wsi-pipeline")
@click.option("-v", "--verbose", count=True, help="More logging (-v info details, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
def cli(verbose: int, quiet: bool) -> None:
    """Whole-slide cervical cytology screening: synthetic data, tiling, detection, QuPath output."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    if not verbose:
        for noisy in ("PIL", "tifffile", "distributed", "numcodecs"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main() -> None:
    """The console entry point. Under torchrun (``WORLD_SIZE`` > 1) the process ends with ``os._exit`` once
    the command has finished and flushed its output: with gloo, a normal interpreter exit after DDP aborts
    in about one run in six ("terminate called without an active exception", pytorch/pytorch#190489),
    which torchrun would report as a failed run after the work is done and saved."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        cli(prog_name="wsi-pipeline")
        return
    code = 0
    try:
        cli(prog_name="wsi-pipeline")
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
