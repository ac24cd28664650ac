"""The documentation site (mkdocs.yml, docs/): every public name has an API page, the
reStructuredText of the docstrings becomes Markdown, and ``mkdocs build --strict`` passes.

The public names: ``jrnn.__all__``, and each public namespace's ``__all__`` (a module without
one: the public names it defines), the namespaces' public submodules included. A name counts as
documented when an API page (docs/api/*.md) has a ``::: path`` directive for it, or the built
page has the anchor mkdocstrings gives it (``id="jrnn.training.make_train_step"``).
"""
import importlib
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

import jrnn

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "hooks"))
griffe_rst = pytest.importorskip("griffe_rst", reason="the docs extra (griffe) is not installed")

# The public namespaces and their public submodules (each has a section on an API page).
NAMESPACES = (
    "jrnn", "jrnn.diagnostics", "jrnn.reference", "jrnn.training", "jrnn.interop",
    "jrnn.parallel", "jrnn.online", "jrnn.kernels", "jrnn.engine", "jrnn.data",
    "jrnn.training.checkpoint", "jrnn.training.sharding", "jrnn.training.seeds",
    "jrnn.training.sweep", "jrnn.training.sweep_run",
    "jrnn.training.classification", "jrnn.training.config", "jrnn.training.tasks",
    "jrnn.training.loop", "jrnn.training.report", "jrnn.training.distributed",
    "jrnn.training.cli", "jrnn.training.flow", "jrnn.training.run_report",
    "jrnn.training.sweep_report", "jrnn.training.report_html",
    "jrnn.interop.flax_linen", "jrnn.interop.flax_nnx",
    "jrnn.interop.equinox", "jrnn.parallel.linear_scan", "jrnn.parallel.config",
    "jrnn.parallel.newton", "jrnn.parallel.elk", "jrnn.parallel.adjoint", "jrnn.parallel.layer",
    "jrnn.kernels.pallas_triton", "jrnn.data.adding", "jrnn.data.copy_task", "jrnn.data.sine",
    "jrnn.data.charlm", "jrnn.data.mnist1d",
)
# Optional frameworks a namespace needs: where one is missing, its page cannot be checked.
NEEDS = {"jrnn.interop.flax_linen": "flax", "jrnn.interop.flax_nnx": "flax",
         "jrnn.interop.equinox": "equinox"}


def _public(namespace: str) -> list[str]:
  if namespace in NEEDS and importlib.util.find_spec(NEEDS[namespace]) is None:
    pytest.skip(f"{namespace} needs {NEEDS[namespace]}")
  return [f"{namespace}.{n}" for n in griffe_rst.public_names(importlib.import_module(namespace))]


def _every_public_name() -> list[str]:
  names = set()
  for ns in NAMESPACES:
    names.add(ns)
    names.update(_public(ns))
  return sorted(names)


def undocumented(names, directives, anchors) -> list[str]:
  """The names with neither a directive nor an anchor; a name whose object a directive shows
  under another path (``jrnn.recurrence`` as ``jrnn.recurrence.recurrence``) counts as
  documented."""
  shown = {id(griffe_rst._lookup(d)) for d in directives}  # pylint: disable=protected-access
  missing = []
  for name in names:
    if name in directives or name in anchors:
      continue
    obj = griffe_rst._lookup(name)  # pylint: disable=protected-access
    if (callable(obj) or isinstance(obj, type)) and id(obj) in shown:
      continue
    missing.append(name)
  return missing


def test_every_namespace_has_a_directive_on_an_api_page():
  directives = griffe_rst.api_directives()
  without = [ns for ns in NAMESPACES if ns not in directives]
  assert not without, f"namespaces with no ::: directive in docs/api/*.md: {without}"
  names = set(jrnn.__all__)
  assert {"forward", "training", "parallel", "recurrence"} <= names
  assert "jrnn.training.make_train_step" in _public("jrnn.training")
  assert "jrnn.diagnostics.jacobian_norms" in _public("jrnn.diagnostics")  # no __all__ there


def test_the_coverage_check_can_fail():
  directives = {"jrnn": "api/jrnn.md", "jrnn.recurrence.recurrence": "api/jrnn.md"}
  anchors = {"jrnn.forward"}
  assert undocumented(["jrnn.forward", "jrnn.recurrence", "jrnn.step"], directives,
                      anchors) == ["jrnn.step"]


# --- the converter from the docstrings' reStructuredText to Markdown ---

def test_math_blocks_become_arithmatex_blocks_at_their_indentation():
  text = "Intro.\n\n  .. math::\n\n     a = b \\qquad\n     c = d\n\n  after"
  out = griffe_rst.rst_to_markdown(text)
  assert "  $$\n  a = b \\qquad\n  c = d\n  $$" in out and ".. math" not in out
  assert out.rstrip().endswith("after")


def test_literal_blocks_become_fenced_code_and_example_stays_out_of_sections():
  out = griffe_rst.rst_to_markdown("A stack converts::\n\n  x = 1\n  y = 2\n\nafter")
  assert "A stack converts:\n\n```python\nx = 1\ny = 2\n```" in out
  out = griffe_rst.rst_to_markdown("Example::\n\n  >>> f(1)\n")
  assert "```pycon\n>>> f(1)\n```" in out and not out.startswith("Example:\n")


def test_simple_tables_become_pipe_tables_with_continuation_lines_joined():
  text = ("=====  ==========\nname   what\n=====  ==========\n``a``  one |x|\n"
          "       more\n``b``  two\n=====  ==========\n")
  out = griffe_rst.rst_to_markdown(text).splitlines()
  assert out[:4] == ["| name | what |", "|---|---|", "| ``a`` | one \\|x\\| more |",
                     "| ``b`` | two |"]


@pytest.mark.parametrize("role, expected", [
    (":func:`jrnn.forward`", "[`jrnn.forward`][jrnn.forward]"),
    (":func:`~jrnn.unroll.forward`", "[`forward`][jrnn.forward]"),  # shown where re-exported
    (":mod:`jrnn.loops`", "`jrnn.loops`"),  # exists, private: code, no link
    (":func:`jrnn.no_such_name`", "[`jrnn.no_such_name`][jrnn.no_such_name]"),  # fails a build
])
def test_roles_become_cross_references_or_code(role, expected):
  assert griffe_rst.convert_roles(role) == expected


def test_google_items_wrapped_names_and_unindented_continuations():
  lines = ["Args:", "  a, b,", "    c: as f.", "Raises:", "  ValueError: bad", "  more text",
           "  TypeError: worse"]
  out = griffe_rst._items_sections(lines)  # pylint: disable=protected-access
  assert out == ["Args:", "  a, b, c: as f.", "Raises:", "  ValueError: bad",
                 "    more text", "  TypeError: worse"]
  assert griffe_rst.multi_names("\n".join(out)) == [["a", "b", "c"]]


# --- the strict build ---

@pytest.fixture(scope="module")
def site(tmp_path_factory):
  """The strict build's output folder: the one .ci/run built just before the suite
  (``JRNN_CI_DOCS_SITE``), else built here."""
  if os.environ.get("JRNN_CI_DOCS_SITE"):
    out = pathlib.Path(os.environ["JRNN_CI_DOCS_SITE"])
    assert (out / "index.html").is_file(), f"JRNN_CI_DOCS_SITE={out} holds no built site"
    return out
  if shutil.which("mkdocs") is None and importlib.util.find_spec("mkdocs") is None:
    pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
  out = tmp_path_factory.mktemp("site")
  proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                         str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                        check=False)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
  return out


@pytest.mark.slow
def test_mkdocs_build_strict_passes_and_every_public_name_has_an_anchor(site):
  out = site
  anchors = set()
  for page in (out / "api").glob("*.html"):
    anchors.update(__import__("re").findall(r'id="(jrnn[\w.]*)"', page.read_text("utf-8")))
  missing = undocumented(_every_public_name(), griffe_rst.api_directives(), anchors)
  assert not missing, f"public names with no entry on an API page: {missing}"
  for page in ("index.html", "usage.html", "training.html", "interop.html", "benchmarks.html",
               "changelog.html", "api/jrnn.html", "search/search_index.json"):
    assert (out / page).is_file(), page


@pytest.mark.slow
def test_built_pages_render_maths_and_figures_and_no_raw_rst(site):
  out = site
  html = {p.relative_to(out).as_posix(): p.read_text("utf-8") for p in out.rglob("*.html")}
  assert "<math" in html["api/diagnostics.html"] and "<math" in html["kernels.html"]
  assert re.search(r'<img alt="[^"]+" src="mnist1d/curves.png"', html["mnist1d.html"])
  assert (out / "mnist1d" / "curves.png").is_file()
  for name, text in html.items():
    for raw in (".. math::", ":func:`", ":class:`", 'class="arithmatex">\\['):
      assert raw not in text, f"{name} shows {raw!r} unconverted"
