"""Arguments that conflict or would be dropped are refused by name (issue 24): the deprecated
``bptt=`` against ``grad=``/``kernel=``, and a readout bias without its weights (or the reverse).
Every row raises before anything is traced."""
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

I, H, O, T, B = 2, 3, 2, 4, 1
P = jrnn.RNNParams(np.zeros((H, I)), np.zeros((H, H)), np.zeros(H), np.zeros((O, H)),
                   np.zeros(O))
X = np.zeros((T, B, I))
STACK = jrnn.StackedParams(((P.layer,),), P.w_hy, P.b_y)

ROWS = [
    ("forward bptt='hand', grad='autodiff'",
     lambda: jrnn.forward(P, X, bptt="hand", grad="autodiff"),
     ValueError, r"bptt='hand' \(deprecated\) means grad='hand', kernel='xla' and conflicts "
                 "with grad='autodiff'; pass grad= and kernel= alone"),
    ("forward bptt='autodiff', kernel='pallas'",
     lambda: jrnn.forward(P, X, bptt="autodiff", kernel="pallas"),
     ValueError, "bptt='autodiff' .* conflicts with kernel='pallas'"),
    ("stacked_forward bptt='pallas', grad='autodiff', kernel='xla'",
     lambda: jrnn.stacked_forward(STACK, X, bptt="pallas", grad="autodiff", kernel="xla"),
     ValueError, "conflicts with grad='autodiff', kernel='xla'"),
    ("stacked_forward b_y without w_hy",
     lambda: jrnn.stacked_forward(STACK._replace(w_hy=None), X),
     ValueError, r"params.b_y is given but params.w_hy is None: a readout needs both "
                 r"w_hy \(O, 3\) and b_y \(O,\), or neither"),
    ("stacked_forward w_hy without b_y",
     lambda: jrnn.stacked_forward(STACK._replace(b_y=None), X),
     ValueError, "params.w_hy is given but params.b_y is None"),
    ("forward w_hy None", lambda: jrnn.forward(P._replace(w_hy=None), X),
     ValueError, r"forward needs a readout: .* got w_hy=None, b_y=\(2,\)"),
    ("forward b_y None", lambda: jrnn.forward(P._replace(b_y=None), X),
     ValueError, r"forward needs a readout: .* got w_hy=\(2, 3\), b_y=None"),
]


@pytest.mark.parametrize("label, call, exc, fragment", ROWS, ids=[r[0] for r in ROWS])
def test_conflicting_or_dropped_arguments_are_refused(label, call, exc, fragment):
  with pytest.raises(exc, match=fragment):
    call()


def test_bptt_agreeing_with_grad_and_kernel_still_runs_with_its_warning():
  with pytest.warns(DeprecationWarning, match="bptt='autodiff' is deprecated"):
    out = jrnn.forward(P, X, bptt="autodiff", grad="autodiff", kernel="xla")
  np.testing.assert_array_equal(out.hs, jnp.zeros((T, B, H)))
