#!/usr/bin/env bash
# System packages ctxmem's tests and tools need on a fresh Debian machine:
#   bubblewrap + libseccomp  — the kernel workload's sandbox (untrusted kernels run under bwrap + seccomp)
#   postgresql               — the PostgreSQL store's contract tests start a real server
#   chromium                 — the eval report is checked in a real headless browser
# Idempotent: installs only what is missing. Needs root (or sudo) and Debian's package mirror.
set -euo pipefail
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
[ -e /usr/lib/x86_64-linux-gnu/libseccomp.so.2 ] || [ -e /usr/lib/aarch64-linux-gnu/libseccomp.so.2 ] || need+=(libseccomp2)
{ command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  echo "system deps: all present"; exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "system deps: installing ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
