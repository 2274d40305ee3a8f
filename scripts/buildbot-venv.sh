#!/usr/bin/env bash
# Create or update the Python virtualenv holding the Buildbot 4.3 master and
# worker that the bbb-buildbot tests start (bbb_buildbot::testing::BuildbotMaster):
# <cargo target dir>/buildbot-venv, apart from the compatibility suite's pyenv,
# with exactly the versions pinned in buildbot/test-master/requirements.txt.
# See scripts/pyenv.sh (stamp file, output, environment).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$("$repo/scripts/pyenv.sh" buildbot-venv buildbot/test-master/requirements.txt)
"$venv/bin/buildbot" --version >&2
echo "$venv"
