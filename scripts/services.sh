#!/usr/bin/env bash
# Make sure the local services that the test suites talk to are installed,
# running and reachable with the credentials the tests use:
#
#   PostgreSQL  postgres://postgres@127.0.0.1:5432/postgres   (trust auth, no password)
#   MariaDB     mysql://root@127.0.0.1:3306/test              (root, empty password, over TCP)
#   RabbitMQ    amqp://guest:guest@127.0.0.1:5672/%2f         (guest is loopback-only; fine here)
#
# PostgreSQL uses "trust" authentication for local socket and 127.0.0.1
# connections: on a freshly installed cluster this script adds those pg_hba
# lines itself, so no password is needed or exported.
#
# Idempotent: when everything already runs it only checks (about a second).
# A missing server is installed from Debian's packages (one `apt-get update`
# first); a stopped one is started; then the script waits, with a bounded
# timeout, until each answers. It prints one line per service and exits
# non-zero with a clear message if a service cannot be brought up.
#
# Environment:
#   SERVICES_TIMEOUT_S  how long to wait for each service to answer (default 120)
set -euo pipefail

TIMEOUT_S="${SERVICES_TIMEOUT_S:-120}"
export DEBIAN_FRONTEND=noninteractive

log() { echo "services: $*" >&2; }
die() { echo "services: ERROR: $*" >&2; exit 1; }

if [[ $(id -u) -ne 0 ]]; then
    SUDO=sudo
else
    SUDO=
fi

# --- installation (sequential: dpkg takes a global lock) -------------------

APT_UPDATED=0
apt_install() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "running apt-get update"
        $SUDO apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    log "installing $*"
    # policy-rc.d may forbid starting services from maintainer scripts in
    # containers; that is fine, this script starts them below.
    $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pg_version() {
    # Newest configured cluster version, e.g. "15".
    ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1
}

if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || ! command -v pg_ctlcluster >/dev/null; then
    apt_install postgresql postgresql-client
fi
if [[ -z "$(pg_version)" ]]; then
    # Package present but no cluster (e.g. removed by hand): create the default one.
    ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    log "creating PostgreSQL $ver cluster 'main'"
    $SUDO pg_createcluster "$ver" main >/dev/null
fi
if [[ ! -x /usr/sbin/mariadbd ]]; then
    apt_install mariadb-server mariadb-client
fi
if [[ ! -x /usr/sbin/rabbitmq-server ]]; then
    apt_install rabbitmq-server
fi
# Not a service: Mercurial, whose hg serve the CI service's Mercurial tests
# serve their repositories with (.ci/run installs it too, before building).
if ! command -v hg >/dev/null; then
    apt_install mercurial
fi

# --- helpers ------------------------------------------------------------------

# wait_until DESCRIPTION COMMAND...: retry COMMAND every 0.5 s until it
# succeeds or TIMEOUT_S passes.
wait_until() {
    local what=$1; shift
    local deadline=$((SECONDS + TIMEOUT_S))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "timed out after ${TIMEOUT_S}s waiting for $what" >&2
            return 1
        fi
        sleep 0.5
    done
}

# --- PostgreSQL ------------------------------------------------------------------

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432; }
pg_login_ok() { psql -w -h 127.0.0.1 -p 5432 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; }

ensure_postgresql() {
    local ver state=running
    ver=$(pg_version)
    if ! pg_ready; then
        state=started
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start >/dev/null 2>&1 || true
        wait_until "PostgreSQL on 127.0.0.1:5432 (pg_isready)" pg_ready || {
            tail -n 20 "/var/log/postgresql/postgresql-$ver-main.log" >&2 2>/dev/null || true
            return 1
        }
    fi
    if ! pg_login_ok; then
        # Fresh cluster: allow password-less (trust) logins on the socket and
        # on 127.0.0.1, as on the project's machines, then reload.
        local hba="/etc/postgresql/$ver/main/pg_hba.conf"
        local tmp
        tmp=$(mktemp)
        {
            echo "# Test machine: trust local and loopback connections (scripts/services.sh)"
            echo "local all all trust"
            echo "host all all 127.0.0.1/32 trust"
            echo "host all all ::1/128 trust"
            cat "$hba"
        } >"$tmp"
        $SUDO install -o postgres -g postgres -m 640 "$tmp" "$hba"
        rm -f "$tmp"
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main reload >/dev/null
        state="$state, trust auth configured"
        wait_until "PostgreSQL login as postgres without password" pg_login_ok || return 1
    fi
    echo "postgresql $ver: $state (postgres://postgres@127.0.0.1:5432/postgres, trust auth)"
}

# --- MariaDB ----------------------------------------------------------------------

my_ready() { mariadb-admin --connect-timeout=2 ping; }
my_login_ok() { mariadb --protocol=tcp -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 -e 'select 1' >/dev/null 2>&1; }

ensure_mariadb() {
    local state=running
    if ! my_ready >/dev/null 2>&1; then
        state=started
        # The socket directory lives on a tmpfs and may be gone after a reboot.
        $SUDO install -d -o mysql -g mysql /run/mysqld
        $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd >/dev/null
        wait_until "MariaDB (mariadb-admin ping)" my_ready || return 1
    fi
    if ! my_login_ok; then
        # Fresh install: root authenticates by unix socket only. Let it also
        # log in with an empty password (over TCP), as on the project's machines.
        $SUDO mariadb -u root -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD(''); FLUSH PRIVILEGES;"
        state="$state, root password login enabled"
        wait_until "MariaDB login as root with empty password over TCP" my_login_ok || return 1
    fi
    mariadb --protocol=tcp -h 127.0.0.1 -u root -e 'CREATE DATABASE IF NOT EXISTS test'
    echo "mariadb: $state (mysql://root@127.0.0.1:3306/test, empty password)"
}

# --- RabbitMQ ---------------------------------------------------------------------

rmq_ready() { rabbitmq-diagnostics -q ping; }
rmq_port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

ensure_rabbitmq() {
    local state=running
    if ! rmq_ready >/dev/null 2>&1; then
        state=started
        $SUDO rabbitmq-server -detached >/dev/null 2>&1 || true
        wait_until "RabbitMQ node (rabbitmq-diagnostics ping)" rmq_ready || return 1
        rabbitmqctl -q await_startup --timeout "$TIMEOUT_S" >/dev/null ||
            { echo "RabbitMQ did not finish booting" >&2; return 1; }
    fi
    wait_until "RabbitMQ AMQP listener on 127.0.0.1:5672" rmq_port_open || return 1
    if ! rabbitmqctl -q list_users 2>/dev/null | grep -q '^guest'; then
        # Someone removed guest: recreate it with full rights on "/".
        rabbitmqctl -q add_user guest guest >/dev/null
        rabbitmqctl -q set_user_tags guest administrator >/dev/null
        rabbitmqctl -q set_permissions -p / guest '.*' '.*' '.*' >/dev/null
        state="$state, guest user recreated"
    fi
    echo "rabbitmq: $state (amqp://guest:guest@127.0.0.1:5672/%2f)"
}

# --- run the three checks in parallel, print in a fixed order ---------------------

out_dir=$(mktemp -d)
trap 'rm -rf "$out_dir"' EXIT

declare -A pids
for svc in postgresql mariadb rabbitmq; do
    "ensure_$svc" >"$out_dir/$svc.out" 2>"$out_dir/$svc.err" &
    pids[$svc]=$!
done

failed=0
for svc in postgresql mariadb rabbitmq; do
    if wait "${pids[$svc]}"; then
        cat "$out_dir/$svc.out"
    else
        failed=1
        echo "$svc: FAILED" >&2
        sed "s/^/  $svc: /" "$out_dir/$svc.err" >&2
    fi
done

((failed == 0)) || die "some services could not be brought up (see above)"
