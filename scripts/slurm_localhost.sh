#!/usr/bin/env bash
# Single-node SLURM cluster on localhost, for the cluster test (tests/test_cluster.py,
# `make test-cluster`). Needs root. Debian/Ubuntu: installs slurm-wlm and munge with
# apt-get when they are missing.
#
#   scripts/slurm_localhost.sh up      # install if needed, write /etc/slurm/slurm.conf,
#                                      # start munged, slurmctld, slurmd; wait until the
#                                      # node is idle (fails after $SLURM_UP_TIMEOUT s)
#   scripts/slurm_localhost.sh down    # cancel every job, stop the daemons by PID
#                                      # (SIGTERM, then SIGKILL), restore the old slurm.conf
#   scripts/slurm_localhost.sh status  # sinfo + squeue
#
# Design (see docs/cluster.md):
# - proctrack/linuxproc + task/none: no cgroups needed (containers, CI machines).
# - The config lives at /etc/slurm/slurm.conf: snakemake-executor-plugin-slurm clears
#   SLURM_* variables inside jobs, so SLURM_CONF alone breaks the job steps (srun).
# - No accounting daemon: MinJobAge=600 keeps finished jobs visible to squeue for
#   10 minutes, so the plugin's `slurm-status-command: squeue` sees every job end
#   (its default, sacct, would wait forever for an accounting database).
# - The node advertises one GRES "gpu" without a device file, so a job that asks
#   for --gpus=1 (the train rule in profiles/slurm) is scheduled on this GPU-less
#   node and simply runs on the CPU. Override with SLURM_FAKE_GPUS=0.
# - The node declares SLURM_CPU_FACTOR (2) x its cores, so short jobs run side by side.
# - Every daemon's PID is recorded under $SLURM_STATE_DIR; `down` stops exactly those.
set -euo pipefail

STATE="${SLURM_STATE_DIR:-/tmp/ptychopipe-slurm}"
CONF=/etc/slurm/slurm.conf
MARKER="# ptychopipe-localhost-cluster"
UP_TIMEOUT="${SLURM_UP_TIMEOUT:-60}"
FAKE_GPUS="${SLURM_FAKE_GPUS:-1}"
PARTITION="${SLURM_PARTITION_NAME:-debug}"
CPU_FACTOR="${SLURM_CPU_FACTOR:-2}"

log() { echo "slurm_localhost: $*" >&2; }
die() { log "error: $*"; exit 1; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "slurm-wlm/munge missing and not root: install them (apt-get install slurm-wlm munge)"
    command -v apt-get >/dev/null || die "slurm-wlm/munge missing and no apt-get on this machine"
    log "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q slurm-wlm munge >"$STATE/apt.log" 2>&1; then
        apt-get update -q >>"$STATE/apt.log" 2>&1 || true
        apt-get install -y -q slurm-wlm munge >>"$STATE/apt.log" 2>&1 \
            || { tail -20 "$STATE/apt.log" >&2; die "apt-get install slurm-wlm munge failed (log: $STATE/apt.log)"; }
    fi
}

# Alive AND one of our daemons (a stale PID file must never make us signal a reused PID).
pid_alive() {
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
    [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ] || return 1  # a zombie has ended
    case "$(cat "/proc/$1/comm" 2>/dev/null)" in munged|slurmctld|slurmd) return 0 ;; *) return 1 ;; esac
}

read_pid() { [ -s "$1" ] && tr -dc '0-9' <"$1" || true; }

write_conf() {
    local host cpus mem gres_line="" node_gres=""
    host="$(hostname -s)"
    # Declare CPU_FACTOR x the real cores (SlurmdParameters=config_overrides): the test DAG's
    # jobs are short and mostly waiting, so two 2-thread jobs may share 2 cores.
    cpus="$(( $(nproc) * CPU_FACTOR ))"
    # RealMemory a little under the machine's, so slurmd registers without complaint.
    mem="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
    if [ "$FAKE_GPUS" -gt 0 ]; then
        gres_line="GresTypes=gpu"
        node_gres="Gres=gpu:$FAKE_GPUS"
        cat >"$STATE/gres.conf" <<EOF
$MARKER
# A GRES "gpu" without a device file: lets jobs that ask for --gpus run on this GPU-less node.
NodeName=$host Name=gpu File=/dev/null Count=$FAKE_GPUS
EOF
        cp "$STATE/gres.conf" /etc/slurm/gres.conf.ptychopipe-new
    fi
    if [ -e "$CONF" ] && ! grep -q "^$MARKER" "$CONF"; then
        [ -e "$CONF.ptychopipe-backup" ] || cp -p "$CONF" "$CONF.ptychopipe-backup"
        log "saved the existing $CONF as $CONF.ptychopipe-backup (restored by 'down')"
    fi
    if [ -e /etc/slurm/gres.conf ] && ! grep -q "^$MARKER" /etc/slurm/gres.conf; then
        [ -e /etc/slurm/gres.conf.ptychopipe-backup ] || cp -p /etc/slurm/gres.conf /etc/slurm/gres.conf.ptychopipe-backup
    fi
    mkdir -p /etc/slurm
    if [ "$FAKE_GPUS" -gt 0 ]; then
        mv /etc/slurm/gres.conf.ptychopipe-new /etc/slurm/gres.conf
    else
        rm -f /etc/slurm/gres.conf
    fi
    cat >"$CONF.ptychopipe-new" <<EOF
$MARKER (written by scripts/slurm_localhost.sh; state in $STATE)
ClusterName=ptychopipe
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$gres_line
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $node_gres State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.ptychopipe-new" "$CONF"
}

start_munge() {
    local pid
    pid="$(read_pid "$STATE/munged.pid")"
    if pid_alive "$pid"; then return 0; fi
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "using the munged already running on this machine (not ours: 'down' leaves it alone)"
        return 0
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge "$STATE/munge"
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key --force
        else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
    fi
    # munged runs as root here: the key and its directories must belong to root ('down'
    # gives them back to their owners, e.g. munge:munge of Debian's package).
    [ -e "$STATE/munge.owners" ] || stat -c '%U:%G %n' /etc/munge /etc/munge/munge.key /run/munge \
        /var/lib/munge /var/log/munge >"$STATE/munge.owners" 2>/dev/null || true
    chown root:root /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
    chmod 700 /etc/munge; chmod 600 /etc/munge/munge.key; chmod 755 /run/munge
    munged --force --socket=/run/munge/munge.socket.2 --pid-file="$STATE/munged.pid" \
        --log-file="$STATE/munged.log" --seed-file="$STATE/munge/munged.seed"
    for _ in $(seq 50); do
        pid="$(read_pid "$STATE/munged.pid")"
        pid_alive "$pid" && munge -n </dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    tail -5 "$STATE/munged.log" >&2 || true
    die "munged did not start (log: $STATE/munged.log)"
}

# Start a SLURM daemon in the foreground (-D) in the background and record its PID.
start_daemon() {
    local name="$1"; shift
    local pid
    pid="$(read_pid "$STATE/$name.pid")"
    if pid_alive "$pid"; then return 0; fi
    setsid "$@" -D >"$STATE/$name.out" 2>&1 </dev/null &
    echo $! >"$STATE/$name.pid"
}

up() {
    [ "$(id -u)" = 0 ] || die "must run as root (the test cluster's daemons run as root)"
    local t0 state
    t0=$(date +%s.%N)
    mkdir -p "$STATE/ctld" "$STATE/slurmd"
    install_packages
    write_conf
    start_munge
    start_daemon slurmctld slurmctld -c -i
    start_daemon slurmd slurmd
    for _ in $(seq $((UP_TIMEOUT * 4))); do
        state="$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)"
        case "$state" in
            idle*|mixed*|allocated*)
                log "cluster up in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s" \
                    "(node $(hostname -s), partition $PARTITION, state $state; pids:" \
                    "munged $(read_pid "$STATE/munged.pid"), slurmctld $(read_pid "$STATE/slurmctld.pid")," \
                    "slurmd $(read_pid "$STATE/slurmd.pid"))"
                return 0 ;;
        esac
        for d in slurmctld slurmd; do
            pid_alive "$(read_pid "$STATE/$d.pid")" || { tail -20 "$STATE/$d.out" "$STATE/$d.log" >&2 2>/dev/null || true;
                die "$d exited during start-up (logs: $STATE/$d.log, $STATE/$d.out)"; }
        done
        sleep 0.25
    done
    tail -20 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2 2>/dev/null || true
    die "node not idle after ${UP_TIMEOUT}s (state '${state:-unknown}'); logs in $STATE"
}

stop_pid() {  # stop_pid NAME PIDFILE: SIGTERM, wait up to 10 s, then SIGKILL
    local name="$1" pid
    pid="$(read_pid "$2")"
    if ! pid_alive "$pid"; then rm -f "$2"; return 0; fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do pid_alive "$pid" || break; sleep 0.1; done
    if pid_alive "$pid"; then log "$name ($pid) ignored SIGTERM; sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    for _ in $(seq 50); do pid_alive "$pid" || break; sleep 0.1; done
    pid_alive "$pid" && log "warning: $name ($pid) still alive"
    rm -f "$2"
}

down() {
    # Cancel every job of this cluster first, so no slurmstepd outlives the daemons.
    if pid_alive "$(read_pid "$STATE/slurmctld.pid")"; then
        scancel --full --quiet --user=root 2>/dev/null || true
        for _ in $(seq 60); do
            [ -z "$(squeue -h -t RUNNING,COMPLETING,PENDING -o %i 2>/dev/null)" ] && break
            sleep 0.25
        done
    fi
    stop_pid slurmd "$STATE/slurmd.pid"
    stop_pid slurmctld "$STATE/slurmctld.pid"
    stop_pid munged "$STATE/munged.pid"
    if [ -s "$STATE/munge.owners" ]; then
        while read -r owner path; do chown "$owner" "$path" 2>/dev/null || true; done <"$STATE/munge.owners"
        rm -f "$STATE/munge.owners"
    fi
    if [ -e "$CONF" ] && grep -q "^$MARKER" "$CONF"; then
        if [ -e "$CONF.ptychopipe-backup" ]; then mv "$CONF.ptychopipe-backup" "$CONF"; else rm -f "$CONF"; fi
    fi
    if [ -e /etc/slurm/gres.conf ] && grep -q "^$MARKER" /etc/slurm/gres.conf; then
        if [ -e /etc/slurm/gres.conf.ptychopipe-backup ]; then mv /etc/slurm/gres.conf.ptychopipe-backup /etc/slurm/gres.conf
        else rm -f /etc/slurm/gres.conf; fi
    fi
    log "cluster down (state and logs kept in $STATE)"
}

status() { sinfo; squeue; }

mkdir -p "$STATE"
case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
