#!/bin/sh
# Install `dupsession` and `relayd` for every later shell, then (with --demo) run the demo.
#
#     sh contrib/install.sh --demo        # the README's first command
#
# Why pipx: Debian 12 and Ubuntu 23.04+ mark the system Python "externally managed" (PEP 668),
# so `pip install .` is refused, and a venv of one's own is not on the PATH of the shell that
# ssh starts for `ProxyCommand dupsession -- %h %p`. pipx, from the distribution's own
# packages, gives the application its own venv and puts only its commands on a PATH directory:
#   root:       venvs in /opt/dupsession/pipx, commands in /usr/local/bin (on every user's PATH,
#               sudo's secure_path and ssh's ProxyCommand shell included); man pages in
#               /usr/local/share/man, bash completion in /usr/local/share/bash-completion.
#   other user: pipx's defaults, ~/.local/pipx and ~/.local/bin; `pipx ensurepath` adds
#               ~/.local/bin to the PATH of later shells (Debian's ~/.profile also does at the
#               next login); man pages in ~/.local/share/man (man finds them through PATH),
#               completion in ~/.local/share/bash-completion/completions.
# A missing pipx is installed with apt-get (as root, or through sudo).
#
# Every location can be overridden through the environment (PIPX_HOME, PIPX_BIN_DIR,
# DUPSESSION_MAN_DIR, DUPSESSION_COMPLETION_DIR; PIPX names the pipx command): the test
# suite uses that to install into a temporary directory. --dry-run prints the plan only.
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)

demo=no
dry=no
for arg in "$@"; do
    case "$arg" in
    --demo) demo=yes ;;
    --dry-run) dry=yes ;;
    -h | --help)
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 0
        ;;
    *)
        echo "install.sh: unknown argument $arg (try --help)" >&2
        exit 2
        ;;
    esac
done

run() {
    echo "+ $*" >&2
    [ "$dry" = yes ] || "$@"
}

if [ "$(id -u)" -eq 0 ]; then
    : "${PIPX_HOME:=/opt/dupsession/pipx}"
    : "${PIPX_BIN_DIR:=/usr/local/bin}"
    : "${DUPSESSION_MAN_DIR:=/usr/local/share/man/man1}"
    : "${DUPSESSION_COMPLETION_DIR:=/usr/local/share/bash-completion/completions}"
    sudo=""
else
    : "${PIPX_HOME:=$HOME/.local/pipx}"
    : "${PIPX_BIN_DIR:=$HOME/.local/bin}"
    : "${DUPSESSION_MAN_DIR:=$HOME/.local/share/man/man1}"
    : "${DUPSESSION_COMPLETION_DIR:=$HOME/.local/share/bash-completion/completions}"
    sudo="sudo"
fi
export PIPX_HOME PIPX_BIN_DIR

pipx=${PIPX:-pipx}
if ! command -v "$pipx" >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install.sh: pipx is missing; install it with your package manager" \
            "(it is packaged as pipx almost everywhere), then run this again" >&2
        exit 1
    fi
    if [ -n "$sudo" ] && ! command -v sudo >/dev/null 2>&1; then
        echo "install.sh: pipx is missing and so is sudo: as root, run apt-get install pipx" >&2
        exit 1
    fi
    echo "install.sh: installing pipx from the distribution (apt-get)" >&2
    run $sudo apt-get update
    run $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y pipx
fi

# pip builds in the source tree: a checkout this user cannot write (root's, read-only) is
# copied first, or pipx fails with only "Cannot determine package name".
src=$repo
if [ ! -w "$repo" ]; then
    src=$(mktemp -d)/dupsession
    run cp -R "$repo" "$src"
fi
# --force: running the script again upgrades in place.
run "$pipx" install --force "$src"
if [ "$src" != "$repo" ]; then
    run rm -rf "$(dirname "$src")" # pipx keeps its own copy in its venv
fi
if [ "$(id -u)" -ne 0 ]; then
    run "$pipx" ensurepath
fi

# Man pages and completion: generated from the parsers (docs/man, shtab), copied where
# man and bash-completion look.
run mkdir -p "$DUPSESSION_MAN_DIR" "$DUPSESSION_COMPLETION_DIR"
run cp docs/man/dupsession.1 docs/man/relayd.1 "$DUPSESSION_MAN_DIR/"
if [ "$dry" = no ]; then
    "$PIPX_BIN_DIR/dupsession" --print-completion bash >"$DUPSESSION_COMPLETION_DIR/dupsession"
else
    echo "+ $PIPX_BIN_DIR/dupsession --print-completion bash >$DUPSESSION_COMPLETION_DIR/dupsession" >&2
fi

echo "install.sh: dupsession and relayd are in $PIPX_BIN_DIR" >&2
case ":$PATH:" in
*":$PIPX_BIN_DIR:"*) ;;
*) echo "install.sh: $PIPX_BIN_DIR is not on this shell's PATH yet; new login shells have it" \
    "(pipx ensurepath, ~/.profile)" >&2 ;;
esac
if [ "$demo" = yes ]; then
    # By full path: this shell's PATH may predate ~/.local/bin.
    run "$PIPX_BIN_DIR/dupsession" demo
fi
