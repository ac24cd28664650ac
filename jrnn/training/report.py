"""What a run writes besides its checkpoint: ``metrics.jsonl`` (one JSON object a line),
``config.json`` and ``loss.png``.

``metrics.jsonl`` is appended one whole line at a time. A crash can still leave its last line
half-written; :func:`read_rows` drops such a line (the checkpoint the run resumes from predates
it, and the resumed run writes it again), while a damaged line anywhere else is an error naming
the file and the line.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Tuple


def write_atomically(path: str, text: str) -> None:
  """Replaces ``path`` by ``text`` in one rename, so a reader sees the old or the new file."""
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_rows(path: str, upto: int) -> Tuple[List[Dict[str, Any]], bool]:
  """The rows of ``path`` with ``step <= upto``, and whether a torn last line was dropped.

  Raises:
    ValueError: naming the file and line, for a damaged line that is not the last one.
  """
  if not os.path.exists(path):
    return [], False
  with open(path, encoding="utf-8", errors="replace") as f:
    lines = f.read().split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  rows, torn = [], False
  for i, line in enumerate(lines):
    try:
      row = json.loads(line)
      if not isinstance(row, dict) or not isinstance(row.get("step"), int):
        raise ValueError("not a metrics row")
    except ValueError:
      if i == len(lines) - 1:
        torn = True  # the write a crash interrupted
        break
      raise ValueError(
        f"{path}: line {i + 1} is not a metrics row; delete that line (or the file) to resume"
      ) from None
    rows.append(row)
  return [r for r in rows if r["step"] <= upto], torn


def write_rows(path: str, rows: List[Dict[str, Any]]) -> None:
  write_atomically(path, "".join(json.dumps(r) + "\n" for r in rows))


def append_row(path: str, row: Dict[str, Any]) -> None:
  """Appends ``row`` as one line, in one ``write`` call."""
  with open(path, "a", encoding="utf-8") as f:
    f.write(json.dumps(row) + "\n")


def write_config(path: str, config: Dict[str, Any], **extra: Any) -> None:
  """``config.json``: ``{"config": config, **extra}`` (``extra``: e.g. the run id)."""
  write_atomically(path, json.dumps({"config": config, **extra}, indent=1, sort_keys=True) + "\n")


def read_config(path: str, field: str = "config") -> Any:
  """The config recorded in ``path`` (``config.json``); ``{}`` if there is none or it is
  unreadable (it only serves to detect a foreign checkpoint). Another ``field`` (``"run_id"``):
  its value, ``None`` if absent."""
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    if field != "config":
      return saved.get(field)
    return saved["config"] if isinstance(saved.get("config"), dict) else {}
  except (OSError, ValueError, AttributeError):
    return {} if field == "config" else None


def plot(rows: List[Dict[str, Any]], metric: str, path: str) -> None:
  """The training loss and ``metric`` against step, saved to ``path`` (PNG, atomically).

  Uses matplotlib's object API (no ``pyplot``): no global figure state, and a lighter import.
  """
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(7, 4))
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  steps = [r["step"] for r in rows]
  ax.plot(steps, [r["train_loss"] for r in rows], label="train loss (mean per step, nats)")
  if any(metric in r for r in rows):
    ax.plot(
      [r["step"] for r in rows if metric in r],
      [r[metric] for r in rows if metric in r],
      label=metric,
    )
  ax.set_xlabel("step")
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path + ".tmp", dpi=100, format="png")
  os.replace(path + ".tmp", path)
