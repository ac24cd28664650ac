"""``jrnn-report RUN_DIR``: one self-contained HTML page about a ``jrnn-train`` run.

:func:`write_report` reads what the run wrote (``config.json``, ``metrics.jsonl``, and where they
exist ``diagnostics.jsonl`` from ``--diagnose-every``, ``test.json``, ``sample.txt`` and the
checkpoint's step) and writes ``report.html`` with its figures embedded as base64 PNGs and its
style inline: no script, no network, it opens from a file or an e-mail. The same figures are
written beside it as PNG files (``report_<figure>.png``) for papers.

The figures: the training loss and validation metric; the gradient-flow heat maps (lag ``k``
against training step, log colour) of ``‖∂h_T/∂h_{T-k}‖`` and of the loss gradient reaching
back ``k`` steps, per layer; ``λ₁`` with its line at 0 and ``ρ(W_hh)``, ``‖W_hh‖`` with their
line at 1; the clipping rate and the per-parameter gradient norms; the measured norms beside the
seed's bound ``‖W_hh‖^k`` at the first, middle and last record. See :mod:`jrnn.training.flow`
for what each record holds.

A run still going (no final checkpoint, no ``test.json``; a half-written last line, which is
skipped) is reported as far as it got. A sweep's directory (``jrnn-train --sweep``) gets a page
of its own with every member side by side (:mod:`jrnn.training.sweep_report`).

The report replaces files only it wrote: an existing ``report.html`` that is not a jrnn-report
page, or a PNG beside a page it did not write, is an error unless ``overwrite``.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from jrnn.training import checkpoint, report, sweep_report
from jrnn.training.flow import DIAGNOSTICS_NAME
from jrnn.training.report_html import (
  CSS,
  MARKER,
  canvas,
  finite,
  img,
  png_bytes,
  table,
  val_metric,
)

REPORT_NAME = "report.html"
FIGURES = ("loss", "flow", "spectrum", "clipping", "bound")


def _loss_figure(rows: List[Dict[str, Any]], metric: Optional[str]) -> bytes:
  fig, ax = canvas(7, 3.6)
  a = ax[0][0]
  a.plot([r["step"] for r in rows], [r["train_loss"] for r in rows], label="train loss")
  a.set_xlabel("step")
  a.set_ylabel("train loss")
  if metric:
    b = a.twinx()
    pts = [(r["step"], r[metric]) for r in rows if metric in r]
    b.plot([p[0] for p in pts], [p[1] for p in pts], color="C1", label=metric)
    b.set_ylabel(metric)
    b.legend(loc="upper right")
  a.legend(loc="upper left")
  a.grid(alpha=0.3)
  return png_bytes(fig)


def _grid(diag: List[Dict[str, Any]], key: str, layer: int):
  """``(lags, steps, values (K, S))`` with non-finite or non-positive values as NaN."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  lags = diag[-1]["lags"]
  steps = [r["step"] for r in diag]
  vals = np.full((len(lags), len(steps)), np.nan)
  for j, r in enumerate(diag):
    if r.get(key) is None or r["lags"] != lags:
      continue
    for i, v in enumerate(r[key][layer]):
      if finite(v) and v > 0:
        vals[i, j] = v
  return lags, steps, vals


def _edges(values: Sequence[float], log: bool) -> List[float]:
  """Cell edges around sorted centres (geometric midpoints for a log axis)."""
  v = list(values)
  if len(v) == 1:
    return [v[0] / 1.5, v[0] * 1.5] if log else [v[0] - 0.5, v[0] + 0.5]
  mids = [math.sqrt(a * b) if log else (a + b) / 2 for a, b in zip(v, v[1:], strict=False)]
  first = v[0] ** 2 / mids[0] if log else 2 * v[0] - mids[0]
  last = v[-1] ** 2 / mids[-1] if log else 2 * v[-1] - mids[-1]
  return [first, *mids, last]


def _flow_figure(diag: List[Dict[str, Any]]) -> bytes:
  # pylint: disable=import-outside-toplevel
  import numpy as np
  from matplotlib.colors import LogNorm

  n_layers = len(diag[-1]["jacobian_norm"])
  keys = [("jacobian_norm", "‖∂h_T/∂h_(T-k)‖")]
  if diag[-1].get("loss_grad") is not None:
    keys.append(("loss_grad", "loss gradient through lag k"))
  fig, ax = canvas(5.5 * len(keys), 3.2 * n_layers, n_layers, len(keys))
  for l in range(n_layers):
    for c, (key, title) in enumerate(keys):
      lags, steps, vals = _grid(diag, key, l)
      a = ax[l][c]
      if np.all(np.isnan(vals)):
        a.text(0.5, 0.5, "no finite positive values", ha="center", transform=a.transAxes)
        continue
      lo, hi = np.nanmin(vals), np.nanmax(vals)
      mesh = a.pcolormesh(
        _edges(steps, False),
        _edges(lags, True),
        vals,
        norm=LogNorm(vmin=lo, vmax=max(hi, lo * 1.0001)),
        cmap="viridis",
        shading="flat",
      )
      a.set_yscale("log")
      a.set_xlabel("training step")
      a.set_ylabel("lag k")
      a.set_title(f"layer {l}: {title}", fontsize=10)
      fig.colorbar(mesh, ax=a)
  return png_bytes(fig)


def _series(diag, key, layer):
  return [r[key][layer] if finite(r[key][layer]) else float("nan") for r in diag]


def _spectrum_figure(diag: List[Dict[str, Any]]) -> bytes:
  fig, ax = canvas(11, 3.4, 1, 2)
  steps = [r["step"] for r in diag]
  a, b = ax[0]
  for l in range(len(diag[-1]["lyapunov"])):
    a.plot(steps, _series(diag, "lyapunov", l), marker=".", label=f"layer {l}")
    b.plot(steps, _series(diag, "spectral_radius", l), marker=".", label=f"ρ(W_hh), layer {l}")
    b.plot(steps, _series(diag, "spectral_norm", l), ls="--", label=f"‖W_hh‖₂, layer {l}")
  a.axhline(0, color="k", lw=0.8)
  a.set_title("largest Lyapunov exponent λ₁ (per step)", fontsize=10)
  b.axhline(1, color="k", lw=0.8)
  b.set_title("spectral radius and norm of W_hh", fontsize=10)
  for x in (a, b):
    x.set_xlabel("training step")
    x.grid(alpha=0.3)
    x.legend(fontsize=8)
  return png_bytes(fig)


def _clipping_figure(diag: List[Dict[str, Any]]) -> bytes:
  fig, ax = canvas(11, 3.4, 1, 2)
  a, b = ax[0]
  steps = [r["step"] for r in diag]
  clip = [r.get("clip_fraction") for r in diag]
  if any(c is not None for c in clip):
    a.plot(steps, [float("nan") if c is None else c for c in clip], marker=".")
    a.set_ylim(-0.05, 1.05)
  else:
    a.text(0.5, 0.5, "clipping off (--clip 0)", ha="center", transform=a.transAxes)
  a.set_title("share of steps clipped since the previous record", fontsize=10)
  if diag[-1].get("grad_norm"):
    for name in diag[-1]["grad_norm"]:
      vals = [r.get("grad_norm", {}).get(name, float("nan")) for r in diag]
      b.plot(steps, [v if finite(v) and v > 0 else float("nan") for v in vals], label=name)
    b.set_yscale("log")
    b.legend(fontsize=7, ncol=2)
  b.set_title("gradient norm per parameter (probe batch)", fontsize=10)
  for x in (a, b):
    x.set_xlabel("training step")
    x.grid(alpha=0.3)
  return png_bytes(fig)


def _bound_figure(diag: List[Dict[str, Any]]) -> bytes:
  n_layers = len(diag[-1]["jacobian_norm"])
  fig, ax = canvas(5.5 * n_layers, 3.6, 1, n_layers)
  picks = sorted({0, len(diag) // 2, len(diag) - 1})
  for l in range(n_layers):
    a = ax[0][l]
    for c, j in enumerate(picks):
      r = diag[j]
      pos = lambda v: v if finite(v) and v > 0 else float("nan")
      a.plot(r["lags"], [pos(v) for v in r["jacobian_norm"][l]], marker="o", color=f"C{c}",
             label=f"measured, step {r['step']}")  # fmt: skip
      a.plot(r["lags"], [pos(v) for v in r["seed_bound"][l]], ls="--", color=f"C{c}",
             label=f"seed's bound ‖W_hh‖^k, step {r['step']}")  # fmt: skip
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("lag k")
    a.set_title(f"layer {l}: ‖∂h_T/∂h_(T-k)‖ and the seed's bound", fontsize=10)
    a.grid(alpha=0.3)
    a.legend(fontsize=7)
  return png_bytes(fig)


def read_run(run_dir: str) -> Dict[str, Any]:
  """What :func:`write_report` shows: ``config``, ``rows`` (metrics), ``diag`` (records),
  ``test``, ``sample``, ``checkpoint_step``, ``torn`` (files whose half-written last line was
  skipped).

  Raises:
    ValueError: when ``run_dir`` holds no run (neither ``config.json`` nor ``metrics.jsonl``).
  """
  cfg_path = os.path.join(run_dir, "config.json")
  metrics_path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.isdir(run_dir) or not (os.path.exists(cfg_path) or os.path.exists(metrics_path)):
    raise ValueError(
      f"run_dir {run_dir!r} holds no jrnn-train run or sweep (expected config.json and "
      "metrics.jsonl, or sweep_metrics.jsonl)"
    )
  huge = 2**62
  rows, torn_m = report.read_rows(metrics_path, huge)
  diag, torn_d = report.read_rows(os.path.join(run_dir, DIAGNOSTICS_NAME), huge)
  out: Dict[str, Any] = {
    "config": report.read_config(cfg_path),
    "rows": rows,
    "diag": diag,
    "torn": [n for n, t in (("metrics.jsonl", torn_m), (DIAGNOSTICS_NAME, torn_d)) if t],
    "test": None,
    "sample": None,
    "checkpoint_step": None,
  }
  try:
    with open(os.path.join(run_dir, "test.json"), encoding="utf-8") as f:
      out["test"] = json.load(f)
  except (OSError, ValueError):
    pass
  try:
    with open(os.path.join(run_dir, "sample.txt"), encoding="utf-8") as f:
      out["sample"] = f.read()
  except OSError:
    pass
  try:
    out["checkpoint_step"] = checkpoint.load_metadata(
      os.path.join(run_dir, "checkpoint.safetensors")
    ).get("step")
  except (OSError, ValueError):
    pass
  return out


def _targets(
  run_dir: str, out: Optional[str], figures: Sequence[str] = FIGURES
) -> Tuple[str, Dict[str, str]]:
  path = out or os.path.join(run_dir, REPORT_NAME)
  stem = os.path.splitext(path)[0]
  return path, {name: f"{stem}_{name}.png" for name in figures}


def _check_overwrite(path: str, pngs: Dict[str, str], overwrite: bool) -> None:
  if overwrite:
    return
  ours = False
  if os.path.exists(path):
    try:
      with open(path, encoding="utf-8", errors="replace") as f:
        ours = MARKER in f.read(4096)
    except OSError:
      ours = False
    if not ours:
      raise ValueError(
        f"out {path} exists and was not written by jrnn-report; pass --overwrite "
        "(overwrite=True) to replace it, or pick another --out"
      )
  clash = [p for p in pngs.values() if os.path.exists(p)]
  if clash and not ours:
    raise ValueError(
      f"{clash[0]} exists beside out {path}, which jrnn-report did not write; pass "
      "--overwrite (overwrite=True) to replace it, or pick another --out"
    )


def _status(run: Dict[str, Any]) -> str:
  cfg, rows = run["config"], run["rows"]
  last = rows[-1]["step"] if rows else 0
  total = cfg.get("steps")
  if run["test"] is not None or (total is not None and run["checkpoint_step"] == total):
    return f"finished: {total} steps"
  ckpt = run["checkpoint_step"]
  where = f"last checkpoint at step {ckpt}" if ckpt is not None else "no checkpoint yet"
  return f"running or stopped: logged up to step {last} of {total} ({where})"


def write_report(run_dir: str, out: Optional[str] = None, *, overwrite: bool = False) -> str:
  """Writes the HTML report of the run in ``run_dir`` and its PNGs; returns the HTML's path.

  Args:
    run_dir: a ``jrnn-train --out`` directory, finished or not; a sweep's directory
      (``jrnn-train --sweep``) gets :mod:`jrnn.training.sweep_report`'s page instead.
    out: the HTML file (default ``run_dir/report.html``); the PNGs go beside it as
      ``<out stem>_<figure>.png``.
    overwrite: replace files jrnn-report did not write.

  Raises:
    ValueError: ``run_dir`` holds no run, or a file in the way was not written by jrnn-report.
  """
  if sweep_report.is_sweep(run_dir):
    path, pngs = _targets(run_dir, out, sweep_report.SWEEP_FIGURES)
    _check_overwrite(path, pngs, overwrite)
    return sweep_report.write_sweep_report(run_dir, path, pngs)
  run = read_run(run_dir)
  path, pngs = _targets(run_dir, out)
  _check_overwrite(path, pngs, overwrite)
  rows, diag, cfg = run["rows"], run["diag"], run["config"]
  metric = val_metric(rows)
  figures: Dict[str, bytes] = {}
  if rows:
    figures["loss"] = _loss_figure(rows, metric)
  if diag:
    figures["flow"] = _flow_figure(diag)
    figures["spectrum"] = _spectrum_figure(diag)
    figures["clipping"] = _clipping_figure(diag)
    figures["bound"] = _bound_figure(diag)
  name = os.path.basename(os.path.normpath(run_dir))
  parts = [
    "<!DOCTYPE html>",
    '<html lang="en"><head><meta charset="utf-8">',
    MARKER,
    f"<title>jrnn run report: {html.escape(name)}</title>",
    f"<style>{CSS}</style></head><body>",
    f"<h1>Run report: {html.escape(name)}</h1>",
    f"<p>{html.escape(_status(run))}. Task <b>{html.escape(str(cfg.get('task', '?')))}</b>.</p>",
  ]
  if run["torn"]:
    parts.append(
      f'<p class="note">Skipped a half-written last line of {", ".join(run["torn"])} '
      "(the run is writing it, or crashed while writing).</p>"
    )
  parts.append("<h2>Loss and validation</h2>")
  if rows:
    last = rows[-1]
    parts.append(img(figures["loss"], "training loss and validation metric against step"))
    parts.append(table([(k, v) for k, v in last.items() if k in ("step", "train_loss", metric)]))
  else:
    parts.append("<p>No metrics logged yet.</p>")
  if run["test"] is not None:
    parts.append("<h3>Test split (read once, at the end)</h3>")
    parts.append(table(list(run["test"].items())))
  parts.append("<h2>Gradient flow</h2>")
  if diag:
    last_d = diag[-1]
    bad = [r["step"] for r in diag if not all(finite(v) for v in _numbers(r))]
    parts.append(
      f'<p class="note">{len(diag)} records, every {cfg.get("diagnose_every", "?")} steps, on a '
      f"fixed probe batch; lags k = {', '.join(map(str, last_d['lags']))}. "
      "See jrnn.training.flow for the definitions. Blank heat-map cells and missing points: a "
      "norm of 0 (below float32's smallest number: the gradient vanished completely) or not "
      "finite.</p>"
    )
    if bad:
      parts.append(f"<p><b>Non-finite values</b> in the records of steps {bad[:10]}.</p>")
    parts.append(img(figures["flow"], "gradient-flow heat maps, lag against training step"))
    parts.append(img(figures["spectrum"], "Lyapunov exponent and spectral radius over training"))
    parts.append(img(figures["bound"], "measured Jacobian norms beside the seed's bound"))
    parts.append(img(figures["clipping"], "clipping rate and per-parameter gradient norms"))
    parts.append(table(_last_record(last_d)))
  else:
    parts.append(
      "<p>No gradient-flow records: train with <code>--diagnose-every N</code> to get them.</p>"
    )
  if run["sample"]:
    parts.append("<h2>Sample</h2>")
    parts.append(f"<pre>{html.escape(run['sample'])}</pre>")
  parts.append("<h2>Configuration</h2>")
  parts.append(f'<div class="cols">{table(sorted(cfg.items()))}</div>')
  parts.append("</body></html>")
  for key, png in figures.items():
    tmp = pngs[key] + ".tmp"
    with open(tmp, "wb") as f:
      f.write(png)
    os.replace(tmp, pngs[key])
  report.write_atomically(path, "\n".join(parts) + "\n")
  return path


def _numbers(row: Dict[str, Any]):
  for k in ("spectral_norm", "spectral_radius", "lyapunov"):
    yield from row[k]
  for k in ("jacobian_norm", "loss_grad"):
    for layer in row.get(k) or []:
      yield from layer


def _last_record(r: Dict[str, Any]) -> List[Tuple[str, Any]]:
  items: List[Tuple[str, Any]] = [("step", r["step"])]
  for l in range(len(r["lyapunov"])):
    items += [
      (f"layer {l}: λ₁", f"{r['lyapunov'][l]:.4g}"),
      (f"layer {l}: ρ(W_hh)", f"{r['spectral_radius'][l]:.4g}"),
      (f"layer {l}: ‖W_hh‖₂", f"{r['spectral_norm'][l]:.4g}"),
      (f"layer {l}: ‖∂h_T/∂h_0‖", f"{r['jacobian_norm'][l][-1]:.3g}"),
    ]
  if r.get("clip_fraction") is not None:
    items.append(("clipped since previous record", f"{r['clip_fraction']:.0%}"))
  return items


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The console script ``jrnn-report RUN_DIR [--out FILE] [--overwrite]``: 0 when written, 2
  with one line ``jrnn-report: error: ...`` otherwise."""
  p = argparse.ArgumentParser(
    prog="jrnn-report",
    description="Write a self-contained HTML report (and PNGs) of a jrnn-train run.",
  )
  p.add_argument("run_dir", metavar="RUN_DIR", help="a jrnn-train --out directory")
  p.add_argument("--out", help=f"the HTML file (default RUN_DIR/{REPORT_NAME})")
  p.add_argument("--overwrite", action="store_true", help="replace files jrnn-report did not write")
  args = p.parse_args(argv)
  try:
    path = write_report(args.run_dir, args.out, overwrite=args.overwrite)
  except (ValueError, OSError) as e:
    p.exit(2, f"jrnn-report: error: {' '.join(str(e).split())}\n")
  print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())


__all__ = ("MARKER", "REPORT_NAME", "main", "read_run", "write_report")
