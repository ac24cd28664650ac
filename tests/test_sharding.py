"""Data parallelism: 4 forced CPU devices give the result of 1 device."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrnn.training import sharding

# Runs in a fresh interpreter: XLA reads XLA_FLAGS once, when JAX starts.
_SCRIPT = textwrap.dedent("""
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    import jax.numpy as jnp
    import numpy as np
    import jrnn
    from jrnn.training import sharding, steps as jtrain, optimizers

    assert jax.device_count() == 4, jax.devices()
    V, H, T, B = 6, 5, 7, 8
    params = jrnn.init_params(jax.random.key(0), V, H, V, scheme="glorot", dtype=jnp.float64)
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (3, T + 1, B), 0, V, jnp.int32))
    batches = [jtrain.Batch(t[:-1], t[1:], key=jax.random.key(10 + i))
               for i, t in enumerate(tokens)]
    loss = jtrain.sequence_loss("cross_entropy", one_hot=V, dropout=0.2)
    opt = optimizers.make_optimizer("adam", 1e-2, clip_norm=1.0)

    def train(mesh):
      step = jtrain.make_stream_train_step(loss, opt, mesh=mesh)
      p, s = sharding.replicate((params, opt.init(params)), mesh)
      h = sharding.shard_batch(jnp.zeros((B, H), jnp.float64), mesh, batch_axis=0)
      out = []
      for b in batches:
        p, s, h, m = step(p, s, h, sharding.shard_batch(b, mesh))
        out.append(float(m["loss"]))
      return p, h, out

    p4, h4, l4 = train(sharding.data_mesh())
    p1, h1, l1 = train(sharding.data_mesh(jax.devices()[:1]))
    assert len(p4.w_hh.sharding.device_set) == 4 and p4.w_hh.sharding.is_fully_replicated
    assert len(h4.sharding.device_set) == 4 and not h4.sharding.is_fully_replicated
    np.testing.assert_allclose(l4, l1, rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(p4), jax.tree_util.tree_leaves(p1)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(np.asarray(h4), np.asarray(h1), rtol=1e-10, atol=1e-13)

    # The plain step too, with a loss mask.
    sq = jtrain.sequence_loss("squared_error")
    xs = jax.random.normal(jax.random.key(2), (T, B, 2), jnp.float64)
    ys = jax.random.normal(jax.random.key(3), (T, B, 1), jnp.float64)
    mask = np.asarray(jax.random.bernoulli(jax.random.key(4), 0.7, (T, B)))
    q = jrnn.init_params(jax.random.key(5), 2, H, 1, dtype=jnp.float64, scheme="glorot")
    sgd = optimizers.make_optimizer("momentum", 0.1)
    res = []
    for mesh in (sharding.data_mesh(), sharding.data_mesh(jax.devices()[:1])):
      step = jtrain.make_train_step(sq, sgd, has_aux=True, mesh=mesh)
      p, s = sharding.replicate((q, sgd.init(q)), mesh)
      for _ in range(2):
        p, s, m = step(p, s, sharding.shard_batch(jtrain.Batch(xs, ys, mask), mesh))
      res.append(p)
    for a, b in zip(*map(jax.tree_util.tree_leaves, res)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-13)
    print("SHARDED_OK")
""")


@pytest.mark.slow
def test_four_devices_equal_one():
  env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
             + " --xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "SHARDED_OK" in proc.stdout


def test_shard_batch_checks_divisibility_and_rank():
  mesh = sharding.data_mesh()
  n = len(mesh.local_devices)
  x = sharding.shard_batch(np.zeros((3, 2 * n, 4), np.float32), mesh)
  assert x.shape == (3, 2 * n, 4)
  with pytest.raises(ValueError, match="needs? an axis 1|need an axis 1"):
    sharding.shard_batch(np.zeros((5,)), mesh)
  if n > 1:
    with pytest.raises(ValueError, match="divisible"):
      sharding.shard_batch(np.zeros((3, n + 1)), mesh)
  with pytest.raises(ValueError, match="devices must not be empty"):
    sharding.data_mesh([])
  key = sharding.shard_batch({"k": jax.random.key(0)}, mesh)["k"]
  assert key.sharding.is_fully_replicated
  assert jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
