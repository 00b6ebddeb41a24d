"""``--weights-regen`` like syrupy: remember the entries whose items ran, rewrite each spec once at the end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ..errors import FATAL, WeightsError
from .messages import explain

if TYPE_CHECKING:
    from ..authoring import RegenResult
    from ..readers import Checkpoint
    from ..runner import Checker


class Regen:
    """The baseline rewrite of one session: entries that ran, the numbers changed, what was left alone."""

    def __init__(self, config: pytest.Config, checker: Checker, checkpoint: Callable[[], Checkpoint]) -> None:
        self.config = config
        self.checker = checker
        self._checkpoint = checkpoint
        #: Every number rewritten (readable lines), and what was left alone.
        self.changes: list[str] = []
        self.notes: list[str] = []
        #: Spec file → (its node id, the entries whose items ran), written at the end.
        self.ran: dict[Path, tuple[str, set[str]]] = {}

    def item(self, item: pytest.Item, preview: bool = True) -> list[str]:
        """--weights-regen, for an item that ran: the numbers of its entry that will be rewritten
        (readable lines); the entry is remembered and its spec file written once, at the end of
        the session (:meth:`write`), so deselected entries and items that never ran
        (``-k``, ``--lf``, ``-x``) are never touched. ``preview=False``: only remembered (a
        run-scope entry, whose numbers regen does not rewrite)."""
        path: Path = item.path
        try:
            path.resolve().relative_to(self.config.rootpath)
        except ValueError:
            note = f"{path}: a bundled spec is never rewritten (copy it into your project)"
            if note not in self.notes:
                self.notes.append(note)
            return []
        self.ran.setdefault(path, (item.parent.nodeid, set()))[1].add(item.spec.name)
        if not preview:
            return []
        result = self._regen_spec(path, item.parent.nodeid, {item.spec.name}, write=False)
        return [str(c) for c in result] if result is not None else []

    def write(self) -> None:
        """At the end of the session: rewrite each spec file once, for the entries whose items ran."""
        for path, (label, names) in self.ran.items():
            result = self._regen_spec(path, label, names, write=True)
            if result is not None:
                self.changes += result
                self.notes += result.notes
        self.ran.clear()

    def _regen_spec(self, path: Path, label: str, names: set[str], write: bool) -> RegenResult | None:
        from ..authoring import regen_spec

        try:
            return regen_spec(
                path,
                self._checkpoint(),
                self.config.option.weights_regen_margin,
                label=label,
                entries=names,
                checker=self.checker,
                write=write,
                recheck=write,  # the per-item preview only lists the changes; the final write re-judges
            )
        except WeightsError as e:
            note = str(e)
        except FATAL:
            raise
        except BaseException as e:
            note = f"{path}: {explain(self.config, e)}"
        if write or note not in self.notes:
            self.notes.append(note)
        return None

    def lines(self) -> list[str]:
        """--weights-regen: what was rewritten, and what was left alone."""
        if not self.config.option.weights_regen:
            return []
        n = len(self.changes)
        lines = [f"--weights-regen: {n} number(s) rewritten" + (" (review with git diff):" if n else "")]
        lines += [f"  {c}" for c in self.changes]
        return lines + [f"  not rewritten: {note}" for note in self.notes]
