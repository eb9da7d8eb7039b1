# shellcheck shell=bash
# Shared defaults for the testbed scripts; source it (". tests/testbed/env.sh").
# libguestfs: no KVM here (QEMU aborts under it), so direct backend + TCG.
export LIBGUESTFS_BACKEND=${LIBGUESTFS_BACKEND:-direct}
export LIBGUESTFS_BACKEND_SETTINGS=${LIBGUESTFS_BACKEND_SETTINGS:-force_tcg}
# The supermin appliance takes minutes to build the first time: keep it.
export LIBGUESTFS_CACHEDIR=${LIBGUESTFS_CACHEDIR:-/var/cache/maglica-test/guestfs}
export MAGLICA_TESTBED_DIR=${MAGLICA_TESTBED_DIR:-/var/tmp/maglica-testbed}
export MAGLICA_IMAGE_CACHE=${MAGLICA_IMAGE_CACHE:-/var/cache/maglica-test/images}
# libvirtd probes QEMU (~7 s) on first use; the result is valid for every host.
export MAGLICA_QEMU_CAPS_CACHE=${MAGLICA_QEMU_CAPS_CACHE:-/var/cache/maglica-test/qemu-capabilities}
export MAGLICA_NETNS=${MAGLICA_NETNS:-maglica-test}  # the testbed network namespace (testbed.sh netns)

# Whether this shell runs in a network namespace made by `ip netns add` (the testbed's, the demo's): guests'
# networks belong there; Debian's mirror is out of reach there. (/proc/1/ns/net cannot be read on every machine.)
in_named_netns() { [[ -n $(ip netns identify "$$" 2>/dev/null) ]]; }
