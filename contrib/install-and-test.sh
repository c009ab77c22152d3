#!/usr/bin/env bash
# Install what the test suite needs, then run it; exits with pytest's status.
#
# Why one script: CI (.ci/run) and a developer's fresh Debian box run exactly the same steps.
# System packages come from apt only when run as root and something is missing, so a prepared
# machine needs no network for them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

missing=()
for bin in ssh sshd tmux socat ip Xvfb x11vnc; do
    have "$bin" || missing+=("$bin")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "install-and-test: installing system packages (missing: ${missing[*]})" >&2
        # Installing openssh-server must not start the machine's own sshd: the tests bring
        # their own. policy-rc.d (exit 101 = "not allowed") tells invoke-rc.d so; it is
        # created only if absent and removed again when this script exits.
        policy=/usr/sbin/policy-rc.d
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 0755 "$policy"
            trap 'rm -f "$policy"' EXIT
        fi
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y \
            openssh-server openssh-client tmux socat iproute2 procps xvfb x11vnc
    else
        echo "install-and-test: missing ${missing[*]} and cannot apt-get (not root?);" \
            "end-to-end tests will skip, or fail when CI=true" >&2
    fi
fi

# pip refuses to touch an "externally managed" system Python (PEP 668) unless told to;
# pass the flag only when this pip knows it and this Python is marked so.
pip_flags=()
if python3 -m pip install --help 2>/dev/null | grep -q -- '--break-system-packages' &&
    python3 - <<'PY'
import sys, sysconfig, pathlib
in_venv = sys.prefix != sys.base_prefix
marker = pathlib.Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if marker.exists() and not in_venv else 1)
PY
then
    pip_flags+=(--break-system-packages)
fi
python3 -m pip install "${pip_flags[@]}" -e '.[test]'

# sshd refuses to start without its privilege separation directory (tmpfs on many boxes).
if [ "$(id -u)" -eq 0 ]; then
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
fi

status=0
python3 -m pytest -q -p no:cacheprovider "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "install-and-test: pytest collected no tests; treating that as a failure" >&2
    exit 1
fi
exit "$status"
