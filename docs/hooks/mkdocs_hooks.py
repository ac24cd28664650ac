"""MkDocs hooks for jrnn's site (``hooks:`` in mkdocs.yml).

* Root files on the site: a page whose source is one line ``<!-- include: NAME.md -->`` shows
  the repository's ``NAME.md`` (BENCHMARKS.md, CHANGELOG.md), its links rewritten from the
  repository root to the docs folder (``docs/gpu/x.json`` -> ``gpu/x.json``). Links from the docs
  pages to those root files (``../BENCHMARKS.md#...``) are pointed at their pages. The Markdown
  sources stay correct on GitHub; only the built site is rewritten.
* reStructuredText in Markdown pages (``docs/kernels.md`` was a docstring): ``.. math::``,
  ``::`` literal blocks, simple tables and roles become Markdown, with the converter the
  docstrings use (``griffe_rst.py``), outside fenced code.
* Maths: pymdownx.arithmatex leaves ``<div class="arithmatex">\\[ … \\]</div>`` and
  ``<span class="arithmatex">\\( … \\)</span>``; they are turned into MathML here, at build
  time, with latex2mathml (pure Python). Browsers render MathML natively (Chromium since 109,
  Firefox, Safari), so the site needs no JavaScript maths library and works offline. A formula
  latex2mathml cannot convert fails the build, naming the page.
"""
from __future__ import annotations

import html
import logging
import pathlib
import re
import sys

from latex2mathml.converter import convert as _latex_to_mathml

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import griffe_rst  # noqa: E402  pylint: disable=wrong-import-position

log = logging.getLogger("mkdocs.hooks.jrnn")
ROOT = pathlib.Path(__file__).resolve().parents[2]
INCLUDE = re.compile(r"^<!--\s*include:\s*(\S+)\s*-->\s*$", re.M)
# Root files shown as pages: repository path -> page (relative to docs/).
ROOT_PAGES = {"BENCHMARKS.md": "benchmarks.md", "CHANGELOG.md": "changelog.md",
              "README.md": "index.md"}
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
ARITH = re.compile(r'<(div|span) class="arithmatex">(.*?)</\1>', re.S)


def _rewrite_root_links(text: str) -> str:
  """Links written from the repository root, as seen from a page in docs/."""
  def link(m: re.Match) -> str:
    target = m.group(2)
    if re.match(r"^[a-z]+:|^#|^/", target):
      return m.group(0)
    path, _, anchor = target.partition("#")
    if path.startswith("docs/"):
      path = path[len("docs/"):]
    elif path in ROOT_PAGES:
      path = ROOT_PAGES[path]
    else:  # a file outside docs/ (a script, the package): its place in the repository
      return m.group(0)
    return f"{m.group(1)}({path}{'#' + anchor if anchor else ''})"
  return re.sub(r"(\]|\]\[[^\]]*\])\(([^)\s]+)\)", link, text)


def _rewrite_up_links(text: str, depth: int) -> str:
  """``../BENCHMARKS.md`` from a docs page -> the page that shows it."""
  up = "../" * depth
  for src, page in ROOT_PAGES.items():
    text = re.sub(rf"\]\({re.escape(up + src)}(#[^)]*)?\)",
                  lambda m, page=page: f"]({page}{m.group(1) or ''})", text)
  return text


def _folder_links(text: str, page) -> str:
  """A link to a results folder (``adding/t400_irnn_24000/``) points at its ``results.md``."""
  here = (ROOT / "docs" / page.file.src_uri).parent

  def link(m: re.Match) -> str:
    folder = here / m.group(2)
    if (folder / "results.md").is_file():
      return f"{m.group(1)}({m.group(2)}results.md)"
    return m.group(0)
  return re.sub(r"(\])\(([\w./-]+/)\)", link, text)


def _rst_outside_fences(text: str) -> str:
  """The docstring converter applied to the Markdown between fenced code blocks."""
  if ".. math::" not in text and not griffe_rst.ROLE.search(text):
    return text
  out, last = [], 0
  for m in FENCE.finditer(text):
    out += [griffe_rst.rst_to_markdown(text[last:m.start()], griffe_rst.resolve_on_pages), m.group(0)]
    last = m.end()
  out.append(griffe_rst.rst_to_markdown(text[last:], griffe_rst.resolve_on_pages))
  return "".join(out)


class _MultiNameFilter(logging.Filter):
  """Drops griffe's warning for an ``a, b: ...`` Args item: griffe reads the list as one name;
  griffe_rst checks each name instead."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not re.search(r"Parameter '[^']*,[^']*' does not appear", record.getMessage())


def on_config(config):  # noqa: D103
  for name in ("griffe", "mkdocs.plugins.griffe"):
    logging.getLogger(name).addFilter(_MultiNameFilter())
  return config


def on_page_markdown(markdown, page, config, files):  # noqa: D103
  del config, files
  m = INCLUDE.search(markdown)
  if m:
    source = ROOT / m.group(1)
    markdown = INCLUDE.sub(lambda _: _rewrite_root_links(source.read_text(encoding="utf-8")),
                           markdown)
  markdown = _folder_links(markdown, page)
  depth = page.file.src_uri.count("/") + 1
  return _rst_outside_fences(_rewrite_up_links(markdown, depth))


def _mathml(match: re.Match, where: str) -> str:
  tag, body = match.groups()
  tex = html.unescape(body).strip()
  display = "block" if tag == "div" else "inline"
  for open_, close in (("\\[", "\\]"), ("\\(", "\\)"), ("$$", "$$"), ("$", "$")):
    if tex.startswith(open_) and tex.endswith(close):
      tex = tex[len(open_):len(tex) - len(close)].strip()
      break
  try:
    mathml = _latex_to_mathml(tex, display=display)
  except Exception as e:  # pylint: disable=broad-except
    log.warning("%s: latex2mathml cannot convert %r: %s", where, tex, e)
    return match.group(0)
  return f'<{tag} class="arithmatex">{mathml}</{tag}>'


def on_page_content(html_text, page, config, files):  # noqa: D103
  del config, files
  return ARITH.sub(lambda m: _mathml(m, page.file.src_uri), html_text)
