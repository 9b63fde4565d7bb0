"""report.html: self-contained (plotly inlined, no network), its data, and a real browser driving it.

The browser test runs headless Chromium (Debian's ``chromium`` package, ``/usr/bin/chromium``) through
Playwright with that system executable; it is skipped, saying why, where either is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from _report_fixture import reported_run
from hpo_bench.report import TABLES

CHROMIUM = os.environ.get("HPO_BENCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def page_path(tmp_path_factory):
    return reported_run(tmp_path_factory) / "report" / "report.html"


def _data(text: str) -> dict:
    return json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', text, re.S).group(1)
                      .replace("<\\/", "</"))


def test_the_page_is_self_contained_and_holds_every_table(page_path):
    text = page_path.read_text()
    assert not re.search(r"<(script|link)[^>]+(src|href)=", text)  # nothing loaded from anywhere
    assert "Plotly" in text and len(text) > 1_000_000  # plotly.js inlined
    for name in TABLES:
        assert f'id="t-{name}"' in text
    data = _data(text)
    assert data["tasks"] == ["ridge-synth100", "ridge_pf-synth200"]
    assert [t["label"] for t in data["tuners"]] == ["neumann20-gd100", "cg", "tpe-mv", "random"]
    assert {"regret", "validation", "test_loss", "hypergrad_error"} <= set(data["metrics"])
    assert {"time", "cost", "step"} <= set(data["xs"])
    c = data["curves"]["regret"]["time"]["ridge-synth100"]["cg"]
    assert len(c["x"]) == len(c["median"]) == len(c["q1"]) == len(c["q3"]) and c["seeds"] == 2
    assert all(lo <= m <= hi for lo, m, hi in zip(c["q1"], c["median"], c["q3"]))


def test_the_curves_are_the_figures_curves(page_path):
    from hpo_bench.report.plot import curves, plot_records

    df = plot_records(page_path.parent.parent, metric="regret")
    agg = curves(df, metric="regret", x="step", tasks=["ridge_pf-synth200"], tuners=["random"], n_grid=60)
    c = _data(page_path.read_text())["curves"]["regret"]["step"]["ridge_pf-synth200"]["random"]
    assert c["median"] == pytest.approx(agg["median"].tolist(), rel=1e-9)


def _browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install 'hpo-bench[browser]')")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    return sync_playwright


def test_in_a_real_browser_the_controls_change_the_plot(page_path, tmp_path):
    sync_playwright = _browser()
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: errors.append(f"request {r.url}") if not r.url.startswith("file:") else None)
            page.goto(page_path.as_uri())
            traces = "document.querySelectorAll('#plot .scatterlayer .trace').length"
            page.wait_for_function(f"{traces} > 0")
            n_all = page.evaluate(traces)
            assert page.evaluate("document.getElementById('plot').layout.yaxis.title.text").startswith("regret")

            page.select_option("#metric", "test_loss")
            assert page.evaluate("document.getElementById('plot').layout.yaxis.title.text") == "test loss (incumbent)"
            page.select_option("#task", "ridge_pf-synth200")
            assert page.evaluate("document.getElementById('plot').layout.title.text") == "ridge_pf-synth200"
            page.uncheck("#tuners input[value='cg']")
            assert page.evaluate(traces) == n_all - 3  # median, and the band's two edges
            names = page.evaluate("document.getElementById('plot').data.map(t => t.name).filter(Boolean)")
            assert "cg" not in names and "random" in names

            # a table sorts by a click on a header, numbers as numbers
            page.click("#t-ranks th[data-col='1']")
            ranks = page.evaluate("[...document.querySelectorAll('#t-ranks tbody tr')].map(r => +r.cells[1].dataset.v)")
            assert ranks == sorted(ranks)
            page.click("#t-ranks th[data-col='1']")
            ranks = page.evaluate("[...document.querySelectorAll('#t-ranks tbody tr')].map(r => +r.cells[1].dataset.v)")
            assert ranks == sorted(ranks, reverse=True)
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=False)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        finally:
            browser.close()
    assert errors == []
