"""``jrnn.interop``: jrnn's parameters to and from other frameworks.

* :func:`from_torch`, :func:`to_torch`: ``torch.nn.RNN`` (torch is imported only when called).
"""
from jrnn.interop.torch import from_torch, to_torch

__all__ = ("from_torch", "to_torch")
