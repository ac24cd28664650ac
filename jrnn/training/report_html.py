"""The pieces every ``jrnn-report`` page shares: the generator marker, the style, matplotlib
canvases rendered to PNG bytes, and small HTML helpers (:mod:`jrnn.training.run_report` for a
run, :mod:`jrnn.training.sweep_report` for a sweep)."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

MARKER = '<meta name="generator" content="jrnn-report">'

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 0.8em; white-space: pre-wrap; }
.note { color: #555; font-size: 0.9em; }
.cols { columns: 3; }
"""


def finite(x: Any) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x)


def canvas(width: float, height: float, rows: int = 1, cols: int = 1):
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(width, height))
  FigureCanvasAgg(fig)
  axes = fig.subplots(rows, cols, squeeze=False)
  return fig, axes


def png_bytes(fig) -> bytes:
  buf = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
  return buf.getvalue()


def val_metric(rows: List[Dict[str, Any]]) -> Optional[str]:
  for r in rows:
    for k in r:
      if k.startswith("val_"):
        return k
  return None


def table(items: Sequence[Tuple[str, Any]]) -> str:
  cells = "".join(
    f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in items
  )
  return f"<table>{cells}</table>"


def img(png: bytes, alt: str) -> str:
  data = base64.b64encode(png).decode("ascii")
  return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


__all__ = ("CSS", "MARKER", "canvas", "finite", "img", "png_bytes", "table", "val_metric")
