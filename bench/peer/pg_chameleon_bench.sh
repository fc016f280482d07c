#!/usr/bin/env bash
# The peer harness of shared/peer (pg_chameleon 2.0.21, MariaDB -> PostgreSQL), kept in the project so that
# bench/bench_peer.py runs it beside our daemon on the same workload. Its own description follows.
# run_peer_bench.sh - throughput benchmark of the peer CDC tool pg_chameleon 2.0.21
# (MySQL/MariaDB binlog -> PostgreSQL, built on python-mysql-replication).
#
# Redoes everything from scratch, idempotently:
#   1. venv $VENV with pg_chameleon (created if missing / wrong versions), config under $CHAM_HOME
#   2. MariaDB db `peerbench` (dropped + recreated, table `members`, SEED_ROWS rows) and
#      PostgreSQL db `chameleon_bench` (dropped + recreated); replica schema, add_source,
#      `chameleon init_replica` (timed)
#   3. `chameleon start_replica` (our own background process), then the change workload on MariaDB:
#      INS_ROWS inserts, UPD_ROWS updates, DEL_ROWS deletes, TXN_ROWS rows per transaction;
#      PostgreSQL peerbench.members is polled every POLL_S s until it equals MariaDB's final state
#   4. `chameleon stop_replica`, full-content check of source vs target.
# Does not touch MariaDB db `legacy`, PostgreSQL db `crm` or any server setting.
#
# Final line:  pg_chameleon: init_rows_per_s=N change_rows_per_s=M total_s=T
#   init_rows_per_s   = SEED_ROWS / wall time of the whole `chameleon init_replica` command
#   total_s           = wall time from the first workload statement until PostgreSQL shows the final state
#   change_rows_per_s = (INS_ROWS + UPD_ROWS + DEL_ROWS) / total_s
# More detail (CPU, source apply time, first-change latency) is printed on the lines above it;
# logs go to $WORK. Exit status 0 only if the target content equals the source at the end.
# Tunables (env): SEED_ROWS INS_ROWS UPD_ROWS DEL_ROWS TXN_ROWS POLL_S CONVERGE_TIMEOUT_S IDLE_SAMPLE_S,
#   MY_HOST/MY_PORT/MY_USER/MY_PASS, MY_DB (peerbench), PG_DB (chameleon_bench), PG_HOST/PG_PORT/PG_USER/PG_PASS, PEER_DIR VENV PYTHON.
#
# Porting to another replicator: steps 0/1/2/3-start/4-stop and the t_replica_batch query are
# pg_chameleon-specific; measure.py (workload, polling, CPU sampling) and the content check are generic:
# they only need the MariaDB connection, the PostgreSQL db + table (PG_TABLE) and the replicator's PIDs.
#
# pg_chameleon refuses to run as root: when this script runs as root, every chameleon command runs
# as uid/gid 65534 (nobody) with HOME=$CHAM_HOME, so the venv's python must not live under /root
# (hence PYTHON=/usr/bin/python3 and not a pyenv python).
set -euo pipefail

PEER_DIR=${PEER_DIR:-/var/tmp/peer-bench}
VENV=${VENV:-$PEER_DIR/venv}
CHAM_HOME=${CHAM_HOME:-$PEER_DIR/home}
WORK=${WORK:-$PEER_DIR/work}
PYTHON=${PYTHON:-/usr/bin/python3}
CHAM_VERSION=${CHAM_VERSION:-2.0.21}
PYMYSQL_VERSION=${PYMYSQL_VERSION:-1.2.4}   # pinned for reproducibility: what `pip install pg_chameleon==2.0.21` resolved to here
CHAM_UID=${CHAM_UID:-65534}

MY_HOST=${MY_HOST:-127.0.0.1}; MY_PORT=${MY_PORT:-3307}; MY_USER=${MY_USER:-root}; MY_PASS=${MY_PASS:-}
MY_DB=${MY_DB:-peerbench}; export MY_DB
PG_HOST=${PG_HOST:-127.0.0.1}; PG_PORT=${PG_PORT:-5432}; PG_USER=${PG_USER:-postgres}; PG_PASS=${PG_PASS:-postgres}
PG_DB=${PG_DB:-chameleon_bench}
PG_TABLE=$MY_DB.members     # where the replicator puts MariaDB's $MY_DB.members

SEED_ROWS=${SEED_ROWS:-100000}
INS_ROWS=${INS_ROWS:-100000}
UPD_ROWS=${UPD_ROWS:-100000}
DEL_ROWS=${DEL_ROWS:-50000}
TXN_ROWS=${TXN_ROWS:-1000}
POLL_S=${POLL_S:-0.5}
CONVERGE_TIMEOUT_S=${CONVERGE_TIMEOUT_S:-420}
IDLE_SAMPLE_S=${IDLE_SAMPLE_S:-5}

CHAM_PID=""
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

MYSQL=(mysql -h"$MY_HOST" -P"$MY_PORT" -u"$MY_USER")
[ -n "$MY_PASS" ] && MYSQL+=(-p"$MY_PASS")
export PGPASSWORD=$PG_PASS
PSQL=(psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -X -q -v ON_ERROR_STOP=1)

# run a chameleon command (as an unprivileged user when we are root)
if [ "$(id -u)" = 0 ]; then
  DROP=(setpriv --reuid="$CHAM_UID" --regid="$CHAM_UID" --clear-groups)
else
  DROP=()
fi
CHAM=("${DROP[@]}" env HOME="$CHAM_HOME" PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/chameleon")
cham() { "${CHAM[@]}" "$@"; }
as_cham() { "${DROP[@]}" "$@"; }

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

stop_our_replica() {
  # stops only the replica process this script started (CHAM_PID) or the one recorded in our own pid file
  local pid=${1:-}
  pid_alive "$pid" || return 0
  log "stopping replica (pid $pid) with chameleon stop_replica"
  local kids; kids=$(pgrep -P "$pid" || true)
  (cd "$CHAM_HOME" && timeout 60 "${CHAM[@]}" stop_replica --config default --source mysql) >>"$WORK/stop.log" 2>&1 || true
  for _ in $(seq 1 60); do pid_alive "$pid" || break; sleep 0.5; done
  if pid_alive "$pid"; then log "replica still alive, SIGTERM $pid"; kill -TERM "$pid" 2>/dev/null || true; sleep 2; fi
  for k in $kids; do pid_alive "$k" && { log "SIGTERM leftover child $k"; kill -TERM "$k" 2>/dev/null || true; }; done
  wait "$pid" 2>/dev/null || true
}
on_exit() {
  local rc=$?
  [ -n "$CHAM_PID" ] && stop_our_replica "$CHAM_PID"
  [ $rc -ne 0 ] && log "failed (rc=$rc); logs in $WORK"
  exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT TERM

command -v setpriv >/dev/null || [ "$(id -u)" != 0 ] || die "setpriv (util-linux) needed to drop root"
command -v mysql >/dev/null || die "mysql client missing"
command -v psql  >/dev/null || die "psql missing"
"${MYSQL[@]}" -e 'select 1' >/dev/null || die "MariaDB not reachable at $MY_HOST:$MY_PORT"
"${PSQL[@]}" -d postgres -c 'select 1' >/dev/null || die "PostgreSQL not reachable at $PG_HOST:$PG_PORT"

T_SCRIPT0=$(date +%s.%N)
mkdir -p "$PEER_DIR"

# ---------------------------------------------------------------- 0. leftovers of an earlier run
OLD_PIDFILE=$CHAM_HOME/.pg_chameleon/pid/mysql.pid
if [ -f "$OLD_PIDFILE" ]; then
  old=$(cat "$OLD_PIDFILE" 2>/dev/null || true)
  if pid_alive "$old" && grep -q chameleon "/proc/$old/cmdline" 2>/dev/null; then
    mkdir -p "$WORK"; stop_our_replica "$old"
  fi
fi
rm -rf "$WORK" "$CHAM_HOME"
mkdir -p "$WORK" "$CHAM_HOME/out"
[ "$(id -u)" = 0 ] && chown -R "$CHAM_UID:$CHAM_UID" "$CHAM_HOME"

# ---------------------------------------------------------------- 1. venv + configuration
venv_ok() {
  [ -x "$VENV/bin/chameleon" ] || return 1
  as_cham "$VENV/bin/python" -c "
import importlib.metadata as m, sys
sys.exit(0 if m.version('pg_chameleon')=='$CHAM_VERSION' and m.version('PyMySQL')=='$PYMYSQL_VERSION' else 1)" 2>/dev/null
}
if ! venv_ok; then
  log "preparing venv $VENV (pg_chameleon==$CHAM_VERSION, PyMySQL==$PYMYSQL_VERSION)"
  if ! as_cham "$VENV/bin/python" -c pass 2>/dev/null; then rm -rf "$VENV"; "$PYTHON" -m venv "$VENV"; fi
  "$VENV/bin/pip" install -q --disable-pip-version-check "pg_chameleon==$CHAM_VERSION" "PyMySQL==$PYMYSQL_VERSION" \
    > "$WORK/pip.log" 2>&1 || { tail -20 "$WORK/pip.log"; die "pip install failed"; }
  venv_ok || die "venv not usable by uid $CHAM_UID"
fi
VERSIONS=$("$VENV/bin/python" -c "
import importlib.metadata as m
print(' '.join(f'{p}={m.version(p)}' for p in ('pg_chameleon','mysql-replication','PyMySQL','psycopg2-binary')))")
log "versions: $VERSIONS"

cd "$CHAM_HOME"   # chameleon (as nobody) must be able to stat its cwd
cham set_configuration_files > "$WORK/setconf.log" 2>&1
CONF_DIR=$CHAM_HOME/.pg_chameleon/configuration
cat > "$WORK/mkconf.py" <<'EOF'
import sys, yaml
src, dst = sys.argv[1:3]
my_host, my_port, my_user, my_pass, pg_host, pg_port, pg_user, pg_pass, pg_db, out_dir = sys.argv[3:13]
c = yaml.safe_load(open(src))
c["log_dest"] = "stdout"   # foreground processes: init_replica can be timed, start_replica's PID is ours
c["log_level"] = "info"
c["pg_conn"] = {"host": pg_host, "port": pg_port, "user": pg_user, "password": pg_pass,
                "database": pg_db, "charset": "utf8"}
m = c["sources"]["mysql"]
m["db_conn"] = {"host": my_host, "port": my_port, "user": my_user, "password": my_pass,
                "charset": "utf8", "connect_timeout": 10}
import os
m["schema_mappings"] = {os.environ["MY_DB"]: os.environ["MY_DB"]}
m["limit_tables"] = []
m["skip_tables"] = []
m["grant_select_to"] = []
m["skip_events"] = {"insert": [], "delete": [], "update": []}
m["out_dir"] = out_dir
m["gtid_enable"] = False      # MariaDB GTIDs are not MySQL GTIDs; file/position mode
m["keep_existing_schema"] = False
# everything else stays at the example defaults: replica_batch_size 10000, replay_max_rows 10000,
# sleep_loop 1, copy_mode file, copy_max_memory 300M, my_server_id 100, on_error_* continue ...
c["sources"] = {"mysql": m}   # drop the example pgsql source
c["fillfactor"] = {}
yaml.safe_dump(c, open(dst, "w"), default_flow_style=False, sort_keys=False)
EOF
as_cham "$VENV/bin/python" "$WORK/mkconf.py" "$CONF_DIR/config-example.yml" "$CONF_DIR/default.yml" \
  "$MY_HOST" "$MY_PORT" "$MY_USER" "$MY_PASS" "$PG_HOST" "$PG_PORT" "$PG_USER" "$PG_PASS" "$PG_DB" "$CHAM_HOME/out"

# ---------------------------------------------------------------- 2. databases, seed, init_replica
log "recreating MariaDB db $MY_DB ($SEED_ROWS rows) and PostgreSQL db $PG_DB"
"${MYSQL[@]}" <<EOF
DROP DATABASE IF EXISTS $MY_DB;
CREATE DATABASE $MY_DB;
USE $MY_DB;
CREATE TABLE members (
  id INT AUTO_INCREMENT PRIMARY KEY,
  email VARCHAR(190) NOT NULL,
  first_name VARCHAR(100), last_name VARCHAR(100),
  status TINYINT NOT NULL DEFAULT 1,
  joined_at DATETIME, dues DECIMAL(10,2), bio TEXT,
  updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO members (id,email,first_name,last_name,status,joined_at,dues,bio)
  SELECT seq, CONCAT('m',seq,'@ex.org'), CONCAT('First',seq), CONCAT('Last',seq), 1,
         '2020-01-02 03:04:05', 123.45, REPEAT('bio ',20)
  FROM seq_1_to_$SEED_ROWS;
EOF
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" -c "CREATE DATABASE $PG_DB"

cham create_replica_schema --config default > "$WORK/create_schema.log" 2>&1
cham add_source --config default --source mysql > "$WORK/add_source.log" 2>&1

log "init_replica ($SEED_ROWS rows)"
t0=$(date +%s.%N)
cham init_replica --config default --source mysql > "$WORK/init_replica.log" 2>&1 || { tail -30 "$WORK/init_replica.log"; die "init_replica failed"; }
t1=$(date +%s.%N)
grep -q "init replica for source mysql is complete" "$WORK/init_replica.log" || { tail -30 "$WORK/init_replica.log"; die "init_replica did not complete"; }
grep -q "error in PostgreSQL copy" "$WORK/init_replica.log" && log "WARNING: COPY failed, pg_chameleon fell back to INSERTs"
INIT_S=$(echo "$t1 - $t0" | bc -l)
pg_seed=$("${PSQL[@]}" -d "$PG_DB" -Atc "select count(*) from $PG_TABLE")
[ "$pg_seed" = "$SEED_ROWS" ] || die "after init_replica PostgreSQL has $pg_seed rows, expected $SEED_ROWS"
INIT_RPS=$(echo "$SEED_ROWS / $INIT_S" | bc -l)
log "init_replica: $(printf '%.2f' "$INIT_S") s -> $(printf '%.0f' "$INIT_RPS") rows/s"

# ---------------------------------------------------------------- 3. replication + change workload
log "start_replica"
"${CHAM[@]}" start_replica --config default --source mysql > "$WORK/replica.log" 2>&1 &
CHAM_PID=$!          # setpriv/env exec, so this is chameleon's own main process
ok=""
for _ in $(seq 1 120); do
  pid_alive "$CHAM_PID" || { tail -30 "$WORK/replica.log"; die "start_replica exited"; }
  st=$("${PSQL[@]}" -d "$PG_DB" -Atc "select enm_status from sch_chameleon.t_sources where t_source='mysql'" 2>/dev/null || true)
  nk=$( (pgrep -P "$CHAM_PID" || true) | wc -l)
  if [ "$st" = running ] && [ "$nk" -ge 2 ]; then ok=1; break; fi
  sleep 0.5
done
[ -n "$ok" ] || die "replica did not reach status running"
sleep 2   # let the read/replay loops settle (first loop marks the table consistent)
KIDS=$( (pgrep -P "$CHAM_PID" || true) | tr '\n' ' ')
PG_DATA=$("${PSQL[@]}" -d postgres -Atc "show data_directory")
PG_MASTER=$(head -1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)
MY_PIDFILE=$("${MYSQL[@]}" -Nse "select @@pid_file")
MY_SRV=$(cat "$MY_PIDFILE" 2>/dev/null || true)
log "replica running: main=$CHAM_PID children=[$KIDS] postmaster=${PG_MASTER:-?} mariadbd=${MY_SRV:-?}"

cat > "$WORK/measure.py" <<'EOF'
import os, sys, time, threading, decimal
import pymysql, psycopg2
(my_host, my_port, my_user, my_pass, pg_host, pg_port, pg_user, pg_pass, pg_db, pg_table,
 seed, ins, upd, dele, txn, poll_s, timeout_s, idle_s, cham_pids, pg_master, my_srv, out_env, timeline) = sys.argv[1:24]
seed, ins, upd, dele, txn = map(int, (seed, ins, upd, dele, txn))
poll_s, timeout_s, idle_s = float(poll_s), float(timeout_s), float(idle_s)
cham_pids = [int(p) for p in cham_pids.split()]
HZ = os.sysconf("SC_CLK_TCK")

def stat(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]), int(f[12]), int(f[13]), int(f[14])   # utime stime cutime cstime
    except (OSError, IndexError):
        return 0, 0, 0, 0
def own(pid):  u, s, cu, cs = stat(pid); return (u + s) / HZ
def tree(pid):
    """cpu s of a server process tree: self+reaped children + live children (incl. their reaped ones)"""
    if not pid: return 0.0
    u, s, cu, cs = stat(pid); tot = u + s + cu + cs
    try: kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        kids = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    if int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1]) == pid: kids.append(d)
                except (OSError, IndexError): pass
    for k in kids: tot += sum(stat(int(k)))
    return tot / HZ
def snap():
    return {"cham": {p: own(p) for p in cham_pids}, "pg": tree(int(pg_master or 0)), "my": own(int(my_srv or 0)),
            "t": time.monotonic()}

my = pymysql.connect(host=my_host, port=int(my_port), user=my_user, password=my_pass, database=os.environ["MY_DB"], autocommit=True)
pg = psycopg2.connect(host=pg_host, port=pg_port, user=pg_user, password=pg_pass, dbname=pg_db)
pg.autocommit = True
Q = f"select count(*), coalesce(sum(dues),0), coalesce(sum(id),0) from {pg_table}"

# idle CPU of the replicator before any change
a = snap(); time.sleep(idle_s); b = snap()
idle = {p: (b["cham"][p] - a["cham"][p]) / (b["t"] - a["t"]) for p in cham_pids}

stmts = []
for s in range(seed + 1, seed + ins + 1, txn):
    e = min(s + txn - 1, seed + ins)
    stmts.append(f"INSERT INTO members (id,email,first_name,last_name,status,joined_at,dues,bio) "
                 f"SELECT seq, CONCAT('m',seq,'@ex.org'), CONCAT('First',seq), CONCAT('Last',seq), 1, "
                 f"'2020-01-02 03:04:05', 123.45, REPEAT('bio ',20) FROM seq_{s}_to_{e}")
for s in range(1, upd + 1, txn):
    stmts.append(f"UPDATE members SET dues=dues+1 WHERE id BETWEEN {s} AND {min(s + txn - 1, upd)}")
for s in range(1, dele + 1, txn):
    stmts.append(f"DELETE FROM members WHERE id BETWEEN {s} AND {min(s + txn - 1, dele)}")

state = {"target": None, "done": None, "first_change": None}
start_state = None
timeline_rows = []
def poller(t0):
    c = pg.cursor()
    while True:
        c.execute(Q); r = c.fetchone(); el = time.monotonic() - t0
        timeline_rows.append((el, r[0], r[1], r[2]))
        if state["first_change"] is None and r != start_state: state["first_change"] = el
        if state["target"] is not None and r == state["target"]:
            state["done"] = el; return
        if el > timeout_s: return
        time.sleep(poll_s)

c = pg.cursor(); c.execute(Q); start_state = c.fetchone()
s0 = snap(); t0 = s0["t"]; t0_epoch = time.time()
th = threading.Thread(target=poller, args=(t0,)); th.start()
mc = my.cursor()
for q in stmts:           # autocommit: one transaction per statement = TXN_ROWS row changes
    mc.execute(q)
src_s = time.monotonic() - t0
mc.execute("select count(*), coalesce(sum(dues),0), coalesce(sum(id),0) from members")
tgt = mc.fetchone(); state["target"] = (int(tgt[0]), decimal.Decimal(tgt[1]), decimal.Decimal(tgt[2]))
th.join(); s1 = snap()
with open(timeline, "w") as f:
    f.write("elapsed_s,count,sum_dues,sum_id\n")
    for r in timeline_rows: f.write("%.3f,%s,%s,%s\n" % r)
if state["done"] is None:
    print(f"did not converge within {timeout_s}s; last={timeline_rows[-1]} target={state['target']}", file=sys.stderr)
    sys.exit(3)
total = state["done"]; win = s1["t"] - s0["t"]
cham_cpu = {p: s1["cham"][p] - s0["cham"][p] for p in cham_pids}
with open(out_env, "w") as f:
    f.write(f"T0_EPOCH={t0_epoch:.3f}\n")
    f.write(f"SRC_S={src_s:.3f}\nTOTAL_S={total:.3f}\nFIRST_CHANGE_S={state['first_change'] or 0:.3f}\n")
    f.write(f"CHANGES={ins + upd + dele}\nTARGET='{tgt[0]} {tgt[1]} {tgt[2]}'\n")
    f.write(f"CHAM_CPU_S={sum(cham_cpu.values()):.2f}\n")
    f.write("CHAM_CPU_PER_PID='" + " ".join(f"{p}:{v:.2f}" for p, v in cham_cpu.items()) + "'\n")
    f.write("CHAM_IDLE_CORES_PER_PID='" + " ".join(f"{p}:{v:.2f}" for p, v in idle.items()) + "'\n")
    f.write(f"CHAM_IDLE_CORES={sum(idle.values()):.2f}\n")
    f.write(f"PG_CPU_S={s1['pg'] - s0['pg']:.2f}\nMY_CPU_S={s1['my'] - s0['my']:.2f}\nWINDOW_S={win:.3f}\n")
EOF

log "change workload: $INS_ROWS inserts, $UPD_ROWS updates, $DEL_ROWS deletes, $TXN_ROWS rows/txn; polling every ${POLL_S}s"
"$VENV/bin/python" "$WORK/measure.py" "$MY_HOST" "$MY_PORT" "$MY_USER" "$MY_PASS" \
  "$PG_HOST" "$PG_PORT" "$PG_USER" "$PG_PASS" "$PG_DB" "$PG_TABLE" \
  "$SEED_ROWS" "$INS_ROWS" "$UPD_ROWS" "$DEL_ROWS" "$TXN_ROWS" "$POLL_S" "$CONVERGE_TIMEOUT_S" "$IDLE_SAMPLE_S" \
  "$CHAM_PID $KIDS" "${PG_MASTER:-0}" "${MY_SRV:-0}" "$WORK/measure.env" "$WORK/timeline.csv" \
  || { tail -30 "$WORK/replica.log"; die "change phase failed"; }
# shellcheck disable=SC1091
. "$WORK/measure.env"

# ---------------------------------------------------------------- 4. stop, verify
grep -Eq "Traceback|ERROR|CRITICAL" "$WORK/replica.log" && log "WARNING: errors in $WORK/replica.log"
stop_our_replica "$CHAM_PID"; CHAM_PID=""
final_status=$("${PSQL[@]}" -d "$PG_DB" -Atc "select enm_status from sch_chameleon.t_sources where t_source='mysql'")
n_err=$("${PSQL[@]}" -d "$PG_DB" -Atc "select count(*) from sch_chameleon.t_error_log")
# order-independent content hash: sum of the first 60 bits of md5(row) over all rows (updated_at left out:
# pg_chameleon maps TIMESTAMP to timestamp without time zone, so its text depends on session time zones)
src_hash=$("${MYSQL[@]}" -Nse "SELECT CONCAT(COUNT(*),' ',SUM(CAST(CONV(SUBSTR(MD5(CONCAT_WS('|',id,email,first_name,last_name,status,joined_at,dues,bio)),1,15),16,10) AS UNSIGNED))) FROM $MY_DB.members")
dst_hash=$("${PSQL[@]}" -d "$PG_DB" -Atc "SELECT count(*)||' '||sum(('x'||substr(md5(concat_ws('|',id,email,first_name,last_name,status,joined_at,dues,bio)),1,15))::bit(60)::bigint) FROM $PG_TABLE")
# pg_chameleon's own batch bookkeeping: when the read process closed the batch(es) and when the replay finished
read -r N_BATCH READ_DONE_EP REPLAY_DONE_EP N_REPLAYED < <("${PSQL[@]}" -d "$PG_DB" -AtF' ' -c "
  SELECT count(*), extract(epoch from max(ts_processed)::timestamptz), extract(epoch from max(ts_replayed)::timestamptz),
         coalesce(sum(i_replayed),0)
  FROM sch_chameleon.t_replica_batch WHERE i_replayed > 0")
READ_DONE_S=$(echo "${READ_DONE_EP:-0} - $T0_EPOCH" | bc -l); REPLAY_DONE_S=$(echo "${REPLAY_DONE_EP:-0} - $T0_EPOCH" | bc -l)
VERIFIED=no; [ "$src_hash" = "$dst_hash" ] && VERIFIED=yes
CHANGE_RPS=$(echo "$CHANGES / $TOTAL_S" | bc -l)
SCRIPT_S=$(echo "$(date +%s.%N) - $T_SCRIPT0" | bc -l)
f() { printf "%.${2:-0}f" "$1"; }
echo "versions: $VERSIONS"
echo "init: rows=$SEED_ROWS init_replica_s=$(f "$INIT_S" 2) rows_per_s=$(f "$INIT_RPS")"
echo "change: rows=$CHANGES source_apply_s=$(f "$SRC_S" 2) first_change_visible_s=$(f "$FIRST_CHANGE_S" 2) converged_s=$(f "$TOTAL_S" 2) (poll ${POLL_S}s) rows_per_s=$(f "$CHANGE_RPS")"
echo "pg_chameleon batches: n=$N_BATCH rows_replayed=$N_REPLAYED read_done_s=$(f "$READ_DONE_S" 2) replay_done_s=$(f "$REPLAY_DONE_S" 2) (relative to workload start)"
echo "cpu during change phase (${WINDOW_S}s): chameleon=${CHAM_CPU_S}s ($(f "$(echo "$CHAM_CPU_S / $WINDOW_S" | bc -l)" 2) cores; pid:cpu_s for main,read,replay: $CHAM_CPU_PER_PID) postgres_all=${PG_CPU_S}s mariadbd=${MY_CPU_S}s"
echo "cpu idle (before workload): chameleon=${CHAM_IDLE_CORES} cores (per pid: $CHAM_IDLE_CORES_PER_PID)"
echo "final: target='$TARGET' content_hash_match=$VERIFIED status_after_stop=$final_status error_log_rows=$n_err script_wall_s=$(f "$SCRIPT_S")"
echo "pg_chameleon: init_rows_per_s=$(f "$INIT_RPS") change_rows_per_s=$(f "$CHANGE_RPS") total_s=$(f "$TOTAL_S" 2)"
[ "$VERIFIED" = yes ] || { log "source and target content differ ($src_hash vs $dst_hash)"; exit 2; }
