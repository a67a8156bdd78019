#!/bin/sh
# Headless Chromium (Debian's `chromium`) for the tests that open the HTML reports and take a
# screenshot. Installs it with apt-get when missing and running as root; otherwise says what to run.
set -e
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (apt-get) for the report tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
else
    echo "chromium is missing: the HTML report tests will be skipped. Install it with" >&2
    echo "    sudo apt-get install -y chromium    (Debian/Ubuntu; or your system's chromium package)" >&2
fi
