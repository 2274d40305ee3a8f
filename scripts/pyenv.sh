#!/usr/bin/env bash
# Create or update a Python virtualenv of the tests:
#
#   scripts/pyenv.sh [NAME REQUIREMENTS]
#
# Without arguments, the compatibility suite's venv: <cargo target dir>/pyenv
# (target/ is ignored by git) with exactly the versions pinned in
# tests/python/requirements.txt. With arguments, <cargo target dir>/NAME with
# the versions pinned in REQUIREMENTS (a path relative to the repository). A
# stamp file records the sha256 of the requirements that were installed and
# the interpreter; when both match, nothing is reinstalled and the script
# returns at once (another interpreter makes a new venv).
#
# Prints the venv path on stdout (last line), progress on stderr.
#
# Environment:
#   CARGO_TARGET_DIR  cargo's target dir (default <repo>/target)
#   PYTHON            interpreter used to create the venv (default python3)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
name="${1:-pyenv}"
requirements="$repo/${2:-tests/python/requirements.txt}"
venv="$target_dir/$name"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

log() { echo "$name: $*" >&2; }

# The interpreter's real binary (through shims and symlinks), as a venv made
# with it also reports.
real_executable() { "$1" -c 'import os, sys; print(os.path.realpath(sys.executable))'; }
if ! interpreter=$(real_executable "$python"); then
    echo "$name: ERROR: cannot run the interpreter '$python'" >&2
    exit 1
fi
want="$(sha256sum "$requirements" | cut -d' ' -f1) $interpreter"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "up to date ($venv)"
    echo "$venv"
    exit 0
fi

if [[ -x "$venv/bin/python" && "$(real_executable "$venv/bin/python")" != "$interpreter" ]]; then
    log "made with another interpreter; recreating it with $interpreter"
    rm -rf "$venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
    log "creating $venv"
    mkdir -p "$target_dir"
    if ! "$python" -m venv "$venv"; then
        rm -rf "$venv"
        echo "$name: ERROR: '$python -m venv' failed; on Debian install python3-venv" >&2
        exit 1
    fi
fi

log "installing ${requirements#"$repo"/}"
rm -f "$stamp"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-input --require-virtualenv -r "$requirements"
echo "$want" >"$stamp"
log "ready ($venv)"
echo "$venv"
