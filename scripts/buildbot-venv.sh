#!/usr/bin/env bash
# Create or update the Python virtualenv holding the Buildbot 4.3 master and
# worker that the bbb-buildbot tests start (bbb_buildbot::testing::BuildbotMaster).
#
# The venv lives in <cargo target dir>/buildbot-venv (target/ is ignored by
# git), apart from the compatibility suite's pyenv, and holds exactly the
# versions pinned in scripts/buildbot/requirements.txt. A stamp file records
# the sha256 of the requirements that were installed; when it matches,
# nothing is reinstalled and the script returns at once.
#
# Prints the venv path on stdout (last line), progress on stderr.
#
# Environment:
#   CARGO_TARGET_DIR  cargo's target dir (default <repo>/target)
#   PYTHON            interpreter used to create the venv (default python3)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
venv="$target_dir/buildbot-venv"
requirements="$repo/scripts/buildbot/requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

log() { echo "buildbot-venv: $*" >&2; }

want=$(sha256sum "$requirements" | cut -d' ' -f1)

if [[ -x "$venv/bin/buildbot" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "up to date ($venv)"
    echo "$venv"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    log "creating $venv"
    mkdir -p "$target_dir"
    if ! "$python" -m venv "$venv"; then
        rm -rf "$venv"
        echo "buildbot-venv: ERROR: '$python -m venv' failed; on Debian install python3-venv" >&2
        exit 1
    fi
fi

log "installing scripts/buildbot/requirements.txt"
rm -f "$stamp"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-input --require-virtualenv -r "$requirements"
"$venv/bin/buildbot" --version >&2
echo "$want" >"$stamp"
log "ready ($venv)"
echo "$venv"
