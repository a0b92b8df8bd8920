"""The NIAH report as a reader sees it: rendered by a real headless Chromium.

The page is loaded in an iframe of a small probe page (same folder, file access allowed),
whose script measures the *rendered* layout — the headline heatmaps' width against the
page, the header, the refused cells' table, the per-sample rows — and writes it into the
DOM that ``--dump-dom`` prints. A screenshot of the page is kept as an artifact (under
``$CTXMEM_ARTIFACTS`` when set, as CI does). Skips only where no Chromium is installed;
``scripts/install-system-deps.sh`` installs Debian's ``chromium`` for CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ctxmem.evals.report import write_report
from ctxmem.evals.store import ResultStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--allow-file-access-from-files", "--hide-scrollbars"]

PROBE = """<!doctype html><html><body><pre id='out'>pending</pre>
<iframe id='f' src='index.html' style='width:1400px;height:2000px;border:0'></iframe>
<script>
document.getElementById('f').addEventListener('load', () => {
  const d = document.getElementById('f').contentDocument;
  const body = d.body.getBoundingClientRect().width;
  const wide = [...d.querySelectorAll('figure.wide img')].map(i => i.getBoundingClientRect().width);
  const charts = [...d.querySelectorAll('figure.chart img')].map(i => i.getBoundingClientRect().width);
  const natural = [...d.querySelectorAll('figure.wide img')].map(i => i.naturalWidth);
  const th = [...d.querySelectorAll('h2')].map(h => h.textContent);
  const refused = [...d.querySelectorAll('table')].filter(t => t.previousElementSibling &&
      t.previousElementSibling.textContent.startsWith('Refused')).map(t => t.querySelectorAll('tbody tr').length);
  const samples = d.querySelectorAll('#samples tbody tr').length;
  const dts = [...d.querySelectorAll('.header dt')].map(x => x.textContent);
  const font = parseFloat(getComputedStyle(d.querySelector('table td')).fontSize);
  document.getElementById('out').textContent = JSON.stringify({body, wide, charts, natural, th, refused, samples,
                                                               dts, font});
});
</script></body></html>"""


def _chromium(*args: str, timeout: float = 120) -> str:
    assert CHROMIUM is not None
    proc = subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=timeout)
    return proc.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from click.testing import CliRunner

    from ctxmem.cli.evals import eval_group

    out = tmp_path_factory.mktemp("niah")
    # a 64K column that the 32K window refuses, a non-literal family the lexical reader
    # cannot answer, and a literal family it answers at 100%
    res = CliRunner().invoke(eval_group, ["niah", "--out", str(out), "--lengths", "1k,2k,64k", "--depths", "0,50,100",
                                    "--strategy", "none", "--strategy", "window-32k", "--needles", "literal,nonliteral",
                                    "--seeds", "0-1", "--window", "32000", "--no-progress"])
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (scripts/install-system-deps.sh installs it)")
def test_report_renders_readably_in_a_real_browser(report: Path) -> None:
    (report / "probe.html").write_text(PROBE, encoding="utf-8")
    dom = ""
    for _ in range(3):  # a cold Chromium can miss the budget on a loaded machine
        dom = _chromium("--virtual-time-budget=15000", "--dump-dom", (report / "probe.html").as_uri())
        if "pending" not in dom:
            break
    m = re.search(r"<pre id=\"out\">(.*?)</pre>", dom, re.S)
    assert m, dom[:500]
    got = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    # headline heatmaps: full width of the page body, never a half-width grid slot
    assert got["wide"] and all(w >= 0.95 * got["body"] - 40 for w in got["wide"]), got
    # their pixels are not blown up: rendered at most ~1.6x their natural size
    assert all(w <= 1.6 * n for w, n in zip(got["wide"], got["natural"], strict=True)), got
    assert got["charts"] and all(w >= 0.4 * got["body"] - 40 for w in got["charts"]), got
    assert {"Run", "Accuracy by depth × length", "Refused and errored cells", "Per-sample results"} <= set(got["th"])
    assert {"tokenizer", "presets", "lengths", "trials per cell", "report written"} <= set(got["dts"])
    # the 64K column is refused under the 32K window (2 presets × 2 families × 3 depths ×
    # 2 seeds = 24 cells): folded into one row per (preset, family, length) with a count
    assert got["refused"] == [4], got
    assert got["samples"] == 2 * 2 * 2 * 3 * 2  # presets × families × finished lengths × depths × seeds
    assert got["font"] >= 12
    shot_dir = Path(os.environ.get("CTXMEM_ARTIFACTS") or report)
    shot_dir.mkdir(parents=True, exist_ok=True)
    shot = shot_dir / "niah-report.png"
    _chromium(f"--screenshot={shot}", "--window-size=1400,2600", (report / "index.html").as_uri())
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_report_page_says_which_reader_and_marks_what_it_cannot_answer(report: Path) -> None:
    page = (report / "index.html").read_text(encoding="utf-8")
    assert "offline lexical extractive reader" in page and "Cannot answer: nonliteral" in page
    assert "refused (too long)" not in page  # the label lives in the PNG, the table folds the rest
    assert "{&quot;" not in page and '{"correct"' not in page  # labels are words, not raw JSON
    with ResultStore(report / "results.db") as store:
        rows = store.rows(status="done")
    nonliteral = [r for r in rows if r["needle"] == "nonliteral" and not r["correct"]]
    assert nonliteral and {r["label"] for r in nonliteral} <= {"reader-cannot-answer", "dropped-by-strategy"}
    assert "reader-cannot-answer" in {r["label"] for r in nonliteral}


@pytest.mark.parametrize("n", [1, 2, 6, 21, 37, 50])
def test_groups_at_100_percent_render_for_any_n(report: Path, tmp_path: Path, n: int) -> None:
    """Wilson's bound at 100% can sit 1e-16 below the estimate: the error bars are clipped."""
    with ResultStore(report / "results.db") as store:
        base = next(r for r in store.rows(status="done") if r["needle"] == "literal" and r["correct"])
    rows = [{**base, "seed": s, "key": f"k{s}", "length": length}
            for length in (1000, 2000) for s in range(n)]
    index = write_report(rows, tmp_path / f"r{n}", n_boot=20)
    assert index.is_file() and (tmp_path / f"r{n}" / "accuracy-vs-length.png").is_file()


def test_every_n_from_1_to_50_has_nonnegative_error_bars() -> None:
    from ctxmem.evals.report import _series

    for n in range(1, 51):
        rows = [{"model": "m", "preset": "p", "length": 1000, "score": 1.0} for _ in range(n)]
        (series,) = _series(rows)
        assert min(series["err_lo"]) >= 0 and min(series["err_hi"]) >= 0
