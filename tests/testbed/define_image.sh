#!/usr/bin/env bash
# define_image.sh HOST NAME IMAGE.qcow2 [MEMORY_MIB=256] [VCPUS=1]
# Put IMAGE into HOST's default pool as NAME.qcow2 and define an inactive
# domain NAME on it (TCG, virtio disk, a NIC on the host's libvirt network `default`,
# the serial console logged to /var/log/libvirt/qemu/NAME-console.log inside the host's
# namespace, the guest agent's channel, VNC on 127.0.0.1).
# No-op when HOST already has a domain NAME.
set -euo pipefail

self=$(readlink -f "${BASH_SOURCE[0]}")
. "$(dirname "$self")/env.sh"
(($# >= 3 && $# <= 5)) || { echo "usage: $0 HOST NAME IMAGE.qcow2 [MEMORY_MIB] [VCPUS]" >&2; exit 2; }
host=$1 name=$2 image=$3 mem=${4:-256} vcpus=${5:-1}
hostdir=$MAGLICA_TESTBED_DIR/hosts/$host
[[ -s $hostdir/address ]] || { echo "no testbed host $host" >&2; exit 1; }
virsh=(virsh -q -c "$(bash "$(dirname "$self")/testbed.sh" uri "$host")")

"${virsh[@]}" dominfo "$name" >/dev/null 2>&1 && exit 0

# $hostdir/lib is bind-mounted over /var/lib/libvirt inside the host's
# namespace, so copying here from outside lands in its pool dir.
cp --sparse=always "$image" "$hostdir/lib/images/$name.qcow2"
"${virsh[@]}" pool-refresh default >/dev/null

# Fixed, per host+name MAC so re-definitions are reproducible.
mac=52:54:00:$(echo "$host/$name" | md5sum | sed 's/^\(..\)\(..\)\(..\).*/\1:\2:\3/')
xml=$(mktemp) && trap 'rm -f "$xml"' EXIT
cat >"$xml" <<EOF
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>$mem</memory>
  <vcpu>$vcpus</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <!-- software emulation: a bounded translation cache keeps each guest's memory in check -->
  <features><acpi/><tcg><tb-cache unit='MiB'>128</tb-cache></tcg></features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/$name.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <source network='default'/>
      <mac address='$mac'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <log file='/var/log/libvirt/qemu/$name-console.log' append='off'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
  </devices>
</domain>
EOF
"${virsh[@]}" define "$xml" >/dev/null
