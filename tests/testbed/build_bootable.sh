#!/usr/bin/env bash
# build_bootable.sh VARIANT OUT.qcow2   (VARIANT: ifupdown | nm | cloudinit | hypervisor)
# build_bootable.sh --cache VARIANT...   only fill the cache (run it outside any network namespace: see below)
# A Debian 12 guest disk that really boots: its own kernel, GRUB on its own disk, systemd,
# openssh-server, qemu-guest-agent, a serial console (ttyS0) and one network stack:
#   ifupdown   /etc/network/interfaces with eth0 on DHCP (isc-dhcp-client)
#   nm         NetworkManager, no keyfile (Debian's default "Wired connection")
#   cloudinit  cloud-init enabled (ifupdown renderer), no seed: the clone gets one
#   hypervisor ifupdown, plus what the host_worker role installs (libvirt-daemon-system, QEMU, virtinst,
#              libguestfs and their Python bindings): a Debian 12 hypervisor the roles deploy onto (test_rollout.py)
# The first three are derived from ONE base tarball made by mmdebstrap from Debian's packages (the
# packages of all three stacks are in it; a variant only enables its own), so the download and
# package installation happen once. The hypervisor variant has a tarball of its own (the base's packages
# and the hypervisor's), so that the others' base does not grow and is not rebuilt. The image's hostname is "original" and its machine-id fixed,
# so tests can tell the image's identity from a clone's.
# Cached as $MAGLICA_IMAGE_CACHE/bootable-VARIANT-HASH.qcow2 (HASH of this script).
# mmdebstrap needs Debian's mirror, which the machine's own network namespace reaches and the testbed's
# and the demo's namespaces do not: `make images` and `make demo` build before they enter theirs, and a
# build that would need the mirror from inside a namespace stops at once, saying so.
set -euo pipefail

self=$(readlink -f "${BASH_SOURCE[0]}")
. "$(dirname "$self")/env.sh"
usage() { echo "usage: $0 ifupdown|nm|cloudinit|hypervisor OUT.qcow2 | $0 --cache VARIANT..." >&2; exit 2; }
check_variant() { case $1 in ifupdown | nm | cloudinit | hypervisor) ;; *) echo "unknown variant: $1" >&2; exit 2 ;; esac; }
if [[ ${1:-} == --cache ]]; then
  shift
  (($#)) || usage
  for variant; do check_variant "$variant"; done
  for variant; do bash "$self" "$variant" /dev/null; done
  exit 0
fi
(($# == 2)) || usage
variant=$1 out=$2
check_variant "$variant"

# What the image's own identity is: tests compare clones against these.
IMAGE_MACHINE_ID=0123456789abcdef0123456789abcdef
PACKAGES=systemd-sysv,udev,kmod,dbus,linux-image-amd64,grub-pc,ifupdown,isc-dhcp-client,openssh-server
PACKAGES+=,qemu-guest-agent,network-manager,cloud-init,netbase,iproute2,procps,less
# Ansible needs python3 on the guest; the client_worker role's packages ride along (the guest has no
# network to install them: the role finds them present).
PACKAGES+=,python3,python3-yaml,python3-zmq,python3-libvirt,python3-apt,sudo
# The hypervisor variant: roles/host_worker/vars/Debian.yml's packages (the guest has no mirror: the role finds
# them present), python3-cryptography for the roles' keys made on the guest (community.crypto), and iproute2's ss.
HYPERVISOR_PACKAGES=libvirt-daemon-system,libvirt-clients,qemu-system-x86,qemu-utils,virtinst,libguestfs-tools
HYPERVISOR_PACKAGES+=,python3-guestfs,python3-cryptography,openssh-client

hash=$(sha256sum "$self" | cut -c1-12)
mkdir -p "$MAGLICA_IMAGE_CACHE" "$LIBGUESTFS_CACHEDIR"
# The base tarball changes only with its package list: a change to a variant does not download again.
base_name=base disk_size=3G
if [[ $variant == hypervisor ]]; then
  PACKAGES+=,$HYPERVISOR_PACKAGES base_name=hypervisor disk_size=4G
fi
base=$MAGLICA_IMAGE_CACHE/debian12-$base_name-$(echo "bookworm $PACKAGES" | sha256sum | cut -c1-12).tar
cached=$MAGLICA_IMAGE_CACHE/bootable-$variant-$hash.qcow2
# CI builds the images in the machine's own namespace while the tests already run in the testbed's
# (MAGLICA_IMAGE_BUILDER_PID: that build): a caller here waits for the build to cache this variant, until the
# builder ends or MAGLICA_IMAGE_WAIT_S pass; then what follows says what is missing. The wait comes before the
# lock, which the builder takes once per variant.
if [[ ! -s $cached ]] && in_named_netns && [[ ${MAGLICA_IMAGE_BUILDER_PID:-} =~ ^[0-9]+$ ]]; then
  echo "build_bootable: waiting for $cached from the image build (pid $MAGLICA_IMAGE_BUILDER_PID)" >&2
  wait_end=$((SECONDS + ${MAGLICA_IMAGE_WAIT_S:-1800}))
  while [[ ! -s $cached ]] && kill -0 "$MAGLICA_IMAGE_BUILDER_PID" 2>/dev/null && ((SECONDS < wait_end)); do
    sleep 1
  done
fi
exec 9>"$MAGLICA_IMAGE_CACHE/bootable.lock"
flock 9  # parallel callers wait for one build instead of racing

if [[ ! -s $cached ]]; then
  # The base tarball is needed only to build the image: a cache that holds the image may lack it.
  if [[ ! -s $base ]]; then
    if in_named_netns; then
      echo "build_bootable: $base is not built, and mmdebstrap cannot reach Debian's mirror from this network" \
        "namespace ($(ip netns identify "$$")): build it first from the machine's own (make images)" >&2
      exit 1
    fi
    echo "build_bootable: mmdebstrap bookworm -> $base" >&2
    mmdebstrap --quiet --format=tar --variant=minbase --include="$PACKAGES" bookworm "$base.tmp"
    mv "$base.tmp" "$base"
    echo "build_bootable: $base made in ${SECONDS}s ($(date +%T))" >&2
  fi
  # The file system is made here, natively: the base unpacked into a directory, the variant's files written
  # into it, and `mkfs.ext4 -d` turning that directory into the root partition's image. Unpacking into the
  # libguestfs appliance instead (tar-in) ran ext4 under QEMU's software emulation: minutes under CI's load. Only
  # GRUB's install below needs the appliance (it writes the disk's boot sectors as the guest's own GRUB).
  work=$(mktemp -d /var/tmp/maglica-build.XXXXXX) && trap 'rm -rf "$work"' EXIT
  root=$work/root
  mkdir "$root"
  tar -C "$root" --numeric-owner -xpf "$base"
  echo original >"$root/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\toriginal\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
  echo 'LABEL=root / ext4 defaults,errors=remount-ro 0 1' >"$root/etc/fstab"
  echo "$IMAGE_MACHINE_ID" >"$root/etc/machine-id"
  if [[ $variant == ifupdown || $variant == hypervisor ]]; then
    printf 'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n' >"$root/etc/network/interfaces"
  else
    printf 'auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n' >"$root/etc/network/interfaces"
  fi
  # No boot menu, the console on the serial line, classic interface names (eth0), and no check of the IO-APIC timer:
  # under software emulation on a loaded machine it can fail, and the kernel panics ("IO-APIC + timer doesn't work",
  # seen in CI 2026-12-07).
  mkdir -p "$root/boot/grub"
  cat >"$root/boot/grub/grub.cfg" <<'EOF'
set timeout=0
search --no-floppy --set=root --label root
linux /vmlinuz root=LABEL=root ro console=ttyS0,115200 net.ifnames=0 no_timer_check
initrd /initrd.img
boot
EOF
  # Only the chosen stack starts; the others stay installed but disabled.
  [[ $variant == nm ]] || rm -f "$root/etc/systemd/system/multi-user.target.wants/NetworkManager.service" \
    "$root/etc/systemd/system/network-online.target.wants/NetworkManager-wait-online.service" \
    "$root/etc/systemd/system/dbus-org.freedesktop.nm-dispatcher.service"
  [[ $variant == cloudinit ]] || touch "$root/etc/cloud/cloud-init.disabled"
  # A hypervisor guest defines domains but never boots one (QEMU inside QEMU's software emulation): libvirt's
  # NAT network `default` (dnsmasq, firewall rules) would only cost it memory and boot time.
  [[ $variant != hypervisor ]] || rm -f "$root/etc/libvirt/qemu/networks/autostart/default.xml"
  printf '# minbase has no locales package: cloud-init'"'"'s locale module would fail\nlocale: false\n' \
    >"$root/etc/cloud/cloud.cfg.d/90-testbed.cfg"

  # One bootable partition from 1 MiB, the usual gap for GRUB's core image, to the disk's end.
  raw=$work/disk.raw
  truncate -s "$disk_size" "$raw"
  echo 'start=2048, type=83, bootable' | sfdisk --quiet "$raw"
  part_bytes=$(($(stat -c %s "$raw") - 1048576))
  truncate -s "$part_bytes" "$work/root.ext4"
  mkfs.ext4 -q -L root -d "$root" "$work/root.ext4"
  dd if="$work/root.ext4" of="$raw" bs=1M seek=1 conv=sparse,notrunc status=none
  rm -rf "$root" "$work/root.ext4"
  # GRUB goes onto the disk that holds /boot, found by GRUB itself: the appliance's kernel names its disks in the
  # order they answer, and under load its own root disk can come first (/dev/sda, ext2: "embedding is not
  # possible", CI 2026-12-06; libguestfs's API translates device names, a shell inside does not). A failure prints
  # what GRUB saw (to stderr: guestfish reports only that of a failed sh); each of three tries is a fresh appliance.
  grub_try=1
  until guestfish --rw -a "$raw" <<'EOF'
run
mount /dev/sda1 /
sh "exec 1>&2; part=$(grub-probe --target=device /boot) && disk=${part%%[0-9]*} && grub-install --target=i386-pc --boot-directory=/boot $disk && exit 0; for t in device drive partmap; do echo \"grub-probe --target=$t /boot: $(grub-probe --target=$t /boot 2>&1)\"; done; grep -E sd[a-z]+1 /proc/self/mountinfo; ls -l /dev/sd*; exit 1"
EOF
  do
    echo "build_bootable: grub-install failed (try $grub_try of 3): what GRUB saw is above" >&2
    ((grub_try++ < 3)) || exit 1
  done
  qemu-img convert -O qcow2 "$raw" "$cached.tmp"
  mv "$cached.tmp" "$cached"
  # When each image was ready: CI's tests that boot a variant wait for it (MAGLICA_IMAGE_BUILDER_PID above).
  echo "build_bootable: $cached made in ${SECONDS}s ($(date +%T))" >&2
fi
[[ $out == /dev/null ]] || cp --sparse=always "$cached" "$out"
