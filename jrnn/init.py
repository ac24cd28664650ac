"""Pure initialisers with named schemes.

Every scheme draws from an explicit PRNG key; biases are zero unless stated.

=============  ==============================================================================
scheme         draws
=============  ==============================================================================
``seed``       every weight ``N(0, 1) · scale`` with ``scale = 0.01`` (the seed's ``SimpleRNN``)
``pytorch``    every weight and bias ``U(-1/√H, 1/√H)`` (``torch.nn.RNN``; its two biases fold into
               one, drawn once); readout ``U(±1/√fan_in)`` (``torch.nn.Linear``; fan-in ``D·H``)
``glorot``     weights ``U(±√(6/(fan_in + fan_out)))`` (Glorot & Bengio 2010, "xavier")
``orthogonal`` ``W_hh`` a random orthogonal matrix times ``scale`` (default 1: all singular values
               equal ``scale``); ``W_xh``, ``W_hy`` Glorot
``identity``   ``W_hh = scale · I`` (default 1), ``W_xh``, ``W_hy`` ``N(0, 0.001²)``: the IRNN of
               Le, Jaitly & Hinton (2015), meant for ReLU
``spectral``   ``W_hh ~ N(0, 1/H)`` rescaled to spectral radius ``max|λ(W_hh)| = spectral_radius``
               (default 1); ``W_xh``, ``W_hy`` Glorot
=============  ==============================================================================

:data:`SCHEME_ARGS` says which of ``scale`` and ``spectral_radius`` each scheme takes (``seed``,
``orthogonal``, ``identity``: ``scale``; ``spectral``: ``spectral_radius``; the others: neither).
Passing one that the scheme does not take is a ``ValueError`` naming the scheme and what it takes,
never a silently ignored argument.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jrnn import validation
from jrnn.params import LayerParams, RNNParams, StackedParams

# Scheme -> the optional arguments it reads; giving it any other is an error. The one table the
# schemes, their docs and the error message come from.
SCHEME_ARGS = {
  "seed": ("scale",),
  "pytorch": (),
  "glorot": (),
  "xavier": (),
  "orthogonal": ("scale",),
  "identity": ("scale",),
  "spectral": ("spectral_radius",),
}
SCHEMES = tuple(SCHEME_ARGS)


def check_key(name: str, key) -> None:
  """Raises ``TypeError`` unless ``key`` is one PRNG key: a typed key of shape ``()``
  (``jax.random.key(0)``) or a raw ``uint32`` key (``jax.random.PRNGKey(0)``: shape ``(2,)``,
  or ``(4,)`` for the ``rbg`` implementations).

  Checks dtype and shape only, so it works on traced keys inside ``jit``.
  """
  dtype, shape = getattr(key, "dtype", None), np.shape(key) if hasattr(key, "shape") else None
  if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
    if shape != ():
      raise TypeError(
        f"{name} must be a single PRNG key, got an array of keys of shape {shape}; "
        f"pass one of them, e.g. {name}[0]"
      )
    return
  if dtype is not None and dtype == jnp.uint32 and shape in ((2,), (4,)):  # threefry, rbg
    return
  got = (
    f"an array of dtype {dtype} and shape {shape}"
    if dtype is not None
    else (repr(key) if isinstance(key, (int, float, str, type(None))) else type(key).__name__)
  )
  raise TypeError(
    f"{name} must be a PRNG key such as jax.random.key(0) (or a raw "
    f"jax.random.PRNGKey(0)), got {got}"
  )


def _check_size(name: str, n) -> None:
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"{name} must be a positive int, got {n!r}")


def _check_dtype(dtype) -> jnp.dtype:
  dtype = jnp.dtype(dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"dtype must be a floating dtype (float32, float64), got {dtype}")
  return dtype


def _check_positive(name: str, v) -> None:
  if v is None:
    return
  if (
    isinstance(v, bool)
    or not isinstance(v, (int, float, np.integer, np.floating))
    or not (0 < v < math.inf)
  ):
    raise ValueError(f"{name} must be a positive number, got {v!r}")


def _check_scheme(scheme: str, **given) -> None:
  """``given``: the optional arguments by name, ``None`` where the caller left them out."""
  if not isinstance(scheme, str) or scheme not in SCHEMES:
    raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
  takes = SCHEME_ARGS[scheme]
  for name, value in given.items():
    if value is None or name in takes:
      continue
    own = f"takes only {' and '.join(takes)}" if takes else f"takes neither {' nor '.join(given)}"
    users = [s for s, args in SCHEME_ARGS.items() if name in args]
    raise ValueError(
      f"scheme={scheme!r} {own}, got {name}={value!r}; {name} is read by "
      f"scheme{'s' * (len(users) > 1)} {', '.join(map(repr, users))} "
      "(see jrnn.init.SCHEME_ARGS)"
    )


def _glorot(key, shape, dtype):
  lim = math.sqrt(6.0 / (shape[0] + shape[1]))
  return jax.random.uniform(key, shape, dtype, -lim, lim)


def _uniform(key, shape, dtype, lim):
  return jax.random.uniform(key, shape, dtype, -lim, lim)


def _orthogonal(key, n, dtype):
  q, r = jnp.linalg.qr(jax.random.normal(key, (n, n), dtype))
  return q * jnp.sign(jnp.diagonal(r))[None, :]  # sign fix makes q Haar-distributed


def spectral_radius(w: jax.Array) -> jax.Array:
  """``max |λ(w)|`` of a square matrix (eigenvalues computed on the host CPU backend)."""
  return jnp.max(jnp.abs(jnp.linalg.eigvals(w)))


def _w_hh(key, n_hidden, scheme, scale, spectral_radius_target, dtype):
  if scheme == "seed":
    return jax.random.normal(key, (n_hidden, n_hidden), dtype) * (0.01 if scale is None else scale)
  if scheme == "pytorch":
    return _uniform(key, (n_hidden, n_hidden), dtype, 1 / math.sqrt(n_hidden))
  if scheme in ("glorot", "xavier"):
    return _glorot(key, (n_hidden, n_hidden), dtype)
  if scheme == "orthogonal":
    return _orthogonal(key, n_hidden, dtype) * (1.0 if scale is None else scale)
  if scheme == "identity":
    return jnp.eye(n_hidden, dtype=dtype) * (1.0 if scale is None else scale)
  # spectral
  w = jax.random.normal(key, (n_hidden, n_hidden), dtype) / math.sqrt(n_hidden)
  target = 1.0 if spectral_radius_target is None else spectral_radius_target
  return w * (target / spectral_radius(w)).astype(dtype)


def _w_in(key, shape, scheme, scale, dtype):
  """An input or readout matrix of ``shape = (fan_out, fan_in)``."""
  if scheme == "seed":
    return jax.random.normal(key, shape, dtype) * (0.01 if scale is None else scale)
  if scheme == "identity":
    return jax.random.normal(key, shape, dtype) * 0.001
  return _glorot(key, shape, dtype)


def init_layer(
  key: jax.Array,
  n_in: int,
  n_hidden: int,
  *,
  scheme: str = "seed",
  scale: Optional[float] = None,
  spectral_radius: Optional[float] = None,
  dtype=jnp.float32,
  learn_h0: bool = False,
) -> LayerParams:
  """Initialises one recurrent layer ``(W_xh (H, I), W_hh (H, H), b_h (H,))``.

  Args:
    key: a PRNG key.
    n_in: ``I``, input features.
    n_hidden: ``H``, hidden units.
    scheme: one of :data:`SCHEMES` (see the module docstring).
    scale: the scheme's scale (``seed``: std of every weight; ``orthogonal``/``identity``: the
      multiple of the orthogonal or identity ``W_hh``); ``None`` takes the scheme's default.
      Positive; the other schemes refuse it with a ``ValueError`` (:data:`SCHEME_ARGS`).
    spectral_radius: target ``max|λ(W_hh)|`` for ``scheme="spectral"`` (positive; default 1);
      the other schemes refuse it.
    dtype: float32 or float64.
    learn_h0: if true, adds a zero initial state ``h0 (H,)`` to be learnt.
  """
  check_key("key", key)
  _check_size("n_in", n_in)
  _check_size("n_hidden", n_hidden)
  validation.check_bool("learn_h0", learn_h0)
  _check_positive("scale", scale)
  _check_positive("spectral_radius", spectral_radius)
  _check_scheme(scheme, scale=scale, spectral_radius=spectral_radius)
  dtype = _check_dtype(dtype)
  k_xh, k_hh, k_b = jax.random.split(key, 3)
  if scheme == "pytorch":
    w_xh = _uniform(k_xh, (n_hidden, n_in), dtype, 1 / math.sqrt(n_hidden))
    b_h = _uniform(k_b, (n_hidden,), dtype, 1 / math.sqrt(n_hidden))
  else:
    w_xh = _w_in(k_xh, (n_hidden, n_in), scheme, scale, dtype)
    b_h = jnp.zeros((n_hidden,), dtype)
  w_hh = _w_hh(k_hh, n_hidden, scheme, scale, spectral_radius, dtype)
  h0 = jnp.zeros((n_hidden,), dtype) if learn_h0 else None
  return LayerParams(w_xh, w_hh, b_h, h0)


def _readout(key, n_out, n_features, scheme, scale, dtype):
  k_w, k_b = jax.random.split(key)
  if scheme == "pytorch":
    lim = 1 / math.sqrt(n_features)
    return _uniform(k_w, (n_out, n_features), dtype, lim), _uniform(k_b, (n_out,), dtype, lim)
  return _w_in(k_w, (n_out, n_features), scheme, scale, dtype), jnp.zeros((n_out,), dtype)


def init_params(
  key: jax.Array,
  n_in: int,
  n_hidden: int,
  n_out: int,
  *,
  scheme: str = "seed",
  scale: Optional[float] = None,
  spectral_radius: Optional[float] = None,
  dtype=jnp.float32,
  learn_h0: bool = False,
) -> RNNParams:
  """Initialises the seed's RNN: ``W_xh (H, I), W_hh (H, H), b_h (H,), W_hy (O, H), b_y (O,)``.

  Arguments as :func:`init_layer`, plus ``n_out`` (``O``). Example::

    >>> import jax
    >>> import jrnn
    >>> params = jrnn.init_params(jax.random.key(0), 3, 5, 2, scheme="orthogonal")
    >>> params.w_hh.shape
    (5, 5)
  """
  check_key("key", key)
  _check_size("n_out", n_out)
  k_layer, k_out = jax.random.split(key)
  layer = init_layer(
    k_layer,
    n_in,
    n_hidden,
    scheme=scheme,
    scale=scale,
    spectral_radius=spectral_radius,
    dtype=dtype,
    learn_h0=learn_h0,
  )
  w_hy, b_y = _readout(k_out, n_out, n_hidden, scheme, scale, jnp.dtype(dtype))
  return RNNParams(layer.w_xh, layer.w_hh, layer.b_h, w_hy, b_y, layer.h0)


def init_stacked(
  key: jax.Array,
  n_in: int,
  n_hidden: int,
  n_out: Optional[int] = None,
  *,
  num_layers: int = 1,
  bidirectional: bool = False,
  scheme: str = "seed",
  scale: Optional[float] = None,
  spectral_radius: Optional[float] = None,
  dtype=jnp.float32,
  learn_h0: bool = False,
) -> StackedParams:
  """Initialises ``num_layers`` layers, each with 1 or 2 (``bidirectional``) directions.

  Layer 0 reads ``n_in`` features, later layers ``D·n_hidden``. ``n_out=None`` leaves out the
  readout (as ``torch.nn.RNN``). Other arguments as :func:`init_layer`.
  """
  check_key("key", key)
  _check_size("num_layers", num_layers)
  validation.check_bool("bidirectional", bidirectional)
  if n_out is not None:
    _check_size("n_out", n_out)
  d = 2 if bidirectional else 1
  keys = jax.random.split(key, num_layers * d + 1)
  layers = []
  for l in range(num_layers):
    fan_in = n_in if l == 0 else d * n_hidden
    layers.append(
      tuple(
        init_layer(
          keys[l * d + j],
          fan_in,
          n_hidden,
          scheme=scheme,
          scale=scale,
          spectral_radius=spectral_radius,
          dtype=dtype,
          learn_h0=learn_h0,
        )
        for j in range(d)
      )
    )
  if n_out is None:
    return StackedParams(tuple(layers))
  w_hy, b_y = _readout(keys[-1], n_out, d * n_hidden, scheme, scale, _check_dtype(dtype))
  return StackedParams(tuple(layers), w_hy, b_y)
