"""The spec reference (docs/kinds.md), generated from the assertion registry and the
statistics table, so the documentation cannot drift from what the loader accepts."""

from __future__ import annotations

import dataclasses
import inspect
import typing

from .assertions import REGISTRY
from .assertions.base import _typename, params
from .stats.scalars import SCALARS


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default).replace("'", "")
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return repr(f.default_factory()).replace("'", "")  # type: ignore[misc]
    return "**required**"


def _keys_markdown() -> list[str]:
    """The common entry keys and the ``select:`` keys, from their typed fields (:mod:`pytest_weights.keys`)."""
    from .keys import TypedKey, describe
    from .spec import ENTRY, SELECT

    def row(k: TypedKey) -> str:
        value = list(k.default) if isinstance(k.default, tuple) else k.default
        default = "" if value is None else f"`{value!r}`"
        cells = (f"`{k.name}`", describe(k), default, k.meta.doc + (" (*defaults*)" if k.meta.in_defaults else ""))
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = ["| entry key | takes | default | meaning |", "|---|---|---|---|"]
    out += [row(k) for k in ENTRY.values()]
    out += ["", "| `select:` key | takes | default | meaning |", "|---|---|---|---|"]
    out += [row(k) for k in SELECT.values()]
    return [*out, ""]


def kinds_markdown() -> str:
    """Markdown: every assertion kind with its description and parameters, then statistics."""
    out = [
        "# Spec reference",
        "",
        "Generated from the registry by `python -m pytest_weights.reference_docs` (a test keeps it current).",
        "Every assertion entry takes the keys below plus its kind's parameters; the keys marked *defaults*",
        "may also be set in `defaults` (`select` is merged key by key over `defaults.select`). The loader,",
        "the JSON Schema (`pytest-weights validate --schema`) and these tables derive from the same types;",
        "only the loader checks what a schema cannot say: a kind's parameter consistency (`min ≤ max` …),",
        "that a `depth_pattern` compiles and captures a layer index, NaN parameters, unprintable names.",
        "",
        *_keys_markdown(),
        "**NaN/Inf policy.** A tensor holding any NaN or ±Inf fails every kind that reads values (all but",
        "`finite`, which reports the counts itself): its row names the counts (`3 NaN, 0 Inf of 4096 values`)",
        "and says its statistics are undefined; the other selected tensors are judged as usual. Over a run,",
        "the first step at which a tensor holds one is named. Tensors with 0 values are left out with a note.",
        "",
    ]
    out += [
        "Kinds whose ratios need a non-negative statistic (`sibling_consistency`) refuse signed ones",
        "(" + ", ".join(f"`{n}`" for n, s in SCALARS.items() if not s.nonnegative) + ") at load.",
        "",
    ]
    for kind in sorted(REGISTRY):
        cls = REGISTRY[kind]
        hints = typing.get_type_hints(cls)
        scope = " (run scope: judged over a run's checkpoints)" if cls.scope == "run" else ""
        ref = " (needs `--reference`)" if cls.needs_reference else ""
        out += [f"## `{kind}`{scope}{ref}", "", inspect.cleandoc(cls.__doc__ or ""), ""]
        fields = params(cls)
        if fields:
            out += ["| parameter | type | default |", "|---|---|---|"]
            out += [f"| `{f.name}` | {_typename(hints[f.name])} | {_default(f)} |" for f in fields]
            out.append("")
        out += _kind_facts(cls)
    out += ["# Statistics (`stat:`)", "", "| name | definition |", "|---|---|"]
    out += [f"| `{s.name}` | {s.description}{'' if s.nonnegative else ' (signed)'} |" for s in SCALARS.values()]
    return "\n".join(out) + "\n"


def _kind_facts(cls: type) -> list[str]:
    """What the kind says about itself beyond its parameters: baseline numbers, gate deferral."""
    facts = []
    if cls.baseline:
        facts.append("baseline (`init`, `--weights-regen`): " + ", ".join(f"`{p}`" for p in cls.baseline))
    if cls.judged_at_end:
        facts.append("judged at the end of a run by gates (`WeightsGate.finish()`), not mid-run")
    return [f"*{'; '.join(facts)}.*", ""] if facts else []


if __name__ == "__main__":  # pragma: no cover
    print(kinds_markdown(), end="")
