# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Image listing across 50 hosts, each 20 ms away: the library (every host at once) against the seed's way (one after the other).

    make bench-list          (python benchmarks/list.py --hosts 50 --delay-ms 20)
    make bench-list BENCH_ARGS=--quick   (--hosts 8 --real 1 --rounds 1: the seed's way costs about 1 s per host)

Hosts: 3 real testbed libvirtds (qemu driver, an image defined on each) and 47
simulated ones, each its own libvirt test-driver XML (a few images and running
domains) served by the first testbed libvirtd as test+tcp://.../PATH.xml. Every
host's URI points at its own port of a delay proxy (a separate process) that holds
each chunk `--delay-ms` in each direction before passing it on to the libvirtd, so
each libvirt call costs one network round trip as it would between machines.

Measured: `parallel_s`, cloud.image_list over all hosts (the library call behind
maglica_image_info), median of --rounds; `sequential_s`, the seed's way: one host
after the other, a new connection for each, one domain after the other;
`slowest_host_s`, the longest cloud.image_list of one host alone.
`tls_vs_tcp`: a listing of the real testbed hosts (no proxy) over TLS, as the library
reaches them by default, against the same listing over plain TCP (median of 3 x --rounds
each, taken in turns), with the connections the library keeps; `tls_vs_tcp_new_connections`,
the same with new connections for every listing. For this benchmark only the testbed
listens on both.
Broken, in any run: a host that cannot be reached, a listing that misses images (the run stops there).
Pushed states (issue 21), --pushed-hosts (1,000; quick 100) more test-driver hosts (2 images, 8 running VMs each),
served by the first testbed libvirtd without delay: each host's snapshot (host_state.snapshot, `snapshot_all_s` for
all of them) is pushed by simulated host workers over real CURVE sockets with real keys (pushers.py) to a real
client worker, which then gets a heartbeat vouching for each state every 5 s. `pushed_list_s`: maglica_image_info
run as its own process (`python maglica_image_info.py ARGS`, as Ansible runs it on its target: interpreter,
imports, configuration, the request, the module's JSON), median of 3; `survey_list_s`: the same process with
`host_state.fresh`, asking every host's libvirtd; the two listings must be equal. `client_worker_rss_mb` and
`client_worker_cpu_percent` (over 3 heartbeat periods): the pushed states' cost on the client worker.
Prints one JSON line last: {"hosts", "parallel_s", "sequential_s", "speedup", "slowest_host_s", "tls_vs_tcp", ...,
"pushed_list_s", "survey_list_s", ..., "quick"}.
Targets (full runs): parallel_s within 1.5x of slowest_host_s; speedup >= 10; tls_vs_tcp <= 1.3; pushed_list_s < 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests', 'integration'))

from bench_output import conclude, parse_args  # noqa: E402  pylint: disable=wrong-import-position
from maglica_testbed import Testbed  # noqa: E402  pylint: disable=wrong-import-position
from maglica.controller import cloud  # noqa: E402  pylint: disable=wrong-import-position
from maglica.cluster import config as maglica_config  # noqa: E402  pylint: disable=wrong-import-position
from maglica.cluster import virt  # noqa: E402  pylint: disable=wrong-import-position
from maglica.cluster import host_state  # noqa: E402  pylint: disable=wrong-import-position
from maglica_testbed import PYTHON  # noqa: E402  pylint: disable=wrong-import-position
from pushers import PushedCloud  # noqa: E402  pylint: disable=wrong-import-position
DOMAIN_XML = """  <domain type='test'>
    <name>%(name)s</name>
    <memory unit='MiB'>%(memory)d</memory>
    <vcpu>1</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <source file='/var/lib/libvirt/images/%(name)s.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>
      <interface type='user'><mac address='52:54:00:%(mac)s'/></interface>
    </devices>
    <test:runstate>%(runstate)d</test:runstate>
  </domain>
"""

QUICK = {'hosts': 8, 'real': 1, 'rounds': 1, 'pushed_hosts': 100}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_INFO_MODULE = os.path.join(REPO, 'plugins', 'modules', 'maglica_image_info.py')


def simulated_host_xml(index, images, running):
    """A test-driver node file: `images` inactive domains (images) and `running` running ones (clones)."""
    domains = []
    for n in range(images + running):
        name = 'sim%d-%s%d' % (index, 'image' if n < images else 'vm', n)
        mac = '%02x:%02x:%02x' % (index // 256, index % 256, n)
        domains.append(DOMAIN_XML % {'name': name, 'memory': 256, 'mac': mac, 'runstate': 5 if n < images else 1})
    return "<node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>\n%s</node>\n" % ''.join(domains)


# -- the delay proxy: one listening port per host, in its own process ----------------------

async def _pump(reader, writer, delay):
    """Pass bytes on, each chunk `delay` seconds after it arrived (chunks still flow back to back)."""
    queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.ensure_future(deliver())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            queue.put_nowait((time.monotonic() + delay, data))
    except ConnectionError:
        pass
    queue.put_nowait((0, None))
    try:
        await sender
    except ConnectionError:
        pass


def _serve_proxy(routes, delay, ready):
    async def main():
        for listen_port, (target_host, target_port) in routes.items():
            async def handle(reader, writer, target_host=target_host, target_port=target_port):
                up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
                await asyncio.gather(_pump(reader, up_writer, delay), _pump(up_reader, writer, delay))
            await asyncio.start_server(handle, '127.0.0.1', listen_port)
        ready.set()
        await asyncio.Event().wait()
    asyncio.run(main())


def start_proxy(routes, delay):
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=_serve_proxy, args=(routes, delay, ready), daemon=True)
    proc.start()
    if not ready.wait(30):
        proc.terminate()
        raise RuntimeError('the delay proxy did not start')
    return proc


# -- the seed's way ----------------------------------------------------------------------

def seed_listing(config, host):
    """One host's images the way the seed asked: its own fresh connection, one domain after the other."""
    conn = virt.connect(config.uri(host), readonly=True, host=host.name)
    try:
        domains = [virt.describe(dom, with_sizes=True) for dom in conn.listAllDomains(0)]
        return [d for d in domains if virt.is_image(d)]
    finally:
        conn.close()


def compare_tls_tcp(testbed, rounds):
    """cloud.image_list of the real hosts over TLS and over TCP, in turns (medians of `rounds` each).

    `tls_vs_tcp`: with the connections the library keeps between listings (a daemon, the CLI's second call);
    `tls_vs_tcp_new_connections`: every listing opens its connections (a module's first call): the TLS handshake,
    certificate loading and checks on both sides, and libvirt's confirmation are in it.
    """
    def config(transport):
        hosts = [{'name': name, 'address': address} for name, address in testbed.hosts.items()]
        return maglica_config.load(inline={'hosts': hosts, 'security': {'curve': False}, 'host_state': {'max_age': 0}, 'libvirt': {
            'transport': transport, 'pki_path': testbed.pki_path, 'insecure': transport == 'tcp'}})
    configs = {'tls': config('tls'), 'tcp': config('tcp')}
    result = {}
    for label, fresh in (('', False), ('_new_connections', True)):
        times = {'tls': [], 'tcp': []}
        for transport in configs:  # warm up: the first connection of each kind
            cloud.image_list(configs[transport])
        for _round in range(rounds):
            for transport, cfg in configs.items():
                if fresh:
                    virt.forget_connections()
                began = time.monotonic()
                listing = cloud.image_list(cfg)
                times[transport].append(time.monotonic() - began)
                assert all(h['reachable'] for h in listing['hosts']) and listing['images'], listing['hosts']
        tls, tcp = statistics.median(times['tls']), statistics.median(times['tcp'])
        result.update({'tls%s_s' % label: round(tls, 4), 'tcp%s_s' % label: round(tcp, 4), 'tls_vs_tcp%s' % label: round(tls / tcp, 2)})
    return result


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--hosts', type=int, default=50)
    parser.add_argument('--real', type=int, default=3, help='of which real testbed libvirtds')
    parser.add_argument('--delay-ms', type=float, default=20.0, help='added one-way delay per host')
    parser.add_argument('--rounds', type=int, default=3, help='parallel listings to take the median of')
    parser.add_argument('--port', type=int, default=int(os.environ.get('MAGLICA_TEST_PORT_BASE', '15555')) + 100)
    parser.add_argument('--pushed-hosts', type=int, default=1000, help='hosts of the pushed-state phase')
    return parse_args(parser, QUICK, '8 hosts of which 1 real, one round; 100 hosts pushing', argv)


def module_listing(config_path, workdir, fresh=False):
    """(seconds, images listed) of maglica_image_info run as its own process, as Ansible runs it on the target."""
    args_path = os.path.join(workdir, 'image_info_args.json')
    with open(args_path, 'w') as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': {'config': config_path, 'host_state': {'fresh': fresh}}}, handle)
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, 'build', 'collections'))
    began = time.monotonic()
    out = subprocess.run([PYTHON, IMAGE_INFO_MODULE, args_path], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, check=False)
    seconds = time.monotonic() - began
    try:
        result = json.loads(out.stdout)
    except ValueError:
        raise RuntimeError('maglica_image_info printed no JSON (%d): %s %s' % (out.returncode, out.stdout[-1000:], out.stderr[-1000:]))
    if result.get('failed'):
        raise RuntimeError('maglica_image_info failed: %s' % result.get('msg'))
    return seconds, result


def pushed_phase(args, serving, workdir):
    """Listing N hosts from their pushed states against surveying them, both as the module process does it.
    The hosts: test-driver node files (2 images, 8 running VMs each) served by `serving`'s libvirtd; their states
    are snapshots of those very hosts, pushed by simulated host workers (pushers.py)."""
    hosts = []
    for index in range(args.pushed_hosts):
        path = os.path.join(workdir, 'pushed%d.xml' % index)
        with open(path, 'w') as handle:
            handle.write(simulated_host_xml(index, images=2, running=8))
        hosts.append({'name': 'pushed%d' % index, 'uri': 'test+tcp://%s%s' % (serving, path), 'weight': 10})
    inline = maglica_config.load(inline={'hosts': hosts, 'security': {'curve': False}, 'libvirt': {'insecure': True}})
    began = time.monotonic()
    answers = virt.ask_hosts(inline, lambda conn, host: host_state.snapshot(conn))
    snapshot_s = time.monotonic() - began
    down = [a['error'] for a in answers if not a['reachable']]
    if down:
        raise RuntimeError('hosts not reachable: %s' % '; '.join(down[:3]))
    virt.forget_connections()
    pushed = PushedCloud(os.path.join(workdir, 'pushed'), hosts, {a['host']: a['result'] for a in answers}, args.port + 5000)
    try:
        pushed.start()
        rss_mb, _cpu = pushed.usage()
        expected = 2 * args.pushed_hosts
        timings = []
        for _round in range(max(3, args.rounds)):
            seconds, result = module_listing(pushed.config_path, workdir)
            if len(result['images']) != expected or any(h['source'] != 'pushed' for h in result['hosts']):
                raise RuntimeError('the listing from pushed states is not whole: %d images, sources %s'
                                   % (len(result['images']), sorted(set(h['source'] for h in result['hosts']))))
            timings.append(seconds)
        survey_s, surveyed = module_listing(pushed.config_path, workdir, fresh=True)
        # (The test driver gives a domain defined without a UUID a new one for every connection that loads its file.)
        pairs = [(dict(a, uuid=None), dict(b, uuid=None)) for a, b in zip(surveyed['images'], result['images'])]
        if len(surveyed['images']) != len(result['images']) or any(a != b for a, b in pairs):
            differing = next(((a, b) for a, b in pairs if a != b), (len(surveyed['images']), len(result['images'])))
            raise RuntimeError('the surveyed listing differs from the pushed one: %r against %r' % differing)
        cpu_percent = pushed.steady_cpu_percent(3 * pushed.heartbeat_s)
    finally:
        pushed.stop()
        virt.forget_connections()
    return {'pushed_hosts': args.pushed_hosts, 'pushed_list_s': round(statistics.median(timings), 3),
            'pushed_list_s_max': round(max(timings), 3), 'survey_list_s': round(survey_s, 2),
            'pushed_vs_survey': round(survey_s / statistics.median(timings), 1), 'snapshot_all_s': round(snapshot_s, 2),
            'client_worker_rss_mb': round(rss_mb, 1), 'client_worker_cpu_percent': cpu_percent,
            'heartbeat_s': pushed.heartbeat_s}


def main():
    args = arguments()
    # Every plain TCP connection logs a warning (libvirt.insecure); here plain TCP is what is measured.
    logging.getLogger('maglica.virt').setLevel(logging.ERROR)
    workdir = tempfile.mkdtemp(prefix='maglica-list-')
    testbed = Testbed(args.real)
    testbed.env['MAGLICA_TESTBED_LISTEN_TCP'] = '1'  # TLS and plain TCP, for tls_vs_tcp
    testbed.start()
    proxy = None
    try:
        image = os.path.join(workdir, 'debian.qcow2')
        testbed.script('build_image.sh', 'debian', image)
        for host in testbed.hosts:
            testbed.define_image(host, 'bench.image', image)
        serving = testbed.hosts['host0']  # its libvirtd also serves the simulated hosts' test driver
        hosts, routes = [], {}
        for index in range(args.hosts):
            port = args.port + index
            if index < args.real:
                name = 'host%d' % index
                routes[port] = (testbed.hosts[name], 16509)
                uri = 'qemu+tcp://127.0.0.1:%d/system' % port
            else:
                name = 'sim%d' % index
                path = os.path.join(workdir, '%s.xml' % name)
                with open(path, 'w') as handle:
                    handle.write(simulated_host_xml(index, images=2, running=2))
                routes[port] = (serving, 16509)
                uri = 'test+tcp://127.0.0.1:%d%s' % (port, path)
            hosts.append({'name': name, 'uri': uri, 'weight': 10})
        # The proxy forwards plain TCP (it delays bytes, it cannot speak TLS to a name the certificate has).
        # No client worker here: these phases survey the hosts, and wait for no pushed states (host_state.max_age 0).
        config = maglica_config.load(inline={'hosts': hosts, 'security': {'curve': False}, 'libvirt': {'insecure': True},
                                             'host_state': {'max_age': 0}})
        proxy = start_proxy(routes, args.delay_ms / 1000.0)

        # Warm up (libvirtd's first connection of each kind, Python imports) outside the figures.
        warm = cloud.image_list(config)
        unreachable = [h['host'] for h in warm['hosts'] if not h['reachable']]
        if unreachable:
            raise RuntimeError('hosts not reachable: %s' % ', '.join(unreachable))
        expected = len(warm['images'])

        started = time.monotonic()
        for host in config.hosts:
            assert seed_listing(config, host), 'no image on %s' % host.name
        sequential = time.monotonic() - started

        # Each host alone, through the library: the floor for a listing of them all.
        per_host = {}
        # New connections for every listing, as a module opens them (the library keeps them between listings).
        for host in config.hosts:
            virt.forget_connections()
            began = time.monotonic()
            assert cloud.image_list(config, hosts=[host.name])['images'], 'no image on %s' % host.name
            per_host[host.name] = time.monotonic() - began

        rounds = []
        for _round in range(args.rounds):
            virt.forget_connections()
            began = time.monotonic()
            listing = cloud.image_list(config)
            rounds.append(time.monotonic() - began)
            assert len(listing['images']) == expected and all(h['reachable'] for h in listing['hosts'])
        parallel = statistics.median(rounds)
        tls_vs_tcp = compare_tls_tcp(testbed, args.rounds * 3)
        pushed = pushed_phase(args, serving, workdir)
    finally:
        if proxy is not None:
            proxy.terminate()
        testbed.stop()
    slowest = max(per_host.values())
    result = {'hosts': args.hosts, 'real_hosts': args.real, 'delay_ms': args.delay_ms, 'images': expected,
              'parallel_s': round(parallel, 3), 'sequential_s': round(sequential, 2), 'speedup': round(sequential / parallel, 1),
              'slowest_host_s': round(slowest, 3), 'parallel_vs_slowest': round(parallel / slowest, 2)}
    result.update(tls_vs_tcp)
    result.update(pushed)
    missed = []
    if pushed['pushed_list_s'] >= 0.5:
        missed.append('pushed_list_s %s >= 0.5' % pushed['pushed_list_s'])
    if parallel > 1.5 * slowest:
        missed.append('parallel_s %.3f > 1.5 x slowest_host_s %.3f' % (parallel, slowest))
    if sequential / parallel < 10:
        missed.append('speedup %.1f < 10' % (sequential / parallel))
    if result['tls_vs_tcp'] > 1.3:
        missed.append('tls_vs_tcp %s > 1.3' % result['tls_vs_tcp'])
    # An unreachable host or a short listing raised above: a crash, non-zero.
    return conclude(result, args.quick, [], missed)


if __name__ == '__main__':
    sys.exit(main())
