"""Test-wide JAX settings: float64 available, silent rank promotion is an error, and compiled
programs are kept in a persistent cache.

The suite is compile-bound on a CPU: most of its time is XLA compiling small programs. JAX's
persistent compilation cache stores each compiled executable on disk under a key made from the
program and the compiler options, so a program compiled once is loaded, not recompiled, by the
other xdist worker, by the ``jrnn-train`` subprocesses the CLI tests start (they inherit the
``JAX_*`` variables set here), and by the next run of the suite. The cache lives in
``.pytest_cache/jax-compile`` (git-ignored; delete it to start cold or to reclaim its space). No
size limit on purpose: with one, JAX locks the directory and scans it on every write and read,
which made a full run several times slower.
``JRNN_TEST_COMPILE_CACHE=0`` turns it off; a ``JAX_COMPILATION_CACHE_DIR`` already set wins.
"""

import os
import pathlib

if os.environ.get("JRNN_TEST_COMPILE_CACHE", "1") != "0":
  _cache = pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax-compile"
  # Environment variables, not jax.config: the subprocesses read them too.
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_cache))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402

if "JAX_COMPILATION_CACHE_DIR" in os.environ:  # jax may have been imported before this file
  jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  for _name in ("min_compile_time_secs", "min_entry_size_bytes"):
    _value = os.environ.get(f"JAX_PERSISTENT_CACHE_{_name.upper()}")
    if _value is not None:
      jax.config.update(f"jax_persistent_cache_{_name}", float(_value) if "secs" in _name else int(_value))
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
