# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fixed table of job actions a host worker runs. An action name from the network is only ever a key here.

Each action takes (context, reconcile). With reconcile=True the job was found
running after a restart: the action first checks what an earlier run left
(done: report it; half done: roll it back) and never repeats a side effect.
"""

from __future__ import annotations

from ..cluster import virt
from ..cluster.domains import check_removal, dependants, lookup
from ..errors import MaglicaError, NotFoundError
from . import batching, clone
from .image_copy import copy_image
from .image_fetch import run_import
from .image_from_vm import make_from_vm
from .vm_disks import attach_disk, console_tail


class Context(object):
    def __init__(self, config, host, job, customizer=batching.customize_alone, ownership=None, progress=None):
        self.config = config
        # progress(done, total): how far a long job is, reported with the host worker's next report.
        self.progress = progress
        # What this job makes, recorded before it is made (the host worker's record); see clone.Ownership.
        self.ownership = ownership if ownership is not None else clone.Ownership()
        self.customizer = customizer
        self.host = host
        self.job = job
        self.args = job['args']
        self.uri = config.uri(host)


def vm_clone(context, reconcile):
    with virt.Connection(context.config, context.host) as conn:
        return clone.make_clone(conn, context.uri, context.job['id'], context.args, reconcile, context.customizer,
                                context.ownership)


def vm_remove(context, reconcile):
    """Remove a VM and its disks. An original image, or a VM whose disks back linked clones, only with
    force_dependants - checked here, where it runs, not only by the library - and then its dependants go first."""
    name = context.args['name']
    with virt.Connection(context.config, context.host) as conn:
        dom = lookup(conn, name)
        if dom is None:
            if reconcile:
                return {'name': name, 'deleted_disks': [], 'removed_dependants': [], 'reconciled': True}
            raise NotFoundError('no VM named %s on %s' % (name, context.host.name))
        found = dependants(conn, name)
        check_removal(name, context.host.name, virt.describe(dom, with_sizes=False), found,
                            context.args.get('force_dependants', False), context.args.get('image', False))
        deleted = []
        for dependant in found:
            deleted.extend(clone.remove_domain(conn, dependant))
        deleted.extend(clone.remove_domain(conn, name))
        return {'name': name, 'deleted_disks': deleted, 'removed_dependants': found}


def image_from_vm(context, reconcile):
    return make_from_vm(context.config, context.host, context.job['id'], context.args, reconcile,
                                        context.ownership)


def vm_console(context, reconcile):
    with virt.Connection(context.config, context.host, readonly=True) as conn:
        return console_tail(conn, context.args['name'], context.args.get('lines') or 40)


def vm_attach_disk(context, reconcile):
    with virt.Connection(context.config, context.host) as conn:
        return attach_disk(conn, context.host.name, context.args, reconcile, context.ownership)


def image_copy(context, reconcile):
    return copy_image(context.config, context.host, context.args, reconcile, context.ownership)


def import_image(context, reconcile):
    with virt.Connection(context.config, context.host) as conn:
        return run_import(conn, context.host.name, context.job['id'], context.args, reconcile,
                                       context.ownership, context.progress,
                                       file_dirs=context.config.host_worker['file_url_dirs'])


# The fixed table; messages.ACTIONS holds each action's arguments. No test action here: see tests/noop_action.py.
ACTIONS = {
    'vm.clone': vm_clone,
    'vm.remove': vm_remove,
    'vm.attach_disk': vm_attach_disk,
    'vm.console': vm_console,
    'image.copy': image_copy,
    'image.from_vm': image_from_vm,
    'image.import': import_image,
}


def run(context, reconcile=False):
    """Run the job's action; returns {status, message, data}. Library errors end the job failed, with their message."""
    action = ACTIONS[context.job['action']]
    try:
        data = action(context, reconcile)
    except MaglicaError as e:
        return {'status': 'failed', 'message': str(e)}
    return {'status': 'succeeded', 'message': '', 'data': data or {}}
