#!/usr/bin/env bash
# Debian's Chromium for the dashboard's browser tests (tests/dashboard/test_browser.py, driven by
# Playwright with executable_path=/usr/bin/chromium).
#
#   bash .ci/chromium.sh
#
# Installs the `chromium` package with apt-get when it is missing (bounded: an unreachable mirror
# cannot hold CI up for long; quiet). When Chromium cannot be had (no apt, not root, no network) it
# says so and exits 0: the browser tests then skip, saying why.
set -euo pipefail

say() { echo "chromium.sh: $*" >&2; }

if [[ -x /usr/bin/chromium ]] || command -v chromium >/dev/null 2>&1; then
  say "chromium is installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "no apt-get; the browser tests will skip"
  exit 0
fi
sudo=()
if [[ "$(id -u)" != 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    say "not root; the browser tests will skip"
    exit 0
  fi
fi
limit=()
command -v timeout >/dev/null 2>&1 && limit=(timeout 600)
export DEBIAN_FRONTEND=noninteractive
say "installing chromium with apt-get"
if "${sudo[@]}" "${limit[@]}" apt-get update -qq -o Acquire::Retries=0 >&2 \
  && "${sudo[@]}" "${limit[@]}" apt-get install -y -qq --no-install-recommends chromium >&2; then
  say "installed: $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
else
  say "apt-get could not install chromium; the browser tests will skip"
fi
exit 0
