# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the Ansible module adds to the library call: maglica_image_info against cloud.image_list, on 3 testbed hosts (--hosts).

    make bench-module-overhead   (python benchmarks/module_overhead.py --rounds 5)
    make bench-module-overhead BENCH_ARGS=--quick   (--rounds 1 --hosts 1)

`module_s`: wall time of `ansible localhost -m maglica.cloud.maglica_image_info -a
config=FILE` (controller start-up, module packaging, a fresh interpreter, the call);
`library_s`: cloud.image_list(config) called in this process, the same listing;
`process_s`: a fresh `python3 -c` that loads the configuration and makes the call,
to tell the interpreter's own start-up from Ansible's share; `ping_s`: the same
`ansible` command with ansible.builtin.ping, Ansible's cost for any module, so
`module_own_s` = module_s - ping_s is what maglica_image_info itself adds (imports,
configuration, the call). Medians of --rounds, all in the same run against the same hosts.
Broken, in any run: a module run that fails or does not list the image, a listing that misses a host.
No target: the figures say where the time goes. Prints one JSON line last:
{"module_s", "library_s", "overhead_s", "process_s", "ping_s", "module_own_s", ..., "quick"}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'integration'))

from bench_output import conclude, parse_args  # noqa: E402  pylint: disable=wrong-import-position
from maglica_testbed import MODULE_UTILS, PYTHON, Testbed, ansible_env  # noqa: E402  pylint: disable=wrong-import-position
from maglica.controller import cloud  # noqa: E402  pylint: disable=wrong-import-position
from maglica.cluster import config as maglica_config  # noqa: E402  pylint: disable=wrong-import-position
import yaml  # noqa: E402  pylint: disable=wrong-import-position

ANSIBLE = os.path.join(os.path.dirname(PYTHON), 'ansible')
QUICK = {'rounds': 1, 'hosts': 1}
LIBRARY_ALONE = 'from maglica.controller import cloud; print(len(cloud.image_list(cloud.load_config(%r))["images"]))'


def timed(step):
    began = time.monotonic()
    value = step()
    return time.monotonic() - began, value


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--hosts', type=int, default=3, help='testbed hosts the listing asks')
    return parse_args(parser, QUICK, 'one round, one host', argv)


def main():
    args = arguments()
    workdir = tempfile.mkdtemp(prefix='maglica-module-')
    testbed = Testbed(args.hosts)
    testbed.start()
    try:
        image = os.path.join(workdir, 'debian.qcow2')
        testbed.script('build_image.sh', 'debian', image)
        for host in testbed.hosts:
            testbed.define_image(host, 'bench.image', image)
        path = os.path.join(workdir, 'maglica.conf')
        with open(path, 'w') as handle:
            # The testbed's libvirtds take TLS with the library's certificate (the default transport).
            yaml.safe_dump({'hosts': [{'name': n, 'address': a} for n, a in testbed.hosts.items()],
                            'libvirt': {'pki_path': testbed.pki_path}, 'security': {'curve': False},
                            # No client worker runs here: the listing surveys the hosts, waiting for no pushed states.
                            'host_state': {'max_age': 0}}, handle)
        config = maglica_config.load(path)
        env = ansible_env()
        module_command = [ANSIBLE, 'localhost', '-c', 'local', '-m', 'maglica.cloud.maglica_image_info', '-a', 'config=%s' % path]
        process_command = [PYTHON, '-c', LIBRARY_ALONE % path]
        process_env = dict(testbed.env, PYTHONPATH=MODULE_UTILS)
        ping_command = [ANSIBLE, 'localhost', '-c', 'local', '-m', 'ansible.builtin.ping']
        modules, libraries, processes, pings = [], [], [], []
        warm = cloud.image_list(config)  # warm libvirtd and this process's imports alike
        unreachable = [h.get('error') or h['host'] for h in warm['hosts'] if not h['reachable']]
        if unreachable:
            raise RuntimeError('hosts not reachable: %s' % '; '.join(unreachable))
        for _round in range(args.rounds):
            seconds, out = timed(lambda: subprocess.run(module_command, env=env, cwd=workdir, stdout=subprocess.PIPE,
                                                        stderr=subprocess.STDOUT, universal_newlines=True, check=False))
            if out.returncode != 0 or '"bench.image"' not in out.stdout:
                raise RuntimeError('the module run failed:\n%s' % out.stdout[-3000:])
            modules.append(seconds)
            seconds, listing = timed(lambda: cloud.image_list(config))
            assert len(listing['images']) == len(testbed.hosts)
            libraries.append(seconds)
            seconds, out = timed(lambda: subprocess.run(process_command, env=process_env, stdout=subprocess.PIPE,
                                                        universal_newlines=True, check=True))
            assert out.stdout.strip() == str(len(testbed.hosts))
            processes.append(seconds)
            seconds, out = timed(lambda: subprocess.run(ping_command, env=env, cwd=workdir, stdout=subprocess.PIPE,
                                                        stderr=subprocess.STDOUT, universal_newlines=True, check=True))
            pings.append(seconds)
    finally:
        testbed.stop()
    module_s, library_s, process_s, ping_s = (statistics.median(v) for v in (modules, libraries, processes, pings))
    result = {'hosts': len(testbed.hosts), 'module_s': round(module_s, 3), 'library_s': round(library_s, 3),
              'overhead_s': round(module_s - library_s, 3), 'process_s': round(process_s, 3), 'ping_s': round(ping_s, 3),
              'module_own_s': round(module_s - ping_s, 3), 'rounds': args.rounds}
    # A failed module run or listing raised above: a crash, non-zero.
    return conclude(result, args.quick, [], [])


if __name__ == '__main__':
    sys.exit(main())
