"""Data for the tasks: the adding problem, copy task and sine waves (pure functions of a PRNG
key) and the character-level corpus shipped with CPython."""
from jrnn.data import adding, charlm, copy_task, sine

__all__ = ("adding", "charlm", "copy_task", "sine")
