#!/usr/bin/env bash
# Source this file: it starts a throw-away single-node Slurm cluster on this host (munged,
# slurmctld, slurmd; installing Debian's slurm-wlm and munge first when they are missing and we
# are root), exports SLURM_CONF and NTKLAB_TEST_SLURM=1, and stops the daemons and removes their
# files when the sourcing shell exits. No accounting database: job states come from squeue.
ntklab_slurm_start() {
  if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
      echo "slurm.sh: Slurm is not installed (apt-get install slurm-wlm munge); Slurm tests will not run" >&2
      return 0
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "slurm.sh: starting slurmctld and slurmd needs root; Slurm tests will not run" >&2
    return 0
  fi
  local dir host cpus mem ports
  dir=$(mktemp -d /tmp/ntklab-slurm.XXXXXX)
  chmod 755 "$dir"
  host=$(hostname)
  # More CPUs than the machine has (config_overrides): the jobs of tests running side by side
  # (pytest -n 2) all start at once instead of queueing behind each other.
  cpus=$(( $(nproc) * 4 ))
  mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 3 / 4 ))
  read -r -a ports < <(python3 -c 'import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
  # munge: one key and one daemon of our own, so nothing depends on a system service.
  mkdir -p "$dir/munge"
  chown munge:munge "$dir/munge"
  chmod 755 "$dir/munge"
  if [ ! -s /etc/munge/munge.key ]; then
    runuser -u munge -- /usr/sbin/mungekey --create --keyfile=/etc/munge/munge.key >/dev/null 2>&1 \
      || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  runuser -u munge -- /usr/sbin/munged --socket="$dir/munge/munge.socket.2" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
  mkdir -p "$dir/state" "$dir/spool"
  cat >"$dir/slurm.conf" <<EOF
ClusterName=ntklab
SlurmctldHost=$host
SlurmUser=root
SlurmctldPort=${ports[0]}
SlurmdPort=${ports[1]}
AuthType=auth/munge
# cred_expire: a requeued job may start again only after its old credential expired (Slurm sets
# its begin time that far ahead; the default is 120 s). Schedule every 5 s rather than every 30-60.
AuthInfo=socket=$dir/munge/munge.socket.2,cred_expire=10
SchedulerParameters=bf_interval=5,sched_interval=5
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/backfill
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
MinJobAge=30
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
  export SLURM_CONF="$dir/slurm.conf"
  /usr/sbin/slurmctld -f "$SLURM_CONF"
  /usr/sbin/slurmd -f "$SLURM_CONF"
  NTKLAB_SLURM_STOP="for p in $dir/slurmd.pid $dir/slurmctld.pid $dir/munge/munged.pid; do [ -s \$p ] && kill \$(cat \$p); done; sleep 1; rm -rf $dir"
  trap 'eval "$NTKLAB_PG_STOP" >/dev/null 2>&1; eval "$NTKLAB_SLURM_STOP" >/dev/null 2>&1' EXIT
  local i
  for i in $(seq 1 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
      export NTKLAB_TEST_SLURM=1
      echo "Slurm test cluster on $host (SLURM_CONF=$SLURM_CONF)" >&2
      return 0
    fi
    sleep 0.5
  done
  echo "slurm.sh: the node did not become idle within 30 s; see $dir/slurmctld.log and $dir/slurmd.log" >&2
  sinfo >&2 || true
  return 1
}
ntklab_slurm_start
