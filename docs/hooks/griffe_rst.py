"""A griffe extension: the reStructuredText that jrnn's Google-style docstrings carry, as Markdown.

jrnn's docstrings are Google style (``Args:``, ``Returns:``, ``Raises:``) with a few
reStructuredText constructs that mkdocstrings would otherwise print verbatim:

* ``.. math::`` blocks become ``$$ … $$`` blocks (pymdownx.arithmatex; the ``math`` hook in
  ``mkdocs_hooks.py`` turns them into MathML at build time);
* a paragraph ending in ``::`` followed by an indented block becomes a paragraph ending in ``:``
  and a fenced code block (``pycon`` when the block starts with ``>>>``, else ``python``);
* RST simple tables (``====  ====`` borders) become Markdown pipe tables;
* roles (``:func:`x```, ``:class:`~a.b.C```, ``:mod:``, ``:data:``, ``:attr:``, ``:meth:``,
  ``:exc:``, ``:obj:``) become mkdocstrings cross-references ``[`x`][x]``, resolved in the
  docstring's scope (``scoped_crossrefs``) so a short name means what it means in the module.
  A role naming something that does not exist is left as a cross-reference, so the strict
  build fails on it; a role naming a private module or name that exists but has no page (the
  layers under the public namespaces, ``jrnn.loops`` say) is printed as code.

``double backticks`` need nothing: they are a Markdown code span already. The docstring text is
rewritten once, when griffe loads the object, before any parser reads it; the source files are
not touched.
"""
from __future__ import annotations

import ast
import functools
import importlib
import inspect
import pathlib
import re
import sys
import textwrap

import griffe

_MATH = re.compile(r"^([ \t]*)\.\. math::[ \t]*$")
_LITERAL = re.compile(r"^(.*\S)::[ \t]*$")
_BORDER = re.compile(r"^([ \t]*)(=+)((?:[ \t]+=+)+)[ \t]*$")
ROLE = re.compile(r":(func|class|mod|data|attr|meth|exc|obj):`(~?)([^`<>]+?)`")
# Section titles griffe's Google parser knows: ``Example::`` must not become one.
_SECTION = re.compile(r"^\s*(Examples?|Notes?|Args|Arguments|Returns|Raises|Yields|Attributes|"
                      r"Warnings?|References?|Parameters)$")


def _indent(line: str) -> int:
  return len(line) - len(line.lstrip())


def _indented_block(lines: list[str], start: int, base: int) -> int:
  """Index one past the block of lines indented more than ``base`` from ``start`` (blank
  lines inside it included, trailing ones not)."""
  end = j = start
  while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
    j += 1
    if lines[j - 1].strip():
      end = j
  return end


def _math_and_literals(lines: list[str]) -> list[str]:
  out: list[str] = []
  i = 0
  while i < len(lines):
    line = lines[i]
    math = _MATH.match(line)
    literal = None if math else _LITERAL.match(line)
    if (math or literal) and not line.lstrip().startswith((">>>", "$")):
      base = _indent(line)
      j = i + 1
      while j < len(lines) and not lines[j].strip():
        j += 1
      end = _indented_block(lines, j, base)
      if end > j:
        pad = " " * base
        body = textwrap.dedent("\n".join(lines[j:end])).splitlines()
        if math:
          out += [pad + "$$", *(pad + b if b.strip() else "" for b in body), pad + "$$"]
        else:
          head = literal.group(1)
          if _SECTION.match(head):
            head = f"{head.strip()} (code)"
            head = pad + head
          out += [head + ":", ""]
          lang = "pycon" if body and body[0].lstrip().startswith(">>>") else "python"
          out += [pad + "```" + lang, *(pad + b if b.strip() else "" for b in body), pad + "```"]
        out.append("")
        i = end
        continue
    out.append(line)
    i += 1
  return out


def _table_cell(text: str) -> str:
  """A cell's text with ``|`` escaped outside code spans."""
  parts = re.split(r"(``.*?``|`[^`]*`)", text)
  return "".join(p if p.startswith("`") else p.replace("|", "\\|") for p in parts).strip()


def _tables(lines: list[str]) -> list[str]:
  out: list[str] = []
  i = 0
  while i < len(lines):
    border = _BORDER.match(lines[i])
    if not border:
      out.append(lines[i])
      i += 1
      continue
    pad = border.group(1)
    spans = [(m.start(), m.end()) for m in re.finditer(r"=+", lines[i])]
    rows: list[list[str]] = []
    header = None
    j = i + 1
    while j < len(lines):
      if _BORDER.match(lines[j]):
        if header is None and len(rows) >= 1 and j + 1 < len(lines):
          header, rows = rows, []
          j += 1
          continue
        break
      if not lines[j].strip():
        j += 1
        continue
      cells = []
      for k, (a, _) in enumerate(spans):
        b = spans[k + 1][0] if k + 1 < len(spans) else len(lines[j])
        cells.append(lines[j][a:b].strip())
      if rows and not cells[0]:  # a continuation line: its text joins the row above
        rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells)]
      else:
        rows.append(cells)
      j += 1
    if header is None:  # a table with no header row: the first row heads it
      header, rows = rows[:1], rows[1:]
    head = [" ".join(col).strip() for col in zip(*header)] if header else []
    out.append(pad + "| " + " | ".join(_table_cell(c) for c in head) + " |")
    out.append(pad + "|" + "|".join("---" for _ in head) + "|")
    for row in rows:
      out.append(pad + "| " + " | ".join(_table_cell(c) for c in row) + " |")
    i = j + 1
  return out


DOCS = pathlib.Path(__file__).resolve().parents[1]
DIRECTIVE = re.compile(r"^:::[ \t]+([\w.]+)", re.M)


def _lookup(path: str):
  """The object a dotted path names, as attribute access from the top package reads it
  (``jrnn.recurrence`` is the function), else by importing; ``_MISSING`` if neither finds it."""
  parts = path.split(".")
  try:
    obj = importlib.import_module(parts[0])
    for name in parts[1:]:
      obj = getattr(obj, name)
    return obj
  except (ImportError, AttributeError):
    pass
  for k in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module(".".join(parts[:k]))
    except ImportError:
      continue
    for name in parts[k:]:
      try:
        obj = getattr(obj, name)
      except (AttributeError, ImportError):
        return _MISSING
    return obj
  return _MISSING


_MISSING = object()


def _defined_names(path: str) -> list[tuple[str, int, str | None]]:
  """``(name, line, value source or None)`` for every top-level name a module's file defines:
  functions, classes, assignments (``a, b = 1, 2`` included), in source order."""
  tree = ast.parse(pathlib.Path(path).read_text(encoding="utf-8"))
  out = []
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      out.append((node.name, node.lineno, None))
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      for target in targets:
        if isinstance(target, ast.Name):
          out.append((target.id, node.lineno, None))
        elif isinstance(target, ast.Tuple):
          values = (node.value.elts if isinstance(node.value, ast.Tuple)
                    and len(node.value.elts) == len(target.elts) else [None] * len(target.elts))
          for elt, value in zip(target.elts, values):
            if isinstance(elt, ast.Name):
              out.append((elt.id, node.lineno, ast.unparse(value) if value else None))
  return out


def public_names(module) -> list[str]:
  """A module's public names: its ``__all__``, else the public names its own file defines
  (what it imports is documented where it is defined)."""
  names = getattr(module, "__all__", None)
  if names is not None:
    return list(names)
  seen = []
  for name, _, _ in _defined_names(module.__file__):
    if not name.startswith("_") and name not in seen and hasattr(module, name):
      seen.append(name)
  return seen


def api_directives(docs: pathlib.Path = DOCS) -> dict[str, str]:
  """``{dotted path: page}`` for every ``::: path`` directive of the API pages."""
  out = {}
  for page in sorted((docs / "api").glob("*.md")):
    for m in DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
      out[m.group(1)] = page.relative_to(docs).as_posix()
  return out


@functools.lru_cache(maxsize=None)
def _rendered() -> dict[str, object]:
  """``{path: object}`` for what the API pages show: each directive's object and, for a
  module, its public names. A public name that a page shows by an explicit directive of its
  own (``::: jrnn.recurrence.recurrence``: griffe reads ``jrnn.recurrence`` as the submodule)
  is listed under that directive's path only."""
  shown: dict[str, object] = {}
  directives = [(path, _lookup(path)) for path in api_directives()]
  explicit = {id(obj) for _, obj in directives
              if inspect.isfunction(obj) or inspect.isclass(obj)}
  for path, obj in directives:
    if obj is _MISSING:
      continue
    shown.setdefault(path, obj)
    if inspect.ismodule(obj):
      for name in public_names(obj):
        member = getattr(obj, name, _MISSING)
        if member is _MISSING or inspect.ismodule(member) or id(member) in explicit:
          continue
        shown.setdefault(f"{path}.{name}", member)
  return shown


def _shown_as(path: str) -> str | None:
  """The path under which a page shows what ``path`` names: itself, or, for a function, class
  or module, where it is re-exported (``jrnn.unroll.forward`` is shown as ``jrnn.forward``)."""
  shown = _rendered()
  if path in shown:
    return path
  obj = _lookup(path)
  if inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismodule(obj):
    for where, member in shown.items():
      if member is obj:
        return where
  return None


def _crossref(full: str, title: str) -> str:
  """A cross-reference to what ``full`` names where a page shows it (a shown class's member
  too); code where it exists but no page shows it; a cross-reference the build cannot resolve,
  so that it fails, where it does not exist."""
  if _lookup(full) is _MISSING:
    return f"[`{title}`][{full}]"
  where = _shown_as(full)
  if where is not None:
    return f"[`{title}`][{where}]"
  parts = full.split(".")
  for k in (1, 2):
    parent = ".".join(parts[:-k])
    if len(parts) > k and inspect.isclass(_lookup(parent)) and _shown_as(parent):
      return f"[`{title}`][{_shown_as(parent)}.{'.'.join(parts[-k:])}]"
  return f"`{title}`"


def resolve_on_pages(name: str) -> str:
  """A short name's full path where no scope is known (a Markdown page): the one public name
  of that name on the API pages."""
  found = sorted(path for path in _rendered() if path.rsplit(".", 1)[-1] == name)
  if len({id(_rendered()[p]) for p in found}) == 1:
    return min(found, key=len)
  if not found:  # no page shows it: the one jrnn module that defines it (printed as code)
    found = sorted(m for m, mod in list(sys.modules.items())
                   if m.startswith("jrnn") and name in vars(mod))
    if len(found) == 1:
      return f"{found[0]}.{name}"
  raise LookupError(f"{name!r} names {found or 'nothing'} on the API pages")


def convert_roles(text: str, resolve=None) -> str:
  """Roles as cross-references; ``resolve(short name)`` gives a short name's full path."""
  def role(m: re.Match) -> str:
    _, tilde, target = m.groups()
    target = target.strip().removesuffix("()")
    title = target.rsplit(".", 1)[-1] if tilde else target
    full = target
    if resolve is not None and not target.startswith("jrnn."):
      head, _, rest = target.partition(".")
      try:
        full = resolve(head) + (f".{rest}" if rest else "")
      except Exception:  # pylint: disable=broad-except
        full = target
    return _crossref(full, title)
  return ROLE.sub(role, text)


def rst_to_markdown(text: str, resolve=None) -> str:
  """``text`` with its math blocks, literal blocks, simple tables and roles as Markdown."""
  lines = _tables(_math_and_literals(text.splitlines()))
  out = convert_roles("\n".join(lines), resolve)
  return out + ("\n" if text.endswith("\n") else "")


_ITEM_SECTION = re.compile(r"^(\s*)(Args|Arguments|Raises|Attributes|Parameters):\s*$")
_NAME_LINE = re.compile(r"^[\w*]+(?:,\s*[\w*]+)*,\s*$")  # "a, b," wrapped before its colon
_ITEM = re.compile(r"^([\w*.\[\]]+(?:,\s*[\w*.]+)*)\s*(\(.*?\))?:(\s|$)")


def _items_sections(lines: list[str]) -> list[str]:
  """Google ``Args:``/``Raises:`` items as griffe reads them: a name list wrapped before its
  colon is joined into one line, and a line at an item's indentation that is not an item
  (``name: text``) is indented as the previous item's continuation."""
  out: list[str] = []
  i = 0
  while i < len(lines):
    head = _ITEM_SECTION.match(lines[i])
    out.append(lines[i])
    i += 1
    if not head:
      continue
    item_indent = None
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(head.group(1))):
      line = lines[i]
      if line.strip():
        if item_indent is None:
          item_indent = _indent(line)
        if _indent(line) == item_indent:
          while _NAME_LINE.match(line.strip()) and i + 1 < len(lines):
            i += 1
            line = line.rstrip() + " " + lines[i].strip()
          if not _ITEM.match(line.strip()) and out and out[-1].strip():
            line = "  " + line
      out.append(line)
      i += 1
  return out


def multi_names(docstring: str) -> list[list[str]]:
  """The name lists (``a, b, c: ...``) of a docstring's Args items."""
  out = []
  lines, section = docstring.splitlines(), None
  for line in lines:
    head = _ITEM_SECTION.match(line)
    if head:
      section = (head.group(2), len(head.group(1)))
      continue
    if section and line.strip() and _indent(line) <= section[1]:
      section = None
    m = re.match(r"^\s+([\w*]+(?:,\s*[\w*]+)+):", line)
    if m and section and section[0] in ("Args", "Arguments", "Parameters"):
      out.append([n.strip().lstrip("*") for n in m.group(1).split(",")])
  return out


class RstToMarkdown(griffe.Extension):
  """Rewrites every docstring's reStructuredText constructs as Markdown once the package is
  loaded (so a short name resolves in its module's scope), and checks ``a, b: ...`` Args items
  name parameters that exist (griffe's own check reads them as one name)."""

  def _walk(self, obj):
    yield obj
    for member in obj.members.values():
      if not isinstance(member, griffe.Alias):
        yield from self._walk(member)

  @staticmethod
  def _unpacked_attributes(module: griffe.Module) -> None:
    """``N_TRAIN, N_TEST = 4000, 1000`` defines two public names; griffe records neither."""
    if module.filepath is None or not str(module.filepath).endswith(".py"):
      return
    for name, lineno, value in _defined_names(str(module.filepath)):
      if value is not None and name not in module.members:
        module.set_member(name, griffe.Attribute(name, lineno=lineno, endlineno=lineno,
                                                 value=value))

  def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:  # noqa: D102
    del kwargs
    for obj in self._walk(pkg):
      if obj.is_module:
        self._unpacked_attributes(obj)
    for obj in self._walk(pkg):
      if obj.docstring is None:
        continue
      scope = obj if obj.is_module or obj.is_class else obj.parent
      text = "\n".join(_items_sections(obj.docstring.value.splitlines()))
      obj.docstring.value = rst_to_markdown(text, scope.resolve)
      if obj.is_function:
        params = {p.name for p in obj.parameters}
        for names in multi_names(obj.docstring.value):
          for name in names:
            if name not in params:
              griffe.logger.warning("%s:%s: Parameter '%s' (of '%s') does not appear in the "
                                    "function signature", obj.relative_filepath,
                                    obj.docstring.lineno, name, ", ".join(names))
