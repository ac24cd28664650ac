"""Every docstring example (``>>>``) in the jrnn package runs, and shows what it says it shows.

The examples run as doctests (``ELLIPSIS | NORMALIZE_WHITESPACE``), all in one fresh interpreter
with JAX's defaults (the test session's float64 and rank-promotion settings would not be a
reader's) and jrnn's own DeprecationWarnings turned into errors, as in test_readme_examples.py.
Each docstring runs in an empty namespace, not its module's: an example imports what it uses, so
it runs as a reader copies it.

That interpreter finds the docstrings the way doctest does: it walks the package with pkgutil,
imports every module and asks ``doctest.DocTestFinder``. A module whose optional framework (flax,
equinox, torch) is missing is skipped with that reason. The tests are parametrized by a second,
static scan of the same files (``ast``, nothing imported, so collecting this file in every xdist
worker imports neither flax nor equinox there); ``test_docstrings_are_found`` checks that the two
scans agree, so neither can drop a docstring unnoticed.
"""
import ast
import doctest
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jrnn"
# The docstrings with examples when this test was written: finding fewer means the search broke.
KNOWN = ("jrnn.init.init_params", "jrnn.interop.equinox", "jrnn.interop.flax_linen",
         "jrnn.interop.flax_nnx", "jrnn.training.seeds", "jrnn.training.sweep")

RUNNER = r"""
import doctest, importlib, io, json, pkgutil, sys, time, warnings
warnings.filterwarnings("error", category=DeprecationWarning, message=r".*jrnn")
import jrnn
OPTIONAL = ("flax", "equinox", "torch")
finder = doctest.DocTestFinder()
flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
results, skipped = {}, {}
for info in pkgutil.walk_packages(jrnn.__path__, "jrnn.", onerror=lambda name: None):
  try:
    module = importlib.import_module(info.name)
  except ModuleNotFoundError as e:
    if (e.name or "").split(".")[0] not in OPTIONAL:
      raise
    skipped[info.name] = f"needs {e.name}, not installed"
    continue
  for test in finder.find(module):
    if not test.examples:
      continue
    test.globs = {"__name__": "__example__"}  # nothing from the module: the example imports
    report = io.StringIO()
    start = time.perf_counter()
    failed, attempted = doctest.DocTestRunner(optionflags=flags).run(test, out=report.write)
    results[test.name] = (report.getvalue() if failed else None, failed, attempted,
                          round(time.perf_counter() - start, 1))
print(json.dumps({"results": results, "skipped": skipped}))
"""


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _with_examples(node) -> bool:
  doc = ast.get_docstring(node, clean=False)
  return bool(doc and doctest.DocTestParser().get_examples(doc))


def _static_docstrings():
  """``(doctest name, module)`` for every docstring with examples, as DocTestFinder names them:
  the module's, and its classes' and functions' (and, recursively, their classes' members')."""
  out = []
  for path in sorted(PACKAGE.rglob("*.py")):
    module = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if _with_examples(tree):
      out.append((module, module))
    todo = [(module, tree)]
    while todo:
      prefix, scope = todo.pop()
      for node in scope.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
          name = f"{prefix}.{node.name}"
          if _with_examples(node):
            out.append((name, module))
          if isinstance(node, ast.ClassDef):
            todo.append((name, node))
  return sorted(out)


DOCSTRINGS = _static_docstrings()


@pytest.fixture(scope="module")
def results():
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_ENABLE_X64", "JAX_NUMPY_RANK_PROMOTION"))}
  env.setdefault("JAX_PLATFORMS", "cpu")
  proc = subprocess.run([sys.executable, "-c", RUNNER], text=True, capture_output=True, cwd=ROOT,
                        env=env, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_docstrings_are_found(results):
  names = [name for name, _ in DOCSTRINGS]
  assert set(KNOWN) <= set(names), sorted(set(KNOWN) - set(names))
  # What pkgutil + DocTestFinder found (or skipped with its module) is what the static scan found.
  dynamic = set(results["results"]) | {n for n, m in DOCSTRINGS if m in results["skipped"]}
  assert dynamic == set(names), (f"only DocTestFinder: {sorted(dynamic - set(names))}; "
                                 f"only the static scan: {sorted(set(names) - dynamic)}")


@pytest.mark.slow
@pytest.mark.parametrize("name, module", DOCSTRINGS, ids=[name for name, _ in DOCSTRINGS])
def test_docstring_examples_run(results, name, module):
  if module in results["skipped"]:
    pytest.skip(f"{module}: {results['skipped'][module]}")
  assert name in results["results"], f"{name}: DocTestFinder did not find it (see the test above)"
  report, failed, attempted, seconds = results["results"][name]
  assert failed == 0, f"{name}: {failed} of {attempted} examples fail ({seconds} s):\n{report}"
