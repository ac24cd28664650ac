"""The package's shape: no import cycles, no private imports across modules, the layers of
docs/architecture.md respected, and every namespace the README names reachable after
``import jrnn``. Imports are read with ``ast``; nothing is executed for the graph."""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jrnn"


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path):
  """``(imported module, imported name or None)`` for every jrnn import in ``path``."""
  tree = ast.parse(path.read_text(encoding="utf-8"))
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith("jrnn"):
          yield alias.name, None
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jrnn"):
      for alias in node.names:
        yield node.module, alias.name


def _graph():
  modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
  edges = {}
  for name, path in modules.items():
    targets = set()
    for mod, item in _imports(path):
      sub = f"{mod}.{item}" if item else None
      targets.add(sub if sub in modules else mod)
    targets.discard(name)
    edges[name] = targets & set(modules)
  return modules, edges


def _cycles(edges):
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in edges.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(edges):
    if v not in index:
      visit(v)
  return out


def _package_cycle_free(edges):
  # A package's __init__ importing its own submodules is not a cycle of the design; drop
  # edges from a submodule to its own package's __init__ only when the __init__ is the target.
  return {v: {w for w in ws if not v.startswith(w + ".")} for v, ws in edges.items()}


def test_no_import_cycles():
  _, edges = _graph()
  assert _cycles(_package_cycle_free(edges)) == []


def test_the_cycle_finder_finds_cycles():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_name():
  modules, _ = _graph()
  bad = [(name, mod, item) for name, path in modules.items() for mod, item in _imports(path)
         if item and item.startswith("_") and mod != name]
  assert bad == []


# The layers, lowest first: a module may import only from its own layer or lower ones. A
# package name stands for the package and all its modules.
LAYERS = [
    {"jrnn.activations", "jrnn.params", "jrnn.validation"},
    {"jrnn.loops", "jrnn.cell", "jrnn.losses", "jrnn.init", "jrnn.inputs"},
    {"jrnn.kernels"},
    {"jrnn.bptt", "jrnn.parallel"},
    {"jrnn.engine"},
    {"jrnn.recurrence", "jrnn.unroll"},
]


def _level(module):
  for i, layer in enumerate(LAYERS):
    if any(module == m or module.startswith(m + ".") for m in layer):
      return i
  return None


def test_core_modules_import_only_downwards():
  modules, edges = _graph()
  core = [m for m in modules if _level(m) is not None]
  upward = [(m, w) for m in core for w in edges[m] if (_level(w) if _level(w) is not None
                                                         else len(LAYERS)) > _level(m)]
  assert upward == []


# The one training module that reads the teaching module, on purpose: the gradient-flow records
# of --diagnose-every are jrnn.diagnostics' measurements (Jacobian products of a Trajectory),
# computed every N steps outside the training step, never on its path.
READS_THE_TEACHING_MODULE = {"jrnn.training.flow"}


def test_fast_path_and_training_never_import_the_teaching_module():
  _, edges = _graph()
  users = {m for m, ws in edges.items() if any(w.startswith("jrnn.reference") for w in ws)}
  users -= READS_THE_TEACHING_MODULE
  assert not any(u.startswith(("jrnn.training", "jrnn.kernels")) for u in users)
  assert not [u for u in users if _level(u) is not None]


NAMESPACES = ["diagnostics", "reference", "training", "interop", "kernels", "engine", "data",
              "online", "parallel"]


def test_every_namespace_is_reachable_after_a_plain_import_jrnn():
  # One fresh interpreter: only `import jrnn`, then every public name of every namespace, and
  # the README's example of a namespaced call.
  code = ("import jrnn\n"
          f"for space in {NAMESPACES!r}:\n"
          "  ns = getattr(jrnn, space)\n"
          "  names = getattr(ns, '__all__', [n for n in dir(ns) if not n.startswith('_')])\n"
          "  assert names, space\n"
          "  [getattr(ns, n) for n in names]\n"
          "jrnn.training.sharding.data_mesh()\n")
  subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_every_public_submodule_is_reachable_after_a_plain_import_jrnn():
  # Every module a package docstring lists (e.g. jrnn.training's table: seeds, loop, cli, ...) is
  # a public submodule; each must be an attribute after `import jrnn` alone, found by getattr
  # (lazily imported ones included), and importing jrnn must not load the optional frameworks.
  code = (
      "import pkgutil, sys, types, jrnn\n"
      "heavy = [m for m in ('flax', 'equinox', 'torch', 'mnist1d', 'matplotlib') "
      "if m in sys.modules]\n"
      "assert not heavy, f'import jrnn loaded {heavy}'\n"
      "missing, todo = [], [('jrnn', jrnn)]\n"
      "while todo:\n"
      "  name, pkg = todo.pop()\n"
      "  for info in pkgutil.iter_modules(pkg.__path__):\n"
      "    if info.name.startswith('_'):\n"
      "      continue\n"
      "    try:\n"
      "      sub = getattr(pkg, info.name, None)\n"
      "    except ImportError as e:  # an optional framework that is not installed\n"
      "      print('skipped', info.name, e)\n"
      "      continue\n"
      "    if not isinstance(sub, types.ModuleType):\n"
      "      if name == 'jrnn' and callable(sub):\n"
      "        continue  # a module shadowed by its one public function, e.g. jrnn.recurrence\n"
      "      missing.append(f'{name}.{info.name}')\n"
      "    elif info.ispkg:\n"
      "      todo.append((f'{name}.{info.name}', sub))\n"
      "assert not missing, f'not reachable after import jrnn: {missing}'\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr[-2000:]


def test_moved_names_warn_and_still_work():
  import jrnn
  with pytest.warns(DeprecationWarning, match="jrnn.training.clip_tree_by_global_norm"):
    fn = jrnn.clip_by_global_norm
  assert fn is jrnn.training.clip_tree_by_global_norm
  with pytest.warns(DeprecationWarning, match="jrnn.reference.seed_formula_grads"):
    assert jrnn.seed_formula_grads is jrnn.reference.seed_formula_grads
  with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
    jrnn.nonsense  # pylint: disable=pointless-statement
