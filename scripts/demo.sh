#!/usr/bin/env bash
# `make demo`: a one-host Maglica cloud on this machine, then playbooks/demo.yml.
#   - a libvirtd on loopback TCP (a testbed host in its own namespace) unless ours already answers
#   - a small Debian-like image built here (no download), defined as demo.original
#   - CURVE keys, a client worker and a host worker
# A second run reuses everything and the clone reports changed=0.
#   scripts/demo.sh clean   stops it all and removes the demo's state
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MAGLICA_TESTBED_DIR=${MAGLICA_DEMO_DIR:-/var/tmp/maglica-demo}
. "$here/tests/testbed/env.sh"
VENV=${VENV:-$here/.venv}
PY=$VENV/bin/python
ADDRESS=${MAGLICA_DEMO_ADDRESS:-127.0.0.1}
HOST=demo
STATE=$MAGLICA_TESTBED_DIR/maglica
CONF=$STATE/maglica.conf
testbed=(bash "$here/tests/testbed/testbed.sh")
export PYTHONPATH=$here/plugins/module_utils

say() { printf 'demo: %s\n' "$*"; }

stop_workers() {
  local f
  for f in "$STATE"/*.pid; do
    [[ -e $f ]] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

if [[ ${1:-} == clean ]]; then
  stop_workers
  "${testbed[@]}" clean
  say "stopped and removed $MAGLICA_TESTBED_DIR"
  exit 0
fi

# 1. A libvirtd: ours, in its own namespace. Refuse to take over one we did not start.
if ! "${testbed[@]}" status 2>/dev/null | grep -q "^$HOST .* up$"; then
  if timeout 5 virsh -q -c "qemu+tcp://$ADDRESS/system" version >/dev/null 2>&1; then
    say "a libvirtd the demo did not start answers at $ADDRESS:16509; set MAGLICA_DEMO_ADDRESS=127.0.0.N to use another address" >&2
    exit 1
  fi
  say "starting libvirtd for host '$HOST' at qemu+tcp://$ADDRESS/system"
  "${testbed[@]}" start-one "$HOST" "$ADDRESS" >/dev/null
fi

# 2. The original image, built here once (cached), defined as demo.original.
if ! virsh -q -c "qemu+tcp://$ADDRESS/system" dominfo demo.original >/dev/null 2>&1; then
  say "building a small Debian-like image (first time: a few minutes for the libguestfs appliance)"
  mkdir -p "$STATE"
  bash "$here/tests/testbed/build_image.sh" debian "$STATE/demo.qcow2"
  bash "$here/tests/testbed/define_image.sh" "$HOST" demo.original "$STATE/demo.qcow2"
  rm -f "$STATE/demo.qcow2"
fi

# 3. Configuration and CURVE keys (made once, kept).
mkdir -p "$STATE"
cat >"$CONF" <<CONF
hosts:
  - name: $HOST
    address: $ADDRESS
    weight: 10
client:
  host: 127.0.0.1
  bind: 127.0.0.1
  pub_port: 5555
  rep_port: 5556
security:
  curve: true
  key_dir: $STATE/keys
jobs:
  database: $STATE/jobs.sqlite
host_worker:
  state_dir: $STATE/host
CONF
for name in server library "$HOST"; do "$PY" -m maglica.keys --key-dir "$STATE/keys" create "$name" >/dev/null; done
for name in library "$HOST"; do "$PY" -m maglica.keys --key-dir "$STATE/keys" allow "$name" "$STATE/keys/$name.key" >/dev/null; done

# 4. The workers: the host worker inside its host's namespace, where the disks are.
running() { [[ -e $STATE/$1.pid ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }
if ! running client_worker; then
  say "starting the client worker (PUB 5555, REP 5556; log $STATE/client_worker.log)"
  setsid "$PY" -m maglica.client_worker --config "$CONF" >>"$STATE/client_worker.log" 2>&1 </dev/null &
  echo $! >"$STATE/client_worker.pid"
fi
if ! running host_worker; then
  say "starting the host worker for '$HOST' (log $STATE/host_worker.log)"
  setsid "${testbed[@]}" exec "$HOST" env PYTHONPATH="$PYTHONPATH" "$PY" -m maglica.host_worker --config "$CONF" --name "$HOST" \
    >>"$STATE/host_worker.log" 2>&1 </dev/null &
  echo $! >"$STATE/host_worker.pid"
fi

# 5. The main job.
say "running playbooks/demo.yml"
cd "$here"
ANSIBLE_COLLECTIONS_PATH=$here/build/collections ANSIBLE_PYTHON_INTERPRETER=$PY ANSIBLE_LOCALHOST_WARNING=false \
  ANSIBLE_INVENTORY_UNPARSED_WARNING=false PYTHONPATH= \
  "$VENV/bin/ansible-playbook" -i localhost, -c local playbooks/demo.yml -e "maglica_config=$CONF"
say "done. Again: make demo (changes nothing). Stop and remove: make demo-clean"
