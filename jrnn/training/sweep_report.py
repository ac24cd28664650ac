"""``jrnn-report`` for a sweep's directory (``jrnn-train --sweep``): every member side by side.

The page holds the grid (the swept axes and each member's values), one table row per member (its
last logged training loss and validation metric, and the step it diverged at, if it did), one
small panel per member with its training loss and validation metric against step on shared
axes, and the configuration the members share. Like a run's report it is one self-contained
HTML file (PNGs embedded as ``data:`` URIs, inline style, no script), the figures are written
beside it as PNGs, and it works on a finished sweep (``sweep.json``) as on one still running
(``sweep_metrics.jsonl`` and the checkpoint's metadata; a half-written last line is skipped).
"""

from __future__ import annotations

import html
import json
import math
import os
from typing import Any, Dict, Optional

import numpy as np

from jrnn.training import checkpoint, report
from jrnn.training.report_html import CSS, MARKER, canvas, img, png_bytes, table, val_metric
from jrnn.training.sweep_run import SWEEP_CKPT, SWEEP_JSON, SWEEP_METRICS

SWEEP_FIGURES = ("members",)


def is_sweep(run_dir: str) -> bool:
  """Whether ``run_dir`` holds a sweep (its metrics, checkpoint or summary)."""
  return any(os.path.exists(os.path.join(run_dir, n)) for n in (SWEEP_JSON, SWEEP_METRICS))


def read_sweep(run_dir: str) -> Dict[str, Any]:
  """``config``, ``axes``, ``members`` (each its axis values), ``rows`` (every member's logged
  rows), ``step`` (the checkpoint's or the summary's), ``steps``, ``finished``, ``torn``.

  Raises:
    ValueError: when neither ``sweep.json`` nor the checkpoint says what the members are.
  """
  rows, torn = report.read_rows(os.path.join(run_dir, SWEEP_METRICS), 2**62)
  info: Optional[Dict[str, Any]] = None
  finished = False
  try:
    with open(os.path.join(run_dir, SWEEP_JSON), encoding="utf-8") as f:
      info = json.load(f)
    finished = info is not None and info.get("step") == info.get("steps")
  except (OSError, ValueError):
    info = None
  if info is None:
    try:
      info = checkpoint.load_metadata(os.path.join(run_dir, SWEEP_CKPT))
    except (OSError, ValueError) as e:
      raise ValueError(
        f"run_dir {run_dir!r} holds a sweep's metrics but neither {SWEEP_JSON} nor a readable "
        f"{SWEEP_CKPT} to say what its members are: {e}"
      ) from e
  assert info is not None
  members = [
    {k: m[k] for k in info["axes"]} for m in info["members"]
  ]  # sweep.json's members also carry their results
  return {
    "config": info["config"],
    "axes": info["axes"],
    "members": members,
    "rows": rows,
    "step": info.get("step"),
    "steps": info["config"].get("steps"),
    "finished": finished,
    "torn": [SWEEP_METRICS] if torn else [],
  }


def _cell(v: Any) -> str:
  if v is None:
    return "n/a"
  return f"{v:.5g}" if isinstance(v, float) else str(v)


def _describe(member: Dict[str, Any]) -> str:
  return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in member.items())


def members_figure(sweep: Dict[str, Any], metric: Optional[str]) -> bytes:
  """One panel per member: training loss (solid) and ``metric`` (dashed, right axis) against
  step, the same axis limits in every panel so that members compare at a glance."""
  members, rows = sweep["members"], sweep["rows"]
  cols = min(4, len(members))
  n_rows = math.ceil(len(members) / cols)
  fig, axes = canvas(3.0 * cols, 2.3 * n_rows, n_rows, cols)
  flat = np.asarray(axes).reshape(-1)
  loss_max = max((r["train_loss"] for r in rows if r.get("train_loss") is not None), default=1.0)
  for n, ax in enumerate(flat):
    if n >= len(members):
      ax.set_visible(False)
      continue
    mine = [r for r in rows if r["member"] == n]
    steps = [r["step"] for r in mine]
    ax.plot(steps, [np.nan if r["train_loss"] is None else r["train_loss"] for r in mine], "C0-")
    ax.set_ylim(0, loss_max * 1.05)
    ax.set_title(f"{n}: {_describe(members[n])}", fontsize=7)
    ax.tick_params(labelsize=6)
    if metric is not None:
      twin = ax.twinx()
      twin.plot(steps, [np.nan if r.get(metric) is None else r[metric] for r in mine], "C1--")
      twin.tick_params(labelsize=6, colors="C1")
    bad = [r["diverged_at"] for r in mine if r.get("diverged_at") is not None]
    if bad:
      ax.axvline(bad[0], color="red", lw=0.8)
  fig.suptitle(
    f"every member: training loss (blue), {metric or 'no validation metric'} (orange, right "
    "axis); red line: diverged",
    fontsize=9,
  )
  fig.tight_layout()
  return png_bytes(fig)


def write_sweep_report(run_dir: str, path: str, pngs: Dict[str, str]) -> str:
  """Writes the sweep's page to ``path`` and its figure to ``pngs["members"]``."""
  sweep = read_sweep(run_dir)
  rows, members, cfg = sweep["rows"], sweep["members"], sweep["config"]
  metric = val_metric(rows)
  name = os.path.basename(os.path.normpath(run_dir))
  last: Dict[int, Dict[str, Any]] = {}
  for r in rows:
    last[r["member"]] = r
  status = (
    f"finished: {sweep['steps']} steps"
    if sweep["finished"]
    else f"running or stopped: checkpoint at step {sweep['step']} of {sweep['steps']}"
  )
  axes_text = "; ".join(f"{k} = {', '.join(map(str, v))}" for k, v in sweep["axes"].items())
  parts = [
    "<!DOCTYPE html>",
    '<html lang="en"><head><meta charset="utf-8">',
    MARKER,
    f"<title>jrnn sweep report: {html.escape(name)}</title>",
    f"<style>{CSS}</style></head><body>",
    f"<h1>Sweep report: {html.escape(name)}</h1>",
    f"<p>{html.escape(status)}. Task <b>{html.escape(str(cfg.get('task', '?')))}</b>; "
    f"{len(members)} members over {html.escape(axes_text)}.</p>",
  ]
  if sweep["torn"]:
    parts.append(
      f'<p class="note">Skipped a half-written last line of {SWEEP_METRICS} (the sweep is '
      "writing it, or crashed while writing).</p>"
    )
  head = ["member", *sweep["axes"], "step", "train_loss", metric or "metric", "diverged_at"]
  cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
  body = [f"<tr>{cells}</tr>"]
  for n, m in enumerate(members):
    r = last.get(n, {})
    values = [n, *m.values(), r.get("step", ""), r.get("train_loss"), r.get(metric or "")]
    values.append("" if r.get("diverged_at") is None else r["diverged_at"])
    body.append("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in values) + "</tr>")
  parts.append("<h2>Members</h2>")
  parts.append(f"<table>{''.join(body)}</table>")
  figure = None
  if rows:
    figure = members_figure(sweep, metric)
    parts.append(img(figure, "every member's training loss and validation metric"))
  else:
    parts.append("<p>No metrics logged yet.</p>")
  parts.append("<h2>Configuration the members share</h2>")
  shared = sorted((k, v) for k, v in cfg.items() if k not in sweep["axes"])
  parts.append(f'<div class="cols">{table(shared)}</div>')
  parts.append("</body></html>")
  if figure is not None:
    tmp = pngs["members"] + ".tmp"
    with open(tmp, "wb") as f:
      f.write(figure)
    os.replace(tmp, pngs["members"])
  report.write_atomically(path, "\n".join(parts) + "\n")
  return path


__all__ = ("SWEEP_FIGURES", "is_sweep", "members_figure", "read_sweep", "write_sweep_report")
