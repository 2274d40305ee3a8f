#!/usr/bin/env bash
# The project's test command: lint, build, Rust tests and the Python
# compatibility suite, with one summary line per part at the end.
#
#   scripts/test.sh
#
# Order:
#   1. cargo fmt --check and cargo clippy -D warnings (fail fast: nothing else
#      runs if either fails). Meanwhile, in the background: scripts/services.sh
#      (PostgreSQL, MariaDB, RabbitMQ) then scripts/browser.sh (Chromium and
#      ChromeDriver for the web UI's tests), scripts/pyenv.sh (Python venv) and
#      scripts/pyenv.sh taskgraph-venv (the venv whose taskgraph the example
#      project's decision tasks run, made with the system's /usr/bin/python3
#      so the tasks' unprivileged users can run it),
#      scripts/buildbot-venv.sh (the Buildbot 4.3 venv the bbb-buildbot tests
#      start masters from).
#   2. cargo build --workspace --all-targets (one shared build).
#   3. Rust tests: cargo nextest run (or cargo test without nextest); then the
#      Python compatibility suite: pytest tests/python against target/debug/bbb.
#      Output is shown as it comes and kept in target/test-logs/.
#   4. Summary, ending with "total: N passed, N failed".
#
# Exits non-zero if any part fails, and also when a test runner ran no test.
#
# Environment (all optional):
#   PYTEST_ARGS       extra arguments for pytest (e.g. "-k artifacts")
#   PYTEST_WORKERS    pytest-xdist worker count (default 4; the suite mostly waits)
#   CARGO_TARGET_DIR  cargo's target dir (default <repo>/target)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
log_dir="$target_dir/test-logs"
rm -rf "$log_dir"
mkdir -p "$log_dir"

# Connection URLs for the Rust tests; they create their own databases/vhosts.
export BBB_TEST_PG_URL="${BBB_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export BBB_TEST_MYSQL_URL="${BBB_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"
export BBB_TEST_AMQP_URL="${BBB_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
# The Python suite runs this binary.
export BBB_BIN="${BBB_BIN:-$target_dir/debug/bbb}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# --- bookkeeping for the summary -----------------------------------------------

declare -a part_names=()
declare -A part_result=()
total_passed=0
total_failed=0
overall=0

record() { # record NAME RESULT-TEXT OK(0/1)
    part_names+=("$1")
    part_result[$1]=$2
    if [[ $3 -ne 0 ]]; then overall=1; fi
}

banner() { printf '\n==== %s ====\n' "$*"; }

summary() {
    banner "summary"
    local name
    for name in "${part_names[@]}"; do
        printf '%-9s %s\n' "$name:" "${part_result[$name]}"
    done
    echo "total: $total_passed passed, $total_failed failed"
}

# run_step NAME COMMAND...: run in the foreground and record ok/FAILED.
run_step() {
    local name=$1; shift
    banner "$name: $*"
    local start=$SECONDS
    if "$@"; then
        record "$name" "ok ($((SECONDS - start))s)" 0
        return 0
    else
        record "$name" "FAILED ($((SECONDS - start))s)" 1
        return 1
    fi
}

# --- 1. services and venv in the background, lints in the foreground -----------

# The services, then the browser the web UI's tests drive (both may apt-get,
# so one after the other).
{ scripts/services.sh && scripts/browser.sh; } >"$log_dir/services.log" 2>&1 &
services_pid=$!
scripts/pyenv.sh >"$log_dir/pyenv.log" 2>&1 &
pyenv_pid=$!
scripts/buildbot-venv.sh >"$log_dir/buildbot-venv.log" 2>&1 &
buildbot_venv_pid=$!
PYTHON="${BBB_TASK_PYTHON:-/usr/bin/python3}" scripts/pyenv.sh taskgraph-venv tests/taskgraph/requirements.txt \
    >"$log_dir/taskgraph-venv.log" 2>&1 &
taskgraph_venv_pid=$!

# Collect a background preparation job and show its log.
finish_prep() { # finish_prep NAME PID
    local name=$1 pid=$2
    banner "$name"
    if wait "$pid"; then
        cat "$log_dir/$name.log"
        record "$name" "ok" 0
    else
        cat "$log_dir/$name.log"
        record "$name" "FAILED (see above)" 1
    fi
}

lint_ok=1
run_step fmt cargo fmt --all -- --check --color never || lint_ok=0
if ((lint_ok)); then
    run_step clippy cargo clippy --workspace --all-targets --locked -- -D warnings || lint_ok=0
fi
if ((!lint_ok)); then
    # Fail fast, but leave no stray background jobs behind.
    wait "$services_pid" "$pyenv_pid" "$buildbot_venv_pid" "$taskgraph_venv_pid" 2>/dev/null || true
    summary
    echo "test.sh: lint failed; build and tests were not run" >&2
    exit 1
fi

# --- 2. one shared build ----------------------------------------------------------

if ! run_step build cargo build --workspace --all-targets --locked; then
    wait "$services_pid" "$pyenv_pid" "$buildbot_venv_pid" "$taskgraph_venv_pid" 2>/dev/null || true
    summary
    exit 1
fi

finish_prep services "$services_pid"
finish_prep pyenv "$pyenv_pid"
finish_prep buildbot-venv "$buildbot_venv_pid"
finish_prep taskgraph-venv "$taskgraph_venv_pid"
if [[ ${part_result[services]} != ok || ${part_result[pyenv]} != ok || ${part_result[buildbot-venv]} != ok
      || ${part_result[taskgraph-venv]} != ok ]]; then
    summary
    echo "test.sh: services or Python venvs not ready; tests were not run" >&2
    exit 1
fi

# --- 3. Rust tests, then the Python suite ------------------------------------------
# Sequential on purpose: some Rust tests stop and restart the shared RabbitMQ
# node to test broker outages, which would break the Python event tests if
# both ran at once.

rust_tests() {
    if cargo nextest --version >/dev/null 2>&1; then
        # --no-tests=fail: a workspace without tests must not pass silently.
        cargo nextest run --workspace --no-fail-fast --locked --no-tests=fail
    else
        cargo test --workspace --no-fail-fast --locked
    fi
}

python_tests() {
    local venv="$target_dir/pyenv"
    # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words
    "$venv/bin/python" -m pytest tests/python \
        -n "${PYTEST_WORKERS:-4}" --dist loadscope \
        -p no:cacheprovider -ra --tb=short \
        --junitxml="$log_dir/python-junit.xml" \
        ${PYTEST_ARGS:-}
}

# Output is shown as it comes and a copy kept in $log_dir for the counts below.
banner "Rust tests ($(cargo nextest --version >/dev/null 2>&1 && echo nextest || echo cargo test))"
rust_start=$SECONDS
rust_rc=0
rust_tests 2>&1 | tee "$log_dir/rust.log" || rust_rc=${PIPESTATUS[0]}
rust_secs=$((SECONDS - rust_start))

banner "Python compatibility tests (pytest, against $BBB_BIN)"
python_start=$SECONDS
python_rc=0
python_tests 2>&1 | tee "$log_dir/python.log" || python_rc=${PIPESTATUS[0]}
python_secs=$((SECONDS - python_start))

# Rust counts, from nextest's "Summary ... N tests run: P passed, F failed, ..."
# line, or from cargo test's "test result: ... P passed; F failed; ..." lines.
rust_passed=0
rust_failed=0
if line=$(grep -E '^ *Summary .* tests? run:' "$log_dir/rust.log" | tail -n 1); then
    rust_passed=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || echo 0)
    rust_failed=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+' || echo 0)
    timed_out=$(grep -oE '[0-9]+ timed out' <<<"$line" | grep -oE '[0-9]+' || echo 0)
    rust_failed=$((rust_failed + timed_out))
else
    while read -r p f; do
        rust_passed=$((rust_passed + p))
        rust_failed=$((rust_failed + f))
    done < <(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed;.*/\1 \2/p' "$log_dir/rust.log")
fi
total_passed=$((total_passed + rust_passed))
total_failed=$((total_failed + rust_failed))
if ((rust_rc == 0 && rust_passed == 0)); then
    record rust "FAILED: no Rust test ran" 1
elif ((rust_rc == 0)); then
    record rust "ok: $rust_passed passed, $rust_failed failed (${rust_secs}s)" 0
elif grep -qE 'no tests to run|error: no tests' "$log_dir/rust.log"; then
    record rust "FAILED: no Rust test ran (exit $rust_rc)" 1
else
    record rust "FAILED: $rust_passed passed, $rust_failed failed (exit $rust_rc, ${rust_secs}s)" 1
fi

# Python counts, from the JUnit XML pytest wrote.
read -r py_passed py_failed < <(
    "$target_dir/pyenv/bin/python" - "$log_dir/python-junit.xml" <<'PY' 2>/dev/null || echo "0 0"
import sys, xml.etree.ElementTree as ET
suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
tests, fail, err, skip = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
print(tests - fail - err - skip, fail + err)
PY
)
total_passed=$((total_passed + py_passed))
total_failed=$((total_failed + py_failed))
case $python_rc in
0) record python "ok: $py_passed passed, $py_failed failed (${python_secs}s)" 0 ;;
5) record python "FAILED: pytest collected no tests (exit 5)" 1 ;;
*) record python "FAILED: $py_passed passed, $py_failed failed (exit $python_rc, ${python_secs}s)" 1 ;;
esac

summary
exit "$overall"
