"""Synthetic data sets for the experiments, pure functions of a PRNG key."""
from jrnn.data import adding, charlm, copy_task, sine
