#!/usr/bin/env bash
# Installs what bench/run.py needs, as root: wrk (load generator), nginx-light and
# libnginx-mod-http-echo (the fast backend; echo reads upload bodies), apache2 +
# libapache2-mod-auth-openidc (the peer), curl (transfers); and, when tests/e2e/node_modules is
# missing, the e2e provider's npm packages (node >= 20.18 must already be there). Debian starts apache2/nginx as system services on install unless /usr/sbin/policy-rc.d exits
# 101, so one is put in place for the install (an existing one is left alone). Safe to re-run:
# installed packages are not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(wrk curl nginx-light libnginx-mod-http-echo apache2 libapache2-mod-auth-openidc)
missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== apt-get install ${missing[*]}"
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt_log=$(mktemp)
  if ! { apt-get -qq -o DPkg::Lock::Timeout=300 update \
         && DEBIAN_FRONTEND=noninteractive apt-get -qq -y -o DPkg::Lock::Timeout=300 \
              -o Dpkg::Use-Pty=0 install "${missing[@]}"; } >"$apt_log" 2>&1
  then
    cat "$apt_log" >&2
    echo "apt-get install failed" >&2
    exit 1
  fi
  rm -f "$apt_log"
  if [ "$own_policy" = 1 ]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
fi

if [ ! -d tests/e2e/node_modules/oidc-provider ]; then
  echo "== npm ci (tests/e2e: oidc-provider)"
  npm ci --prefix tests/e2e --no-audit --no-fund --loglevel=error
fi
