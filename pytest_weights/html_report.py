"""A self-contained HTML report of assertion results, with a picture of each failure.

:func:`render_html` takes the result records of ``--weights-json`` (``AssertionResult.to_dict()``,
optionally with ``nodeid``) and the checkpoint paths, and returns one HTML file: inline CSS,
plots as inline SVG, no script and nothing fetched from the network.

- a summary table of every assertion (pass / fail / skip, kind, checkpoint, spec line, summary);
- per failing assertion: what was asserted and found, the deviation table, and a figure
  drawn from the panels the kind chose (the record's ``plot``, numbers from the kind's
  ``plot_data``; this module knows no kind):

  - ``histogram``: a tensor's values (re-read from its checkpoint, subsampled
    deterministically) with the fitted normal, linear and log scale; or |w| with the fitted
    Weibull pdf and the Weibull probability plot;
  - ``points``: one number per checked tensor against the tolerance, failing ones marked;
  - ``lines``: series against depth or step with their allowed band and failing points marked
    (depth trends, siblings around their median, the steps of a run).

Plots need matplotlib (``pip install 'pytest-weights[report]'``); without it the report has
the tables and says how to get the plots. A plot that cannot be made (a tensor that cannot be
read, a checkpoint that is not among ``checkpoints``) becomes a note: the report always renders.
"""

from __future__ import annotations

import contextlib
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .assertions.results import fmt as _fmt

#: Values drawn from a tensor for its histograms (a seeded subsample of larger tensors).
PLOT_VALUES = 200_000
#: Deviation rows shown per failure.
MAX_ROWS = 50
#: Failures drawn (each figure takes about a second); later failures get their tables only.
MAX_FIGURES = 100
#: Failing series (run-scope) or roles (sibling_consistency) drawn per failure.
MAX_PANELS = 3
INSTALL_HINT = "pip install 'pytest-weights[report]'"

# colours (the histogram fill is used by the browser test to find the plots on a screenshot)
HIST = "#7aa6d6"
FIT = "#d62728"
OK = "#2b6cb0"
BAD = "#d62728"
BAND = "#2ca02c"
GREY = "#b0b0b0"


class NoPlot(Exception):
    """Why a failure has no picture (shown as a note in its place)."""


# ---------------------------------------------------------------------------- entry point


def render_html(
    results: Sequence[Mapping[str, Any]], checkpoints: Sequence[str], title: str = "pytest-weights report"
) -> str:
    """One self-contained HTML page: a summary of every result and a section per failure."""
    mpl = _matplotlib()
    source = _Source(checkpoints)
    try:
        failures = [(i, r) for i, r in enumerate(results) if _status(r) == "fail"]
        sections = [
            _failure_section(i, r, source, mpl if n < MAX_FIGURES else None, n >= MAX_FIGURES)
            for n, (i, r) in enumerate(failures)
        ]
    finally:
        source.close()
    counts = {s: sum(_status(r) == s for r in results) for s in ("pass", "fail", "skip")}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{CSS}</style>",
        "</head><body>",
        f"<h1>{_e(title)}</h1>",
        '<p class="totals">'
        f'<span class="badge pass">{counts["pass"]} passed</span> '
        f'<span class="badge fail">{counts["fail"]} failed</span> '
        f'<span class="badge skip">{counts["skip"]} skipped</span></p>',
    ]
    if checkpoints:
        items = "".join(f"<li><code>{_e(c)}</code></li>" for c in checkpoints)
        parts.append(f'<div class="checkpoints">Checkpoints:<ul>{items}</ul></div>')
    if mpl is None and failures:
        parts.append(f'<p class="note">Plots need matplotlib: <code>{_e(INSTALL_HINT)}</code></p>')
    parts.append(_summary_table(results))
    if sections:
        parts.append(f"<h2>Failures ({len(sections)})</h2>")
        parts.extend(sections)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1a202c;
 margin:0 auto;padding:16px 24px;max-width:1200px;background:#fff}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px}
h3{font-size:16px;margin:0 0 6px;word-break:break-all}
code,.mono{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px}
table{border-collapse:collapse;width:100%;margin:6px 0 10px}
th,td{border:1px solid #e2e8f0;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#edf2f7;font-weight:600}tbody tr:nth-child(even){background:#f7fafc}
td.t{word-break:break-all;font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;font-weight:600;font-size:12px;color:#fff}
.badge.pass{background:#2f855a}.badge.fail{background:#c53030}.badge.skip{background:#b7791f}
tr.fail td:first-child{border-left:4px solid #c53030}
.failure{border:1px solid #e2e8f0;border-left:5px solid #c53030;border-radius:4px;padding:10px 14px;margin:14px 0}
.failure dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:4px 0 8px}
.failure dt{color:#4a5568}.failure dd{margin:0;word-break:break-word}
.note{background:#fffbea;border:1px solid #f6e05e;border-radius:4px;padding:6px 10px;margin:6px 0}
figure{margin:8px 0}figcaption{color:#4a5568;font-size:12.5px}
.summary td.t{word-break:normal;overflow-wrap:break-word}
svg.plot{display:block;width:100%;height:auto}
.checkpoints ul{margin:2px 0 8px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _status(r: Mapping[str, Any]) -> str:
    if r.get("skipped"):
        return "skip"
    return "pass" if r.get("passed") else "fail"


def _where(r: Mapping[str, Any]) -> tuple[str, str]:
    """(short file:line, full file:line) of the spec entry."""
    spec = r.get("spec") or {}
    file, line = str(spec.get("file") or ""), spec.get("line")
    suffix = f":{line}" if line is not None else ""
    return f"{Path(file).name}{suffix}", f"{file}{suffix}"


def _summary_table(results: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for i, r in enumerate(results):
        status = _status(r)
        short, full = _where(r)
        name = _e(r.get("name"))
        if status == "fail":
            name = f'<a href="#failure-{i}">{name}</a>'
        rows.append(
            f'<tr class="{status}"><td><span class="badge {status}">{status}</span></td>'
            f'<td title="{_e(r.get("nodeid", ""))}">{name}</td><td>{_e(r.get("kind"))}</td>'
            f'<td class="t">{_e(r.get("checkpoint"))}</td><td class="t" title="{_e(full)}">{_e(short)}</td>'
            f"<td>{_e(r.get('summary'))}</td></tr>"
        )
    head = "<tr><th>result</th><th>assertion</th><th>kind</th><th>checkpoint</th><th>spec</th><th>summary</th></tr>"
    return f'<table class="summary"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _failure_section(i: int, r: Mapping[str, Any], source: _Source, mpl: Any, capped: bool = False) -> str:
    _, full = _where(r)
    out = [
        f'<section class="failure" id="failure-{i}">',
        f"<h3>{_e(r.get('name'))} <small>[{_e(r.get('kind'))}] on <code>{_e(r.get('checkpoint'))}</code></small></h3>",
        "<dl>",
        f'<dt>spec</dt><dd><code title="{_e(full)}">{_e(full)}</code></dd>',
        f"<dt>asserted</dt><dd>{_e(r.get('description'))}</dd>",
        f"<dt>found</dt><dd>{_e(r.get('summary'))}</dd>",
    ]
    if r.get("selection"):
        out.append(f"<dt>selected</dt><dd><code>{_e(r.get('selection'))}</code></dd>")
    if r.get("checked"):
        out.append(f"<dt>checked</dt><dd>{_e(r.get('checked'))}</dd>")
    out.append("</dl>")
    devs = list(r.get("deviations") or [])
    if devs:
        rows = "".join(
            f'<tr><td class="t">{_e(d.get("tensor"))}</td><td>{_e(d.get("observed"))}</td>'
            f"<td>{_e(d.get('expected'))}</td><td>{_e(d.get('tolerance'))}</td></tr>"
            for d in devs[:MAX_ROWS]
        )
        more = f"<p>… and {len(devs) - MAX_ROWS} more</p>" if len(devs) > MAX_ROWS else ""
        head = "<tr><th>tensor</th><th>observed</th><th>expected</th><th>tolerance</th></tr>"
        out.append(f'<table class="deviations"><thead>{head}</thead><tbody>{rows}</tbody></table>{more}')
    out.extend(f'<p class="note">note: {_e(n)}</p>' for n in r.get("notes") or [])
    if capped:
        out.append(f'<p class="note">no plot: only the first {MAX_FIGURES} failures are drawn</p>')
    elif mpl is not None:
        try:
            svg, caption, missing = _figure(r, source, mpl, f"f{i}")
            out.append(f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>")
            out.extend(f'<p class="note">no plot: {_e(m)}</p>' for m in missing)
        except NoPlot as e:
            out.append(f'<p class="note">no plot: {_e(e)}</p>')
        except Exception as e:  # a report must render whatever one plot does
            out.append(f'<p class="note">no plot: {_e(type(e).__name__)}: {_e(e)}</p>')
    out.append("</section>")
    return "\n".join(out)


# ---------------------------------------------------------------------------- checkpoints


class _Source:
    """Checkpoints by report label (``model.safetensors``, ``dir/model.safetensors``, ``Δ(a − b)``)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = [str(p) for p in paths]
        self._open: dict[str, Any] = {}

    def path_for(self, label: str) -> str:
        exact = [p for p in self.paths if p == label]
        if exact:
            return exact[0]
        first = label.split("/", 1)[0]
        found = [
            p
            for p in self.paths
            if Path(p).name == label or p.endswith("/" + label) or ("/" in label and Path(p).name == first)
        ]
        if not found:
            raise NoPlot(f"checkpoint {label!r} is not among the report's checkpoints")
        return found[0]

    def _checkpoint_at(self, path: str) -> Any:
        if path not in self._open:
            from . import open_checkpoint

            self._open[path] = open_checkpoint(path)
        return self._open[path]

    def checkpoint(self, label: str) -> Any:
        """The opened checkpoint (or ΔW view) behind a ``checkpoint`` label (records without ``source``)."""
        key = f"label:{label}"
        if key in self._open:
            return self._open[key]
        base, sep, ref = label.removeprefix("Δ(").removesuffix(")").partition(" − ")
        if label.startswith("Δ(") and sep:  # the label readers/derived.py gives ΔW = W − W_ref
            from .readers.derived import DeltaCheckpoint

            got = DeltaCheckpoint(self.checkpoint(base), self.checkpoint(ref))
        elif label.startswith("ΔW(") and label.endswith(")"):
            from .readers.derived import LoraDelta

            got = LoraDelta(self.checkpoint(label[3:-1]))
        else:
            got = self._checkpoint_at(self.path_for(label))
        self._open[key] = got
        return got

    def given(self, path: str) -> str:
        """``path`` as one of the report's checkpoints (the same file, or else the same name)."""
        for p in self.paths:
            if p == path or Path(p).resolve() == Path(path).resolve():
                return p
        return self.path_for(Path(path).name)

    def of(self, r: Mapping[str, Any]) -> Any:
        """The checkpoint (or ΔW view) a result was judged on, from its ``source`` (the files
        behind its label); a record without one (an older JSON file) by its label."""
        src = r.get("source")
        if not (isinstance(src, Mapping) and src.get("paths")):
            return self.checkpoint(str(r.get("checkpoint")))
        key = f"source:{src.get('view')}:{'|'.join(map(str, src['paths']))}"
        if key not in self._open:
            opened = [self._checkpoint_at(self.given(str(p))) for p in src["paths"]]
            if src.get("view") == "delta":
                from .readers.derived import DeltaCheckpoint

                self._open[key] = DeltaCheckpoint(*opened)
            elif src.get("view") == "lora":
                from .readers.derived import LoraDelta

                self._open[key] = LoraDelta(opened[0])
            else:
                self._open[key] = opened[0]
        return self._open[key]

    def read(self, r: Mapping[str, Any], tensor: str) -> Any:
        from .errors import WeightsError

        label = str(r.get("checkpoint"))
        try:
            ckpt = self.of(r)
            return ckpt.read(tensor)
        except NoPlot:
            raise
        except (WeightsError, OSError, KeyError, ValueError, RuntimeError) as e:
            raise NoPlot(f"tensor {tensor!r} could not be read from {label!r}: {e}") from e

    def close(self) -> None:
        for ckpt in self._open.values():
            close = getattr(ckpt, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()


class _Sample:
    """A tensor's exact moments and a deterministic subsample of its finite values."""

    def __init__(self, tensor: Any) -> None:
        import torch

        from .engine import reduce_tensor
        from .stats import Moments

        t = tensor.detach().reshape(-1)
        n = t.numel()
        self.m = reduce_tensor(t, [Moments()])[Moments()] if n else None
        if n > PLOT_VALUES:
            idx = np.sort(np.random.default_rng(0).choice(n, size=PLOT_VALUES, replace=False))
            t = t[torch.from_numpy(idx)]
        values = t.to(torch.float64).cpu().numpy()
        self.values = values[np.isfinite(values)]
        self.numel = n
        self.subsampled = n > PLOT_VALUES

    @property
    def mean(self) -> float:
        return float(self.m.mean) if self.m is not None else math.nan

    @property
    def std(self) -> float:
        return float(self.m.std) if self.m is not None else math.nan

    def describe(self) -> str:
        if self.m is None:
            return "empty tensor"
        text = f"n={self.numel:,}, mean={_fmt(self.mean)}, std={_fmt(self.std)}"
        if self.m.nan or self.m.inf:
            text += f", {self.m.nan} NaN, {self.m.inf} Inf"
        if self.subsampled:
            text += f"; histogram of {len(self.values):,} sampled values"
        return text


# ---------------------------------------------------------------------------- parsing helpers


def _float(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _m(text: Any) -> str:
    """Text for a plot: ``$`` escaped so that matplotlib draws it instead of reading math."""
    return str(text).replace("$", r"\$")


def _line(text: Any, width: int = 90) -> str:
    """One line of plot text, shortened with … when longer than ``width``."""
    text = _m(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _short(name: str, width: int = 48) -> str:
    """A name for a plot title: its end when long, ``$`` escaped."""
    return _m(name if len(name) <= width else "…" + name[-(width - 1) :])


# ---------------------------------------------------------------------------- figures


def _matplotlib() -> Any:
    """The matplotlib modules the report uses, or None when matplotlib is not installed."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return (matplotlib, Figure)


def _figure(r: Mapping[str, Any], source: _Source, mpl: Any, prefix: str) -> tuple[str, str, list[str]]:
    matplotlib, Figure = mpl
    rc = {
        "svg.fonttype": "path",
        "svg.hashsalt": "pytest-weights",
        "font.size": 9,
        "axes.titlesize": 9.5,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
    with matplotlib.rc_context(rc):
        fig, caption, missing = _plot(r, source, Figure)
        return _svg(fig, prefix, f"{r.get('name')}: {caption}"), caption, missing


#: Axes each panel shape takes.
AXES = {"histogram": 2, "points": 1, "lines": 1}


def _plot(r: Mapping[str, Any], source: _Source, Figure: Any) -> tuple[Any, str, list[str]]:
    """The figure of a failure from the panels its kind chose (``plot``: numbers, see
    :mod:`pytest_weights.assertions.plot`); a record without them (an older JSON report)
    gets the worst tensor's histogram. Returns the figure, its caption and why panels are
    missing; raises :class:`NoPlot` when no panel can be drawn."""
    panels = [p for p in r.get("plot") or [] if isinstance(p, Mapping) and p.get("panel") in AXES]
    if not panels:
        panels = [{"panel": "histogram", "tensor": _worst(r), "fit": "Normal"}]
    panels = panels[:4]
    n = sum(AXES[p["panel"]] for p in panels)
    fig, axes = _panels(Figure, n, height=3.3 if n > 1 else 3.8)
    captions: list[str] = []
    missing: list[str] = []
    k = 0
    for panel in panels:
        shape = panel["panel"]
        own = axes[k : k + AXES[shape]]
        k += AXES[shape]
        try:
            if shape == "histogram":
                captions.append(_draw_histogram(own, r, panel, source))
            elif shape == "points":
                captions.append(_draw_points(own[0], panel))
            else:
                captions.append(_draw_lines(own[0], panel))
        except NoPlot as e:
            for ax in own:
                ax.set_axis_off()
            own[0].text(0.5, 0.5, _m(e), ha="center", va="center", wrap=True, transform=own[0].transAxes)
            missing.append(str(e))
    if len(missing) == len(panels):
        raise NoPlot(missing[0])
    return fig, "; ".join(c for c in captions if c), missing


def _draw_histogram(axes: Sequence[Any], r: Mapping[str, Any], panel: Mapping[str, Any], source: _Source) -> str:
    tensor = str(panel.get("tensor"))
    s = _read_sample(r, source, tensor)
    if panel.get("fit") == "Weibull":
        params = panel.get("params") or {}
        return _weibull_axes(axes[0], axes[1], s, tensor, _float(params.get("k")), _float(params.get("lambda")))
    observed = next((d.get("observed", "") for d in r.get("deviations") or [] if d.get("tensor") == tensor), "")
    _hist_panels(axes[0], axes[1], s, f"worst: {_short(tensor, 60)}\nobserved {_line(observed, 60)}")
    return f"{tensor} ({s.describe()}) with the normal of its mean and std"


def _draw_points(ax: Any, panel: Mapping[str, Any]) -> str:
    label = str(panel.get("label") or "value")
    lo, hi = ([*list(panel.get("band") or [None, None]), None, None])[:2]
    if not _scalar_panel(ax, set(panel.get("failing") or []), label, panel.get("values") or {}, (lo, hi)):
        ax.set_axis_off()
        return ""
    return f"{label} of every checked tensor against the tolerance"


def _draw_lines(ax: Any, panel: Mapping[str, Any]) -> str:
    every = [ln for ln in panel.get("lines") or [] if isinstance(ln, Mapping)]
    lines = [ln for ln in every if not ln.get("fit")]
    if not lines:
        raise NoPlot("the result holds no series")
    palette = ["#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22"]
    band = {"color": BAND, "alpha": 0.15, "zorder": 1}
    quiet = [ln for ln in lines if not ln.get("highlight")]
    for ln in quiet:
        ax.plot(ln["x"], [_float(v) for v in ln["y"]], color=GREY, lw=1, marker=".", zorder=2)
    if quiet and len(quiet) < len(lines):
        ax.plot([], [], color=GREY, lw=1, marker=".", label=f"{len(quiet)} that hold")
    drawn_band = False
    for j, ln in enumerate(x for x in lines if x.get("highlight") or len(quiet) == len(lines)):
        x = np.array([_float(v) for v in ln["x"]], dtype=float)
        y = np.array([_float(v) for v in ln["y"]], dtype=float)
        lo, hi = ln.get("lo"), ln.get("hi")
        if lo is not None or hi is not None:
            a = np.array([_float(v) if v is not None else -np.inf for v in (lo or [None] * len(x))], dtype=float)
            b = np.array([_float(v) if v is not None else np.inf for v in (hi or [None] * len(x))], dtype=float)
            judged = np.isfinite(a) | np.isfinite(b)
            if judged.any():
                span = np.nanmax(np.abs(y[np.isfinite(y)])) if np.isfinite(y).any() else 1.0
                a = np.where(np.isfinite(a), a, np.nanmin(y) - 0.1 * span if np.isfinite(y).any() else 0)
                b = np.where(np.isfinite(b), b, np.nanmax(y) + 0.1 * span if np.isfinite(y).any() else 0)
                label = None if drawn_band else "allowed"
                if judged.sum() == 1:  # one judged point (a final value): a box from the step before it
                    i = int(np.argmax(judged))
                    ax.fill_between([x[max(i - 1, 0)], x[i]], a[i], b[i], **band, label=label)
                else:
                    ax.fill_between(x, a, b, where=judged, **band, label=label)
                drawn_band = True
        colour = OK if len(quiet) == len(lines) else palette[j % len(palette)]
        ax.plot(x, y, color=colour, lw=1.8, marker="o", ms=4, label=_m(ln.get("label", "")), zorder=3)
        bad = np.array([bool(b) for b in ln.get("bad") or []] + [False] * (len(x) - len(ln.get("bad") or [])))
        if bad.any():
            ax.scatter(x[bad], y[bad], s=60, color=BAD, marker="X", label="failing", zorder=4)
    for ln in every:
        if ln.get("fit"):
            ax.plot(ln["x"], [_float(v) for v in ln["y"]], color=FIT, ls="--", lw=1, label=_m(ln.get("label", "")))
    if panel.get("log"):
        ax.set_yscale("log")
    ax.set_xlabel(_m(panel.get("xlabel", "")))
    ax.set_ylabel(_m(panel.get("ylabel", "")))
    ax.set_title("\n".join(_line(part, 70) for part in str(panel.get("title", "")).split("\n")))
    ax.legend(loc="best", fontsize=7.5, frameon=False)
    title = str(panel.get("title", "")).replace("\n", ": ")
    return f"{panel.get('ylabel', '')} against {panel.get('xlabel', '')}: {title}"


def _svg(fig: Any, prefix: str, label: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    # ids must be unique in the page: several figures share one document
    text = re.sub(r'(\bid="|url\(#|href="#)', lambda m: f"{m.group(1)}{prefix}-", text)
    return text.replace("<svg ", f'<svg class="plot" role="img" aria-label="{_e(label)}" ', 1)


def _panels(Figure: Any, n: int, height: float = 3.3) -> tuple[Any, list[Any]]:
    fig = Figure(figsize=(11, height), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    return fig, list(axes)


def _worst(r: Mapping[str, Any]) -> str:
    """The worst deviating tensor whose values say something (NaN/Inf rows only name counts)."""
    from .assertions.base import UNDEFINED

    devs = r.get("deviations") or []
    if not devs:
        raise NoPlot("no deviating tensor is named")
    drawable = [d for d in devs if d.get("tolerance") != UNDEFINED] or devs
    return str(drawable[0].get("tensor"))


def _read_sample(r: Mapping[str, Any], source: _Source, tensor: str) -> _Sample:
    try:
        data = source.read(r, tensor)
    except NoPlot:
        if "|" not in tensor:
            raise
        data = source.read(r, tensor.split("|", 1)[0])  # width_transfer rows: "tensor|quantity"
    return _Sample(data)


def _hist_panels(ax_lin: Any, ax_log: Any | None, s: _Sample, title: str) -> None:
    """Histogram with the fitted normal: the body (linear) and, on ``ax_log``, the tails (log density)."""
    v = s.values
    if v.size == 0:
        ax_lin.text(0.5, 0.5, "no finite value", ha="center", va="center", transform=ax_lin.transAxes)
        if ax_log is not None:
            ax_log.set_axis_off()
        return
    mu, sd = s.mean, s.std
    lo, hi = float(v.min()), float(v.max())
    if s.m is not None:
        lo, hi = min(lo, float(s.m.min)), max(hi, float(s.m.max))
    fitted = math.isfinite(sd) and sd > 0
    if not fitted or hi <= lo:
        ax_lin.hist(v, bins=1, color=HIST)
        ax_lin.set_title(f"{title}\nconstant: every value = {_fmt(lo)}")
        if ax_log is not None:
            ax_log.set_axis_off()
        return
    body = (max(lo, mu - 5 * sd), min(hi, mu + 5 * sd))
    panels = [(ax_lin, body, False)] + ([(ax_log, (lo, hi), True)] if ax_log is not None else [])
    for ax, rng, log in panels:
        counts, edges = np.histogram(v, bins=120, range=rng)
        width = edges[1] - edges[0]
        dens = counts / (v.size * width)
        ax.stairs(dens, edges, fill=True, color=HIST, label="values")
        x = np.linspace(rng[0], rng[1], 600)
        pdf = np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
        ax.plot(x, pdf, color=FIT, lw=1.4, label=f"fitted normal N({_fmt(mu)}, {_fmt(sd)}²)")
        ax.set_xlabel("value")
        if log:
            ax.set_yscale("log")
            floor = 0.5 / (v.size * width)
            ax.set_ylim(floor, max(dens.max(), pdf.max()) * 3)
            ax.set_ylabel("density (log)")
            ax.set_title("full range, log density: tails and outliers")
        else:
            ax.set_ylim(0, max(dens.max(), pdf.max()) * 1.3)  # room for the legend
            ax.set_ylabel("density")
            ax.set_title(title)
            ax.legend(loc="upper right", fontsize=7.5, frameon=False)


def _scalar_panel(ax: Any, failing: set[str], what: str, values: Mapping[str, Any], bounds: tuple) -> bool:
    """Every checked tensor's statistic against the tolerance; False when ``values`` hold none."""
    pairs = [(k, _float(v)) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(pairs) < 2:
        return False
    x = np.arange(len(pairs))
    y = np.array([v for _, v in pairs], dtype=float)
    bad = np.array([k in failing for k, _ in pairs])
    ax.scatter(x[~bad], y[~bad], s=12, color=OK, label="within tolerance", zorder=3)
    ax.scatter(x[bad], y[bad], s=22, color=BAD, marker="x", label="deviates", zorder=4)
    lo, hi = bounds
    for b in (lo, hi):
        if b is not None:
            ax.axhline(b, color=BAND, ls="--", lw=1.2)
    if lo is not None or hi is not None:
        ax.plot([], [], color=BAND, ls="--", label="tolerance")
    finite = y[np.isfinite(y)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100 and (lo is None or lo > 0):
        ax.set_yscale("log")
    ax.set_xlabel("tensor (checkpoint order)")
    ax.set_ylabel(what)
    ax.set_title(f"{what} of all {len(pairs)} checked tensors")
    ax.legend(loc="best", fontsize=7.5, frameon=False)
    return True


def _weibull_axes(ax: Any, ax_prob: Any, s: _Sample, tensor: str, k: float, lam: float) -> str:
    """|w| with the fitted Weibull pdf, and the Weibull probability plot."""
    from scipy import stats as sps

    a = np.abs(s.values)
    a = a[a > 0]
    if a.size < 10:
        raise NoPlot(f"{tensor}: fewer than 10 non-zero values to draw")
    how = "fit from the check"
    if not (math.isfinite(k) and math.isfinite(lam) and k > 0 and lam > 0):
        sub = a[:: max(1, a.size // 50_000)]
        k, _, lam = sps.weibull_min.fit(sub, floc=0)
        how = "refitted here by maximum likelihood (the check's fit failed)"
    top = float(np.quantile(a, 0.999))
    counts, edges = np.histogram(a, bins=120, range=(0, top))
    dens = counts / (a.size * (edges[1] - edges[0]))
    ax.stairs(dens, edges, fill=True, color=HIST, label="|w|")
    x = np.linspace(top / 600, top, 600)
    pdf = sps.weibull_min.pdf(x, k, scale=lam)
    ax.plot(x, pdf, color=FIT, lw=1.4, label=f"Weibull k={_fmt(k)} λ={_fmt(lam)}")
    ax.set_ylim(0, max(dens.max(), float(np.nanmax(pdf[len(pdf) // 50 :]))) * 1.3)  # room for the legend
    ax.set_xlabel("|w|")
    ax.set_ylabel("density")
    ax.set_title(f"worst: {_short(tensor, 60)}\n|w| up to its 99.9th percentile")
    ax.legend(loc="upper right", fontsize=7.5, frameon=False)
    # Weibull probability plot: ln(-ln(1-F)) against ln|w| is the line k·(ln|w| − ln λ)
    srt = np.sort(a)
    n = srt.size
    pick = np.unique(np.linspace(0, n - 1, min(n, 500)).astype(int))
    f = (pick + 0.5) / n
    lx, ly = np.log(srt[pick]), np.log(-np.log1p(-f))
    ax_prob.axhspan(math.log(-math.log(0.9)), math.log(-math.log(0.1)), color=BAND, alpha=0.12, label="mid-80 window")
    ax_prob.scatter(lx, ly, s=6, color=OK, label="|w| quantiles", zorder=3)
    line = np.array([lx.min(), lx.max()])
    ax_prob.plot(line, k * (line - math.log(lam)), color=FIT, lw=1.4, label="fitted Weibull")
    ax_prob.set_xlabel("ln |w|")
    ax_prob.set_ylabel("ln(−ln(1 − F))")
    ax_prob.set_title("Weibull probability plot (a straight line if Weibull)")
    ax_prob.legend(loc="upper left", fontsize=7.5, frameon=False)
    return f"{tensor}: |w| ({s.describe()}) with Weibull(k={_fmt(k)}, λ={_fmt(lam)}), {how}"
