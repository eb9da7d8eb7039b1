#!/usr/bin/env bash
# `make demo`: a one-host Maglica cloud on this machine, then playbooks/demo.yml.
#   - everything lives in the network namespace `maglica-demo` (the guest network's addresses
#     never appear in the machine's own): enter it with `ip netns exec maglica-demo bash`
#   - a libvirtd on loopback TLS (a testbed host in its own namespace, certificates by roles/maglica_pki)
#     with a libvirt network `default` (DHCP) unless ours already answers
#   - a Debian 12 disk image that boots, built here from Debian's packages (the stand-in for a distribution's
#     cloud image), made into the original image demo.original by maglica_image in playbooks/demo.yml
#   - a client worker and a host worker with CURVE keys, deployed by playbooks/site.yml (the roles)
#   - the clone vm0.demo.test, booted until it answers SSH with the host key it was given, then an
#     Ansible ping through the maglica inventory plugin with strict host key checking
# A second run reuses everything and the clone reports changed=0.
#   scripts/demo.sh clean   stops it all and removes the demo's state
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MAGLICA_TESTBED_DIR=${MAGLICA_DEMO_DIR:-/var/tmp/maglica-demo}
export MAGLICA_NETNS=${MAGLICA_DEMO_NETNS:-maglica-demo}
STATE=$MAGLICA_TESTBED_DIR/maglica

say() { printf 'demo: %s\n' "$*"; }

# timed PHASE CMD...: run CMD and record how long the phase took (printed at the end).
read -ra PHASES <<<"${MAGLICA_DEMO_PHASES:-}"
timed() {
  local phase=$1 start=$SECONDS; shift
  "$@"
  PHASES+=("$phase=$((SECONDS - start))s")
}

if [[ ${MAGLICA_DEMO_IN_NETNS:-} != "$MAGLICA_NETNS" ]]; then
  # 2 (first, here). A disk image that boots, built once from Debian's packages: in the machine's own network
  # namespace, the one that reaches Debian's mirror. playbooks/demo.yml makes it the original image demo.original.
  if [[ ${1:-} != clean && ! -s $STATE/demo.qcow2 ]]; then
    say "building a Debian 12 image that boots, from Debian's packages (first time: a few minutes)"
    mkdir -p "$STATE"
    timed image bash "$here/tests/testbed/build_bootable.sh" ifupdown "$STATE/demo.qcow2.part"
    mv "$STATE/demo.qcow2.part" "$STATE/demo.qcow2"
  fi
  MAGLICA_DEMO_PHASES="${PHASES[*]}" MAGLICA_DEMO_IN_NETNS=$MAGLICA_NETNS \
    exec bash "$here/tests/testbed/testbed.sh" netns bash "${BASH_SOURCE[0]}" "$@"
fi
. "$here/tests/testbed/env.sh"
VENV=${VENV:-$here/.venv}
PY=$VENV/bin/python
ADDRESS=${MAGLICA_DEMO_ADDRESS:-127.0.0.1}
HOST=demo
CONF=$STATE/client/etc/maglica.conf
testbed=(bash "$here/tests/testbed/testbed.sh")
export PYTHONPATH=$here/plugins/module_utils

# The workers' supervisords, found by their pid files: asked to shut down (they stop their workers first), and
# sent SIGTERM (which does the same) when their socket does not answer; each must be gone within 60 s.
stop_workers() {
  local conf pid end
  for conf in "$STATE"/{client,host}/supervisor/supervisord.conf; do
    [[ -e $conf ]] || continue
    pid=$(cat "$(dirname "$conf")/supervisord.pid" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ && $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == *supervisord*"$conf"* ]] || pid=
    supervisorctl -c "$conf" shutdown >/dev/null 2>&1 || { [[ -z $pid ]] || kill -TERM "$pid" 2>/dev/null || true; }
    end=$((SECONDS + 60))
    while [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; do
      ((SECONDS < end)) || { say "supervisord $pid ($conf) did not stop" >&2; exit 1; }
      sleep 0.2
    done
  done
}

if [[ ${1:-} == clean ]]; then
  # The guests' qemus, by libvirt's pid files: each must be gone when clean is done.
  qemus=()
  [[ -d $MAGLICA_TESTBED_DIR/hosts/$HOST ]] && mapfile -t qemus < <("${testbed[@]}" qemu-pids "$HOST")
  stop_workers
  "${testbed[@]}" clean
  for pid in "${qemus[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then say "qemu $pid of the demo still runs after clean" >&2; exit 1; fi
  done
  ip netns delete "$MAGLICA_NETNS" 2>/dev/null || true  # the namespace goes when this, its last process, ends
  say "stopped ${#qemus[@]} guest(s) and the demo's daemons; removed $MAGLICA_TESTBED_DIR and the network namespace $MAGLICA_NETNS"
  exit 0
fi

# 1. A libvirtd: ours, in its own namespace. Refuse to take over one we did not start.
if ! "${testbed[@]}" status 2>/dev/null | grep -q "^$HOST .* up$"; then
  if timeout 5 bash -c "exec 3<>/dev/tcp/$ADDRESS/16514" 2>/dev/null; then
    say "a libvirtd the demo did not start listens at $ADDRESS:16514; set MAGLICA_DEMO_ADDRESS=127.0.0.N to use another address" >&2
    exit 1
  fi
  say "starting libvirtd for host '$HOST' at qemu+tls://$ADDRESS/system (making its certificates the first time)"
  MAGLICA_ANSIBLE_PLAYBOOK=$VENV/bin/ansible-playbook "${testbed[@]}" start-one "$HOST" "$ADDRESS" >/dev/null
fi

# The key the demo logs in with: its public half goes into the clone as root's authorized key.
[[ -s $STATE/demo_key ]] || ssh-keygen -q -t ed25519 -N '' -C maglica-demo -f "$STATE/demo_key"

# 3. The workers, deployed and supervised by the roles (playbooks/site.yml) on a local inventory:
#    the host worker runs inside its host's namespace, where the disks are.
mkdir -p "$STATE"
cat >"$STATE/inventory.yml" <<INVENTORY
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: $PY
    # The testbed's CA, which the demo libvirtd trusts; testbed.sh configures that libvirtd itself.
    maglica_pki_ca_dir: $MAGLICA_TESTBED_DIR/pki/ca
    host_worker_libvirtd_tls: false
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
          host_worker_pki_path: $STATE/host/pki
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
          client_worker_libvirt_pki_path: $STATE/client/pki
          client_worker_host: 127.0.0.1
          client_worker_bind: 127.0.0.1
INVENTORY
cd "$here"
export ANSIBLE_COLLECTIONS_PATH=$here/build/collections ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false
say "deploying the client worker (PUB 5555, REP 5556) and the host worker with playbooks/site.yml (logs in $STATE/*/log)"
# Only what changes is shown: a second run shows just the recap, changed=0.
if ! timed deploy env PYTHONPATH='' ANSIBLE_DISPLAY_OK_HOSTS=false ANSIBLE_DISPLAY_SKIPPED_HOSTS=false \
  "$VENV/bin/ansible-playbook" -i "$STATE/inventory.yml" playbooks/site.yml >"$STATE/site.log" 2>&1; then
  cat "$STATE/site.log" >&2
  say "deploying the workers failed (output above, also in $STATE/site.log)" >&2
  exit 1
fi
grep -v -e '^$' -e '^PLAY \[' -e '^TASK \[' "$STATE/site.log" || true

# 4. The main job: clone, boot, wait until it answers SSH with the host key it was given.
say "running playbooks/demo.yml"
timed clone env ANSIBLE_PYTHON_INTERPRETER="$PY" PYTHONPATH='' "$VENV/bin/ansible-playbook" -i localhost, -c local \
  playbooks/demo.yml -e "maglica_config=$CONF" -e "demo_public_key_file=$STATE/demo_key.pub" -e "demo_image_file=$STATE/demo.qcow2"

# 5. Ansible reaches the new machine: the maglica inventory plugin gives it ansible_host and its host keys.
cat >"$STATE/demo.maglica.yml" <<INVENTORY
plugin: maglica.cloud.maglica
config: $CONF
known_hosts_file: $STATE/known_hosts
compose:
  ansible_user: "'root'"
  ansible_ssh_private_key_file: "'$STATE/demo_key'"
INVENTORY
say "ansible vm0.demo.test -m ping, through the maglica inventory, with strict host key checking"
timed ping env ANSIBLE_HOST_KEY_CHECKING=True ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3 PYTHONPATH='' \
  "$VENV/bin/ansible" -i "$STATE/demo.maglica.yml" vm0.demo.test -m ansible.builtin.ping
say "phases: ${PHASES[*]}"
say "done. Log in: ip netns exec $MAGLICA_NETNS ssh -i $STATE/demo_key -o UserKnownHostsFile=$STATE/known_hosts root@<ip above>"
say "Again: make demo (changes nothing). Stop and remove: make demo-clean"
