"""Per-run state of the pytest plugin: the checkpoints, the checker, the one pass.

Imported by :mod:`.plugin` only when a checkpoint or a spec file is involved: this module
brings in torch (through the checker and the readers).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from ..cache import StatCache
from ..errors import CheckpointError, describe
from ..readers import Checkpoint, as_path, detect_format
from ..runner import Checker, open_or_raise
from ..runs import discover_run
from ..spec import resolve_spec
from .live import LiveLine
from .regen import Regen
from .summary import PassRecord, PassSummary, run_line


class WeightsSession:
    """Per-run state: the checkpoints, the checker, and whether the pass has run."""

    def __init__(
        self,
        config: pytest.Config,
        checkpoint_paths: list[Path],
        spec_paths: list[Path],
        device: str,
    ) -> None:
        self.config = config
        self.checkpoint_paths = checkpoint_paths
        self.spec_paths = spec_paths
        #: The live progress line of the pass, on a terminal.
        self.live = LiveLine(config)
        self.checker = Checker(
            device, progress=self.live.update, workers=config.option.weights_workers, scheduler=scheduler(config)
        )
        config.add_cleanup(self.checker.close)  # a local:N cluster ends with the session
        #: Step number of each checkpoint that came from a run directory.
        self.steps: dict[Path, int] = {}
        #: Each run directory's checkpoints as (step, path), for run-scope assertions.
        self.runs: dict[Path, list[tuple[int, Path]]] = {}
        #: ``--reference``: a checkpoint to compare against (opened with :meth:`checkpoint`).
        self.reference_path: Path | None = None
        #: Bundled specs run by name (``--weights-spec default``, or by default): node ids use the file name.
        self.bundled: set[Path] = set()
        self._opened: dict[Path, Checkpoint | CheckpointError] = {}
        #: Why the one pass before the first item could not run (each item then computes its own statistics).
        self.prepare_error: str | None = None
        self._prepared = False
        #: --weights-regen: the entries whose items ran, rewritten at the end of the session.
        self.regen = Regen(config, self.checker, lambda: self.checkpoint(self.checkpoint_paths[0]))

    @classmethod
    def from_config(cls, config: pytest.Config) -> WeightsSession:
        """The session for ``config``'s options; raises :class:`WeightsError` for a missing path."""
        paths: list[Path] = []
        steps: dict[Path, int] = {}
        runs: dict[Path, list[tuple[int, Path]]] = {}
        for raw in config.option.weights_checkpoints:
            p = as_path(raw).expanduser()  # a URL stays a URL (RemotePath)
            if not p.exists():
                raise CheckpointError(p, "--checkpoint: no such file or directory")
            run = discover_run(p) if detect_format(p) is None else None
            if run is None:
                paths.append(p.resolve())
                continue
            runs[p.resolve()] = [(e.step, e.path.resolve()) for e in run.entries]
            entries = [run.latest] if config.option.weights_latest else list(run.entries)
            for entry in entries:
                paths.append(entry.path.resolve())
                steps[entry.path.resolve()] = entry.step
        reference = config.option.weights_reference
        if reference is not None and not as_path(reference).expanduser().exists():
            raise CheckpointError(reference, "--reference: no such file or directory")
        device = config.option.weights_device or config.getini("weights_device") or "auto"
        session = cls(config, paths, [], device)
        session.spec_paths = [session.resolve(s) for s in config.option.weights_specs]
        session.steps = steps
        session.runs = runs
        session.reference_path = as_path(reference).expanduser().resolve() if reference else None
        return session

    def resolve(self, ref: str) -> Path:
        """A spec path or bundled spec name → its path (remembered as bundled when it is a name)."""
        path = resolve_spec(ref).resolve()
        if not Path(ref).is_file():
            self.bundled.add(path)
        return path

    def default_specs(self) -> list[str]:
        """What runs with ``--checkpoint`` and no test paths: ``--weights-spec``, ini ``weights_specs``, ``default``."""
        if self.spec_paths:
            return [str(p) for p in self.spec_paths]
        return [str(self.resolve(r)) for r in (self.config.getini("weights_specs") or ["default"])]

    def checkpoint(self, path: Path) -> Checkpoint:
        """The opened checkpoint at ``path`` (opened once); raises its :class:`CheckpointError`."""
        if path not in self._opened:
            try:
                self._opened[path] = open_or_raise(path)
            except CheckpointError as e:
                self._opened[path] = e
        got = self._opened[path]
        if isinstance(got, CheckpointError):
            raise got.with_traceback(None)  # raised by many items: its traceback must not grow
        return got

    def label(self, path: Path) -> str:
        """Short id of a checkpoint for node ids (its name, disambiguated if needed)."""
        names = [p.name for p in self.checkpoint_paths]
        if names.count(path.name) == 1:
            return path.name
        if path in self.steps:
            return f"{path.parent.name}/{path.name}"
        return str(path)

    def cache_dir(self) -> Path | None:
        """Where statistics are cached (pytest's cache dir), or None with --weights-no-cache."""
        if self.config.option.weights_no_cache or getattr(self.config, "cache", None) is None:
            return None
        return self.config.cache.mkdir("pytest-weights")

    def prepare(self, items: list[pytest.Item]) -> None:
        """Before the first item runs: one pass computing what every selected item needs."""
        if self._prepared:
            return
        self._prepared = True
        cache = self.cache_dir()
        if cache is not None:
            self.checker.cache = StatCache(cache)
        if self.reference_path is not None:
            with contextlib.suppress(CheckpointError):  # every item reports it
                self.checker.reference = self.checkpoint(self.reference_path)
        try:
            self.checker.prepare(self._work(items))
        finally:
            self.live.end()

    def _work(self, items: list[pytest.Item]) -> list:
        """(checkpoint, assertion) pairs that the spec items among ``items`` will judge."""
        work = []
        for item in items:
            spec = getattr(item, "spec", None)
            if not getattr(item, "weights_item", False) or spec is None:
                continue
            if item.checkpoint_path is not None:
                paths = [item.checkpoint_path]
            elif item.run_path is not None:
                paths = [p for _, p in self.runs[item.run_path]]
            else:
                paths = []
            for path in paths:
                try:
                    work.append((self.checkpoint(path), spec))
                except CheckpointError:
                    continue  # reported by the item itself
        return work

    def pass_summary(self, worker: str = "") -> PassSummary:
        """What this process's pass read and noticed (``worker``: the xdist worker id, if any)."""
        cache = self.checker.cache
        passes = [
            PassRecord(p.checkpoint, p.tensors_done, p.bytes_done, p.seconds, worker)
            for p in self.checker.passes
            if p.tensors_total
        ]
        hits = cache.hits if cache is not None else 0
        return PassSummary([self.checker.runs_on()], passes, hits, self.notes(), self.left_out())

    def notes(self) -> list[str]:
        """Problems of the pass and unreadable checkpoints: one line each."""
        lines = []
        if self.prepare_error is not None:
            lines.append(f"the statistics pass could not be planned: {self.prepare_error}")
        for ckpt, exc in self.checker.errors.items():
            lines.append(f"{ckpt.label}: statistics pass failed: {describe(exc)}")
        lines += [f"{p}: could not be read: {got.message}" for p, got in self._opened.items() if _failed(got)]
        return lines

    def left_out(self) -> list[tuple[str, str]]:
        """(checkpoint, which non-float tensors float statistics leave out) for each opened checkpoint."""
        out = []
        for got in self._opened.values():
            nonfloat = [] if _failed(got) else [i for i in got.tensors() if not i.is_float]
            if nonfloat:
                names = ", ".join(f"{i.name} ({i.dtype_name})" for i in nonfloat[:5])
                more = f" and {len(nonfloat) - 5} more" if len(nonfloat) > 5 else ""
                out.append((got.label, f"{len(nonfloat)} non-float tensor(s) not in float statistics: {names}{more}"))
        return out

    def run_lines(self) -> list[str]:
        """The run directories (steps checked, trajectory) and the reference."""
        lines = []
        for run, entries in self.runs.items():
            name = "run" if len(self.runs) == 1 else f"run {run.name}"
            lines.append(run_line(name, [step for step, _ in entries], self.config.option.weights_latest))
        if self.reference_path is not None:
            lines.append(f"reference: {self.reference_path}")
        return lines


def scheduler(config: pytest.Config) -> str | None:
    """The pass's Dask scheduler: --weights-scheduler, ini weights_scheduler, $DASK_SCHEDULER_ADDRESS; 'off': none."""
    from ..executors.base import scheduler_setting

    return scheduler_setting(config.option.weights_scheduler or config.getini("weights_scheduler"))


def _failed(got: Checkpoint | CheckpointError) -> bool:
    return isinstance(got, CheckpointError)
