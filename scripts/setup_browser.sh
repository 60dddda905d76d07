#!/usr/bin/env bash
# Give the browser test (tests/web/test_browser.py) a real Chromium: Debian's `chromium`
# package (driven over the DevTools protocol, so no chromedriver). Instant when one is
# installed; best effort otherwise: without root/apt it only reports what is missing.
set -uo pipefail
for name in chromium chromium-browser google-chrome google-chrome-stable; do
    command -v "$name" >/dev/null 2>&1 && exit 0
done
[ -n "${MOSHI_CHROMIUM:-}" ] && [ -x "${MOSHI_CHROMIUM}" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup_browser: installing chromium" >&2
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 ||
     { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }) ||
        echo "setup_browser: could not install chromium; the browser test will be skipped (failed in CI)" >&2
else
    echo "setup_browser: no Chromium (not root or no apt-get); the browser test will be skipped (failed in CI)" >&2
fi
exit 0
