"""A self-contained HTML report of assertion results, with a picture of each failure.

:func:`render_html` takes the result records of ``--weights-json`` (``AssertionResult.to_dict()``,
optionally with ``nodeid``) and the checkpoint paths, and returns one HTML file: inline CSS,
plots as inline SVG, no script and nothing fetched from the network.

- a summary table of every assertion (pass / fail / skip, kind, checkpoint, spec line, summary);
- per failing assertion: what was asserted and found, the deviation table, and a figure:

  - per-tensor kinds: histograms of the worst deviating tensor (re-read from its checkpoint,
    subsampled deterministically) with the fitted normal, linear and log scale, and the
    statistic of every checked tensor against the tolerance when ``observed`` holds it;
    ``weibull``: |w| with the fitted Weibull pdf and the Weibull probability plot;
  - ``depth_trend``: the statistic against depth per role, failing roles highlighted;
  - ``sibling_consistency``: the statistic of each tensor of the failing role against depth,
    with the role median and the ±ratio band;
  - run-scope kinds: the statistic against step per failing series, with the tolerance band
    and the failing steps marked.

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

#: Values drawn from a tensor for its histograms (a seeded subsample of larger tensors).
PLOT_VALUES = 200_000
#: Deviation rows shown per failure.
MAX_ROWS = 50
#: Failures drawn (each figure takes about a second); later failures get their tables only.
MAX_FIGURES = 100
#: Failing series (run-scope) or roles (sibling_consistency) drawn per failure.
MAX_PANELS = 3
INSTALL_HINT = "pip install 'pytest-weights[report]'"
RUN_KINDS = frozenset({"run_trend", "saturates", "overshoot", "drift", "final_range"})

# colours (the histogram fill is used by the browser test to find the plots on a screenshot)
HIST = "#7aa6d6"
FIT = "#d62728"
OK = "#2b6cb0"
BAD = "#d62728"
BAND = "#2ca02c"
GREY = "#b0b0b0"

NUM = r"[-+−]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?"


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
            svg, caption = _figure(r, source, mpl, f"f{i}")
            out.append(f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>")
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
        """The opened checkpoint (or ΔW view) behind a result's ``checkpoint`` label."""
        key = f"label:{label}"
        if key in self._open:
            return self._open[key]
        m = re.fullmatch(r"Δ\((.+) − (.+)\)", label)
        if m:
            from .readers.derived import DeltaCheckpoint

            got = DeltaCheckpoint(self.checkpoint(m.group(1)), self.checkpoint(m.group(2)))
        elif label.startswith("ΔW(") and label.endswith(")"):
            from .readers.derived import LoraDelta

            got = LoraDelta(self.checkpoint(label[3:-1]))
        else:
            got = self._checkpoint_at(self.path_for(label))
        self._open[key] = got
        return got

    def read(self, label: str, tensor: str) -> Any:
        from .errors import WeightsError

        try:
            ckpt = self.checkpoint(label)
            return ckpt.read(tensor)
        except NoPlot:
            raise
        except (WeightsError, OSError, KeyError, ValueError, RuntimeError) as e:
            raise NoPlot(f"tensor {tensor!r} could not be read from {label!r}: {e}") from e

    def names(self, label: str) -> list[str]:
        return [i.name for i in self.checkpoint(label).tensors()]

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


def _num(text: str) -> float:
    return float(text.replace("−", "-"))


def _bounds(text: str) -> tuple[float | None, float | None]:
    """The interval in a description: ``in [lo, hi]``, ``≥ lo``, ``≤ hi``."""
    m = re.search(rf"in \[({NUM}), ({NUM})\]", text)
    if m:
        return _num(m.group(1)), _num(m.group(2))
    lo = re.search(rf"≥ ({NUM})", text)
    hi = re.search(rf"≤ ({NUM})", text)
    return (_num(lo.group(1)) if lo else None, _num(hi.group(1)) if hi else None)


def _float(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-3:
        return f"{x:.3e}"
    return f"{x:.4g}"


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


def _stat_name(r: Mapping[str, Any]) -> str:
    words = str(r.get("description") or "").split()
    return words[0] if words else str(r.get("kind"))


# ---------------------------------------------------------------------------- figures


def _matplotlib() -> Any:
    """The matplotlib modules the report uses, or None when matplotlib is not installed."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return (matplotlib, Figure)


def _figure(r: Mapping[str, Any], source: _Source, mpl: Any, prefix: str) -> tuple[str, str]:
    matplotlib, Figure = mpl
    rc = {
        "svg.fonttype": "path",
        "svg.hashsalt": "pytest-weights",
        "font.size": 9,
        "axes.titlesize": 9.5,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
    kind = r.get("kind")
    with matplotlib.rc_context(rc):
        if kind in RUN_KINDS:
            fig, caption = _run_figure(r, Figure)
        elif kind == "depth_trend":
            fig, caption = _depth_figure(r, Figure)
        elif kind == "sibling_consistency":
            fig, caption = _sibling_figure(r, source, Figure)
        elif kind == "weibull":
            fig, caption = _weibull_figure(r, source, Figure)
        else:
            fig, caption = _tensor_figure(r, source, Figure)
        return _svg(fig, prefix, f"{r.get('name')}: {caption}"), caption


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
    label = str(r.get("checkpoint"))
    try:
        data = source.read(label, tensor)
    except NoPlot:
        if "|" not in tensor:
            raise
        data = source.read(label, tensor.split("|", 1)[0])  # width_transfer rows: "tensor|quantity"
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


def _scalar_panel(ax: Any, r: Mapping[str, Any], what: str, values: Mapping[str, Any], bounds: tuple) -> bool:
    """Every checked tensor's statistic against the tolerance; False when ``values`` hold none."""
    pairs = [(k, _float(v)) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(pairs) < 2:
        return False
    failing = {str(d.get("tensor")) for d in r.get("deviations") or []}
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


def _tensor_figure(r: Mapping[str, Any], source: _Source, Figure: Any) -> tuple[Any, str]:
    tensor = _worst(r)
    s = _read_sample(r, source, tensor)
    observed = r.get("observed") or {}
    has_scalars = sum(isinstance(v, (int, float)) and not isinstance(v, bool) for v in observed.values()) >= 2
    fig, axes = _panels(Figure, 3 if has_scalars else 2)
    dev = (r.get("deviations") or [{}])[0]
    _hist_panels(axes[0], axes[1], s, f"worst: {_short(tensor, 60)}\nobserved {_line(dev.get('observed', ''), 60)}")
    what = "KS D" if r.get("kind") == "gaussian_ks" else _stat_name(r)
    if has_scalars:
        _scalar_panel(axes[2], r, what, observed, _bounds(str(r.get("description") or "")))
    caption = f"{tensor} ({s.describe()}) with the normal of its mean and std"
    return fig, caption


def _weibull_figure(r: Mapping[str, Any], source: _Source, Figure: Any) -> tuple[Any, str]:
    from scipy import stats as sps

    tensor = _worst(r)
    s = _read_sample(r, source, tensor)
    a = np.abs(s.values)
    a = a[a > 0]
    if a.size < 10:
        raise NoPlot(f"{tensor}: fewer than 10 non-zero values to draw")
    fit = (r.get("observed") or {}).get(tensor) or {}
    k, lam = _float(fit.get("k")), _float(fit.get("lambda"))
    how = "fit from the check"
    if not (math.isfinite(k) and math.isfinite(lam) and k > 0 and lam > 0):
        sub = a[:: max(1, a.size // 50_000)]
        k, _, lam = sps.weibull_min.fit(sub, floc=0)
        how = "refitted here by maximum likelihood (the check's fit failed)"
    ks = [(n, _float(v.get("k"))) for n, v in (r.get("observed") or {}).items() if isinstance(v, Mapping)]
    fig, axes = _panels(Figure, 3 if len(ks) >= 2 else 2)
    ax = axes[0]
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
    ax = axes[1]
    srt = np.sort(a)
    n = srt.size
    pick = np.unique(np.linspace(0, n - 1, min(n, 500)).astype(int))
    f = (pick + 0.5) / n
    lx, ly = np.log(srt[pick]), np.log(-np.log1p(-f))
    ax.axhspan(math.log(-math.log(0.9)), math.log(-math.log(0.1)), color=BAND, alpha=0.12, label="mid-80 window")
    ax.scatter(lx, ly, s=6, color=OK, label="|w| quantiles", zorder=3)
    line = np.array([lx.min(), lx.max()])
    ax.plot(line, k * (line - math.log(lam)), color=FIT, lw=1.4, label="fitted Weibull")
    ax.set_xlabel("ln |w|")
    ax.set_ylabel("ln(−ln(1 − F))")
    ax.set_title("Weibull probability plot (a straight line if Weibull)")
    ax.legend(loc="upper left", fontsize=7.5, frameon=False)
    if len(ks) >= 2:
        desc = str(r.get("description") or "")
        m = re.search(rf"k (in \[{NUM}, {NUM}\]|[≥≤] {NUM})", desc)
        _scalar_panel(axes[2], r, "Weibull k", dict(ks), _bounds(m.group(1)) if m else (None, None))
    return fig, f"{tensor}: |w| ({s.describe()}) with Weibull(k={_fmt(k)}, λ={_fmt(lam)}), {how}"


def _depth_figure(r: Mapping[str, Any], Figure: Any) -> tuple[Any, str]:
    observed = r.get("observed") or {}
    roles = {k: v for k, v in observed.items() if isinstance(v, Mapping) and v.get("depths")}
    if not roles:
        raise NoPlot("the result holds no per-role depth series")
    failing = [str(d.get("tensor")) for d in r.get("deviations") or [] if str(d.get("tensor")) in roles]
    fig, (ax,) = _panels(Figure, 1, height=3.8)
    every = [_float(v) for s in roles.values() for v in s.get("values") or []]
    finite = [v for v in every if math.isfinite(v)]
    for role, ser in roles.items():
        if role in failing:
            continue
        ax.plot(ser["depths"], [_float(v) for v in ser["values"]], color=GREY, lw=1, marker=".", zorder=2)
    if len(roles) > len(failing):
        ax.plot([], [], color=GREY, lw=1, marker=".", label=f"{len(roles) - len(failing)} role(s) that hold")
    palette = ["#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22"]
    for j, role in enumerate(failing):
        ser = roles[role]
        label = f"{_short(role, 56)}: ρ={_fmt(_float(ser.get('rho')))}"
        ax.plot(
            ser["depths"],
            [_float(v) for v in ser["values"]],
            color=palette[j % len(palette)],
            lw=2.2,
            marker="o",
            label=label,
            zorder=3,
        )
    if finite and min(finite) > 0 and max(finite) / min(finite) > 50:
        ax.set_yscale("log")
    stat = _stat_name(r)
    ax.set_xlabel("depth (layer index)")
    ax.set_ylabel(f"{stat} (mean over the layer)")
    ax.set_title(_line(f"expected: {r.get('description')}; failing roles in colour", 120))
    ax.legend(loc="best", fontsize=7.5, frameon=False)
    return fig, f"{stat} against depth for {len(roles)} role(s), {len(failing)} failing"


def _role_regex(role: str) -> re.Pattern[str]:
    return re.compile(re.escape(role).replace(r"\*", r"(\d+)", 1).replace(r"\*", ".*"))


def _sibling_figure(r: Mapping[str, Any], source: _Source, Figure: Any) -> tuple[Any, str]:
    devs = list(r.get("deviations") or [])
    if not devs:
        raise NoPlot("no deviating tensor is named")
    desc = str(r.get("description") or "")
    stat = _stat_name(r)
    m = re.search(rf"×({NUM})", desc) or re.search(rf"({NUM})\]", str(devs[0].get("tolerance", "")))
    ratio = _num(m.group(1)) if m else 5.0
    roles: dict[str, list[str]] = {}
    for d in devs:
        rm = re.search(r"\(median of (.+)\)$", str(d.get("expected", "")))
        if rm:
            roles.setdefault(rm.group(1), []).append(str(d.get("tensor")))
    if not roles:
        raise NoPlot("the deviations name no role")
    shown = list(roles.items())[: MAX_PANELS - 1]
    fig, axes = _panels(Figure, len(shown) + 1)
    label = str(r.get("checkpoint"))
    for ax, (role, bad) in zip(axes, shown, strict=False):
        pattern = _role_regex(role)
        members = [
            (n, int(mm.group(1)) if mm.groups() else None) for n in source.names(label) if (mm := pattern.fullmatch(n))
        ]
        values = _sibling_values(r, source, label, stat, [n for n, _ in members])
        pts = [(d if d is not None else j, values[n], n in bad) for j, (n, d) in enumerate(members) if n in values]
        if not pts:
            raise NoPlot(f"no tensor of {role} could be read")
        finite = [v for _, v, _ in pts if math.isfinite(v)]
        med = float(np.median([v for _, v, b in pts if math.isfinite(v)])) if finite else math.nan
        xs = [p[0] for p in pts]
        ok = [(x, v) for x, v, b in pts if not b]
        no = [(x, v) for x, v, b in pts if b]
        if math.isfinite(med):
            ax.axhspan(med / ratio, med * ratio, color=BAND, alpha=0.12, label=f"median ×/÷ {_fmt(ratio)}")
            ax.axhline(med, color=BAND, lw=1.2, label=f"median {_fmt(med)}")
        if ok:
            ax.scatter(*zip(*ok, strict=True), s=18, color=OK, label="siblings", zorder=3)
        if no:
            ax.scatter(*zip(*no, strict=True), s=40, color=BAD, marker="X", label="deviates", zorder=4)
            for x, v in no:
                if math.isfinite(v) and math.isfinite(med) and med:
                    ax.annotate(f"×{_fmt(v / med)}", (x, v), textcoords="offset points", xytext=(6, 4), fontsize=8)
        if finite and min(finite) > 0 and math.isfinite(med) and med > 0:
            ax.set_yscale("log")
        ax.set_xticks(sorted(set(xs)))
        ax.set_xlabel("depth (layer index)")
        ax.set_ylabel(stat)
        ax.set_title(_short(role, 60))
        ax.legend(loc="best", fontsize=7.5, frameon=False)
    worst = str(devs[0].get("tensor"))
    try:
        s = _read_sample(r, source, worst)
        _hist_panels(axes[-1], None, s, f"worst: {_short(worst, 60)}\n{_line(devs[0].get('observed', ''), 60)}")
    except NoPlot as e:
        axes[-1].text(0.5, 0.5, _m(e), ha="center", va="center", wrap=True, transform=axes[-1].transAxes)
        axes[-1].set_axis_off()
    more = f" (and {len(roles) - len(shown)} more role(s))" if len(roles) > len(shown) else ""
    return fig, f"{stat} per tensor of the failing role(s) against depth, band = role median ×/÷ {_fmt(ratio)}{more}"


def _sibling_values(r: Mapping[str, Any], source: _Source, label: str, stat: str, names: list[str]) -> dict[str, float]:
    """The statistic per tensor: from ``observed`` when it holds it, else computed here."""
    observed = r.get("observed") or {}
    out: dict[str, float] = {}
    for n in names:
        v = observed.get(n)
        if isinstance(v, Mapping):
            v = v.get("value", v.get(stat))
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[n] = float(v)
    missing = [n for n in names if n not in out]
    if missing:
        from .engine import reduce_tensor
        from .stats.scalars import SCALARS

        scalar = SCALARS.get(stat)
        if scalar is None:
            return out
        for n in missing:
            try:
                tensor = source.read(label, n)
            except NoPlot:
                continue
            out[n] = float(scalar.read(reduce_tensor(tensor, [scalar.statistic])[scalar.statistic]))
    return out


def _run_figure(r: Mapping[str, Any], Figure: Any) -> tuple[Any, str]:
    observed = r.get("observed") or {}
    subjects = [str(d.get("tensor")) for d in r.get("deviations") or [] if str(d.get("tensor")) in observed]
    if not subjects:
        raise NoPlot("the result holds no series for its failing subjects")
    kind, desc = str(r.get("kind")), str(r.get("description") or "")
    shown = subjects[:MAX_PANELS]
    fig, axes = _panels(Figure, len(shown), height=3.4)
    for ax, subject in zip(axes, shown, strict=True):
        ser = observed[subject]
        steps = np.array([_float(x) for x in ser.get("steps") or []], dtype=float)
        vals = np.array([_float(x) for x in ser.get("values") or []], dtype=float)
        bad = _run_band(ax, kind, desc, steps, vals)
        ax.plot(steps, vals, color=OK, lw=1.6, marker="o", ms=4, label=_stat_name(r), zorder=3)
        if bad.any():
            ax.scatter(steps[bad], vals[bad], s=60, color=BAD, marker="X", label="failing step", zorder=4)
        ax.set_xlabel("step")
        ax.set_ylabel(_stat_name(r))
        ax.set_title(_short(subject, 60))
        ax.legend(loc="best", fontsize=7.5, frameon=False)
    more = f"; {len(subjects) - len(shown)} more failing series not drawn" if len(subjects) > len(shown) else ""
    return fig, f"{desc}{more}"


def _run_band(ax: Any, kind: str, desc: str, steps: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Draw the tolerance band of a run-scope kind; return the mask of failing steps."""
    bad = np.zeros(len(vals), dtype=bool)
    if len(vals) == 0:
        return bad
    band = {"color": BAND, "alpha": 0.15, "zorder": 1}
    if kind == "final_range":
        lo, hi = _bounds(desc.split(":")[-1])
        ax.axhspan(-np.inf if lo is None else lo, np.inf if hi is None else hi, **band, label="final range")
        v = vals[-1]
        bad[-1] = not ((lo is None or v >= lo) and (hi is None or v <= hi))
    elif kind == "drift":
        m = re.search(rf"≤ ({NUM})", desc)
        if m and math.isfinite(vals[0]):
            r, v0 = _num(m.group(1)), vals[0]
            ax.axhspan(v0 - r * abs(v0), v0 + r * abs(v0), **band, label=f"first value ± {_fmt(r)} (relative)")
            bad = ~(np.abs(vals - v0) <= r * abs(v0))
    elif kind == "saturates":
        m = re.search(rf"last (\d+) checkpoints ≤ ({NUM})", desc)
        if m and math.isfinite(vals[-1]):
            last, tol, end = int(m.group(1)), _num(m.group(2)), vals[-1]
            tail = slice(max(0, len(vals) - last), None)
            ax.fill_between(
                steps[tail], end - tol * abs(end), end + tol * abs(end), **band, label=f"final ± {_fmt(tol)}"
            )
            bad[tail] = ~(np.abs(vals[tail] - end) <= tol * abs(end))
    elif kind == "overshoot":
        m = re.search(rf"by ≥ ({NUM})(?:, ≤ ({NUM}))?", desc)
        i = int(np.nanargmax(vals)) if np.isfinite(vals).any() else 0
        peak = vals[i]
        ax.scatter([steps[i]], [peak], s=70, marker="^", color="#ff7f0e", label="peak", zorder=5)
        if m and math.isfinite(peak):
            rmin = _num(m.group(1))
            rmax = _num(m.group(2)) if m.group(2) else None
            top = peak - rmin * abs(peak)
            low = peak - rmax * abs(peak) if rmax is not None else min(np.nanmin(vals), top) - 0.1 * abs(peak)
            x0 = steps[min(i, len(steps) - 2)] if len(steps) > 1 else steps[-1]
            ax.fill_between([x0, steps[-1]], low, top, **band, label="allowed final value")
            bad[-1] = not (low <= vals[-1] <= top) if rmax is not None else not vals[-1] <= top
    elif kind == "run_trend":
        m = re.search(r"steps \[(\d+), (end|\d+)\]", desc)
        if m:
            hi = steps.max() if m.group(2) == "end" else float(m.group(2))
            ax.axvspan(float(m.group(1)), hi, **band, label="judged window")
        ok = np.isfinite(vals)
        if ok.sum() >= 2:
            b, a = np.polyfit(steps[ok], vals[ok], 1)
            ax.plot(steps, a + b * steps, color=FIT, ls="--", lw=1, label="least-squares trend")
    return bad
