"""The suite's own settings (tests/conftest.py): fast-compiling XLA flags for most tests, the
user's flags for ``shipped_xla`` ones."""
import os

import pytest

_FAST = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")


@pytest.mark.shipped_xla
def test_shipped_xla_tests_compile_with_the_users_flags():
  assert os.environ.get("XLA_FLAGS", "") == os.environ["JRNN_TEST_SHIPPED_XLA_FLAGS"]
  assert not any(flag in os.environ.get("XLA_FLAGS", "") for flag in _FAST)


def test_other_tests_compile_with_the_fast_flags_unless_turned_off():
  flags = os.environ.get("XLA_FLAGS", "")
  if os.environ["JRNN_TEST_FAST_XLA"] == "1":
    assert flags.startswith(os.environ["JRNN_TEST_SHIPPED_XLA_FLAGS"])
    assert all(flag in flags for flag in _FAST)
  else:
    assert flags == os.environ["JRNN_TEST_SHIPPED_XLA_FLAGS"]
