#!/usr/bin/env bash
# `make demo`: a one-host Maglica cloud on this machine, then playbooks/demo.yml.
#   - a libvirtd on loopback TCP (a testbed host in its own namespace) unless ours already answers
#   - a small Debian-like image built here (no download), defined as demo.original
#   - a client worker and a host worker with CURVE keys, deployed by playbooks/site.yml (the roles)
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
CONF=$STATE/client/etc/maglica.conf
testbed=(bash "$here/tests/testbed/testbed.sh")
export PYTHONPATH=$here/plugins/module_utils

say() { printf 'demo: %s\n' "$*"; }

stop_workers() {
  local conf
  for conf in "$STATE"/{client,host}/supervisor/supervisord.conf; do
    if [[ -e $conf ]]; then supervisorctl -c "$conf" shutdown >/dev/null 2>&1 || true; fi
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

# 3. The workers, deployed and supervised by the roles (playbooks/site.yml) on a local inventory:
#    the host worker runs inside its host's namespace, where the disks are.
mkdir -p "$STATE"
cat >"$STATE/inventory.yml" <<INVENTORY
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: $PY
  children:
    host_workers:
      hosts:
        $HOST:
          maglica_libvirt_address: $ADDRESS
          host_worker_install_packages: false
          host_worker_python: $PY
          host_worker_prefix: $STATE/host
          host_worker_config_path: $STATE/host/etc/host_worker.conf
          host_worker_key_dir: $STATE/host/keys
          host_worker_state_dir: $STATE/host/state
          host_worker_log_dir: $STATE/host/log
          host_worker_command_prefix: [bash, $here/tests/testbed/testbed.sh, exec, $HOST]
          host_worker_environment:
            MAGLICA_TESTBED_DIR: $MAGLICA_TESTBED_DIR
            LIBGUESTFS_BACKEND: $LIBGUESTFS_BACKEND
            LIBGUESTFS_BACKEND_SETTINGS: $LIBGUESTFS_BACKEND_SETTINGS
            LIBGUESTFS_CACHEDIR: $LIBGUESTFS_CACHEDIR
    client_workers:
      hosts:
        client:
          client_worker_install_packages: false
          client_worker_python: $PY
          client_worker_prefix: $STATE/client
          client_worker_config_path: $CONF
          client_worker_key_dir: $STATE/client/keys
          client_worker_jobs_database: $STATE/client/state/jobs.sqlite
          client_worker_log_dir: $STATE/client/log
          client_worker_host: 127.0.0.1
          client_worker_bind: 127.0.0.1
INVENTORY
cd "$here"
export ANSIBLE_COLLECTIONS_PATH=$here/build/collections ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false
say "deploying the client worker (PUB 5555, REP 5556) and the host worker with playbooks/site.yml (logs in $STATE/*/log)"
# Only what changes is shown: a second run shows just the recap, changed=0.
if ! PYTHONPATH='' ANSIBLE_DISPLAY_OK_HOSTS=false ANSIBLE_DISPLAY_SKIPPED_HOSTS=false \
  "$VENV/bin/ansible-playbook" -i "$STATE/inventory.yml" playbooks/site.yml >"$STATE/site.log" 2>&1; then
  cat "$STATE/site.log" >&2
  say "deploying the workers failed (output above, also in $STATE/site.log)" >&2
  exit 1
fi
grep -v -e '^$' -e '^PLAY \[' -e '^TASK \[' "$STATE/site.log" || true

# 5. The main job.
say "running playbooks/demo.yml"
ANSIBLE_PYTHON_INTERPRETER=$PY PYTHONPATH='' "$VENV/bin/ansible-playbook" -i localhost, -c local playbooks/demo.yml -e "maglica_config=$CONF"
say "done. Again: make demo (changes nothing). Stop and remove: make demo-clean"
