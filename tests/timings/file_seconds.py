"""Writes ``file_seconds.json`` beside this script: each test file's total seconds in a JUnit XML.

Usage: ``python -m pytest --junitxml=/tmp/junit.xml`` (the whole suite), then
``python tests/timings/file_seconds.py /tmp/junit.xml "what run this was"``. ``tests/conftest.py``
reads the table to start the costliest files first.
"""

import collections
import json
import pathlib
import sys
import xml.etree.ElementTree as ET


def main(junit: str, source: str) -> None:
  seconds: collections.Counter = collections.Counter()
  for case in ET.parse(junit).getroot().iter("testcase"):
    path = case.get("classname", "").split(".")
    # classname "tests.test_x" (module) or "tests.test_x.TestClass": the file is the first two.
    seconds["/".join(path[:2]) + ".py"] += float(case.get("time", 0.0))
  table = {k: round(v, 1) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])}
  out = pathlib.Path(__file__).with_name("file_seconds.json")
  out.write_text(json.dumps({"source": source, "seconds": table}, indent=1) + "\n")
  print(f"{out}: {len(table)} files, {sum(table.values()):.0f} s in all")


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
