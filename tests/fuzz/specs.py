"""A fuzzer for the spec loader: seeded mutations of valid specs, and the invariants each mutant keeps.

Seeds are the bundled specs (:func:`pytest_weights.spec.bundled_specs`) and :data:`HANDWRITTEN`
ones that use every kind, selection key and view. A case breaks one seed with one to three
YAML-level mutations (:data:`MUTATIONS`: byte flips, inserted/deleted/duplicated lines, values
swapped for other types, parameters put in ``defaults``, merge keys, alias bombs, deep nesting,
control characters, invalid UTF-8, unknown kinds/parameters/statistics, hostile regexes and
globs), or generates entries of random kinds with extreme but well-typed parameters
(:func:`generated_spec`).

The invariants, for every mutant written to a file and loaded with :func:`load_spec`: it is a
valid :class:`Spec` or raises :class:`SpecError`, nothing else; every error message is shorter
than :data:`MESSAGE_LIMIT`; the case takes less than :data:`SLOW` seconds; and every assertion of
a valid spec is judged on small in-memory checkpoints (one checkpoint, a reference, a run of three)
without an internal error (an exception that is not a :class:`WeightsError`).

``run_campaign(cases, seed)`` returns the counts; ``python -m tests.fuzz.specs --cases 2000``
prints them with each finding and the case that reproduces it (``--only-case N --show``).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import sys
import tempfile
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from pytest_weights.assertions import REGISTRY
from pytest_weights.assertions.base import params
from pytest_weights.errors import SpecError
from pytest_weights.readers.memory import StateDictCheckpoint
from pytest_weights.runner import Checker
from pytest_weights.spec import Spec, bundled_specs, load_spec, parse_spec
from pytest_weights.stats.scalars import SCALARS

#: CPU seconds a case may take to load, and to judge each 100 assertions of a valid spec (a spec near
#: the size limit holds 1000 assertions: judging them is work, not a blow-up). CPU time, not wall
#: time: a busy machine does not make a case slow.
SLOW = 2.0
#: A case still running after this many seconds is interrupted (counted slow).
HARD_TIMEOUT = 30.0
#: Longest error message allowed.
MESSAGE_LIMIT = 1000
#: Largest text :func:`grow` makes (beyond the loader's limit, so that the limit is met too).
GROW_LIMIT = 4 * 1024 * 1024
#: The counts :func:`run_campaign` returns.
COUNTS = ("cases", "valid", "refused", "crashes_at_load", "crashes_at_run", "slow", "long_messages")
#: Counts that are bugs.
BAD = ("crashes_at_load", "crashes_at_run", "slow", "long_messages")

HANDWRITTEN = (
    """\
version: 1
description: every checkpoint kind, with selections
defaults:
  select: {include: ["*.weight"], min_ndim: 2}
  tol: 0.1
assertions:
  - name: finite
    kind: finite
    select: {include: ["*"], min_ndim: 0, min_numel: 1}
  - kind: gaussian_ks
    exact: true
  - kind: shape
    allowed: [gaussian, sharp]
  - kind: outliers
    m: 6
    max_fraction: 0.001
  - kind: iid
    max_lag1: 0.1
  - kind: bimodality
    max_bc: 0.6
  - kind: weibull
    protocol: mle
    k_min: 0.5
    classes: [transmission, mild_selection]
  - kind: spectral
    alpha_min: 1.5
    max_spectral_norm: 100
  - kind: depth_trend
    stat: std
    direction: flat
    select: {include: ["*.q.weight"], depth_pattern: 'layers\\.(\\d+)\\.'}
  - kind: sibling_consistency
    stat: rms
    max_ratio: 3
  - kind: scale_consistency
  - kind: flatness
  - kind: stat_range
    stat: kurtosis
    min: -1
    max: 3
    if_empty: skip
""",
    """\
description: comparisons with a reference, ΔW, optimizer state
defaults: {view: weights}
assertions:
  - kind: reference_ratio
    stat: std
    min_ratio: 0.5
    max_ratio: 2
  - kind: width_transfer
    standardise: fan_in
    compare: [entries, row_norms]
    max_w1: 0.5
  - name: delta-small
    kind: stat_range
    view: delta
    stat: absmax
    max: 10
  - kind: finite
    select: {groups: [weights, optimizer], ndim: [1, 2]}
""",
    """\
version: 1
description: run-scope kinds
defaults:
  select: {include: ["model.*"], min_ndim: 2}
  per: role
assertions:
  - kind: run_trend
    stat: std
    direction: grows
    min_rho: 0.5
    from_step: 0
  - kind: saturates
    stat: weibull_lambda
    last: 2
    tol: 0.5
  - kind: overshoot
    stat: rms
    min_relaxation: 0.0
  - kind: drift
    stat: weibull_k
    max_rel: 0.5
  - kind: final_range
    stat: mean
    per: pooled
    min: -1
    max: 1
  - kind: bifurcation
    mode: split
    not_before: 1
  - kind: force_share
    force: decay
    max: 0.9
""",
)

# ---------------------------------------------------------------------------- hostile material

#: Values a mutation puts where a value was: other types, extremes, YAML oddities.
VALUES = (
    "[finite]",
    "{a: 1}",
    "{kind: finite}",
    "null",
    "~",
    "",
    "true",
    "no",
    "0",
    "-1",
    "1",
    "2",
    "3",
    "0.5",
    "1e-300",
    "1e300",
    "1e999",
    "-1e999",
    ".nan",
    ".inf",
    "-.inf",
    "nan",
    "inf",
    "123456789012345678901234567890",
    "0x" + "f" * 40,
    "0o777",
    "0b1010",
    "1_000",
    "1:2:3",
    "2001-12-14",
    "2001-13-45",
    "2001-12-14t21:59:43.10-05:00",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!omap [a: 1, b: 2]",
    "!!pairs [a: 1]",
    "!!python/object/apply:os.system ['true']",
    "!!str 5",
    "!!int x",
    "!!float x",
    "!!bool maybe",
    "!!map [1]",
    "*undefined",
    "&loop [*loop]",
    "&self {a: *self}",
    '"\\x07bell"',
    '"\\0nul"',
    '"\\u202eRTL"',
    '"new\\nline"',
    "'" + "x" * 3000 + "'",
    "[" + ", ".join(["1"] * 500) + "]",
    "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]",
    "'*'",
    "std",
    "stdd",
    "weibull_lambda",
    "grows",
    "pooled",
    "[gaussian, degenerate]",
    "[entries, col_norms]",
    "[]",
    "{}",
    "? [a, b]\n  : 1",
    "'\\d+'",
    "<<: *undefined",
)

#: Regexes for ``depth_pattern``: valid, invalid, wrong groups, non-digit groups, pathological.
PATTERNS = (
    r"(\w+)",
    r"(x)?",
    r"(\d+)",
    r"(\d*)",
    r"((\d+))",
    r"(\d+)|(x)",
    r"(?P<n>\d+)",
    r"[",
    r"(\d+",
    r"(?=\d)(\d+)",
    r"(\d)+",
    r"(\d+)(?:a*)*b",
    r"(\d+)(?:.*)*x",
    r"(\d+)(?:\.?\w*)*!",
    r"(\d+)(?:a|ab|\w)*!",
    r"(?:\w+\.)+(\d+)",
    r"\d+",
    r"(\d{0})",
    r"([0-9]+)",
    r"(?i)(\d+)",
    r"layers\.(\d+)\.",
    r"(٣+)",
    r"([٠-٩]+)",
    r"(\d+)" + "(?:x)" * 200,
    "(" * 300 + r"\d+" + ")" * 300,
    "(?:" * 120 + r"(\d+)" + ")" * 120,
    r"(\d++)",
    r"(?>(\d+))",
    r"(\d+)\1",
    r"(?(1)a|b)(\d+)",
    r"(\D+)",
    r"(\d|x)",
    r"(.)",
    r"(\d+)" * 2,
    "x" * 2000,
)

#: Globs, including huge and pathological ones.
GLOBS = (
    "*",
    "*.weight",
    "model.layers.*.attn.*",
    "[",
    "[!a]*",
    "[" * 300,
    "*" * 5000,
    "*a" * 200,
    "[a-" + "z" * 100,
    "\\",
    "",
    "**.**",
    "nomatch.*",
)

CONTROL = [chr(c) for c in (*range(0, 9), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, 0x80, 0x9B, 0xFFFE, 0xFFFF)]
#: Bytes that are not UTF-8 (as surrogate escapes: the case's text is bytes decoded with ``surrogateescape``).
BAD_UTF8 = (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\xe2\x82")
WORDS = ("kind", "name", "select", "view", "if_empty", "tol", "stat", "min", "max", "per", "tool", "stats", "x")


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """The classic alias bomb as a spec: each level an entry whose ``allowed`` repeats the previous ``width`` times."""
    lines = ["assertions:", "  - kind: shape", "    allowed: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines += ["  - kind: shape", f"    allowed: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]"]
    return "\n".join(lines) + "\n"


def nested(depth: int, flow: bool) -> str:
    """A value nested ``depth`` levels: ``[[[…]]]`` or block mappings."""
    if flow:
        return "[" * depth + "1" + "]" * depth
    return "\n" + "".join(f"{'  ' * (i + 3)}k{i}:\n" for i in range(depth)) + "  " * (depth + 3) + "1"


# ---------------------------------------------------------------------------- mutations

Mutation = Callable[[random.Random, str], str]


def _lines(text: str) -> list[str]:
    return text.split("\n")


def _value_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if ":" in line and not line.lstrip().startswith("#")]


def byte_flip(rng: random.Random, text: str) -> str:
    data = bytearray(text.encode("utf-8", "surrogateescape"))
    for _ in range(rng.randint(1, 4)):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return data.decode("utf-8", "surrogateescape")


def insert_line(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    donor = _lines(rng.choice(_seed_texts()))
    line = rng.choice(donor) if rng.random() < 0.6 else f"{' ' * rng.choice((0, 2, 4, 6))}{rng.choice(WORDS)}: x"
    lines.insert(rng.randrange(len(lines) + 1), line)
    return "\n".join(lines)


def delete_line(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    del lines[rng.randrange(len(lines))]
    return "\n".join(lines)


def duplicate_line(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    i = rng.randrange(len(lines))
    lines.insert(i, lines[i])
    return "\n".join(lines)


def swap_lines(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def truncate(rng: random.Random, text: str) -> str:
    return text[: rng.randrange(len(text) + 1)]


def swap_value(rng: random.Random, text: str) -> str:
    """Replace the value of a ``key: value`` line by another type or an extreme."""
    lines = _lines(text)
    candidates = _value_lines(lines)
    if not candidates:
        return text
    i = rng.choice(candidates)
    head = lines[i].split(":", 1)[0]
    lines[i] = f"{head}: {rng.choice(VALUES)}"
    return "\n".join(lines)


def set_param(rng: random.Random, text: str) -> str:
    """Add or overwrite a parameter of an entry: a real one of some kind, or an unknown one."""
    lines = _lines(text)
    entries = [i for i, line in enumerate(lines) if line.lstrip().startswith("- ")]
    if not entries:
        return text
    i = rng.choice(entries)
    indent = " " * (len(lines[i]) - len(lines[i].lstrip()) + 2)
    kind = rng.choice(sorted(REGISTRY))
    names = [f.name for f in params(REGISTRY[kind])] or ["tol"]
    name = rng.choice([*names, "tolerance", "stats", "kind", "select", "view", "if_empty", "name"])
    value = rng.choice([*VALUES, *map(repr, _FLOATS), *sorted(SCALARS)[:6]])
    lines.insert(i + 1, f"{indent}{name}: {value}")
    return "\n".join(lines)


def change_kind(rng: random.Random, text: str) -> str:
    """Rename a ``kind:`` to another kind, a typo or garbage (its parameters stay)."""
    lines = _lines(text)
    kinds = [i for i, line in enumerate(lines) if line.strip().startswith(("kind:", "- kind:"))]
    if not kinds:
        return text
    i = rng.choice(kinds)
    kind = rng.choice(sorted(REGISTRY))
    new = rng.choice([kind, kind[:-1], kind.upper(), "", "[finite]", "{finite: 1}", "null", "7", "finite finite"])
    lines[i] = lines[i].split("kind:", 1)[0] + f"kind: {new}"
    return "\n".join(lines)


def set_stat(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    stats = [i for i, line in enumerate(lines) if line.strip().startswith("stat:")]
    if not stats:
        return text
    i = rng.choice(stats)
    stat = rng.choice(sorted(SCALARS))
    lines[i] = lines[i].split("stat:", 1)[0] + f"stat: {rng.choice([stat, stat + 'x', stat[:3], 'STD', '[std]'])}"
    return "\n".join(lines)


def set_select(rng: random.Random, text: str) -> str:
    """Give an entry a selection with a hostile depth_pattern, glob, ndim or group."""
    lines = _lines(text)
    entries = [i for i, line in enumerate(lines) if line.lstrip().startswith("- ")]
    if not entries:
        return text
    free = [i for i in entries if not _has_select(lines, i)]  # a second select: would be a duplicate key
    i = rng.choice(free or entries)
    indent = " " * (len(lines[i]) - len(lines[i].lstrip()) + 2)
    choice = rng.randrange(5)
    if choice == 0:
        value = {"depth_pattern": rng.choice(PATTERNS)}
    elif choice == 1:
        value = {rng.choice(("include", "exclude")): rng.choice(GLOBS)}
    elif choice == 2:
        value = {"include": [rng.choice(GLOBS) for _ in range(rng.choice((1, 3, 300)))]}
    elif choice == 3:
        value = {rng.choice(("ndim", "min_ndim", "min_numel")): rng.choice((-1, 0, 2, 10**30, "2", [1, "x"], None))}
    else:
        value = {"groups": rng.choice(("weights", "optimizer", ["optim"], [], 3, ["weights", "weights"]))}
    dumped = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    lines.insert(i + 1, f"{indent}select: {dumped}")
    return "\n".join(lines)


def _has_select(lines: list[str], start: int) -> bool:
    """True when the entry starting at line ``start`` has a ``select`` key."""
    indent = len(lines[start]) - len(lines[start].lstrip())
    for k, line in enumerate(lines[start:]):
        body = line.lstrip()
        if k and body and (len(line) - len(body) <= indent):
            return False
        if body.removeprefix("- ").startswith("select:"):
            return True
    return False


def alias_bomb(rng: random.Random, text: str) -> str:
    bomb = billion_laughs(rng.randint(3, 12), rng.randint(2, 12)).split("\n", 1)[1]
    return text.replace("assertions:\n", "assertions:\n" + bomb, 1) if "assertions:\n" in text else bomb + text


def alias_many(rng: random.Random, text: str) -> str:
    """Many aliases to one (long) scalar."""
    n = rng.choice((50, 101, 3000))
    scalar = "x" * rng.choice((1, 1000, 50000))
    entry = f"  - kind: finite\n    select: {{include: [&g '{scalar}', " + ", ".join(["*g"] * n) + "]}\n"
    return text.replace("assertions:\n", "assertions:\n" + entry, 1)


def deep_nesting(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    candidates = _value_lines(lines)
    if not candidates:
        return text
    i = rng.choice(candidates)
    head = lines[i].split(":", 1)[0]
    lines[i] = f"{head}: {nested(rng.choice((20, 31, 33, 100, 600, 5000)), rng.random() < 0.7)}"
    return "\n".join(lines)


def control_char(rng: random.Random, text: str) -> str:
    i = rng.randrange(len(text) + 1)
    return text[:i] + rng.choice(CONTROL) + text[i:]


def invalid_utf8(rng: random.Random, text: str) -> str:
    i = rng.randrange(len(text) + 1)
    return text[:i] + rng.choice(BAD_UTF8).decode("utf-8", "surrogateescape") + text[i:]


def tabs(rng: random.Random, text: str) -> str:
    return text.replace("  ", "\t", rng.randint(1, 5))


def grow(rng: random.Random, text: str) -> str:
    """Repeat the assertions (many entries, or a file beyond the size limit)."""
    head, sep, body = text.partition("assertions:\n")
    if not sep:
        return text
    times = min(rng.choice((2, 50, 2000)), GROW_LIMIT // max(1, len(body)))  # grown again: bounded
    return head + sep + body * max(1, times)


def set_default(rng: random.Random, text: str) -> str:
    """Put a parameter, selection, view or if_empty in ``defaults`` (inherited by every entry)."""
    kind = rng.choice(sorted(REGISTRY))
    names = [f.name for f in params(REGISTRY[kind])] or ["tol"]
    key = rng.choice([*names, "select", "view", "if_empty", "kind", "name"])
    value = rng.choice(
        [*VALUES, *map(repr, _FLOATS), "delta", "skip", "{min_ndim: 2}", "{depth_pattern: '(\\d+)'}", "std"]
    )
    line = f"  {key}: {value}"
    if "\ndefaults:\n" in text:
        return text.replace("\ndefaults:\n", f"\ndefaults:\n{line}\n", 1)
    return f"defaults:\n{line}\n{text}"


def unicode_text(rng: random.Random, text: str) -> str:
    """Insert non-ASCII text (right-to-left override, zero-width, combining, emoji, other digits)."""
    i = rng.randrange(len(text) + 1)
    return text[:i] + rng.choice(("\u202e", "\u200b", "e\u0301", "\U0001f600", "\u0663", "\ufeff", "\u2028")) + text[i:]


def merge_key(rng: random.Random, text: str) -> str:
    """Use YAML merge keys and anchors on entries (``<<: *base``)."""
    entry = rng.choice(("  - &base {kind: finite}\n  - <<: *base\n", "  - <<: {kind: finite}\n    name: m\n"))
    return text.replace("assertions:\n", "assertions:\n" + entry, 1)


def multi_document(rng: random.Random, text: str) -> str:
    return text + rng.choice(("\n---\n", "\n...\n", "\n--- |\n  x\n", "\n%YAML 1.1\n---\n"))


MUTATIONS: dict[str, Mutation] = {
    f.__name__: f
    for f in (
        byte_flip,
        insert_line,
        delete_line,
        duplicate_line,
        swap_lines,
        truncate,
        swap_value,
        set_param,
        change_kind,
        set_stat,
        set_select,
        alias_bomb,
        alias_many,
        deep_nesting,
        control_char,
        invalid_utf8,
        tabs,
        grow,
        multi_document,
        set_default,
        unicode_text,
        merge_key,
    )
}

# ---------------------------------------------------------------------------- generated entries

_FLOATS = (0.0, -1.0, 1.0, 0.5, 2.0, 5 / 9, 1e-12, 1e12, 1e308, -1e308, float("inf"), float("-inf"), 100.0, 1e-300)
_INTS = (0, 1, 2, 3, -1, 10, 10**6, 2**62)
_STRINGS = {
    "stat": (*SCALARS, "stdd", ""),
    "compare": ("entries", "row_norms", "col_norms", "norms"),
    "optimizer_file": ("optimizer.pt", "x", "../optimizer.pt", "/dev/null", ""),
}


def random_value(rng: random.Random, name: str, tp: Any) -> Any:
    """A value of type ``tp`` (a parameter's annotation), often extreme."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if args and origin not in (typing.Literal, tuple):  # a union
        return random_value(rng, name, rng.choice(args))
    if origin is typing.Literal:
        return rng.choice(args)
    if origin is tuple:
        return [random_value(rng, name, args[0]) for _ in range(rng.randint(0, 3))]
    if tp is type(None):
        return None
    if tp is bool:
        return rng.random() < 0.5
    if tp is float:
        return rng.choice(_FLOATS)
    if tp is int:
        return rng.choice(_INTS)
    return rng.choice(_STRINGS.get(name, ("", "x", "std")))


def random_entry(rng: random.Random) -> dict[str, Any]:
    """An assertion of a random kind with random (well-typed) parameters and selection."""
    cls = REGISTRY[rng.choice(sorted(REGISTRY))]
    hints = typing.get_type_hints(cls)
    entry: dict[str, Any] = {"kind": cls.kind}
    for f in params(cls):
        if rng.random() < 0.6:
            entry[f.name] = random_value(rng, f.name, hints[f.name])
    select: dict[str, Any] = {}
    if rng.random() < 0.5:
        select["include"] = rng.choice(("*", "*.weight", "model.layers.*", "*norm*", "nomatch", "position_ids"))
    if rng.random() < 0.4:
        select["min_ndim"] = rng.choice((0, 1, 2, 3))
    if rng.random() < 0.2:
        select["min_numel"] = rng.choice((0, 1, 10**6))
    if rng.random() < 0.2:
        select["ndim"] = rng.choice(([1], [2], [0, 4]))
    if rng.random() < 0.2:
        select["depth_pattern"] = rng.choice((r"(\d+)", r"layers\.(\d+)", r"([0-9])", r"x(\d+)", *PATTERNS))
    if rng.random() < 0.1:
        select["groups"] = rng.choice((["optimizer"], ["weights", "optimizer"]))
    if select:
        entry["select"] = select
    if rng.random() < 0.2:
        entry["view"] = rng.choice(("weights", "delta"))
    if rng.random() < 0.2:
        entry["if_empty"] = rng.choice(("fail", "skip"))
    return entry


def generated_spec(rng: random.Random) -> str:
    entries = [random_entry(rng) for _ in range(rng.randint(1, 4))]
    return yaml.safe_dump({"version": 1, "assertions": entries}, sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Finding:
    """A case that broke an invariant: its number, which count, the mutations and what happened."""

    case: int
    kind: str
    mutation: str
    detail: str


def _seed_texts() -> tuple[str, ...]:
    global _SEEDS
    if _SEEDS is None:
        bundled = tuple(p.read_text(encoding="utf-8") for p in bundled_specs().values())
        _SEEDS = (*bundled, *HANDWRITTEN)
    return _SEEDS


_SEEDS: tuple[str, ...] | None = None


def make_case(seed: int, case: int) -> tuple[bytes, str]:
    """The spec file of one case (always the same for the same seed and case) and its mutations."""
    rng = random.Random(f"spec:{seed}:{case}")
    if rng.random() < 0.3:
        text, names = generated_spec(rng), ["generated"]
        count = rng.choice((0, 0, 1))
    else:
        text, names = rng.choice(_seed_texts()), []
        count = rng.choice((1, 1, 1, 2, 3))
    for _ in range(count):
        name = rng.choice(sorted(MUTATIONS))
        text = MUTATIONS[name](rng, text)
        names.append(name)
    return text.encode("utf-8", "surrogateescape"), "+".join(names)


# ---------------------------------------------------------------------------- judging


def tensors(seed: int, scale: float = 1.0) -> dict[str, Any]:
    """A small transformer-like state dict (four layers of width 32), a long name, an int buffer and optimizer state."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"embed.weight": torch.randn(64, 32, generator=g) * 0.02 * scale}
    for i in range(4):
        p = f"model.layers.{i}."
        for name in ("q", "k", "v"):
            out[p + f"attn.{name}.weight"] = torch.randn(32, 32, generator=g) * 0.02 * scale
        out[p + "mlp.up.weight"] = torch.randn(128, 32, generator=g) * 0.02 * scale
        out[p + "norm.weight"] = torch.ones(32)
    # a long name: a depth_pattern that backtracks exponentially takes minutes on it, not microseconds
    out["model.layers.3.a_rather_long_descriptive_module_name_to_match_against.weight"] = torch.randn(8, 8, generator=g)
    out["position_ids"] = torch.arange(16).reshape(1, 16)
    out["optimizer"] = {"state": {"0": {"exp_avg": torch.randn(32, 32, generator=g) * 1e-3}}}
    return out


class CaseTimeout(BaseException):
    """Raised in a case that runs past :data:`HARD_TIMEOUT` (not an ``Exception``: nothing catches it as a bug)."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (SIGALRM, main thread only; elsewhere no limit)."""

    def expire(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"still running after {seconds:.0f} s")

    try:
        previous = signal.signal(signal.SIGALRM, expire)
    except (ValueError, AttributeError):  # not the main thread, or no SIGALRM
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def judge_all(spec: Spec) -> list[str]:
    """Judge every assertion of ``spec`` on small checkpoints; the internal errors met (type: message)."""
    run = [(step, StateDictCheckpoint(tensors(1, 1 + step / 10), f"step-{step}")) for step in range(3)]
    checker = Checker("cpu", reference=StateDictCheckpoint(tensors(2), "reference"))
    crashes = []
    for entry in spec.assertions:
        if entry.assertion.scope == "run":
            result = checker.judge_run(run, entry, "run")
        else:
            result = checker.judge(run[0][1], entry)
        if result.error is not None and "CaseTimeout" in result.error:
            raise CaseTimeout(result.error)
        if result.error is not None and result.traceback:
            crashes.append(f"{entry.location} {entry.name} [{entry.assertion.kind}]: {result.error}")
    return crashes


def long_messages(spec: Spec) -> list[str]:
    return [str(e)[:200] + "…" for e in spec.errors if len(str(e)) >= MESSAGE_LIMIT]


def run_case(seed: int, case: int, workdir: Path) -> tuple[str, Finding | None]:
    """Load and judge one case; its outcome ("valid" or "refused", else the broken count) and finding."""
    data, mutation = make_case(seed, case)
    path = workdir / f"case{case}.weights.yaml"
    path.write_bytes(data)
    start = time.process_time()
    judged = 0

    def finding(kind: str, detail: str) -> tuple[str, Finding]:
        return kind, Finding(case, kind, mutation, " ".join(detail.split())[:600])

    try:
        with deadline(HARD_TIMEOUT):
            try:
                spec = load_spec(path)
            except SpecError as e:
                if len(str(e)) >= MESSAGE_LIMIT:
                    return finding("long_messages", f"{len(str(e))} characters: {str(e)[:300]}")
                if not str(e).startswith(str(path)):
                    return finding("crashes_at_load", f"message does not name the file: {e}")
                outcome = "refused"
            except Exception as e:
                return finding("crashes_at_load", f"{type(e).__name__}: {e}")
            else:
                if time.process_time() - start > SLOW:
                    return finding("slow", f"loading took {time.process_time() - start:.1f} s")
                if long_messages(spec):
                    return finding("long_messages", long_messages(spec)[0])
                judged = len(spec.assertions)
                crashes = judge_all(spec)
                if crashes:
                    return finding("crashes_at_run", crashes[0])
                outcome = "valid" if spec.assertions else "refused"
            if case % 10 == 0:  # the text API too (the file's bytes as text: invalid UTF-8 as lone surrogates)
                _parse_text(data, str(path))
    except CaseTimeout as e:
        return finding("slow", f"{e}")
    except Exception as e:
        return finding("crashes_at_load", f"parse_spec: {type(e).__name__}: {e}")
    elapsed = time.process_time() - start
    if elapsed > SLOW * max(1.0, judged / 100):
        return finding("slow", f"{elapsed:.1f} s ({judged} assertions judged)")
    return outcome, None


def _parse_text(data: bytes, path: str) -> None:
    with contextlib.suppress(SpecError):
        parse_spec(data.decode("utf-8", "surrogateescape"), path)


def run_campaign(cases: int, seed: int = 0, findings: list[Finding] | None = None) -> dict[str, int]:
    """Run ``cases`` cases of ``seed``; the counts of :data:`COUNTS` (a finding per bad case into ``findings``)."""
    counts = dict.fromkeys(COUNTS, 0)
    with tempfile.TemporaryDirectory(prefix="pw-spec-fuzz-") as tmp:
        for case in range(cases):
            outcome, found = run_case(seed, case, Path(tmp))
            counts["cases"] += 1
            counts[outcome] += 1
            if found is not None and findings is not None:
                findings.append(found)
            Path(tmp, f"case{case}.weights.yaml").unlink(missing_ok=True)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.specs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only-case", type=int, help="run this case alone")
    parser.add_argument("--show", action="store_true", help="print the case's spec (with --only-case)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.only_case is not None:
        data, mutation = make_case(args.seed, args.only_case)
        if args.show:
            sys.stdout.write(data.decode("utf-8", "backslashreplace")[:20000] + f"\n# mutation: {mutation}\n")
        with tempfile.TemporaryDirectory() as tmp:
            print(run_case(args.seed, args.only_case, Path(tmp)))
        return 0
    findings: list[Finding] = []
    start = time.perf_counter()
    counts = run_campaign(args.cases, args.seed, findings)
    for f in findings:
        print(f"[{f.kind}] case {f.case} ({f.mutation}): {f.detail}")
    print(" ".join(f"{k}={v}" for k, v in counts.items()), f"seconds={time.perf_counter() - start:.0f}")
    return 1 if any(counts[k] for k in BAD) else 0


if __name__ == "__main__":
    raise SystemExit(main())
