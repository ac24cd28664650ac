"""The main job: ``python scripts/train.py`` (same as ``jrnn-train``); ``--help`` lists flags."""

import sys

from jrnn.training.cli import main

if __name__ == "__main__":
  sys.exit(main())
