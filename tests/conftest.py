"""Test-wide settings: float64 available, silent rank promotion is an error, compiled programs
kept in a persistent cache, XLA flags that compile fast, and the costliest test files started first.

The suite is compile-bound on a CPU: most of its time is XLA compiling small programs. JAX's
persistent compilation cache stores each compiled executable on disk under a key made from the
program and the compiler options, so a program compiled once is loaded, not recompiled, by the
other xdist worker, by the ``jrnn-train`` subprocesses the CLI tests start (they inherit the
``JAX_*`` variables set here), and by the next run of the suite. The cache lives in
``.pytest_cache/jax-compile`` (git-ignored; delete it to start cold or to reclaim its space). No
size limit on purpose: with one, JAX locks the directory and scans it on every write and read,
which made a full run several times slower.
``JRNN_TEST_COMPILE_CACHE=0`` turns it off; a ``JAX_COMPILATION_CACHE_DIR`` already set wins.

``JRNN_TEST_XLA_OPT=default`` compiles as users' programs are compiled (see below).
"""

import json
import os
import pathlib
import subprocess
import sys

if os.environ.get("JRNN_TEST_COMPILE_CACHE", "1") != "0":
  _cache = pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax-compile"
  # Environment variables, not jax.config: the subprocesses read them too.
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_cache))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# XLA:CPU compiles the tests' programs cheaply: LLVM at -O0 and the older elemental fusion
# emitter instead of the MLIR fusion emitters. The suite compiles ~2000 small programs and runs
# each a few times, so compiling dominates: tests/test_forward.py's ~525 programs take 19 s of
# back-end compiling with both flags against 41 s with -O0 alone, and the whole file 40 s
# (``-n 0``) against 92 s with the default flags (``-n 2``); the tiny shapes do not feel the
# slower code. Both change code generation only (no fast-math at any level). What
# users get is still tested: tests marked ``shipped_xla`` (properties that depend on LLVM's code
# generation: two different programs equal bit for bit, a numerical failure reproduced exactly)
# run in a child pytest with the user's flags (``pytest_pyfunc_call`` below); .ci/run's wheel
# check and ``scripts/bench.py --quick`` run outside pytest; ``JRNN_TEST_XLA_OPT=default python
# -m pytest`` runs everything as shipped. Environment variables, so that the CLI subprocesses
# the tests start compile the same way. The flags are probed once (an XLA that no longer knows
# one aborts at start-up) and the outcome passed to the xdist workers by the environment.
_FAST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
_SHIPPED_XLA_FLAGS = os.environ.setdefault("JRNN_TEST_SHIPPED_XLA_FLAGS",
                                           os.environ.get("XLA_FLAGS", ""))


def _fast_flags_work() -> bool:
  env = dict(os.environ, XLA_FLAGS=f"{_SHIPPED_XLA_FLAGS} {_FAST_XLA_FLAGS}", JAX_PLATFORMS="cpu")
  probe = "import jax.numpy as jnp; (jnp.arange(3.0) * 2).block_until_ready()"
  try:
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          timeout=120, check=False).returncode == 0
  except subprocess.TimeoutExpired:
    return False


if "JRNN_TEST_FAST_XLA" not in os.environ:
  _wanted = os.environ.get("JRNN_TEST_XLA_OPT", "fast") != "default"
  os.environ["JRNN_TEST_FAST_XLA"] = "1" if _wanted and _fast_flags_work() else "0"
_FAST_XLA = os.environ["JRNN_TEST_FAST_XLA"] == "1"
if _FAST_XLA:
  os.environ["XLA_FLAGS"] = f"{_SHIPPED_XLA_FLAGS} {_FAST_XLA_FLAGS}".strip()

import jax  # noqa: E402

if "JAX_COMPILATION_CACHE_DIR" in os.environ:  # jax may have been imported before this file
  jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  for _name in ("min_compile_time_secs", "min_entry_size_bytes"):
    _value = os.environ.get(f"JAX_PERSISTENT_CACHE_{_name.upper()}")
    if _value is not None:
      jax.config.update(f"jax_persistent_cache_{_name}", float(_value) if "secs" in _name else int(_value))
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_configure(config):
  config.addinivalue_line(
    "markers", "shipped_xla: compiled with the user's XLA flags (in a child pytest when the "
    "suite compiles fast): for properties that depend on LLVM's code generation")


def pytest_pyfunc_call(pyfuncitem):
  """Runs a ``shipped_xla`` test in a child pytest with the user's XLA flags when this one has
  the fast-compiling ones."""
  if not _FAST_XLA or pyfuncitem.get_closest_marker("shipped_xla") is None:
    return None
  import pytest  # pylint: disable=import-outside-toplevel

  env = dict(os.environ, XLA_FLAGS=_SHIPPED_XLA_FLAGS, JRNN_TEST_FAST_XLA="0")
  proc = subprocess.run(
    [sys.executable, "-m", "pytest", pyfuncitem.nodeid, "-n", "0", "-p", "no:cacheprovider"],
    cwd=pyfuncitem.config.rootpath, env=env, capture_output=True,
    text=True, timeout=900, check=False)
  if proc.returncode != 0:  # 0: collected and passed (no test collected is 5)
    pytest.fail(f"with the user's XLA flags:\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}",
                pytrace=False)
  return True


# Seconds each test file took (all its tests, setup included) in one full run: with
# ``--dist loadfile`` a file is one unit of work, and starting the costliest first keeps both
# workers busy to the end (longest-first scheduling). A file missing from the table runs last.
# Refresh with ``python tests/timings/file_seconds.py JUNIT_XML SOURCE`` after a full
# ``--junitxml`` run.
_FILE_SECONDS = json.loads(
  (pathlib.Path(__file__).parent / "timings" / "file_seconds.json").read_text())["seconds"]


def pytest_collection_modifyitems(items):
  # sort is stable: the tests of one file keep their order.
  items.sort(key=lambda item: -_FILE_SECONDS.get(item.nodeid.split("::")[0], 0.0))
