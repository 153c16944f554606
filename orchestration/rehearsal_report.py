"""What a rehearsal records and shows: every DAG run with its tasks, wall time, rows in and out, the version
readers were on and the invariants' problems; every fault with whether it fired and recovered; the median
and worst wall time per kind of run; and ``rehearsal.html``, a timeline of all of it."""
from __future__ import annotations

import html
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, List

from orchestration.rehearsal_plan import HOURLY, MAINTENANCE, NIGHTLY


@dataclass
class TaskRun:
    task: str
    tries: int
    seconds: float
    status: str                                # succeeded | failed
    faults: List[str] = field(default_factory=list)


@dataclass
class RunRecord:
    kind: str
    covers: str
    scheduled_at: str
    seconds: float
    status: str
    tasks: List[TaskRun] = field(default_factory=list)
    faults: List[str] = field(default_factory=list)
    rows_in: int = 0
    users_out: int = 0
    readers: Dict[str, Any] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)
    note: str = ""
    scheduled: bool = True                     # False: a repeat the rehearsal added (a fault), not a scheduled run


@dataclass
class FaultRecord:
    name: str
    run: str
    fired: bool
    recovered: bool
    detail: str


def wall_times(runs: List[RunRecord]) -> Dict[str, Dict[str, float]]:
    """Median and worst wall time per kind of run (the ones the scheduler starts on its own)."""
    out = {}
    for kind in (NIGHTLY, HOURLY, MAINTENANCE):
        secs = [r.seconds for r in runs if r.kind == kind and r.scheduled]
        if secs:
            out[kind] = {"runs": len(secs), "median_s": round(statistics.median(secs), 1), "worst_s": max(secs)}
    return out


def timeline_html(s: Dict[str, Any]) -> str:
    e = html.escape
    worst = max([r["seconds"] for r in s["runs"]] or [1.0])
    rows = []
    for r in s["runs"]:
        bar = int(300 * r["seconds"] / worst)
        color = "#c0392b" if r["problems"] else "#27ae60"
        tasks = ", ".join(f"{t['task']} {t['seconds']}s" + (f" ({t['tries']} tries)" if t["tries"] > 1 else "")
                          for t in r["tasks"])
        readers = r["readers"].get("version", "")
        rows.append(f"<tr><td>{e(r['scheduled_at'])}</td><td>{e(r['kind'])}</td><td>{e(r['covers'])}</td>"
                    f"<td><div style='background:{color};width:{bar}px;height:10px'></div>{r['seconds']} s</td>"
                    f"<td>{r['rows_in']}</td><td>{r['users_out']}</td><td>{e(readers)}</td>"
                    f"<td>{e(', '.join(r['faults']))}</td><td>{e(r['note'])}<br><small>{e(tasks)}</small></td>"
                    f"<td>{'<br>'.join(e(p) for p in r['problems']) or 'ok'}</td></tr>")
    faults = "".join(f"<tr><td>{e(f['name'])}</td><td>{e(f['run'])}</td><td>{f['fired']}</td>"
                     f"<td>{'yes' if f['recovered'] else 'NO'}</td><td>{e(f['detail'])}</td></tr>" for f in s["faults"])
    wall = "".join(f"<li>{e(k)}: {v['runs']} runs, median {v['median_s']} s, worst {v['worst_s']} s</li>"
                   for k, v in s["wall_s"].items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>RetailReco rehearsal</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;
padding:4px 8px;font-size:13px;vertical-align:top}}th{{background:#f4f4f4}}</style></head><body>
<h1>Rehearsal from {e(s['first_day'])}</h1>
<p>{len(s['runs'])} runs in {s['seconds']} s ({e(s['runner'])} runner); invariants failed after
<b>{s['invariants_failed']}</b> runs; {sum(f['recovered'] for f in s['faults'])} of {len(s['faults'])} faults
recovered.</p><ul>{wall}</ul>
<h2>Timeline</h2><table><tr><th>scheduled</th><th>DAG</th><th>covers</th><th>wall time</th><th>silver rows in</th>
<th>users published</th><th>readers on</th><th>faults</th><th>what</th><th>invariants</th></tr>{''.join(rows)}</table>
<h2>Faults</h2><table><tr><th>fault</th><th>run</th><th>fired</th><th>recovered</th><th>detail</th></tr>{faults}</table>
</body></html>"""
