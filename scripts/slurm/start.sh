#!/usr/bin/env bash
# Start a one-node Slurm cluster on localhost (for tests and for trying hydra/launcher=slurm on one machine).
#   bash scripts/slurm/start.sh [STATE_DIR] [CPUS]      (root; needs Debian's slurm-wlm and munge: install.sh)
# STATE_DIR (default /tmp/bench-slurm) receives slurm.conf, logs, spool, pid files, a sacct stand-in and env.sh;
# `source STATE_DIR/env.sh` exports SLURM_CONF and PATH for every process that submits. CPUS (default: the cores)
# is what the node declares: more than the machine has lets several single-CPU jobs run at once.
# Stop it with scripts/slurm/stop.sh STATE_DIR. Notes on what matters here: ../shared/slurm/NOTES.md.
set -euo pipefail
DIR=$(realpath -m "${1:-/tmp/bench-slurm}")
CPUS=${2:-$(nproc)}
HERE=$(cd "$(dirname "$0")" && pwd)
for bin in slurmctld slurmd munged sinfo; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || {
    echo "error: $bin not found; install it first: bash scripts/slurm/install.sh" >&2; exit 1; }
done
mkdir -p "$DIR"/{spool,state,log,bin}

# munge: a key, its directories, one daemon
if [ ! -s /etc/munge/munge.key ]; then mungekey --create --force >/dev/null 2>&1 || /usr/sbin/mungekey --create --force; fi
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
chmod 400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then runuser -u munge -- /usr/sbin/munged; fi

HOST=$(hostname -s)
MEM_MB=$(awk '/MemAvailable/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
cat > "$DIR/slurm.conf" <<CONF
ClusterName=bench
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((MEM_MB / CPUS))
SlurmdParameters=config_overrides
KillWait=5
SchedulerParameters=sched_interval=1
MinJobAge=600
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
CONF

# submitit polls job states with sacct; without accounting storage, answer from squeue (MinJobAge keeps them)
install -m 755 "$HERE/sacct" "$DIR/bin/sacct"
cat > "$DIR/env.sh" <<ENV
export SLURM_CONF=$DIR/slurm.conf
export PATH=$DIR/bin:\$PATH
ENV

export SLURM_CONF=$DIR/slurm.conf
/usr/sbin/slurmctld
/usr/sbin/slurmd
for _ in $(seq 1 60); do
  state=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
  if [ "$state" = "idle" ]; then
    echo "slurm up: node ${HOST}, ${CPUS} CPUs, ${MEM_MB} MB; source $DIR/env.sh"
    exit 0
  fi
  sleep 0.5
done
echo "error: the node did not become idle (state: ${state:-none}); see $DIR/log/" >&2
exit 1
