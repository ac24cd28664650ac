#!/usr/bin/env bash
# Write a run's report (jrnn-report) and screenshot it with headless Chromium (Debian's
# `chromium`), opened from the file: the page needs no server and no network.
#   bash scripts/report_screenshot.sh RUN_DIR [PNG]   (default docs/flow/run_report_chromium.png)
set -euo pipefail
cd "$(dirname "$0")/.."
run="${1:?usage: report_screenshot.sh RUN_DIR [PNG]}"
png="${2:-docs/flow/run_report_chromium.png}"
page="$(python -m jrnn.training.run_report "$run" --overwrite)"
chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --user-data-dir="$(mktemp -d)" \
  --hide-scrollbars --virtual-time-budget=3000 --window-size=1200,2400 \
  --screenshot="$png" "file://$(realpath "$page")"
echo "$png"
