#!/usr/bin/env bash
# Run deploy/systemd/prober.service's ExecStartPre and ExecStart, as written,
# with the unit's sandbox rebuilt from util-linux where no systemd manager
# runs (systemd is installed here but is not PID 1).  Called by
# tests/test_vm_deploy.py inside `unshare --net --mount --fork`: a network
# namespace of its own (loopback only, so --listen 0.0.0.0:9716 is private)
# where the lab already runs.
#
#   hardened.sh OPT_UPPER ETC_UPPER WORK UID "EXECSTARTPRE" "EXECSTART" "ENVIRONMENT"
#
# ENVIRONMENT is the unit's Environment= assignments, space-separated.
# OPT_UPPER and ETC_UPPER are overlay upper directories holding opt/prober (the
# venv) and etc/prober (probes.yaml), so the unit's own paths /opt/prober and
# /etc/prober exist in this mount namespace only.  Prints the service's output.
set -euo pipefail
opt_upper=$1 etc_upper=$2 work=$3 uid=$4 pre=$5 start=$6 environment=$7

# The service's own mount namespace: what the unit's options make of the file system.
exec unshare --mount --propagation private --pid --fork -- bash -euo pipefail -c '
  opt_upper=$1 etc_upper=$2 work=$3 uid=$4 pre=$5 start=$6
  read -ra environment <<< "$7"
  mkdir -p "$work/opt" "$work/etc"
  mount -t overlay overlay -o "lowerdir=/opt,upperdir=$opt_upper,workdir=$work/opt" /opt
  mount -t overlay overlay -o "lowerdir=/etc,upperdir=$etc_upper,workdir=$work/etc" /etc
  # ProtectSystem=strict: every file system read-only (the service writes only its /tmp).
  findmnt -rno TARGET | grep -vE "^/(proc|sys|dev)(/|$)" | while read -r target; do
    mount -o remount,bind,ro "$target" 2>/dev/null || true
  done
  # ProtectHome=yes: /home, /root and /run/user empty and read-only.
  for dir in /home /root /run/user; do
    [ -d "$dir" ] && mount -t tmpfs -o ro,mode=0755,nosuid,nodev tmpfs "$dir"
  done
  # ProtectProc=invisible, ProcSubset=pid: a /proc of its own PID namespace, other users hidden.
  mount -t proc -o nosuid,nodev,noexec,hidepid=invisible,subset=pid proc /proc
  # PrivateTmp=yes: a /tmp and /var/tmp of its own.
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
  echo "sandbox: ready"
  # A service'"'"'s clean environment plus Environment= and EnvironmentFile= (PROBER_OPTS),
  # UMask=0077, LimitNOFILE=16384, then DynamicUser=yes (a UID and GID of no account),
  # NoNewPrivileges=yes and empty CapabilityBoundingSet= / AmbientCapabilities=.
  umask 0077
  exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin LANG=C.UTF-8 \
      "${environment[@]}" PROBER_OPTS="--location dc1" \
    prlimit --nofile=16384:16384 -- \
    setpriv --reuid="$uid" --regid="$uid" --clear-groups --no-new-privs \
      --inh-caps=-all --ambient-caps=-all --bounding-set=-all -- \
    sh -c "$pre && exec $start"
' hardened "$opt_upper" "$etc_upper" "$work" "$uid" "$pre" "$start" "$environment"
