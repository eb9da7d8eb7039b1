# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The `maglica` command: the command line on top of the library.

    maglica [--config FILE] [--json] image list | image copy --name=IMAGE --dest=HOST
    maglica image import --name=IMAGE --url=URL --checksum=sha256:HEX | --path=FILE [--on=HOST]...
    maglica image remove --name=IMAGE [--on=HOST]... [--force-dependants] | image create --name=IMAGE --from-vm=VM
    maglica vm list | clone --image=IMAGE --hostname=NAME [--on=HOST] [--start=false]
                            [--spread-group=G] [--exclude-host=H ...] [--dry-run]
    maglica vm start|stop|destroy|remove|info|console --name=NAME
    maglica vm migrate NAME [--host=HOST] [--live|--cold] [--dry-run]
    maglica vm attach-iso|set-boot-device|attach-disk|set-vcpus|set-memory --name=NAME ...
    maglica log status --id=JOB | log tail [--limit=N]
    maglica host list | host drain HOST [--max-parallel=N] [--dry-run] | host activate HOST

Exit codes: 0 done, 1 the operation failed, 2 usage error, 3 not found, 4 conflict
(the thing exists already, runs, or is ambiguous).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import (
    Any,
    Callable,
    Dict,
    Mapping,
    Optional,
    Sequence,
    TextIO,
    Tuple,
    Union,
)

from ..cluster import config as config_mod
from ..cluster.config import Config
from ..errors import ConflictError, MaglicaError, NotFoundError
from ..protocol import import_job, messages
from . import cloud, hosts, image_copy, image_import, image_lifecycle, maintenance, pushed, reach, vm
from .client import Client, Job

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONFLICT = 0, 1, 2, 3, 4

# A table column: its header, and the key of a row or a function of the row that gives the cell.
Column = Tuple[str, Union[str, Callable[[Any], Any]]]


class Output(object):
    """Tables and messages for people, or one JSON document for scripts."""

    def __init__(self, as_json: bool, stream: Optional[TextIO] = None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], data: Any = None) -> None:
        """rows: dicts; columns: [(header, key or function)]. With --json, `data` (default rows) is printed instead."""
        if self.as_json:
            self.json(rows if data is None else data)
            return
        cells = [[h for h, _k in columns]]
        for row in rows:
            cells.append([_cell(k(row) if callable(k) else row.get(k)) for _h, k in columns])
        widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
        for line in cells:
            self.stream.write('  '.join(c.ljust(w) for c, w in zip(line, widths)).rstrip() + '\n')

    def fields(self, pairs: Sequence[Tuple[str, Any]], data: Any) -> None:
        """Key: value lines, aligned; with --json, `data`."""
        if self.as_json:
            self.json(data)
            return
        width = max(len(k) for k, _v in pairs)
        for key, value in pairs:
            self.stream.write('%s  %s\n' % ((key + ':').ljust(width + 1), _cell(value)))

    def message(self, text: str, data: Any) -> None:
        if self.as_json:
            self.json(data)
            return
        self.stream.write(text + '\n')

    def json(self, data: Any) -> None:
        self.stream.write(json.dumps(data, indent=2, sort_keys=True, default=str) + '\n')


def _cell(value: Any) -> str:
    if value is None:
        return '-'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, float):
        return '%.1f' % value
    if isinstance(value, (list, tuple)):
        return ','.join(_cell(v) for v in value) or '-'
    return str(value)


def _size(value: Optional[float]) -> Optional[str]:
    """A human size of a byte count, in powers of 1024."""
    if value is None:
        return None
    for unit in ('B', 'K', 'M', 'G', 'T'):
        if value < 1024 or unit == 'T':
            return ('%d%s' if unit == 'B' or value == int(value) else '%.1f%s') % (value, unit)
        value /= 1024.0
    return None


def _disk_total(entry: Mapping[str, Any]) -> Optional[str]:
    return _size(sum(d['capacity'] or 0 for d in entry['disks'] if d['device'] == 'disk')) if entry['disks'] else None


def _size_arg(text: str) -> str:
    """argparse type: a size with a unit, checked at parse time so a bad unit is a usage error."""
    try:
        vm.parse_size(text)
    except MaglicaError as e:
        raise argparse.ArgumentTypeError(str(e))
    return text


def _bool_arg(text: str) -> bool:
    words = {'true': True, 'yes': True, 'on': True, '1': True, 'false': False, 'no': False, 'off': False, '0': False}
    if text.lower() not in words:
        raise argparse.ArgumentTypeError('expected true or false, got %r' % text)
    return words[text.lower()]


def _job_id_arg(text: str) -> str:
    if not messages.JOB_ID_RE.fullmatch(text):
        raise argparse.ArgumentTypeError('%r is not a job id (32 hexadecimal digits)' % text)
    return text


def _stderr(text: str) -> None:
    sys.stderr.write('maglica: %s\n' % text)
    sys.stderr.flush()


# What a command is: it does what `args` ask with `config`, and prints to `out`.
Command = Callable[[Config, argparse.Namespace, Output], None]


# -- commands ------------------------------------------------------------------------------

def image_list(config: Config, args: argparse.Namespace, out: Output) -> None:
    listing = cloud.image_list(config, args.name, args.host)
    for entry in listing['hosts']:
        if not entry['reachable']:
            _stderr('host not reachable: %s' % entry['error'])
    out.table(listing['images'], [('NAME', 'name'), ('HOST', 'host'), ('VCPUS', 'vcpus'), ('MEMORY', lambda i: '%dM' % i['memory_mb']),
                                  ('DISK', _disk_total)], listing)


def image_copy_command(config: Config, args: argparse.Namespace, out: Output) -> None:
    with JobProgress() as progress:
        result = image_copy.copy(config, args.name, args.dest, args.source, args.timeout, progress=progress.update)
    if result['changed']:
        out.message('copied %s from %s to %s' % (args.name, result['source'], args.dest), result)
    else:
        out.message('%s already has %s' % (args.dest, args.name), result)


def image_remove(config: Config, args: argparse.Namespace, out: Output) -> None:
    result = image_lifecycle.remove(config, args.name, args.on, args.force_dependants, timeout=args.timeout)
    if not result['changed']:  # removing what is not there is "not found" for a command
        raise NotFoundError('no image named %s on %s' % (args.name, ', '.join(args.on) if args.on else 'any host'))
    removed = [h['host'] for h in result['hosts'] if h['state'] == 'removed']
    text = 'removed %s from %s' % (args.name, ', '.join(removed))
    if result['dependants']:
        text += ', with its linked clones %s' % ', '.join(result['dependants'])
    out.message(text, result)


def image_create(config: Config, args: argparse.Namespace, out: Output) -> None:
    with JobProgress() as progress:
        result = image_lifecycle.create_from_vm(config, args.name, args.from_vm, timeout=args.timeout, progress=progress.update)
    if not result['changed'] and not result.get('message'):
        raise ConflictError('%s already exists on %s (made from %s)' % (args.name, result['host'], args.from_vm))
    if result.get('message'):
        _stderr(result['message'])
    out.message('made the image %s from %s on %s' % (args.name, args.from_vm, result['host']), result)


def import_settings(args: argparse.Namespace) -> Dict[str, Any]:
    """The image.import settings of `maglica image import`'s arguments (sizes in bytes, memory in MiB)."""
    return {'vcpus': args.vcpus, 'memory_mb': vm.parse_size(args.memory) // 1048576,
            'disk_size': vm.parse_size(args.disk_size, 'G') if args.disk_size else None,
            'network': args.network, 'bridge': args.bridge, 'firmware': args.firmware,
            'disk_mode': args.disk_mode, 'keep_cache': args.keep_cache or None, 'domain_type': args.domain_type,
            'max_virtual_size': vm.parse_size(args.max_virtual_size, 'G') if args.max_virtual_size else None,
            'max_download_size': vm.parse_size(args.max_download_size, 'G') if args.max_download_size else None,
            'max_download_time': args.max_download_time,
            'redirect_schemes': sorted(set(args.redirect_scheme)) if args.redirect_scheme else None}


def image_import_command(config: Config, args: argparse.Namespace, out: Output) -> None:
    settings = import_settings(args)
    with JobProgress(bars=sys.stderr.isatty() and not args.json) as progress:
        result = image_import.import_image(config, args.name, args.url, args.checksum, args.on, settings, args.timeout,
                                           progress=progress.update, path=args.path)
    lines = ['%s: already there' % host for host in result['present']]
    for host in result['fetch']:
        data = result['imported'].get(host) or {}
        lines.append('%s: imported %s (%s)' % (host, args.name, 'from the cache' if data.get('cache_hit') else
                                               'fetched %s' % _size(data.get('fetched_bytes') or 0)))
    out.message('\n'.join(lines), result)


class JobProgress:
    """How every command shows the jobs it waits on, on stderr (stdout keeps the result alone): a line when a job's
    state changes; with `bars` on a terminal, a progress bar per job instead (rich, imported here only: the library
    and the modules never need it)."""

    def __init__(self, bars: bool = False) -> None:
        self.progress: Any = None  # rich.progress.Progress, when rich is there
        self.tasks: Dict[str, Any] = {}
        self.printed: Dict[str, str] = {}  # job id: the last state printed
        if bars:
            try:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    DownloadColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                    TransferSpeedColumn,
                )
            except ImportError:
                return
            # On stderr, like every other progress line: stdout keeps the result alone.
            self.progress = Progress(TextColumn('{task.description}'), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(), transient=False,
                                     console=Console(stderr=True))

    def __enter__(self) -> JobProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, job: Job) -> None:
        if self.progress is None:
            if self.printed.get(job['id']) != job['state']:
                self.printed[job['id']] = job['state']
                _stderr('job %s (%s on %s): %s' % (job['id'], job['action'], job['host'], job['state']))
            return
        figures = job.get('progress') or {}
        if job['id'] not in self.tasks:
            self.tasks[job['id']] = self.progress.add_task(job['host'], total=None)
        total = figures.get('total') or None
        done = figures.get('done') or 0
        if job['state'] == 'succeeded' and total is None:
            total = done or 1
            done = total
        self.progress.update(self.tasks[job['id']], completed=done, total=total,
                             description='%s %s' % (job['host'], job['state']))


def vm_list(config: Config, args: argparse.Namespace, out: Output) -> None:
    listing = vm.vm_list(config, args.name, args.host, args.state)
    for entry in listing['hosts']:
        if not entry['reachable']:
            _stderr('host not reachable: %s' % entry['error'])
    in_maintenance, unknown = maintenance.hosts_in_maintenance(config)
    if unknown:
        _stderr(unknown)
    for name in in_maintenance:
        _stderr('host in maintenance: %s (it takes no new VM; maglica host activate %s brings it back)' % (name, name))
    out.table(listing['vms'], [('NAME', 'name'),
                               ('HOST', lambda v: '%s (maintenance)' % v['host'] if v['host'] in in_maintenance else v['host']),
                               ('STATE', 'state'), ('VCPUS', 'vcpus'),
                               ('MEMORY', lambda v: '%dM' % v['memory_mb']), ('VNC', 'vnc_port'),
                               ('IMAGE', lambda v: 'yes' if v['image'] else v['clone_of']), ('GROUP', 'spread_group')],
              dict(listing, maintenance=in_maintenance))


def vm_clone(config: Config, args: argparse.Namespace, out: Output) -> None:
    if args.dry_run:
        vm_clone_plan(config, args, out)
        return
    if args.wait_for != 'none':
        _stderr('%s: the job, then waiting up to %ds for %s\n' % (args.hostname, args.wait_for_timeout, args.wait_for))
    with JobProgress() as progress:
        result = cloud.clone(config, args.image, args.hostname, host=args.on, clone_mode=args.mode, start=args.start,
                             timeout=args.timeout, progress=progress.update, wait_for=args.wait_for,
                             wait_for_timeout=args.wait_for_timeout, cloud_init_user_data=args.cloud_init_user_data,
                             spread_group=args.spread_group, exclude_hosts=args.exclude_host,
                             allow_unreachable=args.allow_unreachable)
    if not result['changed'] and args.wait_for == 'none' and not result.get('message'):
        raise ConflictError('%s already exists on %s' % (args.hostname, result['host']))
    if result.get('message'):
        _stderr(result['message'])
    domain = result['result'].get('domain') or {}
    text = '%s %s to %s on %s%s' % ('cloned' if result['changed'] else 'found', args.image, args.hostname, result['host'],
                                    ' (VNC port %s)' % domain['vnc_port'] if domain.get('vnc_port') else '')
    if result['ip']:
        text += ', reachable at %s' % result['ip']
    if result['known_hosts']:
        text += '\nits SSH host keys, for known_hosts:\n' + '\n'.join(result['known_hosts'])
    out.message(text, result)


def vm_clone_plan(config: Config, args: argparse.Namespace, out: Output) -> None:
    """--dry-run: where the clone would go and why, per candidate host; nothing is submitted."""
    plan = cloud.plan_clone(config, args.image, args.hostname, host=args.on, exclude_hosts=args.exclude_host,
                            spread_group=args.spread_group, clone_mode=args.mode, start=args.start,
                            allow_unreachable=args.allow_unreachable)
    for error in plan['unreachable']:
        _stderr('not considered: %s' % error)
    for warning in plan.get('warnings') or []:
        _stderr(warning)
    if out.as_json:
        out.json(plan)
        return
    if plan['exists']:
        out.message('%s exists already on %s: nothing would be done' % (args.hostname, plan['host']), plan)
        return
    out.message('%s would go to %s (policy %s)' % (args.hostname, plan['host'], plan.get('policy') or 'seed'), plan)
    out.table(plan['candidates'], [('HOST', 'host'), ('SCORE', lambda c: '%.3f' % c['score'] if c.get('score') is not None else None),
                                   ('WEIGHT', 'weight'), ('RESERVED', 'reserved'),
                                   ('FREE_MEMORY', lambda c: _size(c['free_memory_mb'] * 1048576) if c.get('free_memory_mb') is not None else None),
                                   ('FREE_DISK', lambda c: _size(c.get('free_disk_bytes'))), ('GROUP_MEMBERS', 'group_members'),
                                   ('CHOSEN', lambda c: c['host'] == plan['host'])])
    for entry in plan.get('filtered') or []:
        out.message('filtered out %s: %s' % (entry['host'], entry['reason']), plan)


def vm_migrate(config: Config, args: argparse.Namespace, out: Output) -> None:
    """Move a VM to --host, or where placement says; --dry-run only shows where it would go."""
    result = cloud.vm_migrate(config, args.name, args.host, args.live, True, args.timeout, check_mode=args.dry_run)
    if not result['changed']:
        out.message('%s is on %s already: nothing to do' % (args.name, result['source']), result)
        return
    how = 'live' if result['live'] else 'cold'
    if args.dry_run:
        out.message('%s would go %s from %s to %s' % (args.name, how, result['source'], result['destination']), result)
        return
    done = result['result']
    figures = ['%s s' % done['seconds']] if done.get('seconds') is not None else []
    if done.get('downtime_ms') is not None:
        figures.append('downtime %d ms' % done['downtime_ms'])
    copied = ', '.join('%s %s' % (d['target'], d['copy']) for d in done.get('disks') or [])
    details = '; '.join(figures + ([copied] if copied else [])) or 'done'
    snapshots = '; snapshots: %s' % ', '.join(done['snapshots']) if done.get('snapshots') else ''
    out.message('%s migrated %s from %s to %s (%s)%s' % (args.name, how, result['source'], result['destination'], details, snapshots),
                result)


def _text_file_arg(text: str) -> str:
    """argparse type: the content of a text file, read at parse time so that a bad path is a usage error."""
    try:
        with open(text, encoding='utf-8') as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as e:
        raise argparse.ArgumentTypeError('cannot read %s: %s' % (text, getattr(e, 'strerror', None) or e))


def _ensure(config: Config, args: argparse.Namespace, out: Output, done: str, **settings: Any) -> None:
    result = vm.ensure(config, args.name, **settings)
    if result['host'] is None:
        raise NotFoundError('no VM named %s on any reachable host' % args.name)
    text = ('%s on %s: %s' % (args.name, result['host'], '; '.join(result['changes']))) if result['changed'] else \
        '%s on %s: %s' % (args.name, result['host'], done)
    if result.get('message'):
        text += '\n' + result['message']
    out.message(text, result)


def vm_state(state: str) -> Command:
    def command(config: Config, args: argparse.Namespace, out: Output) -> None:
        if state == 'absent':
            pushed.find_vm(config, args.name)  # removing what is not there is "not found" for a command
        _ensure(config, args, out, 'already %s' % {'running': 'running', 'stopped': 'stopped', 'destroyed': 'stopped'}.get(state, state),
                state=state, force=getattr(args, 'force', False), timeout=getattr(args, 'timeout', 120),
                force_dependants=getattr(args, 'force_dependants', False))
    return command


def vm_attach_iso(config: Config, args: argparse.Namespace, out: Output) -> None:
    _ensure(config, args, out, 'the CD-ROM holds %s already' % args.iso, iso=args.iso)


def vm_set_boot_device(config: Config, args: argparse.Namespace, out: Output) -> None:
    _ensure(config, args, out, 'boots from %s already' % ','.join(args.device), boot_device=args.device)


def vm_set_vcpus(config: Config, args: argparse.Namespace, out: Output) -> None:
    _ensure(config, args, out, 'has %d vCPUs already' % args.vcpus, vcpus=args.vcpus)


def vm_set_memory(config: Config, args: argparse.Namespace, out: Output) -> None:
    _ensure(config, args, out, 'has %s of memory already' % args.size, memory=args.size)


def vm_attach_disk(config: Config, args: argparse.Namespace, out: Output) -> None:
    """Imperative: every call adds one more disk, named dataN after the ones there."""
    name = vm.next_disk_name(config, args.name)
    _ensure(config, args, out, 'nothing to do', disks=[{'name': name, 'size': args.size}])


def vm_info(config: Config, args: argparse.Namespace, out: Output) -> None:
    host, entry = vm.vm_info(config, args.name)
    disks = ['%s %s (%s)' % (d['target'], d['path'], _size(d['capacity']) or d['device']) for d in entry['disks']]
    out.fields([('name', entry['name']), ('host', host), ('state', entry['state']), ('vcpus', entry['vcpus']),
                ('memory', '%dM' % entry['memory_mb']), ('vnc port', entry['vnc_port']), ('vnc display', entry['vnc_display']),
                ('cd-rom', entry['iso']), ('clone of', entry['clone_of']), ('spread group', entry.get('spread_group')),
                ('image', entry['image']),
                ('disks', '; '.join(disks) or None)], entry)


def vm_console(config: Config, args: argparse.Namespace, out: Output) -> None:
    host, _entry = vm.vm_info(config, args.name)
    uri = config.uri(config.host(host))
    command = ['virsh', '-c', uri, 'console', args.name]
    if args.json:
        out.json({'host': host, 'command': command})
        return
    sys.stdout.flush()
    try:
        os.execvp(command[0], command)
    except OSError as e:
        raise MaglicaError('cannot run %s: %s' % (command[0], e.strerror or e))


def vm_snapshot_list(config: Config, args: argparse.Namespace, out: Output) -> None:
    listing = cloud.vm_snapshots(config, args.name, timeout=args.timeout)
    for warning in listing['warnings']:
        _stderr(warning)
    out.table(listing['snapshots'], [
        ('NAME', 'name'), ('CREATED', lambda s: time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(s['creation_time']))),
        ('STATE', 'state'), ('MEMORY', 'memory'), ('SIZE', lambda s: _size(s['size'])), ('CURRENT', 'current'),
        ('DESCRIPTION', lambda s: s['description'] or None)], listing)


def vm_snapshot(state: str) -> Command:
    def command(config: Config, args: argparse.Namespace, out: Output) -> None:
        result = cloud.vm_snapshot(config, args.name, args.snapshot, state=state, memory=getattr(args, 'memory', False),
                                   description=getattr(args, 'description', None), keep=getattr(args, 'keep', None),
                                   timeout=args.timeout)
        for warning in result.get('warnings') or []:
            _stderr(warning)
        done = {'present': 'made', 'absent': 'deleted', 'reverted': 'reverted to'}[state]
        if result['changed']:
            text = '%s on %s: %s snapshot %s' % (args.name, result['host'], done, args.snapshot)
            if result.get('consistency'):
                text += ' (%s)' % result['consistency']
        else:
            text = '%s on %s: snapshot %s %s' % (args.name, result['host'], args.snapshot,
                                                 'is not there' if state == 'absent' else 'exists already')
        if result['pruned']:
            text += '; pruned %s' % ', '.join(result['pruned'])
        out.message(text, result)
    return command


def log_status(config: Config, args: argparse.Namespace, out: Output) -> None:
    with Client(config) as client:
        job = client.status(args.id)
    out.fields([(k, job.get(k)) for k in ('id', 'host', 'action', 'state', 'message', 'attempts')] +
               [('args', json.dumps(job.get('args'), sort_keys=True)), ('data', json.dumps(job.get('data'), sort_keys=True))] +
               # An expired job whose host worker reported it all the same.
               ([('late_result', json.dumps(job['late_result'], sort_keys=True))] if job.get('late_result') else []) +
               # bytes done of the total, as the host worker last reported them (image imports).
               ([('progress', '%s of %s' % (_size(job['progress']['done']), _size(job['progress']['total']) if job['progress']['total'] else 'unknown'))]
                if job.get('progress') else []), job)


def log_tail(config: Config, args: argparse.Namespace, out: Output) -> None:
    with Client(config) as client:
        jobs = client.recent(args.limit, args.host)
    jobs.sort(key=lambda j: j.get('created') or 0)  # oldest first, the latest at the bottom, like tail
    out.table(jobs, [('ID', 'id'), ('HOST', 'host'), ('ACTION', 'action'), ('STATE', 'state'),
                     ('MESSAGE', lambda j: (j.get('message') or '')[:60] or None)], jobs)


def host_list(config: Config, args: argparse.Namespace, out: Output) -> None:
    report = hosts.host_info(config)
    for warning in report['warnings']:
        _stderr(warning)
    out.table(report['hosts'], [('NAME', 'name'), ('WEIGHT', 'weight'), ('LIBVIRT', lambda h: 'up' if h['reachable'] else 'down'),
                                ('RUNNING', 'active_domains'), ('DEFINED', 'inactive_domains'), ('CPUS', 'cpus'),
                                ('FREE', lambda h: None if h['free_memory_mb'] is None else '%dM' % h['free_memory_mb']),
                                ('WORKER', lambda h: {True: 'alive', False: 'dead', None: 'unknown'}[h['worker_alive']]),
                                ('STATE', lambda h: {True: 'maintenance', False: 'active', None: 'unknown'}[h['maintenance']])],
              report)


def _drain_table(result: cloud.HostResult, out: Output, data: Any) -> None:
    out.table(result['vms'], [('VM', 'name'), ('RUNS', lambda m: 'live' if m['live'] else 'cold'), ('FROM', 'source'),
                              ('TO', 'destination'), ('STATUS', 'status'), ('WHY', 'reason')], data)


def host_drain(config: Config, args: argparse.Namespace, out: Output) -> None:
    """Put a host in maintenance and move its VMs off it (--dry-run: only the plan)."""
    try:
        result = cloud.host_state(config, args.host, 'maintenance', max_parallel=args.max_parallel, timeout=args.timeout,
                                  check_mode=args.dry_run)
    except cloud.DrainIncomplete as e:
        _drain_table(e.result, out, dict(e.result, failed=str(e)))
        raise
    for warning in result['warnings']:
        _stderr(warning)
    if args.dry_run:
        head = '%s %s in maintenance; the drain would move %d VM(s)' % (
            args.host, 'is already' if result['was_maintenance'] else 'would be put', len(result['vms']))
    else:
        head = '%s is in maintenance%s; %d VM(s) moved' % (
            args.host, ' (already)' if result['was_maintenance'] else '', len(result['vms']))
    if result['images']:
        head += '; images that stay: %s' % ', '.join(result['images'])
    if not out.as_json:
        out.message(head, result)
    _drain_table(result, out, result)


def host_activate(config: Config, args: argparse.Namespace, out: Output) -> None:
    result = cloud.host_state(config, args.host, 'active')
    out.message('%s is active%s: placement gives it VMs again' % (args.host, '' if result['changed'] else ' (it was)'), result)


def host_refresh(config: Config, args: argparse.Namespace, out: Output) -> None:
    cloud.host_refresh(config, args.host)
    out.message('%s: listings and placement ask its libvirtd until its host worker pushes a newer state' % args.host,
                {'host': args.host, 'refreshed': True})


# -- the parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--config', default=argparse.SUPPRESS, help='configuration file (default /etc/maglica.conf or $MAGLICA_CONFIG)')
    common.add_argument('--json', action='store_true', default=argparse.SUPPRESS, help='print JSON for scripts')
    common.add_argument('--fresh', action='store_true', default=argparse.SUPPRESS,
                        help="ask every host's libvirtd, not the states the host workers pushed (host_state.fresh)")
    parser = argparse.ArgumentParser(prog='maglica', description='Maglica: a small cloud on libvirt.',
                                     epilog='Exit codes: 0 done, 1 failed, 2 usage error, 3 not found, 4 conflict.')
    parser.add_argument('--config', default=None, help='configuration file (default /etc/maglica.conf or $MAGLICA_CONFIG)')
    parser.add_argument('--json', action='store_true', default=False, help='print JSON for scripts')
    parser.add_argument('--fresh', action='store_true', default=False,
                        help="ask every host's libvirtd, not the states the host workers pushed (host_state.fresh)")
    groups = parser.add_subparsers(dest='group', metavar='{image,vm,log,host}')
    groups.required = True

    def group(name: str, help_text: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        sub = groups.add_parser(name, help=help_text, description=help_text)
        commands = sub.add_subparsers(dest='command', metavar='COMMAND')
        commands.required = True
        return commands

    def command(commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, function: Command,
                help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(function=function)
        return sub

    def with_name(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument('--name', required=True, help='the VM name')
        return sub

    def with_filters(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument('--name', action='append', help='only names matching this shell pattern (repeatable)')
        sub.add_argument('--host', action='append', help='only this host (repeatable)')
        return sub

    image = group('image', 'original images')
    with_filters(command(image, 'list', image_list, 'list the images of every host'))
    sub = command(image, 'copy', image_copy_command, 'copy an image to another host')
    sub.add_argument('--name', required=True, help='the image')
    sub.add_argument('--dest', required=True, help='the host to copy it to')
    sub.add_argument('--source', help='the host to copy it from (default: any that holds it)')
    sub.add_argument('--timeout', type=int, default=3600, help='seconds to wait for the copy (default 3600)')
    sub = command(image, 'remove', image_remove, 'remove an image (its domain and disks) from hosts')
    sub.add_argument('--name', required=True, help='the image')
    sub.add_argument('--on', action='append', metavar='HOST', help='only from this host (repeatable; default every host)')
    sub.add_argument('--force-dependants', action='store_true',
                     help='even when linked clones use its disks as backing files: those clones go first')
    sub.add_argument('--timeout', type=int, default=600, help='seconds to wait for the removal jobs (default 600)')
    sub = command(image, 'create', image_create, 'make an image from a shut-off VM, without its machine identity')
    sub.add_argument('--name', required=True, help='name of the new image')
    sub.add_argument('--from-vm', required=True, metavar='VM', help='the shut-off VM to copy (it is left as it is)')
    sub.add_argument('--timeout', type=int, default=3600, help='seconds to wait for the job (default 3600)')

    sub = command(image, 'import', image_import_command, 'make an original image from a disk image URL on the hosts')
    sub.add_argument('--name', required=True, help='the image to make')
    source = sub.add_mutually_exclusive_group(required=True)
    source.add_argument('--url', help='http://, https:// or file:/// URL each host worker fetches')
    source.add_argument('--path', help='a local file, uploaded to each host through libvirt storage streams')
    sub.add_argument('--checksum', help='sha256:<64 hex digits> of the file (required with --url)')
    sub.add_argument('--on', action='append', help='a host to make it on (repeatable; default every host)')
    sub.add_argument('--vcpus', type=int, default=1, help='virtual CPUs (default 1)')
    sub.add_argument('--memory', type=_size_arg, default='1G', help='memory with a unit (default 1G)')
    sub.add_argument('--disk-size', type=_size_arg, help='grow the disk to this size, for example 20G')
    net = sub.add_mutually_exclusive_group()
    net.add_argument('--network', help='libvirt network of its NIC (default: default)')
    net.add_argument('--bridge', help='host bridge of its NIC instead of a libvirt network')
    sub.add_argument('--firmware', choices=import_job.FIRMWARES, default='bios', help='bios or uefi (default bios)')
    sub.add_argument('--disk-mode', choices=import_job.DISK_MODES, default='copy',
                     help='the disk is a copy of the cached file, or a qcow2 overlay on it (default copy)')
    sub.add_argument('--keep-cache', action='store_true',
                     help='with --disk-mode copy, keep the downloaded file in the cache for later imports of it')
    sub.add_argument('--domain-type', choices=import_job.DOMAIN_TYPES, default='kvm',
                     help='kvm, or qemu for software emulation (default kvm)')
    sub.add_argument('--max-virtual-size', type=_size_arg, metavar='SIZE',
                     help="refuse an image whose virtual size is larger (default 1T, the host workers')")
    sub.add_argument('--max-download-size', type=_size_arg, metavar='SIZE',
                     help='refuse a download of more bytes than this (default 64G)')
    sub.add_argument('--max-download-time', type=int, metavar='SECONDS',
                     help='refuse a download that takes longer in all (default 21600, 6 hours)')
    sub.add_argument('--redirect-scheme', action='append', choices=import_job.REDIRECT_SCHEMES,
                     help='where HTTP redirects may lead (repeatable; default https only)')
    sub.add_argument('--timeout', type=int, default=3600, help='seconds to wait for the jobs (default 3600)')

    vms = group('vm', 'virtual machines')
    sub = with_filters(command(vms, 'list', vm_list, 'list the VMs of every host'))
    sub.add_argument('--state', action='append', help='only VMs in this state: running, stopped... (repeatable)')
    sub = command(vms, 'clone', vm_clone, 'clone an image to a new VM on the best host')
    sub.add_argument('--image', required=True, help='the image to clone')
    sub.add_argument('--hostname', required=True, help='name of the new VM')
    sub.add_argument('--on', help='put it on this host')
    sub.add_argument('--exclude-host', action='append', metavar='HOST', help='never put it on this host (repeatable)')
    sub.add_argument('--spread-group', metavar='GROUP',
                     help='a group of related VMs: its clones go to different hosts while there are hosts left')
    sub.add_argument('--allow-unreachable', action='store_true',
                     help='clone even when a host cannot be reached (it may hold a VM of that name: refused without this)')
    sub.add_argument('--dry-run', action='store_true',
                     help='only show where it would go: per candidate host its score, reserved clones, free memory and '
                          'disk, and why other hosts were filtered out')
    sub.add_argument('--start', type=_bool_arg, default=True, help='start it (default true)')
    sub.add_argument('--mode', choices=cloud.CLONE_MODES, default='full', help='full copy or linked overlay (default full)')
    sub.add_argument('--timeout', type=int, default=600, help='seconds to wait for the clone (default 600)')
    sub.add_argument('--wait-for', choices=reach.WAIT_FOR, default='none',
                     help='then wait until it has an address (ip) or answers SSH with its new host key (ssh)')
    sub.add_argument('--wait-for-timeout', type=int, default=300, help='seconds to wait for --wait-for (default 300)')
    sub.add_argument('--cloud-init-user-data', metavar='FILE', type=_text_file_arg,
                     help='cloud-init user-data for an image with cloud-init (#cloud-config is merged with ours)')
    with_name(command(vms, 'start', vm_state('running'), 'start a VM'))
    sub = with_name(command(vms, 'stop', vm_state('stopped'), 'shut a VM down and wait until it is off'))
    sub.add_argument('--timeout', type=int, default=120, help='seconds to wait for the shutdown (default 120)')
    sub.add_argument('--force', action='store_true', help='destroy it if it is not off in time')
    with_name(command(vms, 'destroy', vm_state('destroyed'), 'power a VM off at once'))
    sub = with_name(command(vms, 'remove', vm_state('absent'), 'undefine a VM and delete its disks'))
    sub.add_argument('--force', action='store_true', help='even when it runs (it is destroyed first)')
    sub.add_argument('--force-dependants', action='store_true',
                     help='even when it is an original image or its disks back linked clones: those clones go first')
    sub.add_argument('--timeout', type=int, default=120, help='seconds to wait for the removal job (default 120)')
    sub = with_name(command(vms, 'attach-iso', vm_attach_iso, 'put an ISO of its host in the CD-ROM drive'))
    sub.add_argument('--iso', required=True, help='absolute path of the ISO on the VM\'s host, in one of its storage pools')
    sub = with_name(command(vms, 'set-boot-device', vm_set_boot_device, 'boot from this device'))
    sub.add_argument('--device', required=True, type=lambda t: t.split(','), help='hd, cdrom, network or fd; several comma-separated')
    sub = with_name(command(vms, 'attach-disk', vm_attach_disk, 'add a new disk'))
    sub.add_argument('--size', required=True, type=_size_arg, help='size with a unit, for example 10G')
    sub = with_name(command(vms, 'set-vcpus', vm_set_vcpus, 'set the number of virtual CPUs'))
    sub.add_argument('--vcpus', required=True, type=int, help='number of virtual CPUs')
    sub = with_name(command(vms, 'set-memory', vm_set_memory, 'set the memory'))
    sub.add_argument('--size', required=True, type=_size_arg, help='memory with a unit, for example 2G or 512M')
    sub = command(vms, 'migrate', vm_migrate, 'move a VM to another host: live when it runs, cold when it is stopped')
    sub.add_argument('name', help='the VM')
    sub.add_argument('--host', help='the destination (default: the host placement chooses)')
    how = sub.add_mutually_exclusive_group()
    how.add_argument('--live', dest='live', action='store_true', default=None, help='it must run: migrate it live')
    how.add_argument('--cold', dest='live', action='store_false', help='it must be stopped: copy its disks and define it there')
    sub.add_argument('--dry-run', action='store_true', help='only show where it would go')
    sub.add_argument('--timeout', type=int, default=1800, help='seconds to wait for the migration (default 1800)')
    with_name(command(vms, 'info', vm_info, 'show a VM: its host, state and VNC port'))
    with_name(command(vms, 'console', vm_console, 'attach to its serial console (virsh console)'))
    snapshot_help = 'internal snapshots of a VM (made, reverted and deleted by its host worker)'
    snaps = vms.add_parser('snapshot', help=snapshot_help, description=snapshot_help).add_subparsers(
        dest='snapshot_command', metavar='COMMAND')
    snaps.required = True
    sub = with_name(command(snaps, 'list', vm_snapshot_list, 'list its snapshots: time, memory, size'))
    sub.add_argument('--timeout', type=int, default=120, help='seconds to wait for the listing job (default 120)')
    for verb, state, text in (('create', 'present', 'make a snapshot (nothing if it exists)'),
                              ('revert', 'reverted', 'roll the VM back to a snapshot'),
                              ('delete', 'absent', 'delete a snapshot')):
        sub = with_name(command(snaps, verb, vm_snapshot(state), text))
        sub.add_argument('--snapshot', required=True, help='the snapshot name')
        sub.add_argument('--timeout', type=int, default=600, help='seconds to wait for the job (default 600)')
        if verb == 'create':
            sub.add_argument('--memory', action='store_true', help='a running VM: save its memory too')
            sub.add_argument('--description', help='one line kept with the snapshot')
            sub.add_argument('--keep', type=int, help='then keep at most this many snapshots (the oldest others go)')

    log = group('log', 'the job log of the client worker')
    sub = command(log, 'status', log_status, 'show one job')
    sub.add_argument('--id', required=True, type=_job_id_arg, help='the job id')
    sub = command(log, 'tail', log_tail, 'show the latest jobs')
    sub.add_argument('--limit', type=int, default=20, help='how many (default 20)')
    sub.add_argument('--host', help='only jobs for this host')

    host = group('host', 'hypervisors')
    command(host, 'list', host_list, 'show every host, its libvirtd, its worker and whether it is in maintenance')
    sub = command(host, 'drain', host_drain, 'put a host in maintenance (no new VM goes there) and move its VMs to the '
                  'hosts placement chooses: running ones live, stopped ones cold; images stay')
    sub.add_argument('host', metavar='HOST', help='the host')
    sub.add_argument('--max-parallel', type=int, default=maintenance.MAX_PARALLEL,
                     help='migrations at once (default %d)' % maintenance.MAX_PARALLEL)
    sub.add_argument('--timeout', type=int, default=int(maintenance.DRAIN_TIMEOUT),
                     help='seconds to wait for each migration (default %d)' % maintenance.DRAIN_TIMEOUT)
    sub.add_argument('--dry-run', action='store_true', help='only show where each VM would go; change nothing')
    sub = command(host, 'activate', host_activate, 'bring a host back from maintenance: placement sees it again')
    sub.add_argument('host', metavar='HOST', help='the host')
    sub = command(host, 'refresh', host_refresh, "after changing a host by hand (virsh): ask its libvirtd, not its "
                  'pushed state, until its host worker pushes a newer one')
    sub.add_argument('host', metavar='HOST', help='the host')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(args.json)
    try:
        config = config_mod.load(args.config)
        if args.fresh:
            config.host_state['fresh'] = True
        args.function(config, args, out)
    except NotFoundError as e:
        _stderr(str(e))
        return EXIT_NOT_FOUND
    except ConflictError as e:
        _stderr(str(e))
        return EXIT_CONFLICT
    except MaglicaError as e:
        _stderr(str(e))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _stderr('interrupted')
        return 130
    return EXIT_OK


if __name__ == '__main__':
    raise SystemExit(main())
