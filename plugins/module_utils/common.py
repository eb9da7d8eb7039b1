# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every Maglica module shares: the connection options (matching doc_fragments/maglica.py),
the dependency check, and turning library errors into fail_json."""

from __future__ import annotations

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.maglica.cloud.plugins.module_utils.maglica import config as maglica_config
from ansible_collections.maglica.cloud.plugins.module_utils.maglica import deps, vm
from ansible_collections.maglica.cloud.plugins.module_utils.maglica.errors import JobFailed, MaglicaError

CONNECTION_ARGUMENT_SPEC = dict(
    config=dict(type='path'),
    hosts=dict(type='list', elements='dict', options=dict(
        name=dict(type='str', required=True),
        weight=dict(type='int', default=10),
        address=dict(type='str'),
        uri=dict(type='str'),
    )),
    client=dict(type='dict', options=dict(
        host=dict(type='str'),
        pub_port=dict(type='int'),
        rep_port=dict(type='int'),
    )),
    libvirt=dict(type='dict', options=dict(
        driver=dict(type='str'),
        transport=dict(type='str'),
        path=dict(type='str'),
        port=dict(type='int'),
        pki_path=dict(type='path'),
        insecure=dict(type='bool'),
    )),
    security=dict(type='dict', options=dict(
        curve=dict(type='bool'),
        key_dir=dict(type='path'),
    )),
)


# The definition of an original image Maglica makes (matching doc_fragments/image.py).
IMAGE_ARGUMENT_SPEC = dict(
    vcpus=dict(type='int', default=1),
    memory=dict(type='str', default='1G'),
    disk_size=dict(type='str'),
    libvirt_network=dict(type='str'),
    bridge=dict(type='str'),
    firmware=dict(type='str', choices=['bios', 'uefi'], default='bios'),
    domain_type=dict(type='str', choices=['kvm', 'qemu'], default='kvm'),
)
IMAGE_MUTUALLY_EXCLUSIVE = [('libvirt_network', 'bridge')]


def image_settings(params):
    """The image definition options as the library takes them: sizes in bytes and MiB (vm.parse_size: a bad size
    raises MaglicaError, so call it inside run())."""
    return {
        'vcpus': params['vcpus'],
        'memory_mb': vm.parse_size(params['memory']) // 1048576,
        'disk_size': vm.parse_size(params['disk_size'], 'G') if params.get('disk_size') else None,
        'network': params.get('libvirt_network'),
        'bridge': params.get('bridge'),
        'firmware': params['firmware'],
        'domain_type': params['domain_type'],
    }


def argument_spec(**module_options):
    """The module's own options with the shared connection options."""
    spec = dict(CONNECTION_ARGUMENT_SPEC)
    spec.update(module_options)
    return spec


def require(module, *libraries):
    """Fail with missing_required_lib and the import traceback when a library is not importable."""
    for package, trace in deps.missing(('yaml',) + libraries):
        module.fail_json(msg=missing_required_lib(package), exception=trace)


def load_config(module):
    """The configuration from the `config` file and the inline options."""
    params = module.params
    inline = {}
    if params.get('hosts'):
        inline['hosts'] = [{k: v for k, v in h.items() if v is not None} for h in params['hosts']]
    for section in ('client', 'libvirt', 'security'):
        if params.get(section):
            inline[section] = {k: v for k, v in params[section].items() if v is not None}
    return maglica_config.load(params.get('config'), inline or None)


def run(module, operation, *libraries):
    """Check dependencies, load the configuration, call operation(config); library errors become fail_json."""
    require(module, *libraries)
    try:
        config = load_config(module)
        for host, uri in sorted(config.insecure_uris().items()):
            module.warn('libvirt of %s over plain tcp (%s): unencrypted and unauthenticated (libvirt.insecure: true)' % (host, uri))
        return operation(config)
    except JobFailed as e:
        module.fail_json(msg=str(e), job=e.job)
    except MaglicaError as e:
        module.fail_json(msg=str(e))
