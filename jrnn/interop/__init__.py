"""``jrnn.interop``: jrnn's parameters and layers in other frameworks.

* :func:`from_torch`, :func:`to_torch`: ``torch.nn.RNN`` (torch is imported only when called).
* :func:`from_simple_cell`, :func:`to_simple_cell`: Flax's ``SimpleCell`` parameters (plain
  dicts; no Flax import).
* ``jrnn.interop.flax_linen``, ``jrnn.interop.flax_nnx``, ``jrnn.interop.equinox``: Elman layers
  and stacks as modules of each framework, thin shells over :func:`jrnn.forward` and
  :func:`jrnn.stacked_forward` (what they share: :mod:`jrnn.interop.shells`).

The framework submodules load on first access (module ``__getattr__``), so ``import jrnn``
never imports Flax or Equinox; each needs its extra: ``pip install 'jrnn[flax]'`` or
``'jrnn[equinox]'``.
"""

import importlib as _importlib

from jrnn.interop.simple_cell import from_simple_cell, to_simple_cell
from jrnn.interop.torch import from_torch, to_torch

# submodule -> the distribution its ImportError should name
_FRAMEWORKS = {"flax_linen": "flax", "flax_nnx": "flax", "equinox": "equinox"}


def __getattr__(name):
  if name in _FRAMEWORKS:
    try:
      return _importlib.import_module(f"jrnn.interop.{name}")
    except ModuleNotFoundError as e:
      if e.name != _FRAMEWORKS[name]:
        raise
      raise ImportError(
        f"jrnn.interop.{name} needs {e.name}: pip install 'jrnn[{_FRAMEWORKS[name]}]'"
      ) from e
  raise AttributeError(f"module 'jrnn.interop' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_FRAMEWORKS))


__all__ = ("from_simple_cell", "from_torch", "to_simple_cell", "to_torch")
