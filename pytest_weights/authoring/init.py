"""``init``: a commented baseline spec from a known-good checkpoint.

The checkpoint is profiled with the same one-pass engine as the checks (moments of every
float tensor; KS distance and the mid-80 Weibull fit of the weight matrices); per role (the
same matrix at every depth) the spec gets a std band, a Gaussian KS tolerance, a Weibull k
band, the depth trends that hold, and sibling consistency — each number proposed by its
kind (:mod:`.policy`), the observed values in comments.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from ..assertions import REGISTRY, Assertion
from ..assertions.base import Suggestion, TensorView, views
from ..errors import WeightsError
from ..readers import TensorInfo, open_checkpoint
from ..selection import Selection
from ..spec import parse_spec
from ..stats import Moments
from ..stats.base import Statistic
from .policy import (
    DEFAULT_MARGIN,
    KS_TOL_FLOOR,
    MIN_NUMEL,
    TREND_MIN_LAYERS,
    TREND_MIN_RHO,
    WEIBULL_K_SLACK,
    Proposal,
    propose,
)
from .presets import EMBEDDING_GLOBS, NORM_GLOBS, PRESETS, Preset, detect_preset
from .yamledit import comment_of, with_comment

SCHEMA_REF = "weights.schema.json"


def _views(store: Any, cid: str, infos: Iterable[TensorInfo], selection: Selection) -> list[TensorView]:
    chosen = [i for i in infos if selection.matches(i) and i.is_float]
    return views(chosen, selection, lambda name: store.get(cid, name))


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _role_glob(name: str, selection: Selection) -> str:
    """The tensor's role as a glob: its name with the layer index as ``*`` (literal otherwise)."""
    match = selection._compiled.search(name)
    if not match:
        return _glob_escape(name)
    a, b = match.span(1)
    return _glob_escape(name[:a]) + "*" + _glob_escape(name[b:])


@dataclass
class _Entry:
    name: str
    kind: str
    fixed: dict[str, Any]
    select: dict[str, Any] | None
    assertion: Assertion
    tensors: list[TensorInfo]
    comment: str = ""
    proposals: dict[str, Proposal] = field(default_factory=dict)


def _flow(value: Any) -> str:
    """A small value as YAML flow text (strings double-quoted as JSON)."""
    import json

    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _shape(infos: Sequence[TensorInfo]) -> str:
    shapes = sorted({"×".join(map(str, i.shape)) for i in infos})
    return shapes[0] if len(shapes) == 1 else ", ".join(shapes)


def _depths(selection: Selection, infos: Sequence[TensorInfo]) -> list[int]:
    return sorted({d for i in infos if (d := selection.depth(i.name)) is not None})


def _ranges(values: Sequence[int]) -> str:
    spans: list[list[int]] = []
    for v in values:
        if spans and v == spans[-1][1] + 1:
            spans[-1][1] = v
        else:
            spans.append([v, v])
    return ",".join(str(a) if a == b else f"{a}–{b}" for a, b in spans)


def init_spec(
    checkpoint_path: str | Path,
    margin: float = DEFAULT_MARGIN,
    preset: str | None = None,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    *,
    schema: str = SCHEMA_REF,
) -> str:
    """A commented baseline spec (YAML text) for the checkpoint at ``checkpoint_path``.

    The checkpoint is read once. ``margin`` widens every observed range (0.5: bands of
    [min/1.5, max·1.5]); ``preset`` forces an architecture preset (``llama``, ``gpt2``,
    ``bert``, ``vit``, ``generic``; default: detected from tensor names); ``schema`` is the
    JSON Schema reference of the first line (``# yaml-language-server: $schema=…``), by
    default ``weights.schema.json`` next to the spec. The spec passes on this checkpoint
    (verified before it is returned). A checkpoint holding NaN/Inf is refused: it is not
    a known-good baseline.
    """
    from ..cache import StatCache
    from ..device import resolve_device
    from ..engine import StatStore, compute_pass
    from ..runner import Checker

    if not margin >= 0:
        raise WeightsError(f"margin must be ≥ 0, got {margin}")
    if preset is not None and preset not in PRESETS:
        raise WeightsError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    dev = resolve_device(device)
    started = _dt.datetime.now(_dt.timezone.utc)
    with open_checkpoint(checkpoint_path) as ckpt:
        infos = ckpt.tensors()
        floats = [i for i in infos if i.is_float and i.group == "weights" and i.numel > 0]
        if not floats:
            raise WeightsError(f"{checkpoint_path}: no float tensors to profile")
        chosen = PRESETS[preset] if preset else detect_preset(i.name for i in floats)
        # what distribution checks leave out: norms, embeddings, buffers (only the globs that match)
        matrices = [i for i in floats if len(i.shape) >= 2 and i.numel >= MIN_NUMEL]
        candidates = (*NORM_GLOBS, *EMBEDDING_GLOBS, *chosen.buffers)
        exclude = [g for g in candidates if any(fnmatchcase(i.name, g) for i in matrices)]
        base = Selection(exclude=tuple(exclude), min_ndim=2, min_numel=MIN_NUMEL)
        dist = [i for i in floats if base.matches(i)]
        in_dist = {i.name for i in dist}
        embeddings = [
            i for i in matrices if i.name not in in_dist and any(fnmatchcase(i.name, g) for g in EMBEDDING_GLOBS)
        ]
        wanted = _statistics({"floats": floats, "matrices": dist, "role": dist, "embedding": embeddings})
        store = StatStore()
        cid = ckpt.identity()
        cache = StatCache(cache_dir) if cache_dir is not None else None
        compute_pass(ckpt, wanted, store, dev, cache=cache)  # cached values are not recomputed
        bad = [i.name for i in floats if (mo := store.get(cid, i.name)[Moments()]).nan or mo.inf]
        if bad:
            raise WeightsError(
                f"{checkpoint_path}: {len(bad)} tensor(s) hold NaN or Inf ({', '.join(bad[:3])}"
                f"{' …' if len(bad) > 3 else ''}): not a known-good checkpoint to take a baseline from"
            )
        entries, role_lines = _plan(floats, dist, embeddings, base, chosen, store, cid, margin)
        text = _render(
            checkpoint_path, infos, floats, dist, embeddings, base, chosen, entries, role_lines,
            margin, schema, started,
        )  # fmt: skip
        # The spec must pass on the checkpoint it describes: evaluate it from the computed statistics.
        spec = parse_spec(text, "<generated>")
        if spec.errors:  # pragma: no cover - a bug in the generator
            raise WeightsError(f"generated spec is invalid: {spec.errors[0]}")
        checker = Checker(dev, store=store)
        for a in spec.assertions:
            result = checker.evaluate(ckpt, a)
            if not result.passed:  # pragma: no cover - a bug in the generator
                raise WeightsError(f"generated assertion {a.name!r} fails on its own checkpoint: {result.summary}")
    return text


def _selection_for(
    own: Sequence[TensorInfo], floats: Sequence[TensorInfo], base: Selection, plain: Selection
) -> dict[str, Any]:
    """The entry ``select`` (merged over the defaults ``base``) that picks exactly ``own``."""
    names = {i.name for i in own}
    globs = list(dict.fromkeys(_role_glob(i.name, plain) for i in own))

    def picks(sel: dict[str, Any]) -> set[str]:
        merged = _merged(base, sel)
        return {i.name for i in floats if merged.matches(i)}

    keep = [e for e in base.exclude if not any(fnmatchcase(n, e) for n in names)]
    select: dict[str, Any] = {"include": globs}
    if keep != list(base.exclude):
        select["exclude"] = keep
    extra = picks(select) - names
    if extra:
        others = [_role_glob(n, plain) for n in sorted(extra)]
        select["exclude"] = list(dict.fromkeys([*keep, *others]))
    if picks(select) == names:
        return select
    return {"include": sorted(_glob_escape(n) for n in names), "exclude": []}


#: Last name components too generic to name a tensor alone (``pooler.dense`` → ``pooler-dense``).
_GENERIC_PARTS = frozenset({"dense", "proj", "linear", "fc", "weight", "kernel", "out", "head", "conv"})


def _short_names(roles: Sequence[str], chosen: Preset, plain: Selection) -> dict[str, str]:
    """Role → a short, unique entry name prefix (``query``, ``mlp-up``, ``pooler`` …)."""
    out: dict[str, str] = {}
    for role in roles:
        if "*" in role and plain.depth(role.replace("*", "0")) is not None:
            prefix, _, suffix = role.partition("*.")
            suffix = suffix.removesuffix(".weight")
            short = chosen.roles.get(suffix) or suffix.replace(".", "-").replace("_", "-")
            out[role] = short
        else:
            stem = role.removesuffix(".weight")
            parts = stem.split(".")
            tail = parts[-2:] if len(parts) > 1 and parts[-1] in _GENERIC_PARTS else parts[-1:]
            out[role] = chosen.singles.get(stem) or "-".join(tail).replace("_", "-")
    # make unique: prefix with the part of the role before the layer index
    counts: dict[str, int] = {}
    for short in out.values():
        counts[short] = counts.get(short, 0) + 1
    for role, short in list(out.items()):
        if counts[short] > 1:
            prefix = role.partition("*")[0].strip(".").replace(".", "-").replace("_", "-")
            out[role] = f"{prefix}-{short}" if prefix else short
    seen: set[str] = set()
    for role, short in out.items():
        name, k = short, 2
        while name in seen:
            name, k = f"{short}-{k}", k + 1
        seen.add(name)
        out[role] = name
    return out


def suggestions(level: str, count: int) -> list[tuple[type[Assertion], Suggestion]]:
    """Every registered kind's entries for ``level`` (see :meth:`Assertion.suggest`), in rank order."""
    found = [(cls, s) for cls in REGISTRY.values() for s in cls.suggest(level, count)]
    return sorted(found, key=lambda cs: cs[1].rank)


def _statistics(levels: Mapping[str, Sequence[TensorInfo]]) -> dict[str, list[Statistic]]:
    """What the suggested entries need of each tensor (moments of every one), for the one pass."""
    wanted: dict[str, dict[Statistic, None]] = {}
    for level, infos in levels.items():
        for i in infos:
            wanted.setdefault(i.name, {Moments(): None})
        for cls, s in suggestions(level, len(infos)):
            needed = cls(**s.params).required_statistics()  # type: ignore[call-arg]
            for i in infos:
                wanted[i.name].update(dict.fromkeys(needed))
    return {name: list(stats) for name, stats in wanted.items()}


def _plan(
    floats: list[TensorInfo],
    dist: list[TensorInfo],
    embeddings: list[TensorInfo],
    base: Selection,
    chosen: Preset,
    store: Any,
    cid: str,
    margin: float,
) -> tuple[list[tuple[str, list[_Entry]]], list[str]]:
    """Entries grouped in blocks (a comment line, entries), and the header's role table."""
    plain = Selection()

    def entries(level: str, prefix: str, own: list[TensorInfo], select: dict | None) -> list[_Entry]:
        out = []
        for cls, s in suggestions(level, len(own)):
            e = _entry(cls, s, f"{prefix}-{s.name}" if prefix else s.name, own, select, base, store, cid, margin)
            if e is not None:
                out.append(e)
        return out

    blocks: list[tuple[str, list[_Entry]]] = []
    top = entries("floats", "", floats, {"exclude": [], "min_ndim": 0, "min_numel": 1})
    top += entries("matrices", "", dist, None)
    blocks.append(("", top))
    groups: dict[str, list[TensorInfo]] = {}
    for i in dist:
        groups.setdefault(plain.role(i.name), []).append(i)
    emb_groups: dict[str, list[TensorInfo]] = {}
    for i in embeddings:
        emb_groups.setdefault(plain.role(i.name), []).append(i)
    shorts = _short_names([*groups, *emb_groups], chosen, plain)
    role_lines = []
    width = max((len(s) for s in shorts.values()), default=0)
    for role, own in groups.items():
        short = shorts[role]
        depths = _depths(plain, own)
        where = f", depths {_ranges(depths)}" if depths else ""
        role_lines.append(f"{short.ljust(width)}  {role}  ({len(own)} × {_shape(own)})")
        block = entries("role", short, own, _selection_for(own, floats, base, plain))
        blocks.append((f"{short}: {role} ({len(own)} × {_shape(own)}{where})", block))
    for role, own in emb_groups.items():
        short = shorts[role]
        role_lines.append(f"{short.ljust(width)}  {role}  ({len(own)} × {_shape(own)}; std band only)")
        select = _selection_for(own, floats, Selection(exclude=(), min_ndim=2, min_numel=MIN_NUMEL), plain)
        select.setdefault("exclude", [])
        block = entries("embedding", short, own, select)
        blocks.append((f"{short}: {role} ({len(own)} × {_shape(own)}; embedding: std band only)", block))
    return blocks, role_lines


def _entry(
    cls: type[Assertion],
    s: Suggestion,
    name: str,
    own: list[TensorInfo],
    select: dict | None,
    base: Selection,
    store: Any,
    cid: str,
    margin: float,
) -> _Entry | None:
    """The entry ``s`` of kind ``cls`` over ``own``, with its proposals; None when the kind does
    not accept it on these values. Tensors the kind leaves out have their roles excluded."""
    assertion = cls(**s.params)  # type: ignore[call-arg]
    effective = _merged(base, select)
    views = _views(store, cid, own, effective)
    covered = list(assertion.init_tensors(views))
    if len(covered) < len(views):
        kept = {t.name for t in covered}
        dropped = list(dict.fromkeys(_role_glob(t.name, Selection()) for t in views if t.name not in kept))
        select = {**(select or {}), "exclude": [*(select or {}).get("exclude", base.exclude), *dropped]}
        views = covered
    proposals, _ = propose(assertion, views, margin)
    if s.keep is not None:
        proposals = {k: proposals[k] for k in s.keep if k in proposals}
    if not assertion.init_accepts(views, proposals):
        return None
    return _Entry(name, cls.kind, dict(s.params), select, assertion, own, s.comment, proposals)


def _merged(base: Selection, select: dict | None) -> Selection:
    if select is None:
        return base
    return Selection(
        include=tuple(select.get("include", base.include)),
        exclude=tuple(select.get("exclude", base.exclude)),
        min_ndim=select.get("min_ndim", base.min_ndim),
        min_numel=select.get("min_numel", base.min_numel),
    )


def _render(
    checkpoint_path: str | Path,
    infos: list[TensorInfo],
    floats: list[TensorInfo],
    dist: list[TensorInfo],
    embeddings: list[TensorInfo],
    base: Selection,
    chosen: Preset,
    blocks: list[tuple[str, list[_Entry]]],
    role_lines: list[str],
    margin: float,
    schema: str,
    started: _dt.datetime,
) -> str:
    from .. import __version__

    f = 1 + margin
    k_slack = margin * WEIBULL_K_SLACK
    description = f"Baseline of {Path(str(checkpoint_path)).name} ({chosen.name}), from pytest-weights init"
    n_values = sum(i.numel for i in floats)
    size = sum(i.nbytes for i in infos)
    depths = _depths(Selection(), dist)
    layers = f", {len(depths)} layers" if depths else ""
    left = [i for i in floats if i not in dist and i not in embeddings]
    out = [
        f"# yaml-language-server: $schema={schema}",
        f"# Generated by pytest-weights init {__version__} on {started:%Y-%m-%d %H:%M} UTC, margin {margin:g}, from",
        f"#   {checkpoint_path}",
        f"#   ({len(infos)} tensors, {len(floats)} float, {n_values / 1e6:.1f}M values, {size / 1e6:.1f} MB;"
        f" architecture: {chosen.title}{layers})",
        "#",
        "# Every number is an observed value widened by the margin (observed values in the comments):",
        f"#   std bands          [min / {f:g}, max × {f:g}]",
        f"#   KS tolerance       max D × {f:g}, at least {KS_TOL_FLOOR}",
        f"#   Weibull k band     [min − {k_slack:g}, max + {k_slack:g}] (mid_80 fit of |w|)",
        f"#   sibling ratio      largest std ratio to the role median × {f:g}",
        f"#   depth trends       where Spearman |ρ| ≥ {TREND_MIN_RHO} over ≥ {TREND_MIN_LAYERS} layers;"
        f" min_rho = |ρ| / {f:g}",
        "# After an intended change, rewrite the numbers in place (comments are kept):",
        "#   pytest --checkpoint CHECKPOINT --weights-regen",
        "#",
    ]  # fmt: skip
    if role_lines:
        out.append(f"# Roles (matrices ≥ {MIN_NUMEL} values{'; ' + ', '.join(base.exclude) if base.exclude else ''}"
                   " left out of distribution checks):")  # fmt: skip
        out += [f"#   {line}" for line in role_lines]
    else:
        out.append(f"# No weight matrix of ≥ {MIN_NUMEL} values: only finiteness is asserted.")
    if left:
        out.append(f"# Finiteness only: {len(left)} other float tensor(s) (norms, biases, buffers, small tensors).")
    out += [
        "version: 1",
        f"description: {_flow(description)}",
        "",
        "defaults:",
        "  # weight matrices for distribution checks",
        f"  select: {_flow(_select_dict(base))}",
        "",
        "assertions:",
    ]  # fmt: skip
    for comment, entries in blocks:
        if comment:
            out += ["", f"  # {comment}"]
        for e in entries:
            out += _entry_lines(e)
    return "\n".join(out) + "\n"


def _select_dict(sel: Selection) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sel.exclude:
        out["exclude"] = list(sel.exclude)
    out["min_ndim"] = sel.min_ndim
    out["min_numel"] = sel.min_numel
    return out


def _entry_lines(e: _Entry) -> list[str]:
    lines = [f"  - name: {e.name}", f"    kind: {e.kind}"]
    for k, v in e.fixed.items():
        lines.append(f"    {k}: {v}")
    if e.select is not None:
        lines.append(f"    select: {_flow(e.select)}")
    if e.comment:
        lines[0] = with_comment(lines[0], e.comment)
    for key, p in e.proposals.items():
        lines.append(with_comment(f"    {key}: {p.text}", comment_of(p)))
    return lines
