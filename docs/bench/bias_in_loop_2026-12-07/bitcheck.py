"""Before/after bit check of the bias-inside-the-loop change (session 6): run with each tree,
then compare: python bitcheck.py TREE OUT.npz; np.array_equal over every array of the two files."""
import sys, numpy as np, jax, jax.numpy as jnp
sys.path.insert(0, sys.argv[1])
import jrnn
print(jrnn.__file__)
out = {}
def softsign(a):
  return a / (1 + jnp.abs(a))
for act in ["tanh", "relu", "softplus", "sigmoid", softsign]:
  for masked in [False, True]:
    k = jax.random.key(1)
    params = jrnn.init_params(k, 5, 16, 3)
    xs = jax.random.normal(jax.random.key(2), (11, 4, 5))
    lengths = jnp.array([11, 7, 3, 9])
    kw = dict(activation=act)
    if masked: kw["lengths"] = lengths
    try:
      f = jax.jit(lambda p: jrnn.forward(p, xs, **kw).ys)
      g = jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(jrnn.forward(p, xs, **kw).ys))))
      ys = f(params); gr = g(params)
    except Exception as e:
      print(act, masked, "ERR", type(e).__name__, str(e)[:200]); continue
    out[f"{getattr(act, '__name__', act)}{masked}ys"] = np.asarray(ys)
    for i, l in enumerate(jax.tree_util.tree_leaves(gr)): out[f"{getattr(act, '__name__', act)}{masked}g{i}"] = np.asarray(l)
np.savez(sys.argv[2], **out)
