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

Integrity: the header also holds ``sha256``, a digest of the metadata and of every array's
name, dtype, shape and raw bytes. :func:`load` recomputes it and refuses a file whose arrays or
metadata changed since they were written. Every way a file can be unreadable — missing,
truncated, bit-flipped, not safetensors, a safetensors file from elsewhere — raises
:class:`CheckpointError` (a ``ValueError``) with a one-line message naming the file and what to
do, never the parser's own exception. A file without a digest (written before it existed, or
with it removed) is refused unless the caller passes ``allow_unverified=True`` (``jrnn-train
--allow-unverified-checkpoint``). :func:`verify` checks the digest without a template, so a
caller can trust the metadata before it builds anything from it.

:func:`save` refuses arrays holding NaN or inf (``FloatingPointError`` naming the array), so a
diverged run cannot replace its last good checkpoint; ``allow_nonfinite=True`` lifts that.

Loading needs a *template* pytree of the same structure (e.g. freshly initialised params and
optimiser state): pytree structure lives in code, not in the file, and every array is checked
against the template's shape and dtype, so a checkpoint from another configuration fails with a
message naming the array.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

META_KEY = "jrnn"
_WHAT_TO_DO = "delete it and resume from an earlier copy, or start a fresh run with a new --out"


class CheckpointError(ValueError):
  """A checkpoint file that cannot be used: unreadable, corrupted, foreign or mismatched."""


def _is_key(x) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _flatten(tree: Any) -> Dict[str, Any]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


def _digest(header: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> str:
  """sha256 over the header (without the digest) and every array's name, dtype, shape, bytes."""
  h = hashlib.sha256(
    json.dumps({k: header[k] for k in ("metadata", "scalars")}, sort_keys=True).encode()
  )
  for name in sorted(arrays):
    a = np.ascontiguousarray(arrays[name])
    h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def save(path: str, tree: Any, metadata: Dict[str, Any], *, allow_nonfinite: bool = False) -> None:
  """Writes ``tree`` (arrays; PRNG keys are stored as their raw key data) and ``metadata``
  (JSON-serialisable) to ``path`` atomically, with a sha256 digest of both.

  Raises:
    FloatingPointError: if a floating array holds NaN or inf (unless ``allow_nonfinite``);
      nothing is written then.
  """
  from safetensors.numpy import save as st_save  # pylint: disable=import-outside-toplevel

  arrays, scalars = {}, []
  for name, leaf in _flatten(tree).items():
    if _is_key(leaf):
      leaf = jax.random.key_data(leaf)
    leaf = np.asarray(leaf)
    if (
      not allow_nonfinite and np.issubdtype(leaf.dtype, np.inexact) and not np.isfinite(leaf).all()
    ):
      raise FloatingPointError(f"refusing to write checkpoint {path}: {name} holds NaN or inf")
    if leaf.ndim == 0:
      scalars.append(name)
      leaf = leaf.reshape(1)
    arrays[name] = np.ascontiguousarray(leaf)
  # One metadata entry: safetensors writes several in no fixed order, and identical runs
  # should write identical files. "scalars" names the 0-d arrays, stored with shape (1,).
  header = {"metadata": metadata, "scalars": scalars}
  header["sha256"] = _digest(header, arrays)
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


def _reason(e: Exception) -> str:
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


def _header(path: str) -> Dict[str, Any]:
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel

  if not os.path.isfile(path):
    raise FileNotFoundError(f"no checkpoint at {path}")
  try:
    with safe_open(path, framework="numpy") as f:
      meta = f.metadata() or {}
  except Exception as e:  # pylint: disable=broad-except  # the parser's errors vary by version
    raise CheckpointError(
      f"{path} is not a readable checkpoint (truncated, corrupted or not a "
      f"safetensors file; {_reason(e)}): {_WHAT_TO_DO}"
    ) from None
  if META_KEY not in meta:
    raise CheckpointError(
      f"{path} is a safetensors file but not a jrnn checkpoint (no "
      f"{META_KEY!r} metadata): {_WHAT_TO_DO}"
    )
  try:
    header = json.loads(meta[META_KEY])
    if not (
      isinstance(header, dict)
      and isinstance(header.get("metadata"), dict)
      and isinstance(header.get("scalars"), list)
    ):
      raise ValueError("missing fields")
  except ValueError as e:
    raise CheckpointError(f"{path} has a corrupted header ({_reason(e)}): {_WHAT_TO_DO}") from None
  return header


def load_metadata(path: str) -> Dict[str, Any]:
  """Only the JSON metadata of the checkpoint at ``path``, unverified (see :func:`verify`)."""
  return _header(path)["metadata"]


UNVERIFIED_FLAG = "--allow-unverified-checkpoint"


def _read_checked(path: str, allow_unverified: bool) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """``(header, arrays)`` of ``path`` after checking the sha256 (or that it may be absent)."""
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel

  header = _header(path)
  try:
    stored = load_file(path)
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(
      f"{path} is not a readable checkpoint (truncated or corrupted; {_reason(e)}): {_WHAT_TO_DO}"
    ) from None
  if "sha256" not in header:
    if not allow_unverified:
      raise CheckpointError(
        f"{path} has no sha256, so it cannot be checked for corruption or edits (written "
        f"before checkpoints carried one, or its digest was removed); pass {UNVERIFIED_FLAG} "
        "to use it anyway, or start a fresh run with a new --out"
      )
  elif _digest(header, stored) != header["sha256"]:
    raise CheckpointError(
      f"{path} is corrupted: its contents do not match the sha256 written "
      f"with them (damaged or edited since); {_WHAT_TO_DO}"
    )
  return header, stored


def verify(path: str, *, allow_unverified: bool = False) -> Dict[str, Any]:
  """The metadata of the checkpoint at ``path`` after checking its sha256 (arrays included).

  Raises:
    FileNotFoundError: if there is no file at ``path``.
    CheckpointError: if the file is unreadable, fails its checksum, or has none and
      ``allow_unverified`` is false.
  """
  return _read_checked(path, allow_unverified)[0]["metadata"]


def same_state(path_a: str, path_b: str, *, ignore: Tuple[str, ...] = ("run_id",)) -> bool:
  """Whether two checkpoint files hold bitwise-equal arrays and equal metadata, the keys in
  ``ignore`` aside: how a resumed run is compared with an uninterrupted one in another
  directory (each run directory has its own run id, so the files differ in those bytes)."""
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel

  a, b = load_file(path_a), load_file(path_b)
  if sorted(a) != sorted(b) or any(
    a[k].dtype != b[k].dtype or a[k].shape != b[k].shape or a[k].tobytes() != b[k].tobytes()
    for k in a
  ):
    return False
  meta_a, meta_b = (_header(p) for p in (path_a, path_b))
  for h in (meta_a, meta_b):
    h.pop("sha256", None)
    for key in ignore:
      h["metadata"].pop(key, None)
  return meta_a == meta_b


def load(path: str, template: Any, *, allow_unverified: bool = False) -> Tuple[Any, Dict[str, Any]]:
  """Reads ``(tree, metadata)`` from ``path``, ``tree`` shaped like ``template``.

  Args:
    path: the file.
    template: a pytree of the structure, shapes and dtypes to read.
    allow_unverified: accept a file without a sha256 (nothing then detects corruption).

  Raises:
    FileNotFoundError: if there is no file at ``path``.
    CheckpointError: if the file is unreadable, fails its checksum or has none (unless
      ``allow_unverified``), or an array of ``template`` is missing from it or has another
      shape or dtype, or the file holds arrays the template does not.
  """
  header, stored = _read_checked(path, allow_unverified)
  metadata = header["metadata"]
  for name in header["scalars"]:
    if name not in stored:
      raise CheckpointError(
        f"{path} has a corrupted header (scalar {name} has no array): {_WHAT_TO_DO}"
      )
    stored[name] = stored[name].reshape(())
  leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
  out = []
  for key_path, leaf in leaves:
    name = jax.tree_util.keystr(key_path)
    if name not in stored:
      raise CheckpointError(
        f"checkpoint {path} has no array {name}; it was written for "
        "another model or optimiser configuration"
      )
    want = jax.random.key_data(leaf) if _is_key(leaf) else leaf
    got = stored.pop(name)
    if got.shape != np.shape(want) or got.dtype != np.asarray(want).dtype:
      raise CheckpointError(
        f"checkpoint {path}: {name} has shape {got.shape} and dtype {got.dtype}, but this "
        f"configuration expects {np.shape(want)} and {np.asarray(want).dtype}"
      )
    arr = jnp.asarray(got)
    out.append(
      jax.random.wrap_key_data(arr, impl=jax.random.key_impl(leaf)) if _is_key(leaf) else arr
    )
  if stored:
    raise CheckpointError(
      f"checkpoint {path} holds arrays this configuration does not: {sorted(stored)[:5]}"
    )
  return jax.tree_util.tree_unflatten(treedef, out), metadata
