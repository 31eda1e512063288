"""Options and error handling shared by the commands (no heavy imports here: ``--help`` stays instant)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import click

log = logging.getLogger("wsi_pipeline")


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--config FILE|PRESET`` and repeatable ``--set section.key=value``."""
    func = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="Override one config value (YAML syntax), e.g. --set synth.width=4096. Repeatable.",
    )(func)
    func = click.option(
        "--config",
        "config_path",
        metavar="FILE|PRESET",
        help="YAML config file, or the name of a preset in configs/ (e.g. synthpap-v3).",
    )(func)
    return func


def _check_mpp(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """``--mpp`` obeys the config's rule for resolutions: finite, within MPP_RANGE."""
    from wsi_pipeline.config import MPP_RANGE

    if value is None:
        return None
    low, high = MPP_RANGE
    if not low <= value <= high:  # also false for NaN
        raise click.BadParameter(f"{value:g} is not a resolution (microns per pixel between {low:g} and {high:g})")
    return value


def mpp_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--mpp``: microns per pixel for slides/images whose metadata lacks it (overrides metadata)."""
    return click.option(
        "--mpp",
        type=float,
        callback=_check_mpp,
        help="Microns per pixel for slides whose metadata lacks it (overrides metadata).",
    )(func)


def checkpoint_config(checkpoint: Any, config_path: str | None, overrides: tuple[str, ...]) -> tuple[Any, Any]:
    """``(detector, config)`` for commands that run a trained model: the detector and its model settings come
    from the checkpoint (as trained); tiling, inference and mining settings from ``--config``/``--set``."""
    from wsi_pipeline.config import PipelineConfig
    from wsi_pipeline.modeling.checkpoint import model_from_checkpoint

    asked = load_cli_config(config_path, overrides)
    model, trained = model_from_checkpoint(checkpoint)
    config = PipelineConfig(trained.synth, asked.tile, trained.model, trained.train, asked.infer, asked.mine)
    return model, config


def load_cli_config(config_path: str | None, overrides: tuple[str, ...]) -> Any:
    from wsi_pipeline.config import ConfigError, load_config

    try:
        return load_config(config_path, overrides)
    except ConfigError as err:
        raise click.UsageError(str(err)) from None


def fail_cleanly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected errors (bad input files, bad values) into a one-line message and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ValueError, OSError) as err:
            log.debug("details", exc_info=True)
            raise click.ClickException(str(err).splitlines()[0] if str(err) else type(err).__name__) from None

    return wrapper


def progress_enabled() -> bool:
    ctx = click.get_current_context()
    return not ctx.find_root().params.get("quiet", False)
