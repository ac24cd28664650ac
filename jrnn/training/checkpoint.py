"""Checkpoints: a pytree of arrays plus JSON metadata in one safetensors file, written atomically.

Format: `safetensors <https://github.com/huggingface/safetensors>`_. One file holds every array
under its pytree path (``params.w_hh``, ``opt_state[1][0].mu.w_hh``, …) and a string metadata
field ``"jrnn"`` with JSON (config, step, data position, …). Why safetensors rather than pickle:
loading runs no code (a checkpoint from elsewhere cannot execute anything), the header is plain
JSON readable from any language, arrays are stored raw with their dtype and shape, and the
format is small, stable and maintained. One file (not arrays and JSON side by side) means one
atomic rename covers both.

Atomicity: :func:`save` writes ``path + ".tmp"``, flushes and ``fsync``s it, then
``os.replace``s it over ``path`` (atomic on POSIX) and ``fsync``s the directory. A crash at any
point leaves either the previous checkpoint or the new one, never a torn file.

Loading needs a *template* pytree of the same structure (e.g. freshly initialised params and
optimiser state): pytree structure lives in code, not in the file, and every array is checked
against the template's shape and dtype, so a checkpoint from another configuration fails with a
message naming the array.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

META_KEY = "jrnn"


def _is_key(x) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _flatten(tree: Any) -> Dict[str, Any]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


def save(path: str, tree: Any, metadata: Dict[str, Any]) -> None:
  """Writes ``tree`` (arrays; PRNG keys are stored as their raw key data) and ``metadata``
  (JSON-serialisable) to ``path`` atomically."""
  from safetensors.numpy import save as st_save  # pylint: disable=import-outside-toplevel
  arrays, scalars = {}, []
  for name, leaf in _flatten(tree).items():
    if _is_key(leaf):
      leaf = jax.random.key_data(leaf)
    leaf = np.asarray(leaf)
    if leaf.ndim == 0:
      scalars.append(name)
      leaf = leaf.reshape(1)
    arrays[name] = np.ascontiguousarray(leaf)
  # One metadata entry: safetensors writes several in no fixed order, and identical runs
  # should write identical files. "scalars" names the 0-d arrays, stored with shape (1,).
  header = {"metadata": metadata, "scalars": scalars}
  blob = st_save(arrays, metadata={META_KEY: json.dumps(header, sort_keys=True)})
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(blob)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
  try:
    os.fsync(directory)
  finally:
    os.close(directory)


def _header(path: str) -> Dict[str, Any]:
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no checkpoint at {path}")
  with safe_open(path, framework="numpy") as f:
    meta = f.metadata() or {}
  if META_KEY not in meta:
    raise ValueError(f"{path} is a safetensors file but not a jrnn checkpoint (no "
                     f"{META_KEY!r} metadata)")
  return json.loads(meta[META_KEY])


def load_metadata(path: str) -> Dict[str, Any]:
  """Only the JSON metadata of the checkpoint at ``path``."""
  return _header(path)["metadata"]


def load(path: str, template: Any) -> Tuple[Any, Dict[str, Any]]:
  """Reads ``(tree, metadata)`` from ``path``, ``tree`` shaped like ``template``.

  Raises:
    ValueError: if an array of ``template`` is missing from the file or has another shape or
      dtype, or the file holds arrays the template does not.
  """
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  header = _header(path)
  metadata = header["metadata"]
  stored = load_file(path)
  for name in header["scalars"]:
    stored[name] = stored[name].reshape(())
  leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
  out = []
  for key_path, leaf in leaves:
    name = jax.tree_util.keystr(key_path)
    if name not in stored:
      raise ValueError(f"checkpoint {path} has no array {name}; it was written for another "
                       "model or optimiser configuration")
    want = jax.random.key_data(leaf) if _is_key(leaf) else leaf
    got = stored.pop(name)
    if got.shape != np.shape(want) or got.dtype != np.asarray(want).dtype:
      raise ValueError(
          f"checkpoint {path}: {name} has shape {got.shape} and dtype {got.dtype}, but this "
          f"configuration expects {np.shape(want)} and {np.asarray(want).dtype}")
    arr = jnp.asarray(got)
    out.append(jax.random.wrap_key_data(arr, impl=jax.random.key_impl(leaf)) if _is_key(leaf)
               else arr)
  if stored:
    raise ValueError(f"checkpoint {path} holds arrays this configuration does not: "
                     f"{sorted(stored)[:5]}")
  return jax.tree_util.tree_unflatten(treedef, out), metadata
