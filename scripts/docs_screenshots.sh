#!/usr/bin/env bash
# Build the docs site and screenshot three pages with headless Chromium (Debian's `chromium`):
# the start page, one API page and one results page, into docs/screenshots/ (docs/README.md).
#   bash scripts/docs_screenshots.sh [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
port="${1:-8765}"
site="$(mktemp -d)"
mkdocs build --strict --site-dir "$site"
python -m http.server "$port" --bind 127.0.0.1 --directory "$site" >/dev/null 2>&1 &
server=$!
trap 'kill "$server"' EXIT
sleep 1
shoot() {  # page, png
  chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$(mktemp -d)" \
    --hide-scrollbars --virtual-time-budget=3000 --window-size=1280,1600 \
    --screenshot="docs/screenshots/$2" "http://127.0.0.1:$port/$1"
}
mkdir -p docs/screenshots
shoot index.html start.png
shoot api/diagnostics.html api_diagnostics.png
shoot mnist1d.html results_mnist1d.png
