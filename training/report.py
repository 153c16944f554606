"""The per-run HTML report: one self-contained file (plots inlined as base64 PNGs, no scripts, no
network resources) that opens from disk.

Sections: metrics per model (table + grouped bar chart of ndcg@10 / recall@20 per split), training
curves, the long tail (item popularity, and where each model's recommendations fall in the
popularity deciles), catalog coverage per model, the run's params and notes.

Plots are drawn with matplotlib's object API (``matplotlib.figure.Figure`` rendered by the Agg
canvas) instead of ``pyplot``: no global backend switch, nothing registered with pyplot's figure
manager, so nothing to close or leak and it works headless, inside Spark workers or beside a
notebook using another backend. A plot whose inputs are missing (empty history, no ndcg/recall
keys, no recommendations) is skipped and the report says why.
"""
from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

BAR_METRICS = ("ndcg@10", "recall@20")      # the metric names (after "split/") the bar chart shows
N_DECILES = 10
_REFERENCE_COLOR = "#b0b0b0"                # the "train interactions" reference bars of the long-tail plot
# A column whose metric name contains one of these is "lower is better" when picking the bold best.
_LOWER_IS_BETTER = ("loss", "latency", "seconds", "time_s", "rmse", "mae", "error")

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: 0.6em 0; }
p.skip { color: #8a5a00; font-style: italic; }
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fig_to_img(fig: Figure, alt: str) -> str:
    """Render a Figure to an inline ``<img>`` tag (PNG, base64)."""
    FigureCanvasAgg(fig)                          # attach the Agg canvas explicitly
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'


def _skip(message: str) -> str:
    return f'<p class="skip">{_esc(message)}</p>'


def _fmt(value: object) -> str:
    if value is None:
        return "&ndash;"
    try:
        v = float(value)                          # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _esc(value)
    return _esc(f"{v:.4f}") if math.isfinite(v) else _esc(str(v))


def _finite(value: object) -> Optional[float]:
    try:
        v = float(value)                          # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _lower_is_better(metric: str) -> bool:
    name = metric.lower()
    return any(token in name for token in _LOWER_IS_BETTER)


def _ordered_keys(rows: Sequence[Mapping[str, object]]) -> List[str]:
    """Union of the keys, in first-seen order."""
    seen: Dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


# ---------------------------------------------------------------------------------------------- tables
def _metrics_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
    models = list(metrics)
    columns = _ordered_keys([metrics[m] for m in models])
    if not models or not columns:
        return _skip("No metrics were given.")
    best: Dict[str, Optional[float]] = {}
    for col in columns:
        values = [v for v in (_finite(metrics[m].get(col)) for m in models) if v is not None]
        best[col] = (min(values) if _lower_is_better(col) else max(values)) if values else None
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = []
    for m in models:
        cells = []
        for col in columns:
            raw = metrics[m].get(col)
            text = _fmt(raw)
            v = _finite(raw)
            if v is not None and best[col] is not None and v == best[col]:
                text = f"<b>{text}</b>"
            cells.append(f'<td class="num">{text}</td>')
        body.append(f"<tr><th>{_esc(m)}</th>{''.join(cells)}</tr>")
    return (f'<table class="metrics"><thead><tr><th>model</th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
            "<p>Best value per column in bold (lowest for loss/latency/error-like columns).</p>")


def _params_table(params: Optional[Mapping[str, object]]) -> str:
    if not params:
        return _skip("No params were given.")
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in params.items())
    return f'<table class="params"><thead><tr><th>param</th><th>value</th></tr></thead><tbody>{rows}</tbody></table>'


def _history_table(history: Sequence[Mapping[str, float]]) -> str:
    if not history:
        return ""
    columns = _ordered_keys(history)
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f'<td class="num">{_fmt(row.get(c))}</td>' for c in columns) + "</tr>"
                   for row in history)
    return f'<table class="history"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ----------------------------------------------------------------------------------------------- plots
def _bar_metrics_plot(metrics: Mapping[str, Mapping[str, float]], colors: Mapping[str, str]) -> str:
    """Grouped bars: one group per "split/metric" key whose metric is in BAR_METRICS, one bar per model."""
    keys = [k for k in _ordered_keys([metrics[m] for m in metrics])
            if k.rsplit("/", 1)[-1] in BAR_METRICS]
    keys.sort(key=lambda k: (BAR_METRICS.index(k.rsplit("/", 1)[-1]), k))
    models = list(metrics)
    if not keys or not models:
        return _skip(f"Metric bar chart skipped: no {' / '.join(BAR_METRICS)} metrics were given.")
    fig = Figure(figsize=(max(6.0, 1.0 + len(keys) * (0.5 * len(models) + 0.6)), 4))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(models)
    x = np.arange(len(keys))
    for i, m in enumerate(models):
        vals = [_finite(metrics[m].get(k)) for k in keys]
        heights = [0.0 if v is None else v for v in vals]
        bars = ax.bar(x + (i - (len(models) - 1) / 2) * width, heights, width, label=m, color=colors[m])
        for bar, v in zip(bars, vals):
            ax.annotate("n/a" if v is None else f"{v:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(keys)
    ax.set_ylabel("value")
    ax.set_title("Ranking metrics per model")
    ax.legend(fontsize=8)
    return _fig_to_img(fig, "ranking metrics per model")


def _curves_plot(history: Sequence[Mapping[str, float]]) -> str:
    if not history:
        return _skip("Training curves skipped: the training history is empty.")
    columns = _ordered_keys(history)
    epochs = [(_finite(row.get("epoch")) if "epoch" in row else None) for row in history]
    x = [e if e is not None else float(i + 1) for i, e in enumerate(epochs)]
    loss_keys = [c for c in columns if "loss" in c.lower()]
    metric_keys = [c for c in columns if c != "epoch" and c not in loss_keys and c.lower().startswith(("valid", "val_"))]
    if not loss_keys and not metric_keys:
        return _skip("Training curves skipped: the history has no loss or valid metric columns.")
    fig = Figure(figsize=(10, 3.6))
    panels = [("loss", loss_keys), ("validation metric", metric_keys)]
    for j, (label, keys) in enumerate(panels):
        ax = fig.add_subplot(1, 2, j + 1)
        for key in keys:
            pts = [(xi, _finite(row.get(key))) for xi, row in zip(x, history)]
            pts = [(a, b) for a, b in pts if b is not None]
            if pts:
                ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_title(label + " per epoch" if keys else f"no {label} column")
        if keys:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _fig_to_img(fig, "training curves")


def _clean_recs(recs: np.ndarray, n_items: int) -> np.ndarray:
    flat = np.asarray(recs).ravel()
    if flat.size == 0:
        return flat.astype(np.int64)
    flat = flat.astype(np.int64)
    return flat[(flat >= 0) & (flat < n_items)]


def _deciles(item_popularity: np.ndarray, n_items: int) -> np.ndarray:
    """Decile per item: 0 = the 10% most popular items (head) ... 9 = the least popular (tail). Ties are
    broken by item index (stable sort) so the result is deterministic."""
    order = np.argsort(-item_popularity, kind="stable")
    decile = np.empty(n_items, dtype=np.int64)
    decile[order] = (np.arange(n_items) * N_DECILES) // max(n_items, 1)
    return decile


def _long_tail_plot(item_popularity: np.ndarray, recommended: Mapping[str, np.ndarray], n_items: int,
                    colors: Mapping[str, str]) -> Tuple[str, Dict[str, np.ndarray]]:
    pop = np.asarray(item_popularity, dtype=np.float64).ravel()
    if n_items <= 0 or pop.size != n_items:
        return _skip(f"Long-tail plot skipped: item_popularity has {pop.size} entries, n_items is {n_items}."), {}
    decile = _deciles(pop, n_items)
    shares: Dict[str, np.ndarray] = {}
    for m, recs in recommended.items():
        items = _clean_recs(recs, n_items)
        if items.size:
            shares[m] = np.bincount(decile[items], minlength=N_DECILES)[:N_DECILES] / items.size
    total = pop.sum()
    train_share = (np.bincount(decile, weights=pop, minlength=N_DECILES)[:N_DECILES] / total
                   if total > 0 else None)

    fig = Figure(figsize=(11, 3.8))
    ax = fig.add_subplot(1, 2, 1)
    sorted_pop = np.sort(pop)[::-1]
    positive = sorted_pop > 0
    if positive.any():
        ax.plot(np.arange(1, n_items + 1)[positive], sorted_pop[positive], lw=1.2)
        ax.set_yscale("log")
    ax.set_xlabel("item rank by train popularity")
    ax.set_ylabel("train interactions (log)")
    ax.set_title(f"Item popularity ({int((~positive).sum())} of {n_items} items never seen)")

    ax2 = fig.add_subplot(1, 2, 2)
    x = np.arange(N_DECILES)
    series = ([("train interactions", train_share)] if train_share is not None else []) + list(shares.items())
    width = 0.8 / max(len(series), 1)
    for i, (label, share) in enumerate(series):
        reference = i == 0 and train_share is not None
        ax2.bar(x + (i - (len(series) - 1) / 2) * width, share, width, label=label,
                color=_REFERENCE_COLOR if reference else colors[label], hatch="//" if reference else None)
    ax2.set_xticks(x)
    ax2.set_xticklabels([f"D{i + 1}" for i in x])
    ax2.set_xlabel("popularity decile of items (D1 = head, D10 = tail)")
    ax2.set_ylabel("share of recommendations")
    ax2.set_ylim(0, 1)
    ax2.set_title("Where recommendations fall")
    if series:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    img = _fig_to_img(fig, "long tail")
    missing = [m for m in recommended if m not in shares]
    note = _skip(f"No recommendations for: {', '.join(missing)}.") if missing else ""
    if not recommended:
        note = _skip("No recommendations were given: only the popularity curve is shown.")
    return img + note, shares


def _coverage(recommended: Mapping[str, np.ndarray], n_items: int) -> Dict[str, float]:
    return {m: (np.unique(_clean_recs(r, n_items)).size / n_items if n_items > 0 else 0.0)
            for m, r in recommended.items()}


def _coverage_plot(coverage: Mapping[str, float], colors: Mapping[str, str]) -> str:
    if not coverage:
        return _skip("Coverage plot skipped: no recommendations were given.")
    fig = Figure(figsize=(max(5.0, 1.1 * len(coverage) + 2), 3.4))
    ax = fig.add_subplot(1, 1, 1)
    names = list(coverage)
    bars = ax.bar(np.arange(len(names)), [coverage[n] for n in names], color=[colors[n] for n in names])
    for bar, n in zip(bars, names):
        ax.annotate(f"{coverage[n]:.1%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("distinct recommended items / n_items")
    ax.set_title("Catalog coverage")
    return _fig_to_img(fig, "catalog coverage")


def _tail_table(shares: Mapping[str, np.ndarray], coverage: Mapping[str, float]) -> str:
    if not coverage:
        return ""
    rows = []
    for m, cov in coverage.items():
        share = shares.get(m)
        head = _fmt(share[0]) if share is not None else "&ndash;"
        tail = _fmt(share[N_DECILES // 2:].sum()) if share is not None else "&ndash;"
        rows.append(f'<tr><th>{_esc(m)}</th><td class="num">{_fmt(cov)}</td>'
                    f'<td class="num">{head}</td><td class="num">{tail}</td></tr>')
    return ('<table class="coverage"><thead><tr><th>model</th><th>coverage</th>'
            "<th>share in head decile (D1)</th><th>share in tail half (D6-D10)</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


# ------------------------------------------------------------------------------------------------- API
def write_report(path: Union[str, Path], title: str, metrics: Mapping[str, Mapping[str, float]],
                 history: Sequence[Mapping[str, float]], item_popularity: np.ndarray,
                 recommended: Mapping[str, np.ndarray], n_items: int, notes: Sequence[str] = (),
                 params: Optional[Mapping[str, object]] = None) -> Path:
    """Write the run report to ``path`` (parents created) and return it as a Path.

    metrics: model -> {"split/metric" -> value}; history: per-epoch dicts (``epoch``, ``*loss*``,
    ``valid*`` keys are plotted); item_popularity: float [n_items] train interactions per item;
    recommended: model -> int [n_users, K] item indices (-1 or out-of-range entries are ignored);
    n_items: catalog size (the coverage denominator). All text is HTML-escaped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = {str(m): dict(v or {}) for m, v in (metrics or {}).items()}
    recommended = dict(recommended or {})
    history = list(history or [])

    # one colour per model across every plot, in first-seen order (metrics, then recommendations)
    colors = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys([*metrics, *recommended]))}
    long_tail_html, shares = _long_tail_plot(item_popularity, recommended, n_items, colors)
    coverage = _coverage(recommended, n_items)
    notes_html = ("<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>") if notes else _skip("No notes.")

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        "<h2>Metrics</h2>", _metrics_table(metrics), _bar_metrics_plot(metrics, colors),
        "<h2>Training</h2>", _curves_plot(history), _history_table(history),
        "<h2>Long tail</h2>", long_tail_html,
        "<h2>Catalog coverage</h2>", _coverage_plot(coverage, colors), _tail_table(shares, coverage),
        "<h2>Params</h2>", _params_table(params),
        "<h2>Notes</h2>", notes_html,
        "</body></html>",
    ]
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
