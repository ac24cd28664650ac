"""scripts/experiments/adding_experiment.py's --lengths/--steps defaults (parse only: nothing trains)."""
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _parse(argv):
  spec = importlib.util.spec_from_file_location(
      "adding_experiment_args", ROOT / "scripts" / "experiments" / "adding_experiment.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.parse(argv)


@pytest.mark.parametrize("lengths, steps", [
    (None, [1000, 3000, 8000, 6000]),
    (["100"], [3000]),
    (["400", "50"], [6000, 1000]),
])
def test_lengths_without_steps_take_each_ts_default(tmp_path, lengths, steps):
  argv = ["--out", str(tmp_path)] + (["--lengths", *lengths] if lengths else [])
  assert _parse(argv).steps == steps


def test_explicit_steps_still_win(tmp_path):
  assert _parse(["--out", str(tmp_path), "--lengths", "100", "200", "--steps", "7"]).steps == [7, 7]
  assert _parse(["--out", str(tmp_path), "--quick", "--lengths", "10", "12"]).steps == [20, 20]


def test_length_without_a_default_asks_for_steps(tmp_path, capsys):
  with pytest.raises(SystemExit):
    _parse(["--out", str(tmp_path), "--lengths", "300"])
  assert "--steps has no default for T=[300]" in capsys.readouterr().err
