#!/usr/bin/env bash
# Open a run's report.html in headless Chromium: save a screenshot and fail on browser console errors
# (a CSP violation, i.e. anything the page tried to load, shows up there too).
#
#   scripts/report_screenshot.sh RUN_DIR [SCREENSHOT.png] [HEIGHT]
#
# Installs nothing: uses Debian's `chromium` (or chromium-browser / google-chrome) if present, otherwise
# says so and exits 3 (`apt-get install -y chromium` provides it). Renders the report first when
# RUN_DIR/report.html does not exist yet. Exit status: 0 fine, 1 console errors, 2 usage, 3 no browser.
set -euo pipefail

run_dir=${1:?usage: scripts/report_screenshot.sh RUN_DIR [SCREENSHOT.png] [HEIGHT]}
shot=${2:-$run_dir/report-screenshot.png}
height=${3:-4000}
here=$(cd "$(dirname "$0")/.." && pwd)

browser=""
for name in chromium chromium-browser google-chrome; do
  if command -v "$name" >/dev/null 2>&1; then browser=$(command -v "$name"); break; fi
done
if [[ -z $browser ]]; then
  echo "no chromium found: install it with 'apt-get install -y chromium' to take report screenshots" >&2
  exit 3
fi

if [[ ! -f $run_dir/report.html ]]; then
  ioa=${IOA:-$here/.venv/bin/ioa}
  "$ioa" report "$run_dir" >/dev/null
fi
page="file://$(cd "$run_dir" && pwd)/report.html"

profile=$(mktemp -d)
logs=$(mktemp -d)
trap 'rm -rf "$profile" "$logs"' EXIT
# No network, no background services, a throw-away profile: the page must render from itself alone.
flags=(--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update
       --disable-sync --no-first-run --disable-default-apps --user-data-dir="$profile")

timeout 120 "$browser" "${flags[@]}" --screenshot="$shot" --window-size="1280,$height" "$page" \
  >"$logs/shot.out" 2>"$logs/shot.err" || { cat "$logs/shot.err" >&2; exit 1; }
timeout 120 "$browser" "${flags[@]}" --enable-logging=stderr --v=0 --dump-dom "$page" \
  >"$logs/dom.html" 2>"$logs/dom.err" || { cat "$logs/dom.err" >&2; exit 1; }

# Console messages are logged as CONSOLE lines; CSP refusals say "Refused to ...".
errors=$(grep -E 'CONSOLE|Refused to|Uncaught' "$logs/dom.err" || true)
sections=$(grep -o '<section id="[a-z]*"' "$logs/dom.html" | sed 's/.*id="\(.*\)"/\1/' | tr '\n' ' ')
echo "screenshot: $shot"
echo "sections in the rendered DOM: $sections"
if [[ -n $errors ]]; then
  echo "browser console errors:" >&2
  echo "$errors" >&2
  exit 1
fi
echo "browser console: no errors"
