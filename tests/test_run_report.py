"""``jrnn-report``: a self-contained HTML page from a finished run and from one still going.

The page must parse as HTML, embed every figure as a data: URI, and name no http(s) URL; it
replaces only files it wrote. A slow test opens it in headless Chromium where installed.
"""
import base64
import html.parser
import os
import shutil
import subprocess

import pytest

from jrnn.training import cli, loop, run_report

TINY = ["--task", "adding", "--hidden", "6", "--seq-len", "8", "--batch-size", "4",
        "--val-batch", "4", "--no-progress", "--ema", "0", "--steps", "6", "--log-every", "2",
        "--diagnose-every", "2"]


class _Page(html.parser.HTMLParser):
  """Collects tags, image sources and attribute values; fails on unbalanced structure."""

  VOID = {"meta", "img", "br", "hr", "link", "input"}

  def __init__(self):
    super().__init__()
    self.stack, self.imgs, self.values, self.tags = [], [], [], []

  def handle_starttag(self, tag, attrs):
    self.tags.append(tag)
    self.values += [v for _, v in attrs if v]
    if tag == "img":
      self.imgs.append(dict(attrs))
    if tag not in self.VOID:
      self.stack.append(tag)

  def handle_endtag(self, tag):
    assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
    self.stack.pop()


def _parse(path):
  with open(path, encoding="utf-8") as f:
    text = f.read()
  page = _Page()
  page.feed(text)
  page.close()
  assert not page.stack, f"unclosed tags {page.stack}"
  assert text.startswith("<!DOCTYPE html>") and run_report.MARKER in text
  assert "http://" not in text and "https://" not in text  # nothing to fetch
  assert "<script" not in text and "<link" not in text
  return text, page


def _check_images(page, n):
  assert len(page.imgs) == n
  for img in page.imgs:
    assert img["src"].startswith("data:image/png;base64,") and img["alt"]
    png = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("runs") / "finished")
  cli.train_from_args(TINY + ["--out", out])
  return out


@pytest.mark.slow
def test_report_of_a_finished_run(finished):
  path = run_report.write_report(finished)
  assert path == os.path.join(finished, "report.html")
  text, page = _parse(path)
  _check_images(page, 5)  # loss, flow heat maps, spectrum, bound, clipping
  assert "finished: 6 steps" in text and "test_mse" in text and "--diagnose-every" not in text
  for name in run_report.FIGURES:  # the same figures beside it, for papers
    with open(os.path.join(finished, f"report_{name}.png"), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  # Its own files it replaces; another's it does not, unless told.
  assert run_report.write_report(finished) == path
  other = os.path.join(finished, "notes.html")
  with open(other, "w", encoding="utf-8") as f:
    f.write("<p>mine</p>")
  with pytest.raises(ValueError, match="was not written by jrnn-report; pass --overwrite"):
    run_report.write_report(finished, other)
  with open(other, encoding="utf-8") as f:
    assert f.read() == "<p>mine</p>"
  assert run_report.write_report(finished, other, overwrite=True) == other


@pytest.mark.slow
def test_report_of_a_running_run_and_one_without_diagnostics(finished, tmp_path):
  # A run still going: no checkpoint, no test.json, a half-written last line.
  running = str(tmp_path / "running")
  shutil.copytree(finished, running)
  for name in (loop.CKPT_NAME, loop.TEST_NAME):
    os.remove(os.path.join(running, name))
  # The finished run's report, where its test ran first (this test must not depend on that).
  for name in ["report.html"] + [f"report_{fig}.png" for fig in run_report.FIGURES]:
    if os.path.exists(os.path.join(running, name)):
      os.remove(os.path.join(running, name))
  for name in (loop.METRICS_NAME, loop.DIAGNOSTICS_NAME):
    with open(os.path.join(running, name), "a", encoding="utf-8") as f:
      f.write('{"step": 8, "tra')
  text, page = _parse(run_report.write_report(running))
  _check_images(page, 5)
  assert "running or stopped: logged up to step 6 of 6 (no checkpoint yet)" in text
  assert "half-written last line of metrics.jsonl, diagnostics.jsonl" in text
  # Without --diagnose-every: the loss figure and a note saying how to get the rest.
  os.remove(os.path.join(running, loop.DIAGNOSTICS_NAME))
  text, page = _parse(run_report.write_report(running, str(tmp_path / "plain.html")))
  _check_images(page, 1)
  assert "--diagnose-every N" in text


def test_report_cli_errors(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    run_report.main([str(tmp_path)])
  assert e.value.code == 2
  assert "holds no jrnn-train run" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(finished, tmp_path):
  path = run_report.write_report(finished)
  shot = str(tmp_path / "shot.png")
  subprocess.run(
      ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
       "--disable-background-networking", "--disable-component-update", "--disable-sync",
       "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
       "--virtual-time-budget=3000", "--window-size=1200,1600", f"--screenshot={shot}",
       "file://" + os.path.abspath(path)],
      check=True, capture_output=True, timeout=120)
  with open(shot, "rb") as f:
    data = f.read()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000  # a page, not a blank


SWEEP = ["--task", "adding", "--hidden", "6", "--seq-len", "8", "--batch-size", "3",
         "--val-batch", "4", "--no-progress", "--ema", "0", "--steps", "8", "--log-every", "4",
         "--ckpt-every", "4"]


@pytest.mark.slow
def test_report_of_a_sweep_shows_every_member_finished_and_running(tmp_path):
  """A sweep's directory gets one page: a row per member (values, last loss, metric, diverged
  step), one panel per member, no network; a sweep stopped half-way is reported from its
  metrics and checkpoint alone (no sweep.json yet)."""
  out = str(tmp_path / "sweep")
  cli.train_from_args(SWEEP + ["--sweep", "lr=1e-2,1e30;seed=0:2", "--out", out])
  path = run_report.write_report(out)
  text, page = _parse(path)
  _check_images(page, 1)
  assert "Sweep report" in text and "finished: 8 steps" in text
  members = text.split("<h2>Members</h2>")[1].split("</table>")[0]
  rows = members.split("<tr>")[2:]  # after the header row
  assert len(rows) == 4
  assert ["1e+30" in r for r in rows] == [False, False, True, True]
  no_divergence = [r.rstrip().endswith("<td></td></tr>") for r in rows]
  assert no_divergence == [True, True, False, False]  # the lr = 1e30 members diverged
  assert os.path.getsize(path[: -len(".html")] + "_members.png") > 1000
  # Stopped half-way: the summary file is gone, the metrics stop at step 4.
  mid = str(tmp_path / "mid")
  shutil.copytree(out, mid)
  os.remove(os.path.join(mid, "sweep.json"))
  os.remove(os.path.join(mid, "report.html"))
  with open(os.path.join(mid, "sweep_metrics.jsonl"), encoding="utf-8") as f:
    lines = f.read().splitlines()
  with open(os.path.join(mid, "sweep_metrics.jsonl"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines[:4]) + "\n" + lines[4][:10])  # step 4 of every member, a torn line
  text, page = _parse(run_report.write_report(mid, overwrite=True))
  assert "running or stopped" in text and "half-written" in text
  _check_images(page, 1)
