#!/usr/bin/env bash
# Install everything the tests and the demo need on a fresh Debian 12 (run as root).
# Idempotent: apt is skipped when all packages are present, pip when the
# requirement list is unchanged (stamp file in the venv).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${VENV:-$here/../.venv}  # default: .venv at the repo root

# ifupdown: its ifquery reads back the /etc/network/interfaces we write (unit tests). fdisk, e2fsprogs: the test
# images' disks are partitioned and their file systems made natively (tests/testbed/build_bootable.sh).
APT_PKGS=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
  qemu-utils virtinst python3-libvirt python3-guestfs libguestfs-tools supervisor
  linux-image-amd64 python3-yaml python3-venv sqlite3 iproute2 git shellcheck
  mmdebstrap dnsmasq-base iptables openssh-client openssh-server python3-cryptography
  postgresql python3-psycopg
  ifupdown fdisk e2fsprogs)
# `ansible` (12.x goes with ansible-core 2.19) ships community.crypto, which the roles' PKI uses; Galaxy is
# out of reach here. cryptography: the library's certificate checks. rich: `maglica image import`'s progress bar.
# import-linter: the library's import contracts (make typecheck). Every version comes from constraints.txt.
PIP_REQS=('ansible-core>=2.19,<2.20' 'ansible>=12,<13' cryptography 'pyzmq>=26' pytest pytest-timeout pytest-xdist pyyaml
  ansible-lint antsibull-changelog hypothesis mypy types-PyYAML rich import-linter)
CONSTRAINTS=$here/../constraints.txt

# --- Debian packages -------------------------------------------------------
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${APT_PKGS[@]}"
fi

# libvirtd's QEMU driver refuses to start without user libvirt-qemu and groups
# kvm and libvirt-qemu (its compiled-in defaults, resolved before qemu.conf is
# read). libvirt-daemon-system's postinst would create them, like this, but
# it also drags in service units we do not use.
getent group kvm >/dev/null || groupadd --system kvm
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
  useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin \
    --gid kvm --groups libvirt-qemu libvirt-qemu

# --- Python virtualenv -------------------------------------------------------
# --system-site-packages so Debian's python3-libvirt / python3-guestfs are visible.
[[ -x $VENV/bin/python ]] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
if [[ ${1:-} == --update-constraints ]]; then  # on purpose only: the newest releases, written back as the pins
  "$VENV/bin/python" -m pip install --upgrade "${PIP_REQS[@]}"
  { sed -n '/^#/p' "$CONSTRAINTS"; "$VENV/bin/python" -m pip freeze --local | grep -v '^-e '; } >"$CONSTRAINTS.new"
  mv "$CONSTRAINTS.new" "$CONSTRAINTS"
fi
want=$({ printf '%s\n' "${PIP_REQS[@]}"; cat "$CONSTRAINTS"; } | sha256sum | cut -d' ' -f1)
stamp=$VENV/.maglica-requirements.sha256
if [[ $(cat "$stamp" 2>/dev/null) != "$want" ]]; then
  "$VENV/bin/python" -m pip install -c "$CONSTRAINTS" "${PIP_REQS[@]}"
  echo "$want" >"$stamp"
fi

# --- ansible-test pip bootstrap stand-in -----------------------------------
# ansible-test downloads get_pip_<ver>.py from a host we cannot reach; it looks
# in its cache first. The file name follows ansible-test's pinned pip version.
pipver=$("$VENV/bin/python" -c '
from ansible_test._internal.python_requirements import get_venv_packages
from ansible_test._internal.host_configs import NativePythonConfig
print(get_venv_packages(NativePythonConfig(version="3.11"))["pip"].replace(".", "_"))')
mkdir -p ~/.ansible/test/cache
# Written aside and renamed: two `make` runs at once (CI builds the images beside the checks) each install it,
# and two installs of one name at once fail ("cannot create regular file ...: File exists").
get_pip=~/.ansible/test/cache/"get_pip_${pipver}.py"
install -m 0644 "$here/ansible-test-get-pip.py" "$get_pip.$$"
mv -f "$get_pip.$$" "$get_pip"
echo "install-deps: ok (venv $VENV, get_pip_${pipver}.py)"
