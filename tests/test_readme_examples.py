"""Every ```python block of README.md and docs/*.md runs verbatim.

Blocks are found when the tests are collected (the docs change; nothing here knows their order).
Each runs in a fresh namespace, all of them in one fresh interpreter with JAX's defaults (the
test session's float64 and rank-promotion settings would not be a reader's), with jrnn's own
DeprecationWarnings turned into errors: an example must not teach an old name.

A block can be left out only by a marker on the line right before its fence, which says why:

    <!-- skip-example: needs a CUDA GPU -->
"""
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
SKIP = re.compile(r"<!--\s*skip-example:\s*(.*?)\s*-->\s*$")

RUNNER = r"""
import contextlib, io, json, sys, time, traceback, warnings
warnings.filterwarnings("error", category=DeprecationWarning, message=r".*jrnn")
blocks, results = json.load(sys.stdin), {}
for block_id, code in blocks:
  start = time.perf_counter()
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      exec(compile(code, block_id, "exec"), {"__name__": "__example__"})
    error = None
  except BaseException:  # pylint: disable=broad-except
    error = "\n".join(traceback.format_exc().strip().splitlines()[-6:])
  results[block_id] = (error, round(time.perf_counter() - start, 1))
print(json.dumps(results))
"""


def _blocks():
  """``(id "file:line", code, skip reason or None)`` for every python block."""
  out = []
  for path in DOCS:
    text = path.read_text(encoding="utf-8")
    for m in FENCE.finditer(text):
      line = text.count("\n", 0, m.start()) + 1
      before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
      skip = SKIP.search(before)
      out.append((f"{path.relative_to(ROOT).as_posix()}:{line}", m.group(1),
                  skip.group(1) if skip else None))
  return out


BLOCKS = _blocks()


@pytest.fixture(scope="module")
def results():
  todo = [(block_id, code) for block_id, code, skip in BLOCKS if skip is None]
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_ENABLE_X64")}
  env.setdefault("JAX_PLATFORMS", "cpu")
  proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(todo), text=True,
                        capture_output=True, cwd=ROOT, env=env, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_blocks_are_found():
  ids = [b[0] for b in BLOCKS]
  assert any(i.startswith("README.md:") for i in ids) and len(ids) >= 5, ids
  assert all(b[2] for b in BLOCKS if b[2] is not None)  # a skip always says why


@pytest.mark.slow
@pytest.mark.parametrize("block_id, code, skip", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_example_runs_verbatim(results, block_id, code, skip):
  del code
  if skip is not None:
    pytest.skip(f"{block_id}: {skip}")
  error, seconds = results[block_id]
  assert error is None, f"{block_id} fails ({seconds} s):\n{error}"
