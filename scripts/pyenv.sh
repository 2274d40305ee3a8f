#!/usr/bin/env bash
# Create or update the Python virtualenv used by the compatibility tests.
#
# The venv lives in <cargo target dir>/pyenv (target/ is ignored by git) and
# holds exactly the versions pinned in tests/python/requirements.txt. A stamp
# file records the sha256 of the requirements that were installed; when it
# matches, nothing is reinstalled and the script returns at once.
#
# Prints the venv path on stdout (last line), progress on stderr.
#
# Environment:
#   CARGO_TARGET_DIR  cargo's target dir (default <repo>/target)
#   PYTHON            interpreter used to create the venv (default python3)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
venv="$target_dir/pyenv"
requirements="$repo/tests/python/requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

log() { echo "pyenv: $*" >&2; }

want=$(sha256sum "$requirements" | cut -d' ' -f1)

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "up to date ($venv)"
    echo "$venv"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    log "creating $venv"
    mkdir -p "$target_dir"
    if ! "$python" -m venv "$venv"; then
        rm -rf "$venv"
        echo "pyenv: ERROR: '$python -m venv' failed; on Debian install python3-venv" >&2
        exit 1
    fi
fi

log "installing tests/python/requirements.txt"
rm -f "$stamp"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-input --require-virtualenv -r "$requirements"
echo "$want" >"$stamp"
log "ready ($venv)"
echo "$venv"
