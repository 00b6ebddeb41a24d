"""Editing a spec's YAML text in place: numbers replaced where the parser says they stand.

The text is never re-dumped: comments, order and layout are kept. Values are replaced at
the offsets the YAML parser reports; a parameter inherited from ``defaults`` is added to the
entry (a line under it, or ``, key: value`` in a flow-style entry); the ``# observed …``
comments ``init`` writes are refreshed (and say when a margin was capped).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from ..spec import AssertionSpec
from .policy import Proposal, number_text

COMMENT_COLUMN = 24


class Change(str):
    """One rewritten number, as text (``spec.yaml:12: std-band max 0.12 → 0.15``), with details."""

    entry: str
    param: str
    line: int  # the line of the rewritten value
    entry_line: int  # the line of the assertion entry (AssertionSpec.line)
    old: str
    new: str

    def __new__(cls, path: str, entry: AssertionSpec, param: str, line: int, old: str, new: str, added: str = ""):
        self = super().__new__(cls, f"{path}:{line}: {entry.name} {param} {old} → {new}{added}")
        self.entry, self.param, self.line, self.entry_line = entry.name, param, line, entry.line
        self.old, self.new = old, new
        return self


def with_comment(line: str, comment: str) -> str:
    """``line`` with ``# comment`` at :data:`COMMENT_COLUMN` (or unchanged without one)."""
    if not comment:
        return line
    return f"{line.ljust(COMMENT_COLUMN)}  # {comment}"


def comment_of(p: Proposal) -> str:
    """The YAML comment of a proposal: what was observed, and a capped margin."""
    return "; ".join(c for c in (p.comment, p.capped) if c)


@dataclass
class _Edit:
    start: int
    end: int
    text: str


@dataclass
class _Pending:
    """A change before the edits are applied: ``index`` in the old text, ``below`` lines under it."""

    entry: AssertionSpec
    param: str
    index: int
    below: int
    old: str
    new: str
    note: str = ""

    def change(self, label: str, edits: Sequence[_Edit], new_text: str) -> Change:
        shift = sum(
            len(ed.text) - (ed.end - ed.start) for ed in edits if ed.end <= self.index and ed.start < self.index
        )
        line = new_text.count("\n", 0, self.index + shift) + 1 + self.below
        return Change(label, self.entry, self.param, line, self.old, self.new, self.note)


def _child(node: Any, key: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def _current(node: Any) -> float | None:
    """The numeric value of a scalar node (None for null or non-numbers)."""
    if not isinstance(node, yaml.ScalarNode):
        return None
    value = yaml.safe_load(node.value) if node.style is None else node.value
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _plan_edits(
    text: str,
    e: AssertionSpec,
    node: Any,
    defaults: Any,
    proposals: Mapping[str, Proposal],
    only_failing: bool,
    edits: list[_Edit],
    changes: list[_Pending],
    notes: list[str],
) -> None:
    written: list[tuple[str, Proposal, Any]] = []  # parameters on the entry: (name, proposal, value node)
    rewrite: list[tuple[str, Proposal, Any]] = []
    added: list[tuple[str, Proposal, float]] = []
    for param, p in proposals.items():
        value_node = _child(node, param)
        inherited = value_node is None
        if inherited:
            value_node = _child(defaults, param)
            if value_node is None:
                continue  # the kind's default is in effect: not a number written in the spec
        current = _current(value_node)
        if current is None:
            continue  # null: that bound is switched off
        if not inherited:
            written.append((param, p, value_node))
        if (only_failing and not p.violated_by(current)) or current == p.value:
            continue
        if inherited:
            added.append((param, p, current))
        else:
            rewrite.append((param, p, value_node))
    if only_failing and not rewrite and not added:
        return  # a passing entry is left alone (with everything, its "# observed" comments are refreshed)
    changed = {param for param, _, _ in rewrite}
    for param, p, value_node in written:  # new values, and fresh "# observed …" comments on the entry
        start, end = value_node.start_mark.index, value_node.end_mark.index
        old = text[start:end]
        new = p.text if param in changed else old
        if param in changed:
            edits.append(_Edit(start, end, new))
            changes.append(_Pending(e, param, start, 0, old, new, f" ({p.capped})" if p.capped else ""))
        line_end = text.find("\n", end)
        line_end = len(text) if line_end < 0 else line_end
        tail = text[end:line_end]
        hash_at = tail.find("#")
        if hash_at >= 0 and tail[:hash_at].strip() == "":
            comment = tail[hash_at:]
            if comment.startswith("# observed") and comment_of(p):
                comment = f"# {comment_of(p)}"
            gap = max(1, hash_at - (len(new) - len(old)))  # keep the comment's column
            if new != old or comment != tail[hash_at:]:
                edits.append(_Edit(end, line_end, " " * gap + comment))
        elif param in changed and p.capped and not tail.strip():  # a capped margin is always said
            edits.append(_Edit(end, line_end, f"  # {p.capped}"))
    if not added:
        return
    if not isinstance(node, yaml.MappingNode) or not node.value:  # pragma: no cover - the loader refuses these
        return
    if node.flow_style:  # {name: x, kind: y}: add ", param: value" before the closing brace
        close = node.end_mark.index - 1
        if text[close] != "}":  # pragma: no cover
            notes += [f"{e.location}: {e.name}: {param} comes from 'defaults': not rewritten" for param, *_ in added]
            return
        edits.append(_Edit(close, close, "".join(f", {param}: {p.text}" for param, p, _ in added)))
        for param, p, current in added:
            note = " (added to the entry: was inherited from defaults)" + (f" ({p.capped})" if p.capped else "")
            changes.append(_Pending(e, param, close, 0, number_text(current), p.text, note))
        return
    indent = " " * node.value[0][0].start_mark.column
    last = max(_scalars(node), key=lambda n: n.end_mark.index)
    insert_at = text.find("\n", last.end_mark.index)
    insert_at = len(text) if insert_at < 0 else insert_at
    lines = "".join("\n" + with_comment(f"{indent}{param}: {p.text}", comment_of(p)) for param, p, _ in added)
    edits.append(_Edit(insert_at, insert_at, lines))
    for k, (param, p, current) in enumerate(added):
        note = " (added to the entry: was inherited from defaults)" + (f" ({p.capped})" if p.capped else "")
        changes.append(_Pending(e, param, insert_at, k + 1, number_text(current), p.text, note))


def _scalars(node: Any) -> Iterable[Any]:
    """Every scalar node under ``node`` (their end marks are exact, unlike block collections')."""
    if isinstance(node, yaml.ScalarNode):
        yield node
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            yield from _scalars(child)
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            yield from _scalars(k)
            yield from _scalars(v)


def _apply(text: str, edits: Sequence[_Edit]) -> str:
    for ed in sorted(edits, key=lambda d: (d.start, d.end), reverse=True):
        text = text[: ed.start] + ed.text + text[ed.end :]
    return text
