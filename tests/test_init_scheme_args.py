"""An argument an init scheme does not read is an error naming the scheme and what it takes.

The table of what each scheme reads is ``jrnn.init.SCHEME_ARGS``; these tests check it against
every scheme × optional argument, for the three initialisers.
"""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn.init import SCHEME_ARGS

OPTIONAL = {"scale": 0.5, "spectral_radius": 0.5}
INITS = {
    "init_params": functools.partial(jrnn.init_params, jax.random.key(0), 2, 3, 1),
    "init_layer": functools.partial(jrnn.init_layer, jax.random.key(0), 2, 3),
    "init_stacked": functools.partial(jrnn.init_stacked, jax.random.key(0), 2, 3, 1, num_layers=2,
                                      bidirectional=True),
}

REFUSED = [(init, scheme, arg) for init in INITS for scheme in jrnn.SCHEMES for arg in OPTIONAL
           if arg not in SCHEME_ARGS[scheme]]
ACCEPTED = [(init, scheme, args) for init in INITS for scheme in jrnn.SCHEMES
            for args in [(), *((a,) for a in SCHEME_ARGS[scheme])]]


def test_the_table_covers_every_scheme_and_only_known_arguments():
  assert tuple(SCHEME_ARGS) == jrnn.SCHEMES
  assert set().union(*SCHEME_ARGS.values()) == set(OPTIONAL)
  # The cases: each used to be silently ignored.
  assert "spectral_radius" not in SCHEME_ARGS["orthogonal"]
  assert "scale" not in SCHEME_ARGS["spectral"] and SCHEME_ARGS["glorot"] == ()


@pytest.mark.parametrize("init, scheme, arg", REFUSED, ids=["-".join(c) for c in REFUSED])
def test_an_argument_the_scheme_does_not_read_is_refused(init, scheme, arg):
  takes = SCHEME_ARGS[scheme]
  own = "takes only " + " and ".join(takes) if takes else "takes neither scale nor spectral_radius"
  match = re.escape(f"scheme={scheme!r} {own}, got {arg}=0.5; {arg} is read by scheme")
  with pytest.raises(ValueError, match=match):
    INITS[init](scheme=scheme, **{arg: OPTIONAL[arg]})


@pytest.mark.slow
@pytest.mark.parametrize("init, scheme, args", ACCEPTED,
                         ids=[f"{i}-{s}-{'+'.join(a) or 'defaults'}" for i, s, a in ACCEPTED])
def test_every_accepted_combination_works(init, scheme, args):
  out = INITS[init](scheme=scheme, **{a: OPTIONAL[a] for a in args})
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(out))


def test_defaults_left_out_or_none_never_trip_the_check():
  # None means "not given": the interop layers and scripts pass both through as None.
  for scheme in jrnn.SCHEMES:
    jrnn.init_params(jax.random.key(0), 2, 3, 1, scheme=scheme, scale=None, spectral_radius=None)
  jrnn.init_params(jax.random.key(0), 2, 3, 1)  # default scheme "seed"


def test_the_accepted_arguments_take_effect():
  key = jax.random.key(1)
  p = jrnn.init_params(key, 2, 4, 1, scheme="orthogonal", scale=0.5, dtype=jnp.float64)
  np.testing.assert_allclose(np.linalg.svd(np.asarray(p.w_hh), compute_uv=False), 0.5,
                             rtol=1e-12)
  p = jrnn.init_params(key, 2, 4, 1, scheme="spectral", spectral_radius=0.5, dtype=jnp.float64)
  np.testing.assert_allclose(jrnn.spectral_radius(p.w_hh), 0.5, rtol=1e-10)
