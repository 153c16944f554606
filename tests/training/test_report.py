"""training/report.py: one self-contained HTML file from small inline inputs."""
from __future__ import annotations

import re

import numpy as np

from training.report import write_report

IMG = '<img src="data:image/png;base64,'

N_ITEMS = 40
METRICS = {
    "two_tower": {"valid/ndcg@10": 0.1234, "valid/recall@20": 0.2000, "test/ndcg@10": 0.1111},
    "popular": {"valid/ndcg@10": 0.0500, "valid/recall@20": 0.2500, "test/ndcg@10": 0.0400},
    "als": {"valid/ndcg@10": 0.0900, "valid/recall@20": 0.1500},          # test/ndcg@10 missing
}
HISTORY = [
    {"epoch": 1, "train_loss": 2.3, "valid_ndcg@10": 0.05, "examples_per_s": 12000.0},
    {"epoch": 2, "train_loss": 1.9, "valid_ndcg@10": 0.09, "examples_per_s": 12500.0},
    {"epoch": 3, "train_loss": 1.7, "valid_ndcg@10": 0.12, "examples_per_s": 12400.0},
]


def _inputs():
    rng = np.random.default_rng(0)
    popularity = np.sort(rng.pareto(1.5, N_ITEMS) * 10)[::-1].astype(np.float64)
    popularity[-3:] = 0.0                                       # a few never-seen items
    head_only = np.tile(np.arange(4), (6, 1))                   # only the 4 most popular items (D1)
    spread = rng.integers(0, N_ITEMS, size=(6, 5))
    spread[0, -2:] = -1                                         # empty slots are ignored
    return popularity, {"two_tower": spread, "popular": head_only, "als": np.full((6, 5), -1)}


def test_report_has_plots_tables_and_names(tmp_path):
    popularity, recs = _inputs()
    out = write_report(tmp_path / "sub" / "report.html", "Run 42 report", METRICS, HISTORY, popularity, recs,
                       N_ITEMS, notes=["trained on synthetic data"], params={"dim": 32, "lr": 0.01})
    assert out == tmp_path / "sub" / "report.html" and out.exists()
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert text.count("<table") == text.count("</table>") >= 3
    assert "<title>Run 42 report</title>" in text and "<h1>Run 42 report</h1>" in text
    for name in ("two_tower", "popular", "als"):
        assert name in text
    # metric bars, training curves, long tail, coverage
    assert text.count(IMG) >= 4
    # best per column in bold: ndcg@10 -> two_tower, recall@20 -> popular; missing cell shown as a dash
    assert "<b>0.1234</b>" in text and "<b>0.2500</b>" in text
    assert "<b>0.0900</b>" not in text
    assert "&ndash;" in text
    # coverage: popular recommends 4 distinct items of 40, all in the head decile; als nothing
    assert re.search(r"<th>popular</th><td class=\"num\">0\.1000</td><td class=\"num\">1\.0000</td>", text)
    assert re.search(r"<th>als</th><td class=\"num\">0\.0000</td>", text)
    assert "trained on synthetic data" in text and "<th>dim</th><td>32</td>" in text
    # self-contained: no external resources
    assert "<script" not in text and "http://" not in text and "https://" not in text


def test_empty_history_and_missing_metrics(tmp_path):
    popularity, recs = _inputs()
    out = write_report(tmp_path / "r.html", "no history", {"popular": {"coverage": 0.1}}, [], popularity,
                       recs, N_ITEMS)
    text = out.read_text(encoding="utf-8")
    assert "Training curves skipped" in text
    assert "Metric bar chart skipped" in text
    assert text.count(IMG) >= 2                                 # long tail + coverage still drawn
    # nothing at all still writes a valid file
    out = write_report(tmp_path / "empty.html", "empty", {}, [], np.zeros(0), {}, 0)
    text = out.read_text(encoding="utf-8")
    assert text.rstrip().endswith("</html>") and IMG not in text


def test_text_is_escaped(tmp_path):
    popularity, recs = _inputs()
    title = 'A <script>alert("x")</script> & co'
    out = write_report(tmp_path / "r.html", title, {"<m>": {"valid/ndcg@10": 0.1}}, HISTORY[:1], popularity,
                       {"<m>": recs["popular"]}, N_ITEMS, notes=["a < b & c > d"], params={"<pk>": "<pv>"})
    text = out.read_text(encoding="utf-8")
    assert "<script>" not in text and "<m>" not in text and "<pk>" not in text and "<pv>" not in text
    assert "A &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in text
    assert "a &lt; b &amp; c &gt; d" in text
    assert "&lt;m&gt;" in text
