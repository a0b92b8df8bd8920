#!/usr/bin/env bash
# System packages ctxmem's tools and tests use, on a Debian/Ubuntu machine:
#   bubblewrap + libseccomp  — the kernel workload's sandbox (untrusted kernels run under bwrap + seccomp)
#   postgresql               — the PostgreSQL store's contract tests start a real server
#   chromium                 — the eval report is checked in a real headless browser
# Installs only what is missing. Without root (or sudo) or apt, it says what it skipped and
# exits 0: the library works without them and the tests that need one skip with the reason.
# CTXMEM_SYSTEM_DEPS_STRICT=1 (CI) makes any failure fatal.
set -uo pipefail
strict="${CTXMEM_SYSTEM_DEPS_STRICT:-0}"
fail() {
  echo "system deps: $*" >&2
  if [ "$strict" = "1" ]; then exit 1; fi
  echo "system deps: continuing without them (the tests that need them skip with the reason)" >&2
  exit 0
}
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
ls /usr/lib/*-linux-gnu/libseccomp.so.2 >/dev/null 2>&1 || need+=(libseccomp2)
{ command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  echo "system deps: all present (bubblewrap, libseccomp, postgresql, chromium)"
  exit 0
fi
command -v apt-get >/dev/null 2>&1 || fail "no apt-get here; install ${need[*]} with your package manager"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else fail "need root or sudo to install ${need[*]}"; fi
fi
echo "system deps: installing ${need[*]}"
$SUDO apt-get update -qq || fail "apt-get update failed"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" \
  || fail "apt-get install ${need[*]} failed"
