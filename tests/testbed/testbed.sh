#!/usr/bin/env bash
# Simulated hypervisors: one real libvirtd (qemu driver, TCG only) per host,
# each in its own mount+UTS namespace with its own /etc/libvirt, /var/lib/libvirt,
# /run/libvirt, /var/log/libvirt and /var/cache/libvirt, listening on its own
# loopback address over TLS (qemu+tls://ADDR/system?pkipath=$MAGLICA_TESTBED_DIR/pki/library).
# The whole testbed lives in ONE network namespace (`netns`): its guest segment (bridge mgbrN,
# 172.30.N.0/24, DHCP by a dnsmasq of the testbed's own; N from the first host's address), onto
# which each host's libvirt network `default` bridges, exists only there, so no guest address
# ever appears in the machine's own network namespace.
#
#   testbed.sh netns CMD...         run CMD in the testbed's network namespace ($MAGLICA_NETNS)
#   testbed.sh locked CMD...        run CMD holding the testbed's lock; refuse at once if another holds it
#   testbed.sh start [N]            host0..host{N-1} at 127.0.0.11.. (default N=3)
#   testbed.sh start-one NAME ADDR  one host with any name/address
#   testbed.sh stop | clean | status
#   testbed.sh qemu-pids NAME       the running qemus of NAME's guests (by libvirt's pid files)
#   testbed.sh exec NAME CMD...     run CMD inside NAME's namespaces (env kept)
#   testbed.sh certificates NAME ADDR [NAME ADDR...]   the PKI (roles/maglica_pki)
#   testbed.sh uri NAME             the URI of NAME's libvirtd
# State: $MAGLICA_TESTBED_DIR/hosts/NAME/ (ns.pid = pid to nsenter -t PID -m -u).
# MAGLICA_TESTBED_LISTEN_TCP=1: also listen on plain TCP (benchmarks only).
set -euo pipefail

self=$(readlink -f "${BASH_SOURCE[0]}")
. "$(dirname "$self")/env.sh"
HOSTS=$MAGLICA_TESTBED_DIR/hosts
LIBVIRT_DIRS=(etc:/etc/libvirt lib:/var/lib/libvirt run:/run/libvirt
  log:/var/log/libvirt cache:/var/cache/libvirt)

die() { echo "testbed: $*" >&2; exit 1; }
alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }
pidof_file() { cat "$1" 2>/dev/null || true; }

# wait_for MAX CMD...: poll CMD until it succeeds, for at most MAX seconds.
wait_for() {
  local max=$1; shift
  local end=$((SECONDS + max))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 0.1
  done
}

# The holder pid, only if it is still our holder (guards against pid reuse).
holder_pid() {
  local pid; pid=$(pidof_file "$HOSTS/$1/ns.pid")
  alive "$pid" && [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == "maglica-testbed-$1 "* ]] &&
    [[ $(readlink "/proc/$pid/ns/net") == "$(readlink /proc/self/ns/net)" ]] && echo "$pid"
}

# Wait until the host's libvirtd answers; give up at once if it died.
wait_libvirtd() {
  local end=$((SECONDS + 60))
  until answers "$1" >/dev/null 2>&1; do
    alive "$(pidof_file "$HOSTS/$1/run/libvirtd.pid")" && ((SECONDS < end)) || return 1
    sleep 0.1
  done
}

PKI=$MAGLICA_TESTBED_DIR/pki
uri() { echo "qemu+tls://$(cat "$HOSTS/$1/address")/system?pkipath=$PKI/library"; }

# The guest networks' addresses may exist only in a network namespace of our own.
in_own_netns() { in_named_netns; }

# Run CMD in the named network namespace, made (loopback up) if it does not exist yet.
netns_exec() {
  local ns=$MAGLICA_NETNS
  [[ $ns =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad network namespace name: $ns"
  [[ -e /run/netns/$ns ]] || ip netns add "$ns"
  ip -n "$ns" link set lo up
  exec ip netns exec "$ns" "$@"
}
answers() { timeout 10 virsh -q -c "$(uri "$1")" list --all; }

# ---- runs inside the new namespaces (via unshare) ---------------------------
ns_init() {
  local name=$1 dir=$HOSTS/$1 d
  hostname "$name"
  mount --make-rprivate /  # nothing we mount here may leak to the real host
  for d in "${LIBVIRT_DIRS[@]}"; do
    mkdir -p "${d#*:}"  # mount point (an empty dir on the real host)
    mount --bind "$dir/${d%%:*}" "${d#*:}"
  done
  ns_daemons
  echo $$ >"$dir/ns.pid"
  # Stable, recognisable pid for nsenter: holds the namespaces open.
  exec -a "maglica-testbed-$name" sleep infinity
}

# Start virtlogd (needed before any domain starts) and libvirtd if not running.
ns_daemons() {
  mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/images
  alive "$(pidof_file /run/libvirt/virtlogd.pid)" || virtlogd -d -p /run/libvirt/virtlogd.pid
  alive "$(pidof_file /run/libvirt/libvirtd.pid)" ||
    libvirtd -d --listen --config /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid
}

# ---- host lifecycle ---------------------------------------------------------
write_config() {
  local name=$1 addr=$2 dir=$HOSTS/$1 d
  for d in "${LIBVIRT_DIRS[@]}"; do mkdir -p "$dir/${d%%:*}"; done
  mkdir -p "$dir/lib/images"
  echo "$addr" >"$dir/address"
  # Seed the QEMU capabilities cache (libvirt re-probes if it is stale).
  if [[ -d $MAGLICA_QEMU_CAPS_CACHE && ! -d $dir/cache/qemu/capabilities ]]; then
    mkdir -p "$dir/cache/qemu" && cp -r "$MAGLICA_QEMU_CAPS_CACHE" "$dir/cache/qemu/capabilities"
  fi
  [[ -s $dir/host_uuid ]] || cat /proc/sys/kernel/random/uuid >"$dir/host_uuid"
  [[ -s $dir/pki/server/servercert.pem ]] || certificates "$name" "$addr"
  local tcp=0; [[ ${MAGLICA_TESTBED_LISTEN_TCP:-0} == 1 ]] && tcp=1
  # The certificate is the credential: the testbed's library, the host's own worker, and the one worker that
  # reaches this host's libvirtd in the integration tests, as the host_worker role would allow: host2 copies images
  # from host0 and host1 (host_worker_image_copy_from), host1 from host2; and host1 and host2 migrate VMs to each
  # other (host_worker_migration_peers), host2 to host0 as well. host0's libvirtd refuses host1's worker (test_tls).
  cat >"$dir/etc/libvirtd.conf" <<EOF
listen_tls = 1
listen_tcp = $tcp
listen_addr = "$addr"
tls_port = "16514"
tcp_port = "16509"
auth_tls = "none"
auth_tcp = "none"
key_file = "$dir/pki/server/serverkey.pem"
cert_file = "$dir/pki/server/servercert.pem"
ca_file = "$dir/pki/server/cacert.pem"
tls_allowed_dn_list = ["O=maglica.cloud,CN=library@*", "O=maglica.cloud,CN=host-worker@$name", "O=maglica.cloud,CN=host-worker@$([[ $name == host2 ]] && echo host1 || echo host2)"]
host_uuid = "$(cat "$dir/host_uuid")"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
  # root + no dynamic ownership/security driver: no permission games in a sandbox;
  # no cgroups: all hosts share /sys/fs/cgroup. All hosts share one network
  # namespace, so each gets its own VNC port range (from its address's last octet).
  local vnc_min=$((5900 + ${addr##*.} * 20))
  cat >"$dir/etc/qemu.conf" <<EOF
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
cgroup_controllers = [ ]
vnc_listen = "127.0.0.1"
remote_display_port_min = $vnc_min
remote_display_port_max = $((vnc_min + 19))
migrate_tls_x509_cert_dir = "$dir/pki/migrate"
migrate_tls_x509_verify = 1
EOF
  # libvirtd refuses to start with 127.0.0.1 as migration_address or migration_host ("must not be the address of
  # the local machine"; the testbed's other 127.0.0.N it takes): the demo's one host, there, has no migration peer.
  [[ $addr == 127.0.0.1 ]] || cat >>"$dir/etc/qemu.conf" <<EOF
migration_address = "$addr"
migration_host = "$addr"
migration_port_min = $((49152 + ${addr##*.} * 16))
migration_port_max = $((49152 + ${addr##*.} * 16 + 15))
EOF
  # QEMU's migration TLS: this host's server certificate (incoming), its host worker's client one (outgoing).
  mkdir -p "$dir/pki/migrate"
  ln -sfn ../server/cacert.pem "$dir/pki/migrate/ca-cert.pem"
  ln -sfn ../server/servercert.pem "$dir/pki/migrate/server-cert.pem"
  ln -sfn ../server/serverkey.pem "$dir/pki/migrate/server-key.pem"
  ln -sfn ../client/clientcert.pem "$dir/pki/migrate/client-cert.pem"
  ln -sfn ../client/clientkey.pem "$dir/pki/migrate/client-key.pem"
}

# The testbed's PKI, made by the roles' own code (roles/maglica_pki) through ansible-playbook:
# a CA in $PKI/ca, the library's client certificate in $PKI/library, and per host a server
# certificate (names: NAME and ADDR) and its host worker's client one.
certificates() {
  local here inventory playbook collections
  here=$(dirname "$self")
  playbook=${MAGLICA_ANSIBLE_PLAYBOOK:-$(command -v ansible-playbook)} || die "ansible-playbook not found"
  collections=$MAGLICA_TESTBED_DIR/collections/ansible_collections/maglica
  mkdir -p "$collections" "$PKI" && ln -sfn "$(dirname "$(dirname "$here")")" "$collections/cloud"
  inventory=$PKI/inventory.yml
  {
    echo "all:"
    echo "  vars: {ansible_connection: local, ansible_python_interpreter: $(dirname "$playbook")/python, pki: $PKI}"
    echo "  hosts:"
    echo "    library@testbed: {kind: client, dir: $PKI/library, sans: []}"
    while (($# >= 2)); do
      echo "    $1: {kind: server, dir: $HOSTS/$1/pki/server, sans: [$1, $2]}"
      echo "    host-worker@$1: {kind: client, dir: $HOSTS/$1/pki/client, sans: []}"
      shift 2
    done
  } >"$inventory"
  ANSIBLE_COLLECTIONS_PATH=$MAGLICA_TESTBED_DIR/collections ANSIBLE_STDOUT_CALLBACK=ansible.builtin.minimal \
    "$playbook" -i "$inventory" "$here/pki.yml" >"$PKI/ansible.log" 2>&1 ||
    { tail -n 30 "$PKI/ansible.log" >&2; die "the PKI playbook failed (log: $PKI/ansible.log)"; }
}

start_one() {
  local name=$1 addr=$2 dir=$HOSTS/$1 pid
  [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad host name: $name"
  if [[ -e $dir/address && $(cat "$dir/address") != "$addr" ]]; then
    die "$name already exists with address $(cat "$dir/address")"
  fi
  write_config "$name" "$addr"
  if pid=$(holder_pid "$name"); then
    # Namespace alive: just make sure its daemons run (no-op if they do).
    nsenter -t "$pid" -m -u -- "$self" _ns-daemons
  else
    stop_one "$name"  # reap leftovers of a half-dead host
    rm -f "$dir/ns.pid"
    setsid unshare --mount --uts --propagation private -- "$self" _ns-init "$name" \
      </dev/null >>"$dir/log/ns.log" 2>&1 &
    wait_for 30 holder_pid "$name" ||
      { tail -n 20 "$dir/log/ns.log" >&2; die "$name: namespace did not come up"; }
  fi
  wait_libvirtd "$name" ||
    { tail -n 20 "$dir/log/libvirtd.log" >&2; die "$name: libvirtd does not answer at $(uri "$name")"; }
  ensure_pool "$name"
  ensure_network "$name"
  # Probe QEMU now rather than in the middle of the first define, and keep it.
  virsh -q -c "$(uri "$name")" capabilities >/dev/null
  if [[ ! -d $MAGLICA_QEMU_CAPS_CACHE ]]; then
    local tmp=$MAGLICA_QEMU_CAPS_CACHE.$$
    mkdir -p "$(dirname "$tmp")" && cp -r "$dir/cache/qemu/capabilities" "$tmp"
    mv -T "$tmp" "$MAGLICA_QEMU_CAPS_CACHE" 2>/dev/null || rm -rf "$tmp"  # lost a race: fine
  fi
  echo "$name $addr $(holder_pid "$name") up"
}

# Each host has its own 'default' dir pool at /var/lib/libvirt/images (inside).
ensure_pool() {
  local v=(virsh -q -c "$(uri "$1")")
  if ! "${v[@]}" pool-info default >/dev/null 2>&1; then
    "${v[@]}" pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
  fi
  "${v[@]}" pool-autostart default >/dev/null
  [[ $("${v[@]}" pool-info default) =~ State:\ *running ]] || "${v[@]}" pool-start default >/dev/null
}

# The testbed's guest segment: ONE bridge and ONE DHCP server (a dnsmasq of the testbed's own) that every host's
# guests join, as real hypervisors share a network, so a guest migrated to another host keeps its address. It is
# numbered by the first host started (N: the last octet of its address): bridge mgbrN, 172.30.N.1/24, leases
# .100-.250; two testbeds in one network namespace (xdist workers) have different first hosts and never collide.
SEGMENT=$MAGLICA_TESTBED_DIR/segment
segment_number() {
  [[ -s $SEGMENT/number ]] || { mkdir -p "$SEGMENT" && echo $(($(cut -d. -f4 <"$HOSTS/$1/address") % 256)) >"$SEGMENT/number"; }
  cat "$SEGMENT/number"
}
segment_dnsmasq() {
  local pid cmd; pid=$(pidof_file "$SEGMENT/dnsmasq.pid")
  alive "$pid" || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *dnsmasq*"--pid-file=$SEGMENT/dnsmasq.pid"* ]] && echo "$pid"
}
ensure_segment() {
  local n=$1 br=mgbr$1
  in_own_netns || die "refusing to make guest network 172.30.$n.0/24 in the machine's own network namespace: use 'testbed.sh netns'"
  if ! ip link show "$br" >/dev/null 2>&1; then
    ip link add "$br" type bridge stp_state 0 forward_delay 0
    ip addr add "172.30.$n.1/24" dev "$br"
  fi
  ip link set "$br" up
  segment_dnsmasq >/dev/null && return 0
  dnsmasq --conf-file=/dev/null --user=root --group=root --port=0 --bind-interfaces --interface="$br" \
    --except-interface=lo --dhcp-range="172.30.$n.100,172.30.$n.250,255.255.255.0,1h" --dhcp-authoritative \
    --dhcp-leasefile="$SEGMENT/leases" --pid-file="$SEGMENT/dnsmasq.pid" --log-facility="$SEGMENT/dnsmasq.log"
  wait_for 10 segment_dnsmasq || die "the segment's dnsmasq did not start (log: $SEGMENT/dnsmasq.log)"
}
stop_segment() {
  local pid n
  pid=$(segment_dnsmasq || true)
  if [[ -n $pid ]]; then kill -TERM "$pid" 2>/dev/null || true; wait_for 10 none_alive "$pid" || kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$SEGMENT/dnsmasq.pid"
  n=$(cat "$SEGMENT/number" 2>/dev/null || true)
  [[ -n $n ]] && in_own_netns && ip link show "mgbr$n" >/dev/null 2>&1 && ip link del "mgbr$n"
  return 0
}

# Each host's libvirt network `default`: a bridge network onto the testbed's segment (no DHCP of its own).
ensure_network() {
  local v=(virsh -q -c "$(uri "$1")") n xml
  n=$(segment_number "$1")
  ensure_segment "$n"
  if "${v[@]}" net-dumpxml default 2>/dev/null | grep -q "<bridge name='mgbr$n'/>"; then :; else
    # None yet, or one of an older testbed (an isolated bridge of its own): replaced.
    "${v[@]}" net-destroy default >/dev/null 2>&1 || true
    "${v[@]}" net-undefine default >/dev/null 2>&1 || true
    xml=$(mktemp)
    cat >"$xml" <<EOF
<network>
  <name>default</name>
  <forward mode='bridge'/>
  <bridge name='mgbr$n'/>
</network>
EOF
    "${v[@]}" net-define "$xml" >/dev/null && rm -f "$xml"
  fi
  "${v[@]}" net-autostart default >/dev/null
  [[ $("${v[@]}" net-info default) =~ Active:\ *yes ]] || "${v[@]}" net-start default >/dev/null
}

# Pid of every process living in the same mount namespace as $1 (never ours:
# a recycled pid in a stale pid file must not make us kill the real host).
ns_members() {
  local ns p; ns=$(readlink "/proc/$1/ns/mnt" 2>/dev/null) || return 0
  [[ $ns != "$(readlink /proc/self/ns/mnt)" ]] || return 0
  for p in /proc/[0-9]*; do
    [[ $(readlink "$p/ns/mnt" 2>/dev/null) == "$ns" ]] && echo "${p#/proc/}"
  done
  return 0
}

# Pid of each process the host's libvirtd started that still runs, found by the pid files libvirt keeps and checked
# to be what the file names: KIND qemu, each guest's qemu (run/qemu/DOMAIN.pid); KIND network, each network's
# dnsmasq (run/network/NETWORK.pid). They outlive a libvirtd or a namespace holder that was killed, and then nothing
# else leads to them; a dnsmasq left running holds its network's address, so the host's next start fails.
libvirt_pids() {
  local kind=$2 f pid item cmd
  for f in "$HOSTS/$1/run/$kind"/*.pid; do
    [[ -e $f ]] || continue
    pid=$(pidof_file "$f") item=$(basename "$f" .pid)
    if ! [[ $pid =~ ^[0-9]+$ ]] || ! alive "$pid"; then continue; fi
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
    case $kind in
      qemu) [[ $cmd == *qemu-system* && $cmd == *"guest=$item,"* ]] || continue ;;
      network) [[ $cmd == *dnsmasq* && $cmd == *"/var/lib/libvirt/dnsmasq/$item.conf"* ]] || continue ;;
    esac
    [[ $(readlink "/proc/$pid/ns/mnt") != "$(readlink /proc/self/ns/mnt)" ]] || continue  # never the machine's own
    echo "$pid"
  done
  return 0
}
qemu_pids() { libvirt_pids "$1" qemu; }

stop_one() {
  local name=$1 dir=$HOSTS/$1 holder ld lg dom pids p qemus
  holder=$(holder_pid "$name" || true)
  ld=$(pidof_file "$dir/run/libvirtd.pid"); alive "$ld" || ld=
  lg=$(pidof_file "$dir/run/virtlogd.pid"); alive "$lg" || lg=
  mapfile -t qemus < <(libvirt_pids "$name" qemu; libvirt_pids "$name" network)
  [[ -n $holder$ld$lg${qemus[*]} ]] || return 0
  if [[ -n $ld ]] && answers "$name" >/dev/null 2>&1; then
    for dom in $(virsh -q -c "$(uri "$name")" list --name); do
      virsh -q -c "$(uri "$name")" destroy "$dom" >/dev/null || true
    done
    virsh -q -c "$(uri "$name")" net-destroy default >/dev/null 2>&1 || true  # its bridge and dnsmasq with it
  fi
  # Everything in the host's mount namespace: daemons, qemus, workers, holder.
  mapfile -t pids < <(for p in $holder $ld $lg "${qemus[@]}"; do ns_members "$p"; done | sort -un)
  if ((${#pids[@]})); then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    if ! wait_for 15 none_alive "${pids[@]}"; then
      kill -KILL "${pids[@]}" 2>/dev/null || true
      wait_for 30 none_alive "${pids[@]}" || die "$name: processes survive SIGKILL: ${pids[*]}"
    fi
  fi
  mapfile -t qemus < <(qemu_pids "$name")
  ((${#qemus[@]} == 0)) || die "$name: guests' qemu still running after stop: ${qemus[*]}"
  rm -f "$dir/ns.pid" "$dir/run/libvirtd.pid" "$dir/run/virtlogd.pid"
}
none_alive() { local p; for p; do ! alive "$p" || return 1; done; }

# libvirtd takes seconds to exit: stop the hosts in parallel.
stop_all() {
  local h pids=() rc=0
  for h in $(host_names); do stop_one "$h" & pids+=($!); done
  for h in "${pids[@]}"; do wait "$h" || rc=1; done
  return $rc
}

host_names() { [[ -d $HOSTS ]] && find "$HOSTS" -mindepth 2 -maxdepth 2 -name address -printf '%h\n' | xargs -rn1 basename | sort; }

cmd=${1:-}; shift || true
case $cmd in
  start)
    n=${1:-3}
    for ((i = 0; i < n; i++)); do start_one "host$i" "127.0.0.$((11 + i))"; done ;;
  start-one) (($# == 2)) || die "usage: start-one NAME ADDRESS"; start_one "$1" "$2" ;;
  stop) stop_all; stop_segment ;;
  clean) stop_all && stop_segment && rm -rf "$MAGLICA_TESTBED_DIR" ;;
  status)
    for h in $(host_names); do
      pid=$(holder_pid "$h" || true); state=down
      [[ -n $pid ]] && answers "$h" >/dev/null 2>&1 && state=up
      echo "$h $(cat "$HOSTS/$h/address") ${pid:--} $state"
    done ;;
  exec)
    (($# >= 2)) || die "usage: exec NAME CMD..."
    pid=$(holder_pid "$1") || die "$1 is not running"; shift
    exec nsenter -t "$pid" -m -u -n --wd="$PWD" -- "$@" ;;
  netns) (($# >= 1)) || die "usage: netns CMD..."; netns_exec "$@" ;;
  locked)
    # One user of a testbed at a time: `make test` and a benchmark on one testbed would tear down each
    # other's hypervisors and certificates.
    (($# >= 1)) || die "usage: locked CMD..."
    lock=$MAGLICA_TESTBED_DIR.lock
    exec 8<>"$lock"
    if ! flock -n 8; then
      die "the testbed $MAGLICA_TESTBED_DIR is in use: $(tr -d '\0' <"$lock" | head -c 300) (lock: $lock)"
    fi
    printf 'pid %d since %s: %s' $$ "$(date -u +%H:%M:%SZ)" "$*" >"$lock"
    "$@" ;;  # not exec: the lock is held, by fd 8, until CMD ends; CMD inherits it too
  certificates) (($# >= 2 && $# % 2 == 0)) || die "usage: certificates NAME ADDRESS [NAME ADDRESS...]"; certificates "$@" ;;
  uri) (($# == 1)) || die "usage: uri NAME"; uri "$1" ;;
  qemu-pids) (($# == 1)) || die "usage: qemu-pids NAME"; qemu_pids "$1" ;;
  _ns-init) ns_init "$1" ;;
  _ns-daemons) ns_daemons ;;
  *) sed -n '2,20s/^# \{0,1\}//p' "$self" >&2; exit 2 ;;
esac
