"""The Pallas kernels in interpret mode against the XLA path (``jrnn.bptt.hand_recurrence``).

Interpret mode evaluates the kernels one grid program at a time, so sizes stay tiny (T ≤ 16,
H ≤ 32). The Triton lowering itself is checked without a GPU by lowering for the ``cuda``
platform, which builds the Triton IR on the host (compiling it needs a GPU:
``scripts/gpu_check.sh``).
"""
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrnn.activations import ACTIVATIONS, get_activation
from jrnn.bptt import hand_recurrence
from jrnn.kernels.pallas_triton import (
    KERNEL_PREFETCH,
    KERNEL_UNROLL,
    MAX_H,
    _default_precision,
    padded_hidden,
    pallas_recurrence,
    pallas_recurrence_bwd,
    pallas_supported,
)
from jrnn.loops import scan_recurrence

ROOT = Path(__file__).resolve().parents[1]
F32_TOL, BF16_TOL = 1e-5, 1e-2


def _problem(t, b, h, *, seed=0, mask_p=None):
  ks = jax.random.split(jax.random.PRNGKey(seed), 5)
  w = jax.random.normal(ks[0], (h, h), jnp.float32) / float(np.sqrt(h))
  u = jax.random.normal(ks[1], (t, b, h), jnp.float32)
  h0 = 0.5 * jax.random.normal(ks[2], (b, h), jnp.float32)
  mask = None if mask_p is None else jax.random.bernoulli(ks[3], mask_p, (t, b))
  target = jax.random.normal(ks[4], (t, b, h), jnp.float32)
  return w, u, h0, mask, target


def _rel(x, y):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  return np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30)


def _value_and_grads(rec, w, u, h0, target):
  def loss(w, u, h0):
    hs = rec(w, u, h0)
    return jnp.sum((hs.astype(jnp.float32) - target) ** 2), hs
  (_, hs), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(w, u, h0)
  return hs, grads


def _compare(act, t, b, h, *, mask_p=None, unroll=1, tol=F32_TOL, jit=False, seed=0, **kw):
  w, u, h0, mask, target = _problem(t, b, h, seed=seed, mask_p=mask_p)
  pallas = lambda w, u, h0: pallas_recurrence(w, u, h0, mask, act, unroll, interpret=True, **kw)
  hand = lambda w, u, h0: hand_recurrence(w, u, h0, mask, act, 1)
  if jit:
    pallas = jax.jit(pallas)
  hs, grads = _value_and_grads(pallas, w, u, h0, target)
  hs_ref, grads_ref = _value_and_grads(hand, w, u, h0, target)
  assert hs.shape == (t, b, h) and hs.dtype == u.dtype
  assert _rel(hs, hs_ref) < tol
  for name, g, g_ref in zip(("dW_hh", "du", "dh0"), grads, grads_ref):
    assert g.shape == g_ref.shape and g.dtype == g_ref.dtype, name
    assert _rel(g, g_ref) < tol, (name, _rel(g, g_ref))


@pytest.mark.slow
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", ["tanh", "relu"])
def test_float32_matches_hand_bptt(name, masked):
  # B=5 fills a third of one 16-row tile, H=24 pads to 32, T=7 with unroll=3 leaves a remainder
  _compare(ACTIVATIONS[name], 7, 5, 24, mask_p=0.7 if masked else None, unroll=3)


@pytest.mark.slow
def test_several_batch_tiles_and_a_larger_tile():
  _compare(ACTIVATIONS["tanh"], 5, 20, 16, mask_p=0.6, seed=1)  # two programs of 16 rows
  _compare(ACTIVATIONS["relu"], 4, 20, 16, mask_p=0.6, seed=2, block_b=32)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tanh", "relu"])
def test_bfloat16_compute_within_1e2(name):
  _compare(ACTIVATIONS[name], 8, 6, 32, mask_p=0.8, tol=BF16_TOL, compute_dtype=jnp.bfloat16)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sigmoid", "identity"])
def test_other_named_activations(name):
  _compare(ACTIVATIONS[name], 6, 3, 16, mask_p=0.7, unroll=2)


@pytest.mark.slow
def test_activation_without_closed_form_derivative_uses_xla_sigma_prime():
  act = get_activation(lambda a: jnp.sin(a))  # deriv_from_output is None: u kept, σ'(a) by XLA
  assert act.deriv_from_output is None
  _compare(act, 5, 3, 16, mask_p=0.7)


@pytest.mark.slow
@pytest.mark.parametrize("prefetch, unroll", [(0, 1), (1, 1), (2, 3), (3, 2), (9, 4)])
@pytest.mark.parametrize("masked", [False, True])
def test_prefetched_loads_match(prefetch, unroll, masked):
  # T=7: prefetch 9 reaches past the end (clamped loads); unroll 3 and 4 leave remainders
  _compare(ACTIVATIONS["tanh"], 7, 5, 24, mask_p=0.6 if masked else None, unroll=unroll,
           prefetch=prefetch)


def test_default_unroll_and_prefetch_are_used():
  w, u, h0, mask, _ = _problem(6, 3, 16, mask_p=0.7)
  act = ACTIVATIONS["tanh"]
  jaxpr = str(jax.make_jaxpr(
      lambda w, u, h0: pallas_recurrence(w, u, h0, mask, act, interpret=True))(w, u, h0))
  explicit = str(jax.make_jaxpr(lambda w, u, h0: pallas_recurrence(
      w, u, h0, mask, act, KERNEL_UNROLL, interpret=True, prefetch=KERNEL_PREFETCH))(w, u, h0))
  assert jaxpr == explicit


@pytest.mark.slow
def test_under_jit_and_long_unroll():
  _compare(ACTIVATIONS["tanh"], 9, 4, 16, mask_p=0.8, unroll=16, jit=True)


@pytest.mark.slow
def test_forward_matches_plain_scan():
  w, u, h0, mask, _ = _problem(16, 2, 8, mask_p=0.5)
  act = ACTIVATIONS["tanh"]
  hs = pallas_recurrence(w, u, h0, mask, act, interpret=True)
  np.testing.assert_allclose(hs, scan_recurrence(w, u, h0, mask, act, 1), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_all_masked_sequence_keeps_h0_and_passes_gradient_through():
  w, u, h0, _, target = _problem(4, 3, 16)
  mask = jnp.zeros((4, 3), bool)
  act = ACTIVATIONS["tanh"]
  rec = lambda w, u, h0: pallas_recurrence(w, u, h0, mask, act, interpret=True)
  hs, (dw, du, dh0) = _value_and_grads(rec, w, u, h0, target)
  np.testing.assert_array_equal(hs, jnp.broadcast_to(h0, hs.shape))
  assert not np.any(dw) and not np.any(du)
  np.testing.assert_allclose(dh0, jnp.sum(2 * (hs - target), axis=0), rtol=1e-6)


@pytest.mark.slow
def test_backward_half_matches_vjp_of_hand_recurrence():
  w, u, h0, mask, target = _problem(6, 4, 16, mask_p=0.7)
  act = ACTIVATIONS["relu"]
  hs, vjp = jax.vjp(lambda w, u, h0: hand_recurrence(w, u, h0, mask, act, 1), w, u, h0)
  dw_ref, du_ref, dh0_ref = vjp(target)
  du, dw, dh0 = pallas_recurrence_bwd(w, None, h0, mask, hs, target, act, interpret=True)
  for got, ref in ((dw, dw_ref), (du, du_ref), (dh0, dh0_ref)):
    assert _rel(got, ref) < F32_TOL


def test_precision_follows_default_matmul_precision():
  assert _default_precision() == "highest"
  with jax.default_matmul_precision("tensorfloat32"):
    assert _default_precision() == "tf32"


def test_padded_hidden():
  assert [padded_hidden(h) for h in (1, 16, 17, 64, 100, 256)] == [16, 16, 32, 64, 128, 256]


def test_pallas_supported():
  assert pallas_supported(64, 1, jnp.float32, "gpu")
  assert pallas_supported(128, 64, jnp.float32, "gpu", activation="relu")
  assert not pallas_supported(256, 64, jnp.float32, "gpu")  # streamed W_hh: XLA wins (H100)
  assert pallas_supported(256, 64, jnp.float32, "gpu", compute_dtype=jnp.bfloat16)
  assert pallas_supported(200, 64, jnp.bfloat16, "gpu")
  assert not pallas_supported(64, 1, jnp.float32, "cpu")
  assert not pallas_supported(64, 1, jnp.float32, "tpu")
  assert not pallas_supported(64, 1, jnp.float64, "gpu")
  assert not pallas_supported(MAX_H["float32"] + 1, 1, jnp.float32, "gpu")
  assert not pallas_supported(1024, 512, jnp.float32, "gpu", compute_dtype=jnp.bfloat16)
  assert not pallas_supported(64, 1, jnp.float32, "gpu", activation="softplus")


@pytest.mark.parametrize("kwargs, match", [
    (dict(block_b=8), "block_b must be a power of two >= 16"),
    (dict(block_b=24), "block_b must be a power of two >= 16"),
    (dict(compute_dtype=jnp.float16), "compute_dtype must be None or jnp.bfloat16"),
    (dict(precision="fast"), "precision must be 'highest', 'tf32' or None"),
    (dict(prefetch=-1), "prefetch must be >= 0"),
])
def test_bad_options_raise(kwargs, match):
  w, u, h0, _, _ = _problem(2, 2, 4)
  with pytest.raises(ValueError, match=match):
    pallas_recurrence(w, u, h0, None, ACTIVATIONS["tanh"], interpret=True, **kwargs)


def test_bad_shapes_raise():
  w, u, h0, _, _ = _problem(2, 3, 4)
  act = ACTIVATIONS["tanh"]
  with pytest.raises(ValueError, match=r"w_hh must have shape \(H, H\)=\(4, 4\)"):
    pallas_recurrence(w[:3], u, h0, None, act, interpret=True)
  with pytest.raises(ValueError, match=r"h0 must have shape \(B, H\)=\(3, 4\)"):
    pallas_recurrence(w, u, h0[:2], None, act, interpret=True)
  with pytest.raises(ValueError, match=r"mask must have shape \(T, B\)=\(2, 3\)"):
    pallas_recurrence(w, u, h0, jnp.ones((3, 2), bool), act, interpret=True)
  with pytest.raises(ValueError, match=r"u must have shape \(T, B, H\)"):
    pallas_recurrence(w, u[0], h0, None, act, interpret=True)
  with pytest.raises(TypeError, match="act must be a jrnn Activation"):
    pallas_recurrence(w, u, h0, None, "tanh", interpret=True)


@pytest.mark.slow
@pytest.mark.parametrize("h, name, compute_dtype", [
    (24, "tanh", None),  # padded to 32, W resident
    (64, "relu", jnp.bfloat16),
    (256, "tanh", None),  # 256 KiB of float32: W streamed in column blocks every step
    (256, "relu", jnp.bfloat16),
])
def test_triton_lowering_builds_on_host(h, name, compute_dtype):
  """Forward and δ kernels lower to Triton IR for CUDA (no GPU needed to build the IR)."""
  w, u, h0, mask, _ = _problem(5, 3, h, mask_p=0.5)
  act = ACTIVATIONS[name]

  def loss(w, u, h0):
    hs = pallas_recurrence(w, u, h0, mask, act, 2, interpret=False, compute_dtype=compute_dtype)
    return jnp.sum(hs ** 2)

  lowered = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(w, u, h0).lower(
      lowering_platforms=("cuda",))
  assert lowered.as_text().count("triton") >= 2


def _run_script(*args):
  return subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu" / "gpu_check.py"), *args],
                        capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_gpu_check_help_and_clean_exit_without_gpu(tmp_path):
  res = _run_script("--help")
  assert res.returncode == 0 and "--out" in res.stdout
  if any(d.platform == "gpu" for d in jax.devices()):
    pytest.skip("a GPU is present: the script would run its checks")
  res = _run_script("--out", str(tmp_path))
  assert res.returncode == 0, res.stderr
  assert "no GPU" in res.stdout


@pytest.mark.slow
@pytest.mark.parametrize("masked", [False, True])
def test_streamed_weights_match(masked, monkeypatch):
  # 16-wide column blocks give two blocks at H=32, a size interpret mode runs quickly
  monkeypatch.setattr("jrnn.kernels.pallas_triton.STREAM_COLS", 16)
  _compare(ACTIVATIONS["tanh"], 6, 5, 32, mask_p=0.7 if masked else None, unroll=2,
           resident=False)
