"""The HTML report: built from real check results on real files, checked structurally and in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save, transformer_like

import pytest_weights
from pytest_weights import open_checkpoint
from pytest_weights.html_report import HIST, INSTALL_HINT, PLOT_VALUES, render_html
from pytest_weights.runner import Checker
from pytest_weights.spec import parse_spec

CI = bool(os.environ.get("CI"))
VOID = {"meta", "br", "img", "input", "link", "hr", "wbr", "col", "source"}


def _need(module: str) -> None:
    """Skip without ``module`` on a developer machine; fail on CI, which installs it."""
    try:
        __import__(module)
    except ImportError:
        msg = f"{module} is needed for the report's plots: {INSTALL_HINT}"
        if CI:
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def mpl() -> None:
    _need("matplotlib")


class Page(HTMLParser):
    """The structure of a rendered report: summary rows, failure sections and what they hold."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.rows: list[str] = []  # class of each summary row
        self.sections: dict[str, dict] = {}  # failure section id -> {"svg": n, "notes": [...], "text": str}
        self.ids: list[str] = []
        self.svg_outside = 0
        self._section: str | None = None
        self._section_depth = 0
        self._in_summary = False
        self._note: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"])
        if tag == "table" and a.get("class") == "summary":
            self._in_summary = True
        if tag == "tr" and self._in_summary and a.get("class"):
            self.rows.append(a["class"])
        if tag == "section" and a.get("class") == "failure":
            self._section = a["id"]
            self._section_depth = len(self.stack)
            self.sections[a["id"]] = {"svg": 0, "notes": [], "labels": [], "text": ""}
        if tag == "svg":
            if self._section is None:
                self.svg_outside += 1
            elif not any(t == "svg" for t in self.stack):
                self.sections[self._section]["svg"] += 1
                self.sections[self._section]["labels"].append(a.get("aria-label", ""))
        if tag == "p" and a.get("class") == "note" and self._section is not None:
            self._note = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"])

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()
        if tag == "table":
            self._in_summary = False
        if tag == "p" and self._note is not None:
            self.sections[self._section]["notes"].append("".join(self._note))
            self._note = None
        if tag == "section" and self._section is not None and len(self.stack) == self._section_depth:
            self._section = None

    def handle_data(self, data):
        if self._note is not None:
            self._note.append(data)
        if self._section is not None and "svg" not in self.stack:
            self.sections[self._section]["text"] += data


def as_json(results) -> list[dict]:
    """Result records as the plugin hands them over: through JSON, with node ids."""
    return [{"nodeid": f"spec::{r.name}", **json.loads(json.dumps(r.to_dict()))} for r in results]


def broken_model() -> dict[str, torch.Tensor]:
    t = transformer_like()
    t["model.layers.1.attn.o.weight"] = t["model.layers.1.attn.o.weight"] * 100  # one layer rescaled
    g = torch.Generator().manual_seed(1)
    t["model.layers.3.mlp.up.weight"] = (torch.rand(256, 64, generator=g) - 0.5) * 0.07  # left at uniform init
    return t


@pytest.fixture(scope="module")
def broken(tmp_path_factory, mpl):
    """The default spec on a model with one ×100 layer and one uniform layer: (path, results, html)."""
    path = save(tmp_path_factory.mktemp("broken") / "broken.safetensors", broken_model())
    results = as_json(pytest_weights.check(path, "default", device="cpu").results)
    return path, results, render_html(results, [str(path)])


KINDS = """
defaults:
  select: {include: ["model.layers.*.weight"], exclude: ["*norm*"], min_ndim: 2}
assertions:
  - {name: finite, kind: finite}
  - {name: gaussian, kind: gaussian_ks, tol: 0.03}
  - {name: weibull-k, kind: weibull, k_min: 1.1, k_max: 1.3}
  - {name: q-grows, kind: depth_trend, stat: std, direction: grows, select: {include: ["*.attn.q.weight"]}}
  - {name: shape, kind: shape}
"""

RUN = """
defaults:
  select: {include: ["*.mlp.weight"]}
assertions:
  - {name: std-grows, kind: run_trend, stat: std, per: role, direction: grows, min_rho: 0.9}
  - {name: std-saturates, kind: saturates, stat: std, per: pooled, last: 3, tol: 0.02}
  - {name: no-overshoot, kind: overshoot, stat: std, per: tensor, max_relaxation: 0.05}
  - {name: std-drift, kind: drift, stat: std, per: pooled, max_rel: 0.5}
  - {name: final-std, kind: final_range, stat: std, per: role, min: 0.039, max: 0.041}
"""
PEAKED = {0: 0.020, 100: 0.034, 200: 0.040, 300: 0.038, 400: 0.036, 500: 0.035}  # overshoots, relaxes


@pytest.fixture(scope="module")
def kinds(tmp_path_factory, mpl):
    """Every figure type: per-tensor kinds, weibull, depth_trend and the run-scope kinds."""
    root = tmp_path_factory.mktemp("kinds")
    t = broken_model()
    g = torch.Generator().manual_seed(2)
    for i in range(6):  # q shrinks with depth; the spec says it grows
        t[f"model.layers.{i}.attn.q.weight"] = torch.randn(64, 64, generator=g) * 0.05 / (1 + i)
    t["model.layers.2.attn.v.weight"][0, :5] = float("nan")
    path = save(root / "kinds.safetensors", t)
    results = as_json(pytest_weights.check(path, parse_spec(KINDS, "kinds.weights.yaml"), device="cpu").results)
    run = []
    for step, std in PEAKED.items():
        g = torch.Generator().manual_seed(step)
        layers = {f"model.layers.{i}.mlp.weight": torch.randn(64, 64, generator=g) * std for i in range(4)}
        run.append((step, save(root / "run" / f"checkpoint-{step}" / "model.safetensors", layers).parent))
    checker = Checker("cpu")
    opened = [(step, open_checkpoint(p)) for step, p in run]
    results += as_json(checker.evaluate_run(opened, a, "run") for a in parse_spec(RUN, "run.weights.yaml").assertions)
    checkpoints = [str(path)] + [str(p) for _, p in run]
    return path, results, render_html(results, checkpoints, title="kinds <&> report")


def test_summary_lists_every_assertion_with_its_status(broken):
    _, results, text = broken
    page = Page(text)
    assert not page.stack  # every element closed
    assert len(page.rows) == len(results) == 5
    assert page.rows == ["skip" if r["skipped"] else "pass" if r["passed"] else "fail" for r in results]
    # scale-vs-model and consistent-with-siblings (×100 layer), not-flat (uniform layer)
    assert page.rows.count("fail") == 3
    for r in results:
        assert f"default.weights.yaml:{r['spec']['line']}" in text
        assert r["summary"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in text
    assert '<span class="badge fail">3 failed</span>' in text


def test_one_figure_per_failing_assertion_and_nothing_fetched(broken):
    _, results, text = broken
    page = Page(text)
    failing = [i for i, r in enumerate(results) if not r["passed"]]
    assert sorted(page.sections) == sorted(f"failure-{i}" for i in failing)
    for i in failing:
        section = page.sections[f"failure-{i}"]
        assert section["svg"] == 1, section
        assert not [n for n in section["notes"] if n.startswith("no plot")], section["notes"]
        assert results[i]["deviations"][0]["tensor"] in section["text"]  # the deviation table
    assert page.svg_outside == 0
    assert len(page.ids) == len(set(page.ids))  # figures share one document: ids stay unique
    for fetch in ("<script", "<link", "src=", "@import", "url(http", 'href="http'):
        assert fetch not in text
    sib = page.sections[f"failure-{failing[2]}"]
    assert "model.layers.1.attn.o.weight" in sib["text"] and "×100.5" in sib["text"]


def test_a_figure_for_every_kind(kinds):
    _, results, text = kinds
    page = Page(text)
    assert not page.stack
    assert "<title>kinds &lt;&amp;&gt; report</title>" in text
    by_name = {r["name"]: (i, r) for i, r in enumerate(results)}
    failing = [r["name"] for r in results if not r["passed"]]
    # one ×100 / uniform / NaN layer per tensor kind, q shrinking with depth, a run that peaks and relaxes
    assert failing == [
        "finite",
        "gaussian",
        "weibull-k",
        "q-grows",
        "shape",
        "std-grows",
        "std-saturates",
        "no-overshoot",
        "std-drift",
        "final-std",
    ]
    for name in failing:
        i, _ = by_name[name]
        section = page.sections[f"failure-{i}"]
        assert section["svg"] == 1, (name, section["notes"])
        assert not [n for n in section["notes"] if n.startswith("no plot")], (name, section["notes"])
        assert section["labels"][0].startswith(name + ":")
    labels = {name: page.sections[f"failure-{by_name[name][0]}"]["labels"][0] for name in failing}
    k = results[by_name["weibull-k"][0]]["observed"]["model.layers.3.mlp.up.weight"]["k"]
    assert f"k={k:.4g}" in labels["weibull-k"] and "fit from the check" in labels["weibull-k"]
    assert "5 NaN, 0 Inf" in labels["finite"]
    assert "against depth" in labels["q-grows"] and "failing roles in colour" in labels["q-grows"]
    assert "1 more failing series not drawn" in labels["no-overshoot"]  # 4 tensors fail, 3 drawn
    assert "final value in [0.039, 0.041]" in labels["final-std"]


def test_sibling_plot_data_are_the_values_the_check_judged(broken):
    """The siblings panel holds each tensor's std (the numbers, from the kind) and its band
    median ×/÷ max_ratio: the same as numpy float64 on the checkpoint's tensors."""
    path, results, _ = broken
    r = next(r for r in results if r["kind"] == "sibling_consistency")
    (lines,) = [p for p in r["plot"] if p["panel"] == "lines"]
    (line,) = lines["lines"]
    names = [f"model.layers.{i}.attn.o.weight" for i in range(6)]
    with open_checkpoint(path) as ckpt:
        want = [ckpt.read(n).double().numpy().std() for n in names]
    assert lines["title"] == "model.layers.*.attn.o.weight" and line["x"] == list(range(6))
    assert line["y"] == pytest.approx(want, rel=1e-6)
    med = float(np.median(want))
    assert line["hi"][0] == pytest.approx(med * 5, rel=1e-6) and line["lo"][0] == pytest.approx(med / 5, rel=1e-6)
    assert line["bad"] == [i == 1 for i in range(6)]  # the ×100 layer
    assert r["deviations"][0]["value"] / med == pytest.approx(100.5, rel=1e-3)


def test_tables_only_without_matplotlib(broken, monkeypatch):
    _, results, _ = broken
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    text = render_html(results, [])
    page = Page(text)
    assert "<svg" not in text
    assert INSTALL_HINT.replace("'", "&#x27;") in text
    assert len(page.rows) == 5 and len(page.sections) == 3
    assert all("model.layers" in s["text"] for s in page.sections.values())  # deviation tables stay


def test_a_plot_that_cannot_be_made_becomes_a_note(broken, kinds):
    _, results, _ = broken
    page = Page(render_html(results, []))  # checkpoint unknown: tensors cannot be re-read
    for section in page.sections.values():  # panels drawn from numbers only (siblings) still show
        assert any("not among the report's checkpoints" in n for n in section["notes"]), section["notes"]
    # a renamed tensor: read fails, the report still renders with the note
    path, results, _ = broken

    def renamed(panel: dict) -> dict:
        return dict(panel, tensor="no.such.weight") if panel["panel"] == "histogram" else panel

    gone = [
        dict(
            r,
            deviations=[dict(d, tensor="no.such.weight") for d in r["deviations"]],
            plot=list(map(renamed, r["plot"])),
        )
        for r in results
    ]
    page = Page(render_html(gone[3:4], [str(path)]))
    (section,) = page.sections.values()
    assert any("no.such.weight" in n and "could not be read" in n for n in section["notes"]), section["notes"]
    # depth and run figures come from the recorded series: no checkpoint needed
    _, results, _ = kinds
    series = [r for r in results if r["kind"] in {"depth_trend", "drift", "final_range"}]
    page = Page(render_html(series, []))
    assert [s["svg"] for s in page.sections.values()] == [1, 1, 1]


def test_text_is_escaped(broken):
    path, results, _ = broken
    evil = "<img src=x onerror=alert(1)>&amp;\"'"
    r = dict(results[3], name=evil, summary=evil, description=evil, notes=[evil], nodeid=evil)
    r["deviations"] = [dict(d, observed=evil, expected=evil) for d in r["deviations"]]
    text = render_html([r], [str(path)], title=evil)
    assert "<img" not in text and "onerror=alert(1)>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;&amp;amp;&quot;&#x27;" in text
    page = Page(text)
    assert page.rows == ["fail"] and len(page.sections) == 1
    (section,) = page.sections.values()
    assert section["svg"] == 1


def test_big_tensors_are_subsampled_deterministically(tmp_path, mpl):
    t = transformer_like(layers=2)
    g = torch.Generator().manual_seed(3)
    t["embed.weight"] = torch.rand(1000, 700, generator=g) - 0.5  # 700k uniform values: not bell-shaped
    path = save(tmp_path / "big.safetensors", t)
    results = as_json(pytest_weights.check(path, "default", device="cpu").results)
    failing = [r for r in results if not r["passed"]]
    assert {r["deviations"][0]["tensor"] for r in failing} == {"embed.weight"}
    first = render_html(failing, [str(path)])
    assert first == render_html(failing, [str(path)])
    assert f"histogram of {PLOT_VALUES:,} sampled values" in first
    assert "n=700,000" in first


def test_delta_views_are_re_read_from_both_checkpoints(tmp_path, mpl):
    base = transformer_like(layers=3)
    g = torch.Generator().manual_seed(4)
    ft = {
        k: v + (torch.rand(v.shape, generator=g) - 0.5) * 1e-3 if v.is_floating_point() else v for k, v in base.items()
    }
    base_path, ft_path = save(tmp_path / "base.safetensors", base), save(tmp_path / "ft.safetensors", ft)
    spec = parse_spec(
        "defaults: {view: delta, select: {include: ['*.weight'], min_ndim: 2}}\n"
        "assertions: [{name: delta-gaussian, kind: gaussian_ks, tol: 0.03}]\n",
        "delta.weights.yaml",
    )
    results = as_json(pytest_weights.check(ft_path, spec, device="cpu", reference=base_path).results)
    assert results[0]["checkpoint"] == "Δ(ft.safetensors − base.safetensors)" and not results[0]["passed"]
    # the record says which files the label names (no label parsing): W and W_ref
    assert results[0]["source"] == {"view": "delta", "paths": [str(ft_path), str(base_path)]}
    page = Page(render_html(results, [str(ft_path), str(base_path)]))
    (section,) = page.sections.values()
    assert section["svg"] == 1, section["notes"]
    # an older record (no source) is still drawn from its label
    old = [{k: v for k, v in r.items() if k != "source"} for r in results]
    (section,) = Page(render_html(old, [str(ft_path), str(base_path)])).sections.values()
    assert section["svg"] == 1, section["notes"]


# ---------------------------------------------------------------------------- a real browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def _chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        msg = "Debian's chromium is needed for the browser test: apt-get install -y chromium"
        if CI:
            pytest.fail(msg)  # CI installs it: missing means a broken setup, not a skip
        pytest.skip(msg)
    return exe


def _run_chromium(exe: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    env = dict(os.environ, HOME=str(tmp_path))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, check=False)


def test_the_plots_show_in_a_real_browser(broken, tmp_path):
    exe = _chromium()
    text = broken[2]
    page_file = tmp_path / "report.html"
    page_file.write_text(text, encoding="utf-8")
    url = page_file.as_uri()

    dom = _run_chromium(exe, tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('<svg class="plot"') == 3  # the browser parsed every figure as SVG
    assert dom.stdout.count('<section class="failure"') == 3

    shot = tmp_path / "shot.png"
    got = _run_chromium(exe, tmp_path, f"--screenshot={shot}", "--window-size=1200,4000", url)
    assert got.returncode == 0 and shot.is_file(), got.stderr[-2000:]
    from matplotlib.image import imread

    rgb = (imread(str(shot))[:, :, :3] * 255).round()
    assert rgb.shape[:2] == (4000, 1200)
    want = np.array([int(HIST[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
    hist = (np.abs(rgb - want) <= 10).all(axis=2)  # the histogram fill: only the plots use it
    assert hist.sum() > 20_000, hist.sum()
    rows = np.flatnonzero(hist.sum(axis=1) > 0)
    bands = 1 + int((np.diff(rows) > 150).sum())  # separate vertical stretches = separate figures
    assert bands == 3, rows
    # the figures are drawn, not blank: varied pixels where they are
    region = rgb[rows.min() : rows.max() + 1].mean(axis=2)
    assert region.std() > 15, region.std()
    red = (np.abs(rgb - np.array([214.0, 39.0, 40.0])) <= 12).all(axis=2)  # fitted curves and deviating marks
    assert red.sum() > 200, red.sum()
