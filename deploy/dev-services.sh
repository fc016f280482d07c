#!/usr/bin/env bash
# Local services for development, tests and CI.
#
#   deploy/dev-services.sh up [--quiet]  start (idempotently) everything the service and its tests need
#   deploy/dev-services.sh down [--purge] stop what `up` started of ours (the binlog MariaDB);
#                                         --purge also deletes CDC_DEV_HOME
#   deploy/dev-services.sh status         one line per service, exit 1 if any is down
#   deploy/dev-services.sh env            export lines: eval "$(deploy/dev-services.sh env)"
#
# Ours: a binlog-enabled MariaDB (the legacy source) on CDC_SOURCE_PORT (3307) with its data in
# CDC_DEV_HOME (<repo>/.dev). The machine's: PostgreSQL, Redis, RabbitMQ, started if stopped, never stopped.
#
# Inputs (environment): CDC_DEV_HOME, CDC_SOURCE_PORT, CDC_SOURCE_PASSWORD (cdc-secret),
# CDC_LEGACY_PASSWORD (legacy-secret), CDC_PG_PORT (5432), CDC_REDIS_PORT (6379), CDC_AMQP_PORT (5672),
# CDC_WAIT_SECONDS (60).
set -Eeuo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV_HOME="${CDC_DEV_HOME:-$REPO_ROOT/.dev}"
SRC_HOST=127.0.0.1
SRC_PORT="${CDC_SOURCE_PORT:-3307}"
SRC_USER=cdc
SRC_PASSWORD="${CDC_SOURCE_PASSWORD:-cdc-secret}"
LEGACY_USER=legacy
LEGACY_PASSWORD="${CDC_LEGACY_PASSWORD:-legacy-secret}"
LEGACY_DB=legacy
PG_PORT="${CDC_PG_PORT:-5432}"
CRM_DB=crm
REDIS_PORT="${CDC_REDIS_PORT:-6379}"
AMQP_PORT="${CDC_AMQP_PORT:-5672}"
WAIT_SECONDS="${CDC_WAIT_SECONDS:-60}"

MDB_DATA="$DEV_HOME/mariadb"
MDB_BINLOG_DIR="$DEV_HOME/binlog"
MDB_PID="$DEV_HOME/mariadb.pid"
MDB_LOG="$DEV_HOME/mariadb.log"
MDB_SOCKET="$DEV_HOME/mariadb.sock"
# A unix socket path must fit in 108 bytes; a deep checkout would not.
if (( ${#MDB_SOCKET} > 100 )); then
    MDB_SOCKET="/tmp/cdc-dev-mariadb-$SRC_PORT.sock"
fi
REDIS_LOG=/var/log/redis/ci.log

QUIET=0
log() { (( QUIET )) || printf '%s\n' "$*" >&2; }
die() { printf 'dev-services: ERROR: %s\n' "$*" >&2; exit 1; }

show_log_tail() {  # file
    if [[ -r "$1" ]]; then
        printf -- '--- last lines of %s ---\n' "$1" >&2
        tail -n 30 "$1" >&2 || true
        printf -- '--- end of %s ---\n' "$1" >&2
    fi
}

# --- packages -----------------------------------------------------------------------------------

APT_UPDATED=0
ensure_binary() {  # binary debian-package
    command -v "$1" >/dev/null 2>&1 && return 0
    [[ $(id -u) -eq 0 ]] || die "'$1' is missing; install the Debian package '$2' (needs root)."
    command -v apt-get >/dev/null 2>&1 || die "'$1' is missing and apt-get is not available; install '$2'."
    log "Installing Debian package $2 (no '$1' found) ..."
    export DEBIAN_FRONTEND=noninteractive
    if (( ! APT_UPDATED )); then
        apt-get update -qq </dev/null || die "apt-get update failed while installing $2."
        APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "$2" </dev/null || die "apt-get install $2 failed."
    command -v "$1" >/dev/null 2>&1 || die "package $2 installed but '$1' is still not on PATH."
}

# wait_until <seconds> <description> <command...>: poll with a deadline, no bare sleeps elsewhere.
wait_until() {
    local seconds="$1" what="$2"; shift 2
    local deadline=$(( SECONDS + seconds ))
    until "$@" >/dev/null 2>&1; do
        (( SECONDS < deadline )) || { printf 'dev-services: timed out after %ss waiting for %s\n' "$seconds" "$what" >&2; return 1; }
        sleep 0.25
    done
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- MariaDB (ours) ------------------------------------------------------------------------------

mdb_pid() {  # prints the pid if our mariadbd is alive
    [[ -s "$MDB_PID" ]] || return 1
    local pid; pid="$(<"$MDB_PID")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *" --datadir=$MDB_DATA "* ]] || return 1
    echo "$pid"
}

MDB_REUSED=0  # 1: a server another checkout started answers on the port; use it over TCP
mdb_admin() {
    if (( MDB_REUSED )); then
        mariadb --no-defaults --protocol=tcp -h "$SRC_HOST" -P "$SRC_PORT" -uroot "$@"
    else
        mariadb --no-defaults --protocol=socket --socket="$MDB_SOCKET" -uroot "$@"
    fi
}
mdb_ping() { mariadb-admin --no-defaults --protocol=socket --socket="$MDB_SOCKET" -uroot --connect-timeout=2 ping; }

mdb_user_flag() {
    # mariadbd refuses to run as root unless told to; as root keep files root-owned and say so.
    if [[ $(id -u) -eq 0 ]]; then echo "--user=root"; fi
}

mdb_install() {
    [[ -d "$MDB_DATA/mysql" ]] && return 0
    log "MariaDB: initialising a new data directory in $MDB_DATA ..."
    local tmp="$MDB_DATA.init.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    # shellcheck disable=SC2046
    if ! mariadb-install-db --no-defaults --datadir="$tmp" $(mdb_user_flag) \
            --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
            >"$DEV_HOME/mariadb-install.log" 2>&1 </dev/null; then
        show_log_tail "$DEV_HOME/mariadb-install.log"
        rm -rf "$tmp"
        die "MariaDB: mariadb-install-db failed (log: $DEV_HOME/mariadb-install.log)."
    fi
    rm -rf "$MDB_DATA"
    mv "$tmp" "$MDB_DATA"
}

mdb_start() {
    ensure_binary mariadbd mariadb-server
    ensure_binary mariadb mariadb-client
    if mdb_pid >/dev/null; then
        log "MariaDB: already running on $SRC_HOST:$SRC_PORT (pid $(mdb_pid))."
    else
        if tcp_open "$SRC_PORT"; then
            # Another checkout's dev MariaDB (CI clones, worktrees) is as good as ours if it
            # lets root in and has the binlog settings; mdb_provision checks the latter.
            if mariadb --no-defaults --protocol=tcp -h "$SRC_HOST" -P "$SRC_PORT" -uroot --connect-timeout=3 \
                    -N -B -e "SELECT @@log_bin" 2>/dev/null | grep -q '^1$'; then
                MDB_REUSED=1
                log "MariaDB: reusing the binlog-enabled server already on $SRC_HOST:$SRC_PORT."
                mdb_provision
                return 0
            fi
            die "MariaDB: port $SRC_PORT is taken by another process that is not a usable binlog MariaDB; stop it or set CDC_SOURCE_PORT."
        fi
        mkdir -p "$DEV_HOME" "$MDB_BINLOG_DIR"
        mdb_install
        rm -f "$MDB_PID" "$MDB_SOCKET"
        log "MariaDB: starting binlog-enabled mariadbd on $SRC_HOST:$SRC_PORT (log: $MDB_LOG) ..."
        # shellcheck disable=SC2046
        setsid nohup mariadbd --no-defaults \
            --datadir="$MDB_DATA" --port="$SRC_PORT" --bind-address="$SRC_HOST" \
            --socket="$MDB_SOCKET" --pid-file="$MDB_PID" --log-error="$MDB_LOG" $(mdb_user_flag) \
            --skip-name-resolve --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
            --server-id=1 --log-bin="$MDB_BINLOG_DIR/mysql-bin" --log-bin-index="$MDB_BINLOG_DIR/mysql-bin.index" \
            --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL \
            --gtid-domain-id=0 --binlog-expire-logs-seconds=604800 \
            --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2 --max-connections=200 \
            >>"$DEV_HOME/mariadb.stdout" 2>&1 </dev/null &
        # Not a process-group leader here, so setsid and nohup exec in place: $! is mariadbd itself.
        local launched=$! deadline=$(( SECONDS + WAIT_SECONDS ))
        until mdb_ping >/dev/null 2>&1; do
            if (( SECONDS >= deadline )); then
                show_log_tail "$MDB_LOG"
                die "MariaDB: no answer on $MDB_SOCKET after ${WAIT_SECONDS}s (log: $MDB_LOG)."
            fi
            if ! kill -0 "$launched" 2>/dev/null && ! mdb_pid >/dev/null; then
                show_log_tail "$MDB_LOG"
                die "MariaDB: mariadbd exited during start-up (log: $MDB_LOG)."
            fi
            sleep 0.25
        done
        log "MariaDB: up (pid $(mdb_pid || echo "$launched"))."
    fi
    mdb_provision
}

mdb_provision() {
    local grants="SELECT, REPLICATION SLAVE, BINLOG MONITOR"  # what the reader needs, nothing more (cdc/source/grants.py)
    local sql="
        CREATE DATABASE IF NOT EXISTS \`$LEGACY_DB\` CHARACTER SET utf8mb4;
        CREATE USER IF NOT EXISTS '$SRC_USER'@'%' IDENTIFIED BY '$SRC_PASSWORD';
        CREATE USER IF NOT EXISTS '$SRC_USER'@'localhost' IDENTIFIED BY '$SRC_PASSWORD';
        ALTER USER '$SRC_USER'@'%' IDENTIFIED BY '$SRC_PASSWORD';
        ALTER USER '$SRC_USER'@'localhost' IDENTIFIED BY '$SRC_PASSWORD';
        GRANT $grants ON *.* TO '$SRC_USER'@'%';
        GRANT $grants ON *.* TO '$SRC_USER'@'localhost';
        CREATE USER IF NOT EXISTS '$LEGACY_USER'@'%' IDENTIFIED BY '$LEGACY_PASSWORD';
        CREATE USER IF NOT EXISTS '$LEGACY_USER'@'localhost' IDENTIFIED BY '$LEGACY_PASSWORD';
        ALTER USER '$LEGACY_USER'@'%' IDENTIFIED BY '$LEGACY_PASSWORD';
        ALTER USER '$LEGACY_USER'@'localhost' IDENTIFIED BY '$LEGACY_PASSWORD';
        GRANT ALL PRIVILEGES ON \`$LEGACY_DB\`.* TO '$LEGACY_USER'@'%';
        GRANT ALL PRIVILEGES ON \`$LEGACY_DB\`.* TO '$LEGACY_USER'@'localhost';
    "
    # sql_log_bin=0: provisioning is not part of the legacy application's history.
    local out
    if ! out="$(mdb_admin -e "SET SESSION sql_log_bin=0; $sql" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "MariaDB: creating database '$LEGACY_DB' and users failed (server log: $MDB_LOG)."
    fi
    local vars
    vars="$(mdb_admin -N -B -e "SELECT CONCAT_WS(' ', @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata)")" \
        || die "MariaDB: cannot read the binlog settings (log: $MDB_LOG)."
    [[ "$vars" =~ ^(1|ON)\ ROW\ FULL\ FULL$ ]] \
        || die "MariaDB: unexpected binlog settings '$vars' (want log_bin=ON ROW FULL FULL; log: $MDB_LOG)."
}

mdb_stop() {
    local pid
    if ! pid="$(mdb_pid)"; then
        log "MariaDB: not running."
        rm -f "$MDB_PID"
        return 0
    fi
    log "MariaDB: stopping pid $pid ..."
    kill -TERM "$pid"
    if ! wait_until "$WAIT_SECONDS" "mariadbd pid $pid to exit" test ! -d "/proc/$pid"; then
        show_log_tail "$MDB_LOG"
        log "MariaDB: pid $pid ignored SIGTERM for ${WAIT_SECONDS}s; sending SIGKILL."
        kill -KILL "$pid" 2>/dev/null || true
        wait_until 10 "mariadbd pid $pid to die" test ! -d "/proc/$pid" || die "MariaDB: pid $pid will not exit."
    fi
    rm -f "$MDB_PID" "$MDB_SOCKET"
    log "MariaDB: stopped."
}

# --- RabbitMQ (the machine's) --------------------------------------------------------------------

rabbit_ping() { rabbitmq-diagnostics -q ping; }

rabbit_start() {
    ensure_binary rabbitmq-server rabbitmq-server
    if ! rabbit_ping >/dev/null 2>&1; then
        log "RabbitMQ: not running; starting it (log: /var/log/rabbitmq/) ..."
        # Debian's wrapper switches from root to the rabbitmq user by itself.
        rabbitmq-server -detached </dev/null >/dev/null 2>&1 || true
        if ! wait_until "$WAIT_SECONDS" "RabbitMQ node to start" rabbitmqctl -q await_startup; then
            show_log_tail "$(ls -t /var/log/rabbitmq/*.log 2>/dev/null | head -n1)"
            die "RabbitMQ: did not start within ${WAIT_SECONDS}s (logs: /var/log/rabbitmq/)."
        fi
    fi
    if ! rabbitmq-plugins -q list -e -m 2>/dev/null | grep -qx rabbitmq_consistent_hash_exchange; then
        log "RabbitMQ: enabling rabbitmq_consistent_hash_exchange ..."
        rabbitmq-plugins -q enable rabbitmq_consistent_hash_exchange >/dev/null \
            || die "RabbitMQ: enabling rabbitmq_consistent_hash_exchange failed (logs: /var/log/rabbitmq/)."
    fi
    wait_until "$WAIT_SECONDS" "AMQP port $AMQP_PORT" tcp_open "$AMQP_PORT" \
        || die "RabbitMQ: node runs but nothing listens on 127.0.0.1:$AMQP_PORT (logs: /var/log/rabbitmq/)."
    log "RabbitMQ: up on 127.0.0.1:$AMQP_PORT."
}

# --- PostgreSQL (the machine's) ------------------------------------------------------------------

pg_ready() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }
pg_su() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_start() {
    ensure_binary pg_ctlcluster postgresql
    if ! pg_ready; then
        local version
        version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)" || true
        [[ -n "$version" ]] || die "PostgreSQL: no cluster in /etc/postgresql; create one with pg_createcluster."
        log "PostgreSQL: not answering; starting cluster $version/main (log: /var/log/postgresql/) ..."
        pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
        if ! wait_until "$WAIT_SECONDS" "PostgreSQL on port $PG_PORT" pg_ready; then
            show_log_tail "/var/log/postgresql/postgresql-$version-main.log"
            die "PostgreSQL: not answering on 127.0.0.1:$PG_PORT (log: /var/log/postgresql/postgresql-$version-main.log)."
        fi
    fi
    # The CRM URL carries no password: the dev cluster must trust local TCP connections.
    if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -w -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
        pg_trust_localhost
    fi
    if [[ "$(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -w -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$CRM_DB'")" != 1 ]]; then
        log "PostgreSQL: creating database $CRM_DB ..."
        psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -w -d postgres -qc "CREATE DATABASE $CRM_DB OWNER postgres" \
            || die "PostgreSQL: CREATE DATABASE $CRM_DB failed."
    fi
    log "PostgreSQL: up on 127.0.0.1:$PG_PORT, database $CRM_DB."
}

pg_trust_localhost() {
    local hba
    hba="$(pg_su psql -p "$PG_PORT" -d postgres -tAc 'SHOW hba_file' 2>/dev/null)" \
        || die "PostgreSQL: postgres@127.0.0.1 needs a password and the hba file cannot be read; allow trust for 127.0.0.1."
    grep -q '# cdc dev-services' "$hba" && die "PostgreSQL: password-less login to 127.0.0.1:$PG_PORT fails (hba: $hba)."
    log "PostgreSQL: allowing password-less TCP from 127.0.0.1/::1 in $hba (dev machine) ..."
    { printf 'host all all 127.0.0.1/32 trust # cdc dev-services\nhost all all ::1/128 trust # cdc dev-services\n'; cat "$hba"; } >"$hba.cdc-new"
    chown --reference="$hba" "$hba.cdc-new" && chmod --reference="$hba" "$hba.cdc-new" && mv "$hba.cdc-new" "$hba"
    pg_su psql -p "$PG_PORT" -d postgres -qtAc 'SELECT pg_reload_conf()' >/dev/null
    wait_until 10 "PostgreSQL trust for 127.0.0.1" psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -w -d postgres -tAc 'SELECT 1' \
        || die "PostgreSQL: password-less login still fails after editing $hba."
}

# --- Redis (the machine's) -----------------------------------------------------------------------

redis_ping() { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

redis_start() {
    ensure_binary redis-server redis-server
    ensure_binary redis-cli redis-tools
    if ! redis_ping; then
        log "Redis: not answering; starting redis-server (log: $REDIS_LOG) ..."
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
            --dir /var/lib/redis --logfile "$REDIS_LOG" </dev/null >/dev/null \
            || die "Redis: redis-server failed to start (log: $REDIS_LOG)."
        if ! wait_until "$WAIT_SECONDS" "Redis PING" redis_ping; then
            show_log_tail "$REDIS_LOG"
            die "Redis: no PONG on 127.0.0.1:$REDIS_PORT (log: $REDIS_LOG)."
        fi
    fi
    log "Redis: up on 127.0.0.1:$REDIS_PORT."
}

# --- subcommands -----------------------------------------------------------------------------------

# CDC_SOURCE__* and CDC_BROKER__URL are settings of cdc.runtime.config (CDC_<SECTION>__<KEY>); the others are plain
# URLs for tests and tools, named so that they never collide with a settings key.
print_env() {  # mask: 1 hides secrets
    local pw="$SRC_PASSWORD" lpw="$LEGACY_PASSWORD"
    if [[ "$1" == 1 ]]; then pw="'<set>'"; lpw='<set>'; fi
    cat <<EOF
export CDC_SOURCE__HOST=$SRC_HOST
export CDC_SOURCE__PORT=$SRC_PORT
export CDC_SOURCE__USER=$SRC_USER
export CDC_SOURCE__PASSWORD=$pw
export CDC_BROKER__URL='amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2F'
export CDC_AMQP_URL='amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2F'
export CDC_CRM_URL='postgresql://postgres@127.0.0.1:$PG_PORT/$CRM_DB'
export CDC_REDIS_URL='redis://127.0.0.1:$REDIS_PORT/0'
export CDC_DEMO__DSN='mysql://$LEGACY_USER:$lpw@$SRC_HOST:$SRC_PORT/$LEGACY_DB'
EOF
}

cmd_up() {
    mkdir -p "$DEV_HOME"
    mdb_start
    rabbit_start
    pg_start
    redis_start
    if (( ! QUIET )); then
        echo "# All services up. Use: eval \"\$(deploy/dev-services.sh env)\""
        print_env 1
    fi
}

cmd_down() {
    mdb_stop
    if [[ "${1:-}" == --purge ]]; then
        log "Deleting $DEV_HOME ..."
        rm -rf "$DEV_HOME"
        [[ "$MDB_SOCKET" == /tmp/* ]] && rm -f "$MDB_SOCKET"
    fi
    log "Left running (the machine's services): PostgreSQL, Redis, RabbitMQ."
}

cmd_status() {
    local rc=0 line
    report() {  # name ok detail
        if [[ "$2" == 1 ]]; then line=up; else line=down; rc=1; fi
        printf '%-10s %-4s %s\n' "$1" "$line" "$3"
    }
    local ok=0
    mdb_pid >/dev/null && mdb_ping >/dev/null 2>&1 && ok=1
    report mariadb "$ok" "127.0.0.1:$SRC_PORT binlog source (data: $MDB_DATA, log: $MDB_LOG)"
    ok=0; command -v rabbitmq-diagnostics >/dev/null && rabbit_ping >/dev/null 2>&1 && tcp_open "$AMQP_PORT" && ok=1
    report rabbitmq "$ok" "127.0.0.1:$AMQP_PORT"
    ok=0; command -v pg_isready >/dev/null && pg_ready && ok=1
    report postgres "$ok" "127.0.0.1:$PG_PORT"
    ok=0; command -v redis-cli >/dev/null && redis_ping && ok=1
    report redis "$ok" "127.0.0.1:$REDIS_PORT"
    return "$rc"
}

usage() { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

main() {
    local cmd="${1:-}"; shift || true
    [[ "${1:-}" == --quiet ]] && { QUIET=1; shift; }
    case "$cmd" in
        up) cmd_up ;;
        down) cmd_down "${1:-}" ;;
        status) cmd_status ;;
        env) print_env 0 ;;
        *) usage ;;
    esac
}

main "$@"
