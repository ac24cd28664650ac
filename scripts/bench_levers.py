"""Lever study: variants of jrnn's hand path at the CPU anchor sizes, alternated in one process.

The numbers behind the "Levers" table of BENCHMARKS.md. `hand*`/`autodiff` time jrnn itself;
`plain`, `fusedout`, `transposed` and `catgemm` are self-contained variants of the hand backward
pass (tanh, no mask) kept here only so the rejected levers can be re-measured:

    python scripts/bench_levers.py 0,1,2 hand,hand_u2,autodiff,plain,fusedout,catgemm 7

Arguments: size indices into SIZES, implementation names, rounds.
"""
import sys, time, statistics, functools

import jax
import jax.numpy as jnp

import jrnn
from jrnn.bptt import reverse_deltas, previous_states

SIZES = [(1, 1000, 16, 64, 16), (32, 128, 64, 256, 64), (128, 256, 128, 512, 128)]

def fused_factory(variant):
  @functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
  def f(w_xh, w_hh, b_h, w_hy, b_y, xs, h0, unroll):
    return fwd(w_xh, w_hh, b_h, w_hy, b_y, xs, h0, unroll)[0]
  def fwd(w_xh, w_hh, b_h, w_hy, b_y, xs, h0, unroll):
    H = w_hh.shape[0]
    u = xs @ w_xh.T + b_h[None, None]
    if variant == "fusedout":
      wcat = jnp.concatenate([w_hh.T, w_hy.T], 1)
      def body(h, u_t):
        z = h @ wcat; hn = jnp.tanh(z[:, :H] + u_t); return hn, (hn, z[:, H:])
      hT, (hs, yp) = jax.lax.scan(body, h0, u, unroll=unroll)
      ys = jnp.concatenate([yp[1:], (hT @ w_hy.T)[None]], 0) + b_y[None, None]
    elif variant == "transposed":
      def body(hT, uT_t):
        hn = jnp.tanh(w_hh @ hT + uT_t); return hn, hn
      _, hsT = jax.lax.scan(body, h0.T, jnp.swapaxes(u, 1, 2), unroll=unroll)
      hs = jnp.swapaxes(hsT, 1, 2)
      ys = hs @ w_hy.T + b_y[None, None]
    else:
      wt = w_hh.T
      def body(h, u_t):
        hn = jnp.tanh(h @ wt + u_t); return hn, hn
      _, hs = jax.lax.scan(body, h0, u, unroll=unroll)
      ys = hs @ w_hy.T + b_y[None, None]
    return (ys, hs), (w_xh, w_hh, w_hy, xs, h0, hs)
  def bwd(unroll, res, g):
    w_xh, w_hh, w_hy, xs, h0, hs = res
    gys, ghs = g
    T, B, H = hs.shape
    dsig = 1 - hs * hs
    if variant == "fusedout":
      wcat = jnp.concatenate([w_hy, w_hh], 0)
      def body(d_next, inp):
        gy, gh, s = inp
        d = (gh + jnp.concatenate([gy, d_next], 1) @ wcat) * s
        return d, d
      d1, ds = jax.lax.scan(body, jnp.zeros_like(h0), (gys, ghs, dsig), reverse=True, unroll=unroll)
    elif variant == "transposed":
      g_all = ghs + gys @ w_hy
      def body(dT, inp):
        gT, sT = inp
        d = (gT + w_hh.T @ dT) * sT; return d, d
      d1T, dsT = jax.lax.scan(body, jnp.zeros_like(h0.T), (jnp.swapaxes(g_all,1,2), jnp.swapaxes(dsig,1,2)), reverse=True, unroll=unroll)
      ds = jnp.swapaxes(dsT, 1, 2); d1 = d1T.T
    else:
      ds, _ = reverse_deltas(w_hh, dsig, ghs + gys @ w_hy, None, unroll)
      d1 = ds[0]
    dh0 = d1 @ w_hh
    hp = previous_states(hs, h0).reshape(-1, H); d2 = ds.reshape(-1, H)
    if variant == "catgemm":
      dw = d2.T @ jnp.concatenate([hp, xs.reshape(T*B, -1)], 1)
      dw_hh, dw_xh = dw[:, :H], dw[:, H:]
    else:
      dw_hh = d2.T @ hp; dw_xh = d2.T @ xs.reshape(T*B, -1)
    dw_hy = gys.reshape(T*B, -1).T @ hs.reshape(-1, H)
    return dw_xh, dw_hh, d2.sum(0), dw_hy, gys.sum((0, 1)), ds @ w_xh, dh0
  f.defvjp(fwd, bwd)
  return f

def setup(B,T,I,H,O):
  p = jrnn.init_params(jax.random.key(0), I, H, O, scheme="glorot")
  x = jax.random.normal(jax.random.key(1),(T,B,I)); y=jax.random.normal(jax.random.key(2),(T,B,O))
  return p, x, y

def jr(bptt, unroll=1):
  def build(B,T,I,H,O):
    p, x, y = setup(B,T,I,H,O)
    def loss(p):
      return jrnn.squared_error(jrnn.forward(p, x, bptt=bptt, unroll=unroll).ys, y, reduction="batch_mean")
    g = jax.jit(jax.value_and_grad(loss)); return lambda: jax.block_until_ready(g(p))
  return build

def var(variant, unroll=1):
  f = fused_factory(variant)
  def build(B,T,I,H,O):
    p, x, y = setup(B,T,I,H,O)
    def loss(p):
      ys, _ = f(p.w_xh, p.w_hh, p.b_h, p.w_hy, p.b_y, x, jnp.zeros((B,H)), unroll)
      return jnp.sum((ys-y)**2)/B
    g = jax.jit(jax.value_and_grad(loss)); return lambda: jax.block_until_ready(g(p))
  return build

IMPLS = dict(hand=jr("hand"), hand_u2=jr("hand",2), hand_u4=jr("hand",4), hand_u8=jr("hand",8),
             autodiff=jr("autodiff"), plain=var("plain"), fusedout=var("fusedout"),
             transposed=var("transposed"), catgemm=var("catgemm"))
if __name__ == "__main__":
  sizes = [SIZES[int(i)] for i in sys.argv[1].split(",")]
  names = sys.argv[2].split(",")
  rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
  for s in sizes:
    fns = {k: IMPLS[k](*s) for k in names}
    for f in fns.values(): f(); f()
    ts = {k: [] for k in names}
    for r in range(rounds):
      for k, f in fns.items():
        t0 = time.perf_counter(); f(); ts[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v)*1e3 for k, v in ts.items()}
    print(s, "  ".join(f"{k}={v:.2f}" for k, v in med.items()), flush=True)
