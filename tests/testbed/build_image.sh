#!/usr/bin/env bash
# build_image.sh FAMILY OUT.qcow2   (FAMILY: debian | debian-nm | debian-cloudinit | rhel)
# build_image.sh --cache FAMILY...   (into the cache only)
# A small bootless guest disk that libguestfs inspection takes for Debian 12 /
# RHEL 9 with hostname "original": nothing is downloaded, the tree is made here.
# It carries the per-machine state a clone must not keep (host keys, leases,
# machine-ids, random seed). Variants: debian-nm has NetworkManager enabled, no
# ifupdown and no host keys; debian-cloudinit has cloud-init and its instance state.
# Cached as $MAGLICA_IMAGE_CACHE/FAMILY-HASH.qcow2 (HASH of this script).
set -euo pipefail

self=$(readlink -f "${BASH_SOURCE[0]}")
. "$(dirname "$self")/env.sh"
usage() { echo "usage: $0 debian|debian-nm|debian-cloudinit|rhel OUT.qcow2 | $0 --cache FAMILY..." >&2; exit 2; }
if [[ ${1:-} == --cache ]]; then  # only into the cache (make images: built before the tests ask)
  shift
  (($#)) || usage
  for family; do bash "$self" "$family" /dev/null; done
  exit 0
fi
(($# == 2)) || usage
variant=$1 out=$2
[[ $variant =~ ^(debian|debian-nm|debian-cloudinit|rhel)$ ]] || { echo "unknown family: $variant" >&2; exit 2; }
family=${variant%%-*}

hash=$(sha256sum "$self" | cut -c1-12)
cached=$MAGLICA_IMAGE_CACHE/$variant-$hash.qcow2
mkdir -p "$MAGLICA_IMAGE_CACHE" "$LIBGUESTFS_CACHEDIR"
exec 9>"$cached.lock"
flock 9  # parallel callers wait for one build instead of racing

if [[ ! -s $cached ]]; then
  tree=$(mktemp -d) && trap 'rm -rf "$tree"' EXIT
  cd "$tree"
  # Merged /usr with the machine's real bash and ls and their libraries:
  # inspection reads the architecture from these binaries.
  mkdir -p usr/bin usr/sbin usr/lib usr/lib64 etc root tmp var/log dev proc sys run boot home
  for d in bin sbin lib lib64; do ln -s "usr/$d" "$d"; done
  for b in /usr/bin/bash /usr/bin/ls; do
    cp "$b" usr/bin/
    for lib in $(ldd "$b" | grep -o '/[^ ]*'); do  # e.g. /lib/x86_64-linux-gnu/libc.so.6
      dest=usr${lib#/usr}
      mkdir -p "$(dirname "$dest")" && cp -L "$lib" "$dest"
    done
  done
  ln -s bash usr/bin/sh

  echo original >etc/hostname
  printf '127.0.0.1\tlocalhost\n127.0.1.1\toriginal\n' >etc/hosts
  echo 'LABEL=root / ext4 defaults 0 1' >etc/fstab  # virt-make-fs --label=root below
  printf 'root:x:0:0:root:/root:/bin/bash\n' >etc/passwd
  printf 'root:x:0:\n' >etc/group
  printf 'root:*:19000:0:99999:7:::\n' >etc/shadow
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >etc/machine-id && echo >>etc/machine-id
  mkdir -p etc/ssh var/lib/systemd
  echo '#!/bin/sh' >usr/sbin/sshd && chmod 755 usr/sbin/sshd  # only its presence matters
  head -c 512 /dev/urandom >var/lib/systemd/random-seed && chmod 600 var/lib/systemd/random-seed
  if [[ $variant != debian-nm ]]; then
    for t in rsa ecdsa ed25519; do  # dummies: a clone gets new keys of these types, mode and owner kept
      echo "dummy $t host key" >etc/ssh/ssh_host_${t}_key && chmod 600 etc/ssh/ssh_host_${t}_key
      echo "ssh-$t AAAAdummy root@original" >etc/ssh/ssh_host_${t}_key.pub
    done
  fi

  if [[ $family == debian ]]; then
    echo 12.7 >etc/debian_version
    chgrp 42 etc/shadow && chmod 640 etc/shadow  # Debian: root:shadow 0640
    cat >etc/os-release <<'EOF'
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
EOF
    mkdir -p etc/network etc/dhcp etc/udev/rules.d var/lib/dhcp var/lib/dbus
    printf 'source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n' \
      >etc/network/interfaces
    echo 'send host-name = gethostname();' >etc/dhcp/dhclient.conf
    echo 'lease { interface "eth0"; fixed-address 10.0.0.99; option host-name "original"; }' >var/lib/dhcp/dhclient.eth0.leases
    cp etc/machine-id var/lib/dbus/machine-id  # a file, as on systems where dbus made its own
    echo original >etc/mailname
    if [[ $variant == debian-nm ]]; then  # NetworkManager enabled, no ifupdown, no connection profile yet
      rm etc/network/interfaces
      mkdir -p usr/lib/systemd/system etc/systemd/system/multi-user.target.wants var/lib/NetworkManager \
        etc/NetworkManager/system-connections
      printf '[Service]\nExecStart=/usr/sbin/NetworkManager --no-daemon\n' >usr/lib/systemd/system/NetworkManager.service
      ln -s /lib/systemd/system/NetworkManager.service etc/systemd/system/multi-user.target.wants/NetworkManager.service
      echo 'lease of the image' >var/lib/NetworkManager/internal-5c1a7b4e-0b1e-4c5d-9a0e-1f2d3c4b5a69-eth0.lease
      echo 'secret of the image' >var/lib/NetworkManager/secret_key && chmod 600 var/lib/NetworkManager/secret_key
    elif [[ $variant == debian-cloudinit ]]; then  # cloud-init ran once when the image was made
      mkdir -p etc/cloud var/lib/cloud/instances/iid-image/sem var/lib/cloud/data var/lib/cloud/scripts/per-boot
      echo '#!/bin/sh' >usr/bin/cloud-init && chmod 755 usr/bin/cloud-init
      printf 'users: [default]\ndisable_root: true\npreserve_hostname: false\n' >etc/cloud/cloud.cfg
      ln -s /var/lib/cloud/instances/iid-image var/lib/cloud/instance
      echo iid-image >var/lib/cloud/data/instance-id
      echo '{"hostname": "original", "fqdn": "original"}' >var/lib/cloud/data/set-hostname
      echo '#!/bin/sh' >var/lib/cloud/scripts/per-boot/keep-me && chmod 755 var/lib/cloud/scripts/per-boot/keep-me
      echo 'cloud-init ran in the image' >var/log/cloud-init.log
    fi
    echo 'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="52:54:00:12:34:56", NAME="eth0"' \
      >etc/udev/rules.d/70-persistent-net.rules
  else
    echo 'ssh_keys:x:998:' >>etc/group  # RHEL's host key group: keys root:ssh_keys 0640
    chgrp 998 etc/ssh/ssh_host_*_key && chmod 640 etc/ssh/ssh_host_*_key
    mkdir -p var/lib/dhclient && echo 'lease of the image' >var/lib/dhclient/dhclient--eth0.lease
    echo 'Red Hat Enterprise Linux release 9.2 (Plow)' >etc/redhat-release
    chmod 000 etc/shadow  # RHEL: root:root 0000
    # SELinux on, with a (small) policy file_contexts as setfiles reads it; labels are set below.
    mkdir -p etc/selinux/targeted/contexts/files
    printf 'SELINUX=enforcing\nSELINUXTYPE=targeted\n' >etc/selinux/config
    cat >etc/selinux/targeted/contexts/files/file_contexts <<'EOF'
/.*	system_u:object_r:default_t:s0
/etc(/.*)?	system_u:object_r:etc_t:s0
/etc/shadow.*	--	system_u:object_r:shadow_t:s0
/etc/hostname	--	system_u:object_r:hostname_etc_t:s0
/root(/.*)?	system_u:object_r:admin_home_t:s0
/root/\.ssh(/.*)?	system_u:object_r:ssh_home_t:s0
EOF
    cat >etc/os-release <<'EOF'
NAME="Red Hat Enterprise Linux"
VERSION="9.2 (Plow)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="9.2"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Red Hat Enterprise Linux 9.2 (Plow)"
EOF
    mkdir -p etc/sysconfig/network-scripts etc/NetworkManager/system-connections
    printf 'DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\nHWADDR=52:54:00:12:34:56\n' \
      >etc/sysconfig/network-scripts/ifcfg-eth0
    printf 'NETWORKING=yes\nHOSTNAME=original\n' >etc/sysconfig/network
    printf '[connection]\nid=eth0\ntype=ethernet\ninterface-name=eth0\n\n[ipv4]\nmethod=auto\n' \
      >etc/NetworkManager/system-connections/eth0.nmconnection
    chmod 600 etc/NetworkManager/system-connections/eth0.nmconnection
  fi

  cd /
  virt-make-fs --partition --type=ext4 --label=root --format=qcow2 --size=+200M "$tree" "$cached.tmp"
  if [[ $family == rhel ]]; then  # SELinux labels as a RHEL install has them (virt-make-fs carries no xattrs)
    label() { printf 'setxattr security.selinux %s %d %s\n' "$1" "${#1}" "$2"; }
    { label system_u:object_r:shadow_t:s0 /etc/shadow; label system_u:object_r:hostname_etc_t:s0 /etc/hostname
      label system_u:object_r:etc_t:s0 /etc/hosts; label system_u:object_r:admin_home_t:s0 /root
    } | guestfish -a "$cached.tmp" -m /dev/sda1
  fi
  mv "$cached.tmp" "$cached"
fi
[[ $out == /dev/null ]] || cp --sparse=always "$cached" "$out"
