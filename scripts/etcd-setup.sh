#!/usr/bin/env bash
# Install Debian's etcd-server (3.4 on bookworm) when it is missing: the coordinator through which the fronts
# sharing one Milvus take turns writing a collection. `make run` starts its own etcd from it (data under the
# data dir) and the integration tests start theirs; nothing runs as a system service. Safe to re-run.
set -euo pipefail

if command -v etcd > /dev/null 2>&1 || [ -x /usr/bin/etcd ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "etcd-setup: etcd is not installed. Run: sudo apt-get install etcd-server" >&2
  echo "            (or run one front without it: DEDUP_ETCD=off make run)" >&2
  exit 1
fi
echo "== apt-get install etcd-server"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server > /dev/null
# On a machine booted with systemd the package starts a system etcd on 2379, where Milvus standalone runs its
# own embedded etcd: the stack starts the one it needs, so the service is stopped and disabled again.
if [ -d /run/systemd/system ] && systemctl is-enabled --quiet etcd.service 2> /dev/null; then
  systemctl disable --now etcd.service
  echo "etcd-setup: disabled the etcd.service the package started (the stack runs its own etcd)"
fi
etcd --version | head -n1
