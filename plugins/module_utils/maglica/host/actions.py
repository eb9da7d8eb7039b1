# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fixed table of job actions a host worker runs. An action name from the network is only ever a key here.

Each action takes (context, reconcile). With reconcile=True the job was found
running after a restart: the action first checks what an earlier run left
(done: report it; half done: roll it back) and never repeats a side effect.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Set, TypedDict, cast

from ..cluster import virt
from ..cluster.config import Config, Host
from ..cluster.domains import check_removal, dependants, lookup
from ..errors import MaglicaError, NotFoundError
from . import batching, clone, migration, snapshots, spares
from .image_copy import CopyArgs, CopyResult, copy_image
from .image_fetch import ImportArgs, ImportResult, Progress, run_import
from .image_from_vm import FromVmArgs, FromVmResult, make_from_vm
from .vm_disks import (
    AttachDiskArgs,
    AttachedDisk,
    ConsoleArgs,
    ConsoleTail,
    attach_disk,
    console_tail,
)


class _Job(TypedDict):
    id: str
    host: str
    action: str  # a key of ACTIONS
    args: Dict[str, Any]  # checked against messages.ACTIONS[action]: each action reads them as its own TypedDict


class Job(_Job, total=False):
    """A job as the host worker fetches it (messages.JOB) and records it."""

    ttl: float
    created: float


class _Result(TypedDict):
    status: str  # succeeded or failed
    message: str


class Result(_Result, total=False):
    """A job's result (messages.RESULT): run() makes it, the host worker adds the job's `id`."""

    id: str
    data: Mapping[str, Any]  # the action's result data: its own TypedDict (clone.CloneResult...)


class _RemoveArgs(TypedDict):
    name: str


class RemoveArgs(_RemoveArgs, total=False):
    """A vm.remove job's args (messages.ACTIONS['vm.remove'])."""

    force_dependants: bool  # also an original image, or a VM whose disks back linked clones (they go first)
    image: bool  # only an original image is removed


class _RemoveResult(TypedDict):
    name: str
    deleted_disks: List[str]
    removed_dependants: List[str]


class RemoveResult(_RemoveResult, total=False):
    """A vm.remove job's result data."""

    reconciled: bool  # the VM was gone already after a restart


class Context(object):
    def __init__(self, config: Config, host: Host, job: Job, customizer: batching.Customizer = batching.customize_alone,
                 ownership: Optional[clone.Ownership] = None, progress: Optional[Progress] = None,
                 spare_clones: Optional[spares.SpareClones] = None) -> None:
        self.config = config
        # progress(done, total): how far a long job is, reported with the host worker's next report.
        self.progress = progress
        # What this job makes, recorded before it is made (the host worker's record); see clone.Ownership.
        self.ownership = ownership if ownership is not None else clone.Ownership()
        self.customizer = customizer
        # The host worker's spare clones (spares.py), taken by clone jobs; None: every clone copies and launches.
        self.spare_clones = spare_clones
        self.host = host
        self.job = job
        self.args = job['args']
        self.uri = config.uri(host)


# Each action reads its job's args as the TypedDict of the module that consumes them: messages.validate_job checked
# them against messages.ACTIONS before the job was recorded (the casts below say so; they do nothing at runtime).

def vm_clone(context: Context, reconcile: bool) -> clone.CloneResult:
    with virt.Connection(context.config, context.host) as conn:
        return clone.make_clone(conn, context.uri, context.job['id'], cast(clone.CloneArgs, context.args), reconcile,
                                context.customizer, context.ownership, context.spare_clones)


def vm_remove(context: Context, reconcile: bool) -> RemoveResult:
    """Remove a VM and its disks. An original image, or a VM whose disks back linked clones, only with
    force_dependants - checked here, where it runs, not only by the library - and then its dependants go first."""
    args = cast(RemoveArgs, context.args)
    name = args['name']
    with virt.Connection(context.config, context.host) as conn:
        dom = lookup(conn, name)
        if dom is None:
            if reconcile:
                return {'name': name, 'deleted_disks': [], 'removed_dependants': [], 'reconciled': True}
            raise NotFoundError('no VM named %s on %s' % (name, context.host.name))
        found = dependants(conn, name)
        check_removal(name, context.host.name, virt.describe(dom, with_sizes=False), found,
                      args.get('force_dependants', False), args.get('image', False))
        deleted = []
        for dependant in found:
            deleted.extend(clone.remove_domain(conn, dependant))
        deleted.extend(clone.remove_domain(conn, name))
        return {'name': name, 'deleted_disks': deleted, 'removed_dependants': found}


def image_from_vm(context: Context, reconcile: bool) -> FromVmResult:
    return make_from_vm(context.config, context.host, context.job['id'], cast(FromVmArgs, context.args), reconcile,
                        context.ownership)


def vm_console(context: Context, reconcile: bool) -> ConsoleTail:
    args = cast(ConsoleArgs, context.args)
    with virt.Connection(context.config, context.host, readonly=True) as conn:
        return console_tail(conn, args['name'], args.get('lines') or 40)


def vm_attach_disk(context: Context, reconcile: bool) -> AttachedDisk:
    with virt.Connection(context.config, context.host) as conn:
        return attach_disk(conn, context.host.name, cast(AttachDiskArgs, context.args), reconcile, context.ownership)


def image_copy(context: Context, reconcile: bool) -> CopyResult:
    return copy_image(context.config, context.host, cast(CopyArgs, context.args), reconcile, context.ownership)


def import_image(context: Context, reconcile: bool) -> ImportResult:
    with virt.Connection(context.config, context.host) as conn:
        return run_import(conn, context.host.name, context.job['id'], cast(ImportArgs, context.args), reconcile,
                          context.ownership, context.progress, file_dirs=context.config.host_worker['file_url_dirs'])


def vm_snapshot(context: Context, reconcile: bool) -> snapshots.SnapshotResult:
    with virt.Connection(context.config, context.host) as conn:
        return snapshots.run_snapshot(conn, context.host.name, cast(snapshots.SnapshotArgs, context.args), reconcile)


def vm_snapshot_list(context: Context, reconcile: bool) -> snapshots.SnapshotListing:
    args = cast(snapshots.ListArgs, context.args)
    with virt.Connection(context.config, context.host, readonly=True) as conn:
        return snapshots.list_snapshots(conn, context.host.name, args['name'])


def vm_migrate(context: Context, reconcile: bool) -> migration.MigrateResult:
    """Run by the source's host worker: see host/migration.py."""
    return migration.migrate(context.config, context.host, cast(migration.MigrateArgs, context.args), reconcile,
                             context.ownership)


# An action: (context, reconcile) -> its result data.
Action = Callable[[Context, bool], Mapping[str, Any]]
# The fixed table; messages.ACTIONS holds each action's arguments. No test action here: see tests/noop_action.py.
ACTIONS: Dict[str, Action] = {
    'vm.clone': vm_clone,
    'vm.remove': vm_remove,
    'vm.attach_disk': vm_attach_disk,
    'vm.console': vm_console,
    'vm.migrate': vm_migrate,
    'image.copy': image_copy,
    'image.from_vm': image_from_vm,
    'image.import': import_image,
    'vm.snapshot': vm_snapshot,
    'vm.snapshot_list': vm_snapshot_list,
}

# Actions that define, undefine, start or move no domain: their ends need no new snapshot of the host's state
# (state_push) before their results are reported.
CHANGE_NO_DOMAIN: Set[str] = {'vm.console', 'vm.snapshot_list'}


def run(context: Context, reconcile: bool = False) -> Result:
    """Run the job's action; returns {status, message, data}. Library errors end the job failed, with their message."""
    action = ACTIONS[context.job['action']]
    try:
        data = action(context, reconcile)
    except MaglicaError as e:
        return {'status': 'failed', 'message': str(e)}
    return {'status': 'succeeded', 'message': '', 'data': data or {}}
