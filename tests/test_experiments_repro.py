"""scripts/experiments/online_experiment.py: its quick mode gives the same results.json twice, byte for byte;
three streams (train, validation, test) with their digests; times only in timing.json; an
existing --out refused. (scripts/experiments/gradient_study.py's test is in test_diagnostics.py.)"""
import json

import pytest

import helpers





@pytest.mark.slow
def test_online_experiment_quick_mode_is_reproducible(tmp_path, capsys):
  exp = helpers.load_script("online_experiment")
  texts = []
  for name, extra in (("a", []), ("b", ["--no-plot"])):
    exp.main(["--out", str(tmp_path / name), "--quick"] + extra)
    texts.append((tmp_path / name / "results.json").read_text())
  helpers.assert_same_results(*texts)
  results = json.loads(texts[0])
  assert results["command"] == "python scripts/experiments/online_experiment.py --quick"
  assert results["git"]["commit"] and results["versions"]["jax"]
  assert results["seeds"] == [0, 1] and "out" not in results["config"]
  digests = results["data_sha256"]
  assert sorted(digests) == ["test", "train", "val"] and len(set(digests.values())) == 3
  assert list(results["curves"]) == ["TBPTT τ=2", "UORO", "SnAp-1", "RTRL"]
  for curve in results["curves"].values():
    assert len(curve["losses"]) == 2 and len(curve["losses"][0]) == 4  # (seeds, windows)
    for split in ("val_accuracy", "test_accuracy"):
      assert len(curve[split]) == 2 and all(0 <= a <= 1 for a in curve[split])
  assert "seconds" not in json.dumps(results) and "us_per_step" not in json.dumps(results)
  assert {r["hidden"] for r in results["state_bytes"]} == {4}
  timing = json.loads((tmp_path / "a" / "timing.json").read_text())
  assert "--out" in timing["command"] and timing["wall_s"] > 0
  assert set(timing["learn_s"]) == set(results["curves"])
  assert all(r["us_per_step"] > 0 for r in timing["cost"])
  md = (tmp_path / "a" / "results.md").read_text()
  assert "| RTRL |" in md and "test accuracy" in md and "µs per step" in md
  assert (tmp_path / "a" / "learning.png").stat().st_size > 0
  assert not (tmp_path / "b" / "learning.png").exists()
  capsys.readouterr()
  with pytest.raises(SystemExit):  # a user's results are not replaced without --overwrite
    exp.main(["--out", str(tmp_path / "a"), "--quick"])
  assert "already holds results.json" in capsys.readouterr().err


@pytest.mark.parametrize("argv, fragment", [
    (["--seeds", "0"], "--seeds must be >= 1, got 0"),
    (["--test-episodes", "0"], "--test-episodes must be >= 1, got 0"),
    (["--val-episodes", "-1"], "--val-episodes must be >= 1, got -1")])
def test_online_experiment_refuses_bad_sizes(tmp_path, capsys, argv, fragment):
  exp = helpers.load_script("online_experiment")
  with pytest.raises(SystemExit):
    exp.parse_args(["--out", str(tmp_path)] + argv)
  assert fragment in capsys.readouterr().err
