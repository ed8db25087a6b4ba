#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium for the browser tests.
# Installs it with apt-get (as root, or via sudo) only if it is missing; never
# downloads a browser any other way. Never fails the build: without Chromium the
# browser tests skip with a message saying so.
set -uo pipefail

CHROMIUM=${BROWSER_EXECUTABLE:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] && { echo "ensure_chromium: $CHROMIUM present"; exit 0; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else return 1; fi; }
if command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: installing chromium with apt-get"
  as_root apt-get update -q >/dev/null 2>&1 || true
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || true
fi
if [ -x "$CHROMIUM" ]; then
  echo "ensure_chromium: installed $CHROMIUM"
else
  echo "ensure_chromium: Chromium unavailable; the browser tests will be skipped"
fi
exit 0
