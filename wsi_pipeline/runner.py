"""Run many small tasks on a Dask scheduler with a progress bar; a failing task becomes a value.

``scheduler`` is ``"threads"`` (default), ``"processes"``, ``"sync"``, or the address of a running
``dask.distributed`` scheduler (``tcp://host:8786``). Tasks are top-level functions with picklable
arguments, so every scheduler can run them.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from tqdm import tqdm

OutcomeT = TypeVar("OutcomeT")
log = logging.getLogger(__name__)


@dataclass
class BatchResult(Generic[OutcomeT]):
    """What a batch command did: its output folder and one outcome per input (each with a ``status``:
    done, skipped or failed); ``failed`` are the ones to report and exit non-zero for."""

    out: Path
    outcomes: list[OutcomeT] = field(default_factory=list)

    @property
    def failed(self) -> list[OutcomeT]:
        return [o for o in self.outcomes if getattr(o, "status", None) == "failed"]


@dataclass(frozen=True)
class Failure:
    """A task that raised: its one-line reason (and the traceback for -vv logging)."""

    reason: str
    details: str = ""


def failure_reason(err: BaseException) -> str:
    """A failed item's one-line reason: the message's first line; the exception's type in front unless it is
    an expected kind (``ValueError``/``OSError``: bad input, whose messages name the file)."""
    text = str(err).strip().splitlines()
    reason = text[0] if text else type(err).__name__
    return reason if isinstance(err, ValueError | OSError) else f"{type(err).__name__}: {reason}"


def isolated(label: str, fn: Callable[..., Any], *args: Any) -> tuple[Any, str]:
    """``(fn(*args), "")``, or ``(None, reason)`` when it raises: one bad slide never stops a batch. The
    reason is logged as an error for ``label``, the traceback at debug level."""
    try:
        return fn(*args), ""
    except Exception as err:
        reason = failure_reason(err)
        log.error("%s: %s", label, reason)
        log.debug("details", exc_info=True)
        return None, reason


class Guarded:
    """Picklable wrapper turning exceptions into :class:`Failure` values."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        try:
            return self.fn(*args)
        except Exception as err:
            return Failure(failure_reason(err), traceback.format_exc())


def is_distributed(scheduler: str) -> bool:
    return "://" in scheduler or (":" in scheduler and scheduler.rsplit(":", 1)[-1].isdigit())


class TaskRunner:
    """Map a function over argument tuples on one Dask scheduler, results in input order."""

    def __init__(self, scheduler: str = "threads", workers: int = 0, progress: bool = True):
        self.scheduler = scheduler
        self.workers = workers or os.cpu_count() or 1
        self.progress = progress
        self._client = None
        if is_distributed(scheduler):
            from distributed import Client

            self._client = Client(scheduler)

    def map(
        self,
        fn: Callable[..., Any],
        args: Sequence[tuple[Any, ...]],
        desc: str,
        weights: Sequence[int] | None = None,
        unit: str = "task",
    ) -> list[Any]:
        """``fn(*a)`` for every ``a`` in ``args``."""
        return self.run([(fn, a) for a in args], desc, weights, unit)

    def run(
        self,
        calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]],
        desc: str,
        weights: Sequence[int] | None = None,
        unit: str = "task",
    ) -> list[Any]:
        """``fn(*args)`` for every ``(fn, args)`` call, in parallel; results (or :class:`Failure`) in order.
        ``weights`` say how much of the progress bar each call fills."""
        guarded = [(Guarded(fn), a) for fn, a in calls]
        weights = list(weights) if weights is not None else [1] * len(calls)
        with tqdm(total=sum(weights), desc=desc, unit=unit, disable=not self.progress, unit_scale=True) as bar:
            if not calls:
                return []
            if self._client is not None:
                return self._run_distributed(guarded, weights, bar)
            return self._run_local(guarded, weights, bar)

    def _run_local(self, calls: list[tuple[Guarded, tuple[Any, ...]]], weights: list[int], bar: tqdm) -> list[Any]:
        import dask
        from dask.callbacks import Callback

        tasks = [dask.delayed(fn, pure=False)(*a, dask_key_name=f"task-{i}") for i, (fn, a) in enumerate(calls)]
        weight_of = {f"task-{i}": w for i, w in enumerate(weights)}

        class _Progress(Callback):
            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
                bar.update(weight_of.get(key, 0))

        kwargs: dict[str, Any] = {"scheduler": self.scheduler}
        if self.scheduler != "sync":
            kwargs["num_workers"] = self.workers
        with _Progress():
            return list(dask.compute(*tasks, **kwargs))

    def _run_distributed(
        self, calls: list[tuple[Guarded, tuple[Any, ...]]], weights: list[int], bar: tqdm
    ) -> list[Any]:
        from distributed import as_completed

        assert self._client is not None
        futures = [self._client.submit(fn, *a, pure=False) for fn, a in calls]
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(futures)
        for fut in as_completed(futures):
            i = index[fut.key]
            try:
                results[i] = fut.result()
            except Exception as err:  # a worker died or the task could not be shipped
                results[i] = Failure(f"{type(err).__name__}: {err}".splitlines()[0], traceback.format_exc())
            bar.update(weights[i])
        return results

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> TaskRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
