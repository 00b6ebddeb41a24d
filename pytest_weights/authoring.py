"""Spec authoring: a baseline spec from a known-good checkpoint (``init``), and baseline
numbers rewritten in place from a new checkpoint (``regen``).

:func:`init_spec` profiles a checkpoint with the same one-pass engine as the checks
(moments of every float tensor; KS distance and the mid-80 Weibull fit of the weight
matrices) and writes a commented spec: finiteness everywhere, and per role (the same
matrix at every depth) a std band, a Gaussian KS tolerance, a Weibull k band, the depth
trends that hold, and sibling consistency — each number the observed value widened by a
margin, the observed values in comments. Architecture presets (Llama/Mistral, GPT-2,
BERT, ViT) are recognised from tensor names to name roles and leave norms, embeddings
and buffers out of distribution checks.

:func:`regen_spec` rewrites the range and tolerance parameters of a spec's assertions
(``min``/``max``, ``tol``, ``k_min``/``k_max``, ``max_ratio``, ``min_rho`` …) from a
checkpoint's observed values, like pytest-regressions' ``--force-regen``: by default only
the bounds the checkpoint violates, or every baseline number (``only_failing=False``).
The YAML text is edited in place at the positions the YAML parser reports, so comments,
order and layout are kept; it is never re-dumped.

Both derive every number with the same rules (:func:`propose`), so ``regen`` on the
checkpoint a spec was generated from changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from .assertions import REGISTRY, Assertion
from .assertions.base import TensorView, fmt
from .assertions.groups import by_role
from .errors import SpecError, WeightsError
from .readers import Checkpoint, TensorInfo, open_checkpoint
from .selection import Selection
from .spec import AssertionSpec, parse_spec
from .stats import KSNormal, Moments
from .stats.scalars import SCALARS
from .stats.weibull import WeibullFit

#: Matrices smaller than this get no distribution checks (as in the bundled specs).
MIN_NUMEL = 4096
DEFAULT_MARGIN = 0.5
#: Depth trends are asserted where Spearman |ρ| reaches this over at least TREND_MIN_LAYERS depths.
TREND_MIN_RHO = 0.8
TREND_MIN_LAYERS = 3
#: A KS tolerance is never tighter than this (a Gaussian of 4096 values has D ≈ 0.01).
KS_TOL_FLOOR = 0.02
#: A role whose KS distance exceeds this (a constant matrix has D = 1) gets no KS baseline.
MAX_BASELINE_KS = 0.5
#: Weibull k is a shape exponent: its band is widened additively, by margin × this.
WEIBULL_K_SLACK = 0.1
#: Significant digits of generated numbers (lower bounds rounded down, upper bounds up).
DIGITS = 3
SCHEMA_REF = "weights.schema.json"
_MARGIN_MARK = re.compile(r"^#.*pytest-weights init\b.*\bmargin (\d+(?:\.\d+)?)")

# ---------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """An architecture family recognised from tensor names: role names and what to leave out."""

    name: str
    title: str
    #: A tensor name matching this regex identifies the architecture.
    detect: str
    #: Role suffix (the part after ``<depth>.``, without ``.weight``) → short role name.
    roles: Mapping[str, str] = field(default_factory=dict)
    #: Names (without ``.weight``) of single tensors → short name.
    singles: Mapping[str, str] = field(default_factory=dict)
    #: Globs of buffers that are not weights (e.g. GPT-2's causal masks): finiteness only.
    buffers: tuple[str, ...] = ()


#: Embedding-like matrices: a std band, no distribution checks.
EMBEDDING_GLOBS = ("*embed*", "*wte*", "*wpe*", "*lm_head*", "*cls_token*", "*mask_token*", "*dist_token*")
#: Norm weights (1-D, so also excluded by min_ndim; listed for norms stored as matrices).
NORM_GLOBS = ("*norm*", "*Norm*", "*.ln_*", "ln_*")

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "vit",
            "ViT (vision transformer)",
            r"(?:^|\.)blocks\.\d+\.attn\.qkv\.|vit\.encoder\.layer\.\d+\.|(?:^|\.)encoder\.layer\.\d+\.attention\.attention\.",
            {
                "attn.qkv": "qkv",
                "attn.proj": "attn-out",
                "mlp.fc1": "mlp-up",
                "mlp.fc2": "mlp-down",
                "attention.attention.query": "query",
                "attention.attention.key": "key",
                "attention.attention.value": "value",
                "attention.output.dense": "attn-out",
                "intermediate.dense": "mlp-up",
                "output.dense": "mlp-down",
            },
            {"head": "head", "classifier": "head", "vit.pooler.dense": "pooler", "pooler.dense": "pooler"},
        ),
        Preset(
            "gpt2",
            "GPT-2-style decoder",
            r"(?:^|\.)h\.\d+\.attn\.c_attn\.",
            {"attn.c_attn": "qkv", "attn.c_proj": "attn-out", "mlp.c_fc": "mlp-up", "mlp.c_proj": "mlp-down"},
            {},
            ("*.attn.bias", "*.attn.masked_bias"),
        ),
        Preset(
            "llama",
            "Llama/Mistral-style decoder",
            r"(?:^|\.)layers\.\d+\.self_attn\.q_proj\.",
            {
                "self_attn.q_proj": "q",
                "self_attn.k_proj": "k",
                "self_attn.v_proj": "v",
                "self_attn.o_proj": "attn-out",
                "mlp.gate_proj": "mlp-gate",
                "mlp.up_proj": "mlp-up",
                "mlp.down_proj": "mlp-down",
            },
        ),
        Preset(
            "bert",
            "BERT-style encoder",
            r"(?:^|\.)encoder\.layer\.\d+\.attention\.self\.query\.",
            {
                "attention.self.query": "query",
                "attention.self.key": "key",
                "attention.self.value": "value",
                "attention.output.dense": "attn-out",
                "intermediate.dense": "mlp-up",
                "output.dense": "mlp-down",
            },
            {"pooler.dense": "pooler"},
        ),
        Preset("generic", "generic (no known architecture)", r"(?!)"),
    ]
}


def detect_preset(names: Iterable[str]) -> Preset:
    """The first preset whose pattern matches a tensor name (``generic`` when none does)."""
    names = list(names)
    for preset in PRESETS.values():
        pattern = re.compile(preset.detect)
        if any(pattern.search(n) for n in names):
            return preset
    return PRESETS["generic"]


# ---------------------------------------------------------------------------- numbers


def _round(x: float, up: bool, keep: float, digits: int = DIGITS) -> float:
    """``x`` to ``digits`` significant digits, rounded up (upper bounds) or down (lower bounds),
    never past ``keep`` (the observed value the bound must admit)."""
    if x == 0 or not math.isfinite(x):
        return x
    # Float noise first (0.1 × 1.5 = 0.15000000000000002 gives 0.15, not 0.151), unless that
    # would exclude the observed value.
    for text in (f"{x:.12g}", repr(float(x))):
        d = Decimal(text)
        exp = d.adjusted() - (digits - 1)
        out = float(d.quantize(Decimal(1).scaleb(exp), rounding=ROUND_CEILING if up else ROUND_FLOOR))
        if (out >= keep) if up else (out <= keep):
            return out
    return out  # pragma: no cover - the exact decimal of x ≥ keep always qualifies


def number_text(x: float) -> str:
    """A number as YAML text that PyYAML reads as a float (``0.0287``, ``1.5e-05``, ``2.0``)."""
    if x == 0:
        return "0.0"
    if 1e-3 <= abs(x) < 1e5:
        text = f"{x:.{DIGITS + 4}g}"
        return text if ("." in text or "e" in text) else text + ".0"
    mantissa, exp = f"{x:.{DIGITS - 1}e}".split("e")
    mantissa = mantissa.rstrip("0")
    mantissa = mantissa + "0" if mantissa.endswith(".") else mantissa
    return f"{mantissa}e{exp}"


#: Statistics that are never negative: bands widen multiplicatively, [min/(1+m), max·(1+m)].
NONNEGATIVE = frozenset({name for name, scalar in SCALARS.items() if scalar.nonnegative} | {"ratio"})
#: Smallest widening, in the statistic's units, for values near 0 (where a relative margin vanishes).
SLACK = {
    "kurtosis": 0.5,
    "skewness": 0.1,
    "lag1_corr": 0.02,
    "zero_fraction": 1e-5,
    "outlier_fraction_3sigma": 1e-3,
    "near_zero_mass": 0.01,
    "mean_over_std": 0.02,
}


def widen(stat: str, lo: float, hi: float, margin: float) -> tuple[float, float]:
    """The band [lo, hi] of observed values of ``stat`` widened by ``margin`` (rounded outwards).

    Scales (std, λ, norms, fractions): [lo/(1+m), hi·(1+m)]; ``weibull_k``: ± m·0.1;
    ``weibull_r2``: lower 1 − (1 − lo)(1+m); ``ks``: upper at least 0.02; signed statistics
    (mean, skewness, kurtosis …): lo − m·max(|lo|, slack), hi + m·max(|hi|, slack).
    """
    m, slack = margin, SLACK.get(stat, 0.0)
    if stat == "weibull_k":
        a, b = lo - m * WEIBULL_K_SLACK, hi + m * WEIBULL_K_SLACK
    elif stat == "weibull_r2":
        a, b = max(0.0, 1 - (1 - lo) * (1 + m)), 1.0
    elif stat in NONNEGATIVE and lo >= 0:
        a = lo / (1 + m)
        b = max(hi * (1 + m), hi + m * slack)
        if stat == "ks":
            b = min(1.0, max(b, KS_TOL_FLOOR))
    else:
        a = lo - m * max(abs(lo), slack)
        b = hi + m * max(abs(hi), slack)
    return _round(a, up=False, keep=lo), _round(b, up=True, keep=hi)


# ---------------------------------------------------------------------------- proposals


@dataclass(frozen=True)
class Proposal:
    """A new value of one baseline parameter, derived from observed values."""

    value: float
    #: The observed extreme the bound is judged against (a bound is violated when it excludes it).
    observed: float
    #: "lower" (min, k_min, min_rho …) or "upper" (max, tol, max_ratio …).
    bound: str
    #: What was observed, for a comment (``observed 0.043 … 0.096``); may be empty.
    comment: str = ""

    @property
    def text(self) -> str:
        return number_text(self.value)

    def violated_by(self, current: float) -> bool:
        """Whether a bound at ``current`` excludes the observed extreme."""
        return self.observed < current if self.bound == "lower" else self.observed > current


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _band(
    stat: str, values: Mapping[str, float], margin: float, lo_key: str, hi_key: str, label: str
) -> tuple[dict[str, Proposal], list[str]]:
    vals = _finite(values.values())
    notes = []
    if len(vals) < len(values):
        bad = [n for n, v in values.items() if not (isinstance(v, (int, float)) and math.isfinite(v))]
        notes.append(f"{label} is not finite for {len(bad)} tensor(s) ({bad[0]}): no band holds for those")
    if not vals:
        return {}, notes
    lo, hi = min(vals), max(vals)
    a, b = widen(stat, lo, hi, margin)
    span = fmt(lo) if lo == hi else f"{fmt(lo)} … {fmt(hi)}"
    out = {lo_key: Proposal(a, lo, "lower", f"observed {label} {span}"), hi_key: Proposal(b, hi, "upper")}
    return out, notes


def _upper(value: float, observed: float, comment: str, floor: float = 0.0, cap: float | None = None) -> Proposal:
    v = _round(max(value, floor), up=True, keep=observed)
    if cap is not None:
        v = min(v, cap)
    return Proposal(v, observed, "upper", comment)


def propose(
    assertion: Assertion, tensors: Sequence[TensorView], margin: float
) -> tuple[dict[str, Proposal], list[str]]:
    """New values of ``assertion``'s baseline parameters from the tensors it selects, and notes
    on what cannot be derived. Every proposed value admits the observed values."""
    m = margin
    kind = assertion.kind
    if not tensors:
        return {}, ["the selection matches no tensor"]
    per_tensor = (
        "stat_range",
        "gaussian_ks",
        "outliers",
        "bimodality",
        "weibull",
        "iid",
        "spectral",
        "reference_ratio",
    )
    if kind in per_tensor:
        observed = dict(assertion.evaluate(tensors).observed)
    if kind == "stat_range":
        return _band(assertion.stat, observed, m, "min", "max", assertion.stat)  # type: ignore[attr-defined]
    if kind == "reference_ratio":  # stat(W) / stat(W_ref) per tensor
        label = f"{assertion.stat} ratio"  # type: ignore[attr-defined]
        return _band("ratio", observed, m, "min_ratio", "max_ratio", label)
    if kind == "gaussian_ks":
        vals = _finite(observed.values())
        if not vals:
            return {}, ["no finite KS distance"]
        top = max(vals)
        tol = min(1.0, _round(max(top * (1 + m), KS_TOL_FLOOR), up=True, keep=top))
        return {"tol": Proposal(tol, top, "upper", f"observed max D {fmt(top)}")}, []
    if kind == "outliers":
        vals = _finite(observed.values())
        if not vals:
            return {}, ["no finite outlier fraction"]
        top = max(vals)
        return {"max_fraction": _upper(top * (1 + m), top, f"observed max {fmt(top)}", 1e-5, 1.0)}, []
    if kind == "bimodality":
        vals = _finite(observed.values())
        if not vals:
            return {}, ["no finite bimodality coefficient"]
        top = max(vals)
        return {"max_bc": _upper(top * (1 + m), top, f"observed max {fmt(top)}", cap=1.0)}, []
    if kind == "weibull":
        fits = {n: v for n, v in observed.items() if math.isfinite(v["k"])}
        notes = [f"Weibull fit failed for {len(observed) - len(fits)} tensor(s)"] if len(fits) < len(observed) else []
        if not fits:
            return {}, notes
        out: dict[str, Proposal] = {}
        for stat, key, label in (("weibull_k", "k", "k"), ("weibull_lambda", "lambda", "λ")):
            band, _ = _band(stat, {n: v[key] for n, v in fits.items()}, m, f"{key}_min", f"{key}_max", label)
            out.update(band)
        r2 = _finite(v["r2"] for v in fits.values())
        if r2:
            lo = min(r2)
            out["r2_min"] = Proposal(widen("weibull_r2", lo, lo, m)[0], lo, "lower", f"observed R² ≥ {fmt(lo)}")
        return out, notes
    if kind == "iid":
        out = {}
        lag = _finite(abs(v["lag1_corr"]) for v in observed.values())
        if lag:
            top = max(lag)
            out["max_lag1"] = _upper(top * (1 + m), top, f"observed max |lag-1| {fmt(top)}", 0.01)
        dev = _finite(abs(v[k] - 1) for v in observed.values() for k in ("row_mean_var_ratio", "col_mean_var_ratio"))
        if dev:
            top = max(dev)
            out["max_ratio_deviation"] = _upper(top * (1 + m), top, f"observed max |ratio − 1| {fmt(top)}", 0.05)
        return out, []
    if kind == "spectral":
        out = {}
        alpha = {n: v["alpha"] for n, v in observed.items() if math.isfinite(v["alpha"])}
        if alpha:
            band, _ = _band("esd_alpha", alpha, m, "alpha_min", "alpha_max", "α")
            out.update(band)
        norms = _finite(v["spectral_norm"] for v in observed.values())
        if norms:
            top = max(norms)
            out["max_spectral_norm"] = _upper(top * (1 + m), top, f"observed max ‖W‖₂ {fmt(top)}")
        ranks = _finite(v["stable_rank"] for v in observed.values())
        if ranks:
            lo = min(ranks)
            out["min_stable_rank"] = Proposal(
                _round(lo / (1 + m), up=False, keep=lo), lo, "lower", f"observed min {fmt(lo)}"
            )
        return out, []
    if kind == "depth_trend":
        return _propose_trend(assertion, tensors, m)
    if kind == "sibling_consistency":
        return _propose_siblings(assertion, tensors, m)
    if kind == "scale_consistency":
        return _propose_scale(assertion, tensors, m)
    if kind == "flatness":
        return _propose_flatness(assertion, tensors, m)
    if assertion.scope == "run":
        return {}, [f"{kind} judges a training run: its numbers are not regenerated from one checkpoint"]
    return {}, []


def _propose_trend(assertion: Any, tensors: Sequence[TensorView], m: float) -> tuple[dict[str, Proposal], list[str]]:
    observed = assertion.evaluate(tensors).observed
    if not observed:
        return {}, [f"no role has {assertion.min_layers} or more layers"]
    rhos = {role: v["rho"] for role, v in observed.items()}
    span = _span(rhos.values())
    if assertion.direction == "flat":
        top = max(abs(r) for r in rhos.values())
        if math.isnan(top):
            return {}, ["ρ is undefined (a constant statistic)"]
        p = _upper(top * (1 + m), top, f"observed ρ {span}", cap=1.0)
        return {"max_abs_rho": p}, []
    sign = 1 if assertion.direction == "grows" else -1
    worst = min(sign * r for r in rhos.values())
    if not worst > 0:
        return {}, [f"{assertion.stat} no longer {assertion.direction} with depth (ρ {span}): min_rho not rewritten"]
    return {
        "min_rho": Proposal(_round(worst / (1 + m), up=False, keep=worst), worst, "lower", f"observed ρ {span}")
    }, []


def _span(values: Iterable[float]) -> str:
    vals = sorted(values)
    return fmt(vals[0]) if vals[0] == vals[-1] else f"{fmt(vals[0])} … {fmt(vals[-1])}"


def _propose_siblings(assertion: Any, tensors: Sequence[TensorView], m: float) -> tuple[dict[str, Proposal], list[str]]:
    s = SCALARS[assertion.stat]
    worst, where = 1.0, ""
    for _, group in by_role(tensors).items():
        if len(group) < assertion.min_siblings:
            continue
        values = {t.name: s.read(t[s.statistic]) for t in group}
        if not any(math.isfinite(v) for v in values.values()):
            continue
        med = statistics.median(v for v in values.values() if not math.isnan(v))
        for name, v in values.items():
            if not (v > 0 and med > 0 and math.isfinite(v)):
                return {}, [f"{name}: {assertion.stat}={fmt(v)}, role median {fmt(med)}: no ratio bound holds"]
            r = max(v / med, med / v)
            if r > worst:
                worst, where = r, name
    if not where and worst == 1.0 and not any(len(g) >= assertion.min_siblings for g in by_role(tensors).values()):
        return {}, [f"no role has {assertion.min_siblings} or more tensors"]
    value = _round(worst * (1 + m), up=True, keep=worst)
    if value <= 1:
        value = 1.01
    comment = f"observed max ratio {fmt(worst)}" + (f" ({where})" if where else "")
    return {"max_ratio": Proposal(value, worst, "upper", comment)}, []


def _propose_scale(assertion: Any, tensors: Sequence[TensorView], m: float) -> tuple[dict[str, Proposal], list[str]]:
    outcome = assertion.evaluate(tensors)
    if outcome.skipped:
        return {}, [outcome.summary]
    values = _finite(outcome.observed.values())
    med = statistics.median(values) if values else math.nan
    if not (med > 0 and min(values) > 0):
        return {}, ["a matrix with std 0 (or no finite scale): no ratio bound holds"]
    lo, hi = min(values) / med, max(values) / med
    return {
        "min_ratio": Proposal(_round(lo / (1 + m), up=False, keep=lo), lo, "lower", f"observed min ratio {fmt(lo)}"),
        "max_ratio": _upper(max(hi * (1 + m), 1.01), hi, f"observed max ratio {fmt(hi)}"),
    }, []


def _propose_flatness(assertion: Any, tensors: Sequence[TensorView], m: float) -> tuple[dict[str, Proposal], list[str]]:
    outcome = assertion.evaluate(tensors)
    if outcome.skipped:
        return {}, [outcome.summary]
    kurt = _finite(outcome.observed.values())
    if not kurt:
        return {}, ["no finite kurtosis"]
    lo = min(kurt)
    value = _round(lo - m * max(abs(lo), SLACK["kurtosis"]), up=False, keep=lo)
    if value <= -2:  # excess kurtosis is ≥ −2 for every distribution: a bound there cannot fail
        return {}, [f"observed kurtosis {fmt(lo)}: no min_kurtosis above −2 admits it with margin"]
    return {"min_kurtosis": Proposal(value, lo, "lower", f"observed min kurtosis {fmt(lo)}")}, []


# ---------------------------------------------------------------------------- profiling


def _views(store: Any, cid: str, infos: Iterable[TensorInfo], selection: Selection) -> list[TensorView]:
    return [
        TensorView(i, selection.role(i.name), selection.depth(i.name), store.get(cid, i.name))
        for i in infos
        if selection.matches(i) and i.is_float
    ]


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
    from .cache import StatCache
    from .device import resolve_device
    from .engine import StatStore, compute_pass
    from .runner import Checker

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
        wanted = {i.name: [Moments()] for i in floats}
        for i in dist:
            wanted[i.name] = [Moments(), KSNormal(), WeibullFit("mid_80")]
        store = StatStore()
        cid = ckpt.identity()
        cache = StatCache(cache_dir) if cache_dir is not None else None
        if cache is not None:
            for name, values in cache.load(cid, wanted).items():
                store.put(cid, name, values)
        done = compute_pass(ckpt, wanted, store, dev)
        if cache is not None and done.tensors_done:
            with contextlib.suppress(OSError):  # a read-only cache directory: nothing is kept
                cache.save(cid, {n: {s: store.get(cid, n)[s] for s in w} for n, w in wanted.items()})
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
        merged = Selection(
            include=tuple(sel.get("include", base.include)),
            exclude=tuple(sel.get("exclude", base.exclude)),
            min_ndim=base.min_ndim,
            min_numel=base.min_numel,
        )
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
    cls = REGISTRY

    def entry(name: str, kind: str, fixed: dict[str, Any], own: list[TensorInfo], select: dict | None) -> _Entry:
        assertion = cls[kind](**fixed)  # type: ignore[call-arg]
        effective = base
        if select is not None:
            effective = Selection(
                include=tuple(select.get("include", base.include)),
                exclude=tuple(select.get("exclude", base.exclude)),
                min_ndim=select.get("min_ndim", base.min_ndim),
                min_numel=select.get("min_numel", base.min_numel),
            )
        views = _views(store, cid, own, effective)
        e = _Entry(name, kind, fixed, select, assertion, own)
        e.proposals, _ = propose(assertion, views, margin)
        return e

    blocks: list[tuple[str, list[_Entry]]] = []
    finite = entry("finite", "finite", {}, floats, {"exclude": [], "min_ndim": 0, "min_numel": 1})
    finite.comment = f"every float tensor ({len(floats)})"
    top = [finite]
    groups: dict[str, list[TensorInfo]] = {}
    for i in dist:
        groups.setdefault(plain.role(i.name), []).append(i)
    emb_groups: dict[str, list[TensorInfo]] = {}
    for i in embeddings:
        emb_groups.setdefault(plain.role(i.name), []).append(i)
    shorts = _short_names([*groups, *emb_groups], chosen, plain)
    # sibling ratios need a positive std: roles holding a constant matrix are left out of that check
    flat = [r for r, g in groups.items() if any(not store.get(cid, i.name)[Moments()].std > 0 for i in g)]
    if any(len(g) >= 3 for r, g in groups.items() if r not in flat):
        select = {"exclude": [*base.exclude, *(_role_glob(groups[r][0].name, plain) for r in flat)]} if flat else None
        sib = entry("consistent-with-siblings", "sibling_consistency", {"stat": "std"}, dist, select)
        if "max_ratio" in sib.proposals:
            top.append(sib)
    blocks.append(("", top))
    role_lines = []
    width = max((len(s) for s in shorts.values()), default=0)
    for role, own in groups.items():
        short = shorts[role]
        depths = _depths(plain, own)
        where = f", depths {_ranges(depths)}" if depths else ""
        role_lines.append(f"{short.ljust(width)}  {role}  ({len(own)} × {_shape(own)})")
        select = _selection_for(own, floats, base, plain)
        block = [entry(f"{short}-std", "stat_range", {"stat": "std"}, own, select)]
        ks = entry(f"{short}-gaussian", "gaussian_ks", {}, own, select)
        if "tol" in ks.proposals and ks.proposals["tol"].observed <= MAX_BASELINE_KS:
            block.append(ks)  # (a role with a constant or far-from-normal matrix gets no KS baseline)
        wb = entry(f"{short}-weibull", "weibull", {}, own, select)
        if {"k_min", "k_max"} <= wb.proposals.keys() and all(
            store.get(cid, i.name)[WeibullFit("mid_80")].ok for i in own
        ):
            wb.proposals = {k: wb.proposals[k] for k in ("k_min", "k_max")}
            block.append(wb)
        if len(depths) >= TREND_MIN_LAYERS:
            probe = REGISTRY["depth_trend"](stat="std", direction="grows")  # type: ignore[call-arg]
            rho = probe.evaluate(_views(store, cid, own, plain)).observed.get(role, {}).get("rho", math.nan)
            if math.isfinite(rho) and abs(rho) >= TREND_MIN_RHO:
                direction = "grows" if rho > 0 else "shrinks"
                trend = entry(
                    f"{short}-std-{direction}", "depth_trend", {"stat": "std", "direction": direction}, own, select
                )
                if "min_rho" in trend.proposals:
                    block.append(trend)
        blocks.append((f"{short}: {role} ({len(own)} × {_shape(own)}{where})", block))
    for role, own in emb_groups.items():
        short = shorts[role]
        role_lines.append(f"{short.ljust(width)}  {role}  ({len(own)} × {_shape(own)}; std band only)")
        select = _selection_for(own, floats, Selection(exclude=(), min_ndim=2, min_numel=MIN_NUMEL), plain)
        select.setdefault("exclude", [])
        block = [entry(f"{short}-std", "stat_range", {"stat": "std"}, own, select)]
        blocks.append((f"{short}: {role} ({len(own)} × {_shape(own)}; embedding: std band only)", block))
    return blocks, role_lines


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
    from . import __version__

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


COMMENT_COLUMN = 24


def _entry_lines(e: _Entry) -> list[str]:
    lines = [f"  - name: {e.name}", f"    kind: {e.kind}"]
    for k, v in e.fixed.items():
        lines.append(f"    {k}: {v}")
    if e.select is not None:
        lines.append(f"    select: {_flow(e.select)}")
    if e.comment:
        lines[0] = _with_comment(lines[0], e.comment)
    for key, p in e.proposals.items():
        lines.append(_with_comment(f"    {key}: {p.text}", p.comment))
    return lines


def _with_comment(line: str, comment: str) -> str:
    if not comment:
        return line
    return f"{line.ljust(COMMENT_COLUMN)}  # {comment}"


# ---------------------------------------------------------------------------- regen


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


class RegenResult(list):
    """The changes made (a list of :class:`Change`, each a readable line); ``notes`` says what
    was left alone and why; ``text`` is the rewritten spec."""

    def __init__(self, changes: Iterable[Change] = (), notes: Iterable[str] = (), text: str = "") -> None:
        super().__init__(changes)
        self.notes: list[str] = list(notes)
        self.text = text


def spec_margin(text: str) -> float | None:
    """The margin recorded in a spec's header by ``init`` (``… margin 0.5 …``), or None."""
    for line in text.splitlines():
        if not line.startswith("#"):
            if line.strip():
                break
            continue
        m = _MARGIN_MARK.match(line)
        if m:
            return float(m.group(1))
    return None


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


def regen_spec(
    spec_path: str | Path,
    checkpoint_path: str | Path,
    margin: float | None = None,
    *,
    only_failing: bool = True,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    reference: str | Path | None = None,
    write: bool = True,
    label: str | None = None,
) -> RegenResult:
    """Rewrite the baseline numbers of the spec at ``spec_path`` from ``checkpoint_path``.

    Range and tolerance parameters written in the spec (``min``/``max``, ``tol``,
    ``k_min``/``k_max``, ``lambda_*``, ``r2_min``, ``min_rho``/``max_abs_rho``,
    ``max_ratio``, ``max_fraction``, ``max_bc``, ``max_lag1``, ``alpha_*`` …) get the
    observed value widened by ``margin`` (default: the margin recorded by ``init`` in the
    header, else 0.5), with the rules of :func:`init_spec`. ``only_failing`` (default, like
    ``--force-regen``): only bounds the checkpoint violates are rewritten; False: every
    baseline number. A parameter set in ``defaults`` is overridden on the entry (a line
    added under it, or ``, key: value`` in a flow-style entry). Values are replaced where
    they stand: comments, order and formatting are kept; the trailing ``# observed …``
    comments that ``init`` writes are refreshed on the entries that change.

    Returns the changes (``spec.yaml:12: std-band max 0.12 → 0.15``); ``.notes`` lists
    what could not be rewritten (run-scope kinds, NaN, a trend that reversed …) and
    assertions that still fail. The file is written only when something changed (and
    ``write``). ``label`` names the file in messages (default: ``spec_path`` as given).
    """
    from .cache import StatCache
    from .runner import Checker
    from .spec import read_spec_text

    path = Path(spec_path)
    text = read_spec_text(path)  # the loader's size and encoding limits; a SpecError names the file
    label = str(spec_path) if label is None else label
    spec = parse_spec(text, label)
    if margin is None:
        margin = spec_margin(text)
        margin = DEFAULT_MARGIN if margin is None else margin
    if not margin >= 0:
        raise WeightsError(f"margin must be ≥ 0, got {margin}")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    items = _child(root, "assertions")
    defaults = _child(root, "defaults")
    if not isinstance(items, yaml.SequenceNode) or len(items.value) != len(spec.entries):  # pragma: no cover
        raise SpecError(label, None, "cannot match the assertions to the YAML text")
    notes: list[str] = [f"{e.path}:{e.line}: {e.name}: invalid entry, not rewritten" for e in spec.entries
                        if not isinstance(e, AssertionSpec)]  # fmt: skip
    edits: list[_Edit] = []
    pending: list[_Pending] = []
    ref = open_checkpoint(reference) if reference is not None else None
    with open_checkpoint(checkpoint_path) as ckpt:
        checker = Checker(device, cache=StatCache(cache_dir) if cache_dir is not None else None, reference=ref)
        pairs = [
            (e, node)
            for e, node in zip(spec.entries, items.value, strict=True)
            if isinstance(e, AssertionSpec) and e.assertion.scope == "checkpoint"
        ]
        for e in spec.assertions:
            if e.assertion.scope == "run":
                notes.append(f"{e.location}: {e.name}: {e.assertion.kind} judges a training run: not rewritten")
        checker.prepare((ckpt, e) for e, _ in pairs)
        for e, node in pairs:
            where = f"{e.location}: {e.name}"
            try:
                result = checker.evaluate(ckpt, e)
            except WeightsError as err:
                notes.append(f"{where}: {err}")
                continue
            if only_failing and result.passed:
                continue
            if e.assertion.needs_reference and checker.reference is None:
                notes.append(f"{where}: {e.assertion.kind} compares against a reference: not rewritten")
                continue
            target = checker.target(ckpt, e)
            views = _entry_views(checker, target, e)
            proposals, why = propose(e.assertion, views, margin)
            notes += [f"{where}: {n}" for n in why]
            if not proposals and not why and not result.passed:
                notes.append(f"{where}: {e.assertion.kind} has no baseline numbers to rewrite")
            _plan_edits(text, e, node, defaults, proposals, only_failing, edits, pending, notes)
        new_text = _apply(text, edits)
        changes = [c.change(label, edits, new_text) for c in pending]
        result = RegenResult(changes, notes, new_text)
        if changes:
            _check_rewritten(new_text, label, ckpt, checker, result)
    if new_text != text and write:
        path.write_text(new_text, encoding="utf-8")
    return result


def _entry_views(checker: Any, target: Checkpoint, e: AssertionSpec) -> list[TensorView]:
    cid = target.identity()
    rid = checker.reference.identity() if checker.reference is not None else ""
    out = []
    for i in checker.select(target, e).tensors:
        ref = checker.store.get(rid, i.name) if e.assertion.needs_reference and checker.reference else None
        out.append(
            TensorView(i, e.selection.role(i.name), e.selection.depth(i.name), checker.store.get(cid, i.name), ref)
        )
    return out


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
            changes.append(_Pending(e, param, start, 0, old, new))
        line_end = text.find("\n", end)
        line_end = len(text) if line_end < 0 else line_end
        tail = text[end:line_end]
        hash_at = tail.find("#")
        if hash_at >= 0 and tail[:hash_at].strip() == "":
            comment = tail[hash_at:]
            if comment.startswith("# observed") and p.comment:
                comment = f"# {p.comment}"
            gap = max(1, hash_at - (len(new) - len(old)))  # keep the comment's column
            if new != old or comment != tail[hash_at:]:
                edits.append(_Edit(end, line_end, " " * gap + comment))
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
            note = " (added to the entry: was inherited from defaults)"
            changes.append(_Pending(e, param, close, 0, number_text(current), p.text, note))
        return
    indent = " " * node.value[0][0].start_mark.column
    last = max(_scalars(node), key=lambda n: n.end_mark.index)
    insert_at = text.find("\n", last.end_mark.index)
    insert_at = len(text) if insert_at < 0 else insert_at
    lines = "".join("\n" + _with_comment(f"{indent}{param}: {p.text}", p.comment) for param, p, _ in added)
    edits.append(_Edit(insert_at, insert_at, lines))
    for k, (param, p, current) in enumerate(added):
        note = " (added to the entry: was inherited from defaults)"
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


def _check_rewritten(text: str, label: str, ckpt: Checkpoint, checker: Any, result: RegenResult) -> None:
    """Re-check the rewritten entries from the statistics already computed."""
    spec = parse_spec(text, label)
    if spec.errors:  # pragma: no cover - a value the loader refuses
        raise WeightsError(f"rewritten spec is invalid: {spec.errors[0]}")
    names = {c.entry for c in result}
    for a in spec.assertions:
        if a.name in names:
            r = checker.evaluate(ckpt, a)
            if not r.passed:
                result.notes.append(f"{a.location}: {a.name}: still fails after the rewrite: {r.summary}")
