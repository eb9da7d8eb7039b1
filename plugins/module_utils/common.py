# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every Maglica module shares: the connection options (matching doc_fragments/maglica.py),
the dependency check, and turning library errors into fail_json."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NoReturn, TypeVar

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.maglica.cloud.plugins.module_utils.maglica.controller import cloud
from ansible_collections.maglica.cloud.plugins.module_utils.maglica.errors import JobFailed, MaglicaError

# AnsibleModule (ansible-core has no type hints), and the configuration the facade loads (its type is not exported).
Module = Any
Config = Any
T = TypeVar('T')

# The configuration's keys (maglica.cluster.config.SCHEMA) that modules take; the doc fragment maglica documents them.
# tests/unit/plugins/module_utils/test_schema.py checks both against the configuration's schema.
CONNECTION_ARGUMENT_SPEC: Dict[str, Any] = dict(
    config=dict(type='path'),
    hosts=dict(type='list', elements='dict', options=dict(
        name=dict(type='str', required=True),
        weight=dict(type='int', default=10),
        address=dict(type='str'),
        uri=dict(type='str'),
        memory_mb=dict(type='int'),
    )),
    placement=dict(type='dict', options=dict(
        policy=dict(type='str', choices=['seed', 'resources']),
        memory_overcommit=dict(type='float'),
    )),
    host_state=dict(type='dict', options=dict(
        max_age=dict(type='float'),
        fresh=dict(type='bool'),
    )),
    client=dict(type='dict', options=dict(
        host=dict(type='str'),
        pub_port=dict(type='int'),
        rep_port=dict(type='int'),
        workers=dict(type='list', elements='dict', options=dict(
            name=dict(type='str', required=True),
            host=dict(type='str', required=True),
            pub_port=dict(type='int'),
            rep_port=dict(type='int'),
        )),
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

# The configuration's sections among them.
CONNECTION_SECTIONS = tuple(name for name, option in CONNECTION_ARGUMENT_SPEC.items() if option['type'] == 'dict')


# What one clone is made of: maglica_vm_clone's top-level options and the keys of each of its `vms` items
# (cloud.clone_batch's per-VM keywords, cloud.VM_KEYS, but the hostname each item names). Defaults only at the top
# level: an item's unset key takes the top level's.
CLONE_VM_KEYS = tuple(key for key in cloud.VM_KEYS if key != 'hostname')


def clone_vm_options(defaults: bool = True) -> Dict[str, Dict[str, Any]]:
    """The argument spec of one clone (top level with defaults, a `vms` item without): an option per cloud.VM_KEYS."""
    options: Dict[str, Dict[str, Any]] = dict(
        image=dict(type='str'),
        hostname=dict(type='str', aliases=['name']),
        host=dict(type='str'),
        clone_mode=dict(type='str', choices=list(cloud.CLONE_MODES)),
        start=dict(type='bool'),
        network=dict(type='dict', options=dict(
            mode=dict(type='str', choices=['dhcp', 'static'], default='dhcp'),
            device=dict(type='str'),
            address=dict(type='str'),
            prefix=dict(type='int', default=24),
            gateway=dict(type='str'),
            dns=dict(type='list', elements='str'),
            domain=dict(type='str'),
        ), required_if=[('mode', 'static', ['address'])]),
        root_password_hash=dict(type='str', no_log=True),
        ssh_authorized_keys=dict(type='list', elements='str', no_log=False),
        cloud_init_user_data=dict(type='str', no_log=True),
        spread_group=dict(type='str'),
        exclude_hosts=dict(type='list', elements='str'),
        customize=dict(type='bool'),
    )
    if defaults:
        options['clone_mode']['default'] = 'full'
        options['start']['default'] = True
        options['customize']['default'] = True
    else:
        options['hostname']['required'] = True
    return options


def clone_batch_vms(params: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The `vms` items as cloud.clone_batch takes them: each item's keys, the top-level options where it sets none."""
    if not params['vms']:
        raise MaglicaError('vms is empty: give at least one VM (a dict with its hostname)')
    vms = []
    for index, item in enumerate(params['vms']):
        vm: Dict[str, Any] = {'hostname': item['hostname']}
        for key in CLONE_VM_KEYS:
            vm[key] = item[key] if item.get(key) is not None else params.get(key)
        if not vm['image']:
            raise MaglicaError('vms[%d] (%s) names no image, and there is no top-level image to take' % (index, item['hostname']))
        vms.append(vm)
    return vms


# The definition of an original image Maglica makes (matching doc_fragments/image.py).
IMAGE_ARGUMENT_SPEC: Dict[str, Dict[str, Any]] = dict(
    vcpus=dict(type='int', default=1),
    memory=dict(type='str', default='1G'),
    disk_size=dict(type='str'),
    libvirt_network=dict(type='str'),
    bridge=dict(type='str'),
    firmware=dict(type='str', choices=['bios', 'uefi'], default='bios'),
    domain_type=dict(type='str', choices=['kvm', 'qemu'], default='kvm'),
    # Limits of an import (cloud.ImportLimits); unset: the host worker's defaults.
    max_virtual_size=dict(type='str'),
    max_download_size=dict(type='str'),
    max_download_time=dict(type='int'),
    redirect_schemes=dict(type='list', elements='str', choices=['http', 'https']),
)
IMAGE_MUTUALLY_EXCLUSIVE = [('libvirt_network', 'bridge')]


def image_settings(params: Dict[str, Any]) -> Dict[str, Any]:
    """The image definition options as the library takes them: sizes in bytes and MiB (cloud.parse_size: a bad size
    raises MaglicaError, so call it inside run())."""
    return {
        'vcpus': params['vcpus'],
        'memory_mb': cloud.parse_size(params['memory']) // 1048576,
        'disk_size': cloud.parse_size(params['disk_size'], 'G') if params.get('disk_size') else None,
        'network': params.get('libvirt_network'),
        'bridge': params.get('bridge'),
        'firmware': params['firmware'],
        'domain_type': params['domain_type'],
        'max_virtual_size': cloud.parse_size(params['max_virtual_size'], 'G') if params.get('max_virtual_size') else None,
        'max_download_size': cloud.parse_size(params['max_download_size'], 'G') if params.get('max_download_size') else None,
        'max_download_time': params.get('max_download_time'),
        'redirect_schemes': sorted(set(params['redirect_schemes'])) if params.get('redirect_schemes') else None,
    }


def argument_spec(**module_options: Dict[str, Any]) -> Dict[str, Any]:
    """The module's own options with the shared connection options."""
    spec = dict(CONNECTION_ARGUMENT_SPEC)
    spec.update(module_options)
    return spec


def require(module: Module, *libraries: str) -> None:
    """Fail with missing_required_lib and the import traceback when a library is not importable."""
    for package, trace in cloud.missing_libraries(('yaml',) + libraries):
        module.fail_json(msg=missing_required_lib(package), exception=trace)


def load_config(module: Module) -> Config:
    """The configuration from the `config` file and the inline options."""
    params = module.params
    inline: Dict[str, Any] = {}
    if params.get('hosts'):
        inline['hosts'] = [{k: v for k, v in h.items() if v is not None} for h in params['hosts']]
    for section in CONNECTION_SECTIONS:
        if params.get(section):
            inline[section] = {k: v for k, v in params[section].items() if v is not None}
    return cloud.load_config(params.get('config'), inline or None)


def run(module: Module, operation: Callable[[Config], T], *libraries: str) -> T:
    """Check dependencies, load the configuration, call operation(config); library errors become fail_json."""
    require(module, *libraries)
    try:
        config = load_config(module)
        for host, uri in sorted(config.insecure_uris().items()):
            module.warn('libvirt of %s (%s) is insecure (libvirt.insecure: true): %s'
                        % (host, uri, '; '.join(cloud.uri_problems(uri))))
        return operation(config)
    except JobFailed as e:
        # A batch's failure carries what every clone of it did (cloud.clone_batch).
        results = getattr(e, 'results', None)
        extra = {'results': results} if results is not None else {}
        fail(module, msg=str(e), job=e.job, **extra)
    except MaglicaError as e:
        fail(module, msg=str(e))


def exit_json(module: Module, **result: Any) -> NoReturn:
    """module.exit_json, which exits; the result's warnings become module warnings."""
    warn_all(module, result)
    module.exit_json(**result)
    raise AssertionError('exit_json returned')  # pragma: no cover


def fail(module: Module, **result: Any) -> NoReturn:
    """module.fail_json, which exits; the result's warnings become module warnings."""
    warn_all(module, result)
    module.fail_json(**result)
    raise AssertionError('fail_json returned')  # pragma: no cover


def warn_all(module: Module, result: Dict[str, Any]) -> None:
    """Takes a library result's `warnings` out of it into module.warn(): ansible-core deprecates passing them to
    exit_json and fail_json (to be removed in 2.23)."""
    for warning in result.pop('warnings', None) or []:
        module.warn(warning)
