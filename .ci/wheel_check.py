"""The built wheel, checked by .ci/run.

``files WHEEL``: the wheel holds jrnn/ and its dist-info only (no tests, docs or screenshots), and
the CPU kernel's C++ source (compiled on first use).
``run VENV``: run with VENV's python from outside the checkout, after installing the wheel alone:
jrnn imports from VENV (not the work tree) and gives a finite forward pass and gradient, and the
CPU kernel builds from the wheel's source (where a compiler exists) and agrees with XLA's loops.
"""

import pathlib
import sys
import zipfile


def files(wheel: str) -> None:
  names = zipfile.ZipFile(wheel).namelist()
  dist_info = pathlib.Path(wheel).name.split("-")[0] + "-"
  outside = [
    n for n in names if not (n.startswith("jrnn/") or n.split("/")[0].startswith(dist_info))
  ]
  if outside or not any(n == "jrnn/__init__.py" for n in names):
    sys.exit(f"the wheel must hold jrnn/ and its dist-info only; also holds {outside}")
  if "jrnn/kernels/cpu_recurrence.cc" not in names:
    sys.exit("the wheel lacks jrnn/kernels/cpu_recurrence.cc, the CPU kernel's source")
  print(f"wheel: {len(names)} files, all under jrnn/ or its dist-info, the kernel's source too")


def run(venv: str) -> None:
  import jax
  import jax.numpy as jnp

  import jrnn

  where = pathlib.Path(jrnn.__file__).resolve()
  if not where.is_relative_to(pathlib.Path(venv).resolve()):
    sys.exit(f"jrnn was imported from {where}, not from the wheel installed in {venv}")
  params = jrnn.init_params(jax.random.key(0), 3, 5, 2)
  xs = jnp.ones((4, 8, 3))
  out = jrnn.forward(params, xs)
  grads = jax.grad(lambda p: jrnn.squared_error(jrnn.forward(p, xs).ys, jnp.zeros((4, 8, 2))))(
    params
  )
  leaves = jax.tree_util.tree_leaves((out.ys, grads))
  if out.ys.shape != (4, 8, 2) or not all(bool(jnp.all(jnp.isfinite(a))) for a in leaves):
    sys.exit(f"the installed wheel's forward or gradient is wrong: ys {out.ys.shape}")
  print(f"installed wheel: forward {out.ys.shape} and gradient from {where.parent}")
  from jrnn.kernels import cpu_ffi

  if not cpu_ffi.available():
    print(f"installed wheel: CPU kernel not built ({cpu_ffi.unavailable_reason()}); XLA loops")
    return
  got = jrnn.forward(params, xs, kernel="cpu").ys
  want = jrnn.forward(params, xs, kernel="xla").ys
  if not bool(jnp.allclose(got, want, rtol=1e-5, atol=1e-6)):
    sys.exit("the installed wheel's CPU kernel disagrees with the XLA loops")
  print(f"installed wheel: CPU kernel built from {cpu_ffi.SOURCE} and equal to the XLA loops")


if __name__ == "__main__":
  {"files": files, "run": run}[sys.argv[1]](sys.argv[2])
