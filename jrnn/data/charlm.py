"""Character-level language modelling on text that ships with every CPython.

The corpus is the standard library's ``pydoc_data.topics``: the help texts behind ``help("if")``
and friends, about 465k characters over 103 distinct symbols (unigram entropy 4.69 bits/char).
Nothing is downloaded.

Deterministic construction and split:

* text: the topics' values concatenated in sorted key order;
* vocabulary: the sorted set of characters of the whole text (so both splits share one);
* split: the first ``1 - val_fraction`` of the characters train, the last ``val_fraction``
  (default 10%) validate. The two are contiguous, disjoint slices of one stream.

Training reads the train split as ``B`` parallel streams (the classic truncated-BPTT layout):
the split is cut into ``B`` equal rows, row ``b`` a contiguous stretch of text, and window ``k``
holds columns ``[kT, kT + T]`` of every row, inputs ``[kT, kT + T)`` and next-character targets
``[kT + 1, kT + T + 1)``. Consecutive windows continue each row, so the hidden state at the end
of window ``k`` is the right initial state for window ``k + 1``.

The metric is bits per character, ``bpc = (1/N) Σ_t -log₂ p(c_{t+1} | c_{≤t})``, i.e. the mean
cross-entropy in nats divided by ``ln 2``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Tuple

import numpy as np


class Vocab(NamedTuple):
  """The character set, index ``i`` ↔ ``chars[i]``."""

  chars: str

  @property
  def size(self) -> int:
    return len(self.chars)


class CharData(NamedTuple):
  """The encoded corpus."""

  vocab: Vocab
  train: np.ndarray  # shape=(N_train,), dtype=int32
  val: np.ndarray  # shape=(N_val,), dtype=int32


def load_text() -> str:
  """The corpus: ``pydoc_data.topics`` values in sorted key order."""
  from pydoc_data import topics  # pylint: disable=import-outside-toplevel

  return "".join(topics.topics[k] for k in sorted(topics.topics))


def build_vocab(text: str) -> Vocab:
  return Vocab("".join(sorted(set(text))))


def encode(vocab: Vocab, text: str) -> np.ndarray:
  """Characters to ``int32`` indices; raises ``ValueError`` naming an unknown character."""
  index = {c: i for i, c in enumerate(vocab.chars)}
  try:
    return np.fromiter((index[c] for c in text), dtype=np.int32, count=len(text))
  except KeyError as e:
    raise ValueError(f"text contains {e.args[0]!r}, which is not in the vocabulary") from None


def decode(vocab: Vocab, tokens) -> str:
  return "".join(vocab.chars[int(i)] for i in np.asarray(tokens).reshape(-1))


def split(tokens: np.ndarray, val_fraction: float = 0.1) -> Tuple[np.ndarray, np.ndarray]:
  """``(train, val)``: the first ``1 - val_fraction`` and the last ``val_fraction`` of tokens."""
  if not 0.0 < val_fraction < 1.0:
    raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
  n_val = int(round(len(tokens) * val_fraction))
  return tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]


def load(val_fraction: float = 0.1) -> CharData:
  """Loads, encodes and splits the corpus (see the module docstring)."""
  text = load_text()
  vocab = build_vocab(text)
  train, val = split(encode(vocab, text), val_fraction)
  return CharData(vocab, train, val)


def streams(tokens: np.ndarray, batch_size: int) -> np.ndarray:
  """Cuts ``tokens`` into ``batch_size`` contiguous rows ``(B, N // B)``; the tail is dropped."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  n = len(tokens) // batch_size
  if n < 2:
    raise ValueError(f"{len(tokens)} tokens are too few for batch_size={batch_size}")
  return np.ascontiguousarray(tokens[: n * batch_size].reshape(batch_size, n))


def num_windows(rows: np.ndarray, seq_len: int) -> int:
  """How many windows of ``seq_len`` inputs (plus one target) fit in each row."""
  if seq_len < 1:
    raise ValueError(f"seq_len must be >= 1, got {seq_len}")
  n = (rows.shape[1] - 1) // seq_len
  if n < 1:
    raise ValueError(
      f"rows of {rows.shape[1]} tokens are too short for seq_len={seq_len}; "
      "lower seq_len or batch_size"
    )
  return n


def window(rows: np.ndarray, k: int, seq_len: int) -> Tuple[np.ndarray, np.ndarray]:
  """Window ``k`` of the streams, time-major: ``(inputs (T, B), targets (T, B))`` as int32."""
  start = k * seq_len
  chunk = rows[:, start : start + seq_len + 1].T
  return np.ascontiguousarray(chunk[:-1]), np.ascontiguousarray(chunk[1:])


def bits_per_char(nats_per_char) -> float:
  """Mean cross-entropy in nats per character, converted to bits per character."""
  return float(nats_per_char) / math.log(2.0)
