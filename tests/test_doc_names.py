"""Every ``jrnn.X.Y`` name written in a docstring (jrnn/**/*.py), README.md or docs/*.md resolves
after ``import jrnn`` by plain attribute access, without a DeprecationWarning.

A name that resolves only through the 0.2 deprecation shims (``jrnn.Trajectory`` for
``jrnn.reference.Trajectory``) counts as unresolved: the text should name where it lives now.
"""
import ast
import importlib.util
import pathlib
import re
import warnings

import pytest

import jrnn

ROOT = pathlib.Path(__file__).resolve().parents[1]
# `jrnn.` not preceded by a word character, a dot, a slash or a dash (so not `test_jrnn.py`,
# `src/jrnn.x`, `jrnn-train`), then dotted identifiers; a sentence's final dot is not taken.
NAME = re.compile(r"(?<![\w./-])jrnn(?:\.[A-Za-z_]\w*)+")
# Old spellings a doc names on purpose, as old spellings: file -> names.
OLD_SPELLINGS_ON_PURPOSE = {
    "docs/usage.md": {"jrnn.make_train_step"},  # "Moving from 0.1 (flat names such as ...)"
}


def _docstrings(path: pathlib.Path):
  """``(first line number, text)`` of the module's, every class's and every function's
  docstring."""
  tree = ast.parse(path.read_text(encoding="utf-8"))
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      first = node.body[0] if node.body else None
      if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
          and isinstance(first.value.value, str)):
        yield first.value.lineno, first.value.value


def _references():
  """``(file:line, relative file, name)`` for every dotted jrnn name in the scanned texts."""
  for path in sorted((ROOT / "jrnn").rglob("*.py")):
    for line0, text in _docstrings(path):
      for i, line in enumerate(text.splitlines()):
        for m in NAME.finditer(line):
          rel = path.relative_to(ROOT).as_posix()
          yield f"{rel}:{line0 + i}", rel, m.group(0)
  for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
    rel = path.relative_to(ROOT).as_posix()
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
      for m in NAME.finditer(line):
        yield f"{rel}:{i}", rel, m.group(0)


def _resolve(name: str):
  """``None`` when ``name`` resolves; else ``("missing-extra", module)`` or
  ``("unresolved", why)``."""
  obj, parts = jrnn, name.split(".")
  for k in range(1, len(parts)):
    with warnings.catch_warnings():
      warnings.simplefilter("error")
      try:
        obj = getattr(obj, parts[k])
      except DeprecationWarning as e:
        return "unresolved", f"only through a deprecation shim: {e}"
      except ImportError as e:
        missing = getattr(e.__cause__, "name", None) or getattr(e, "name", None)
        if missing and importlib.util.find_spec(missing.split(".")[0]) is None:
          return "missing-extra", missing
        return "unresolved", f"importing it fails: {e}"
      except AttributeError:
        return "unresolved", f"{'.'.join(parts[:k + 1])} does not exist"
  return None


def test_the_scan_finds_names_in_every_kind_of_source():
  refs = list(_references())
  assert len(refs) > 100
  kinds = {where.split(":")[0].split("/")[0] for where, _, _ in refs}
  assert {"jrnn", "README.md", "docs"} <= kinds
  assert NAME.findall("see `jrnn.training.seeds`. And jrnn.forward, not jrnn-train or "
                      "tests/test_jrnn.py") == ["jrnn.training.seeds", "jrnn.forward"]


def test_the_resolver_can_fail():
  assert _resolve("jrnn.forward") is None
  assert _resolve("jrnn.training.seeds.take_seed") is None
  assert _resolve("jrnn.sharding.data_mesh")[0] == "unresolved"
  assert "deprecation shim" in _resolve("jrnn.Trajectory")[1]


def test_every_jrnn_name_in_docstrings_and_docs_resolves():
  unresolved, needs_extra = [], []
  for where, rel, name in _references():
    result = _resolve(name)
    if result is None or name in OLD_SPELLINGS_ON_PURPOSE.get(rel, ()):
      continue
    kind, why = result
    (needs_extra if kind == "missing-extra" else unresolved).append(f"{where}: {name} ({why})")
  assert not unresolved, "names that do not resolve after `import jrnn`:\n" + "\n".join(
      unresolved)
  if needs_extra:
    pytest.skip("every other name resolves; not checked (optional package not installed): "
                + "; ".join(needs_extra))
