# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""common.py: the shared connection options match the doc fragment; configuration and errors reach the module."""

from __future__ import annotations

import contextlib
import json
import re

import pytest
import yaml

# Plain imports: a missing ansible (or build/collections, made by `make collection-link`) fails the suite, never skips it.
from ansible.module_utils import basic, testing
from ansible_collections.maglica.cloud.plugins.doc_fragments import image as image_fragment
from ansible_collections.maglica.cloud.plugins.doc_fragments import maglica as fragment
from ansible_collections.maglica.cloud.plugins.module_utils import common
from ansible_collections.maglica.cloud.plugins.module_utils.maglica import errors as collection_errors


def spec_shape(spec):
    """{option: (type, required, default, elements, suboptions)} of an argument spec or a documented options block."""
    shape = {}
    for name, option in spec.items():
        shape[name] = (option.get('type', 'str'), bool(option.get('required', False)), option.get('default'), option.get('elements'),
                       spec_shape(option.get('options') or option.get('suboptions') or {}))
    return shape


def test_argument_spec_matches_the_doc_fragment():
    documented = yaml.safe_load(fragment.ModuleDocFragment.DOCUMENTATION)['options']
    assert spec_shape(common.CONNECTION_ARGUMENT_SPEC) == spec_shape(documented)


def test_argument_spec_adds_module_options_without_changing_the_shared_one():
    spec = common.argument_spec(image=dict(type='str', required=True))
    assert spec['image'] == dict(type='str', required=True) and 'hosts' in spec
    assert 'image' not in common.CONNECTION_ARGUMENT_SPEC


@contextlib.contextmanager
def module_with(args):
    """A real AnsibleModule given `args`; it exits (fail_json) inside the context, where its output profile is set."""
    with testing.patch_module_args(args):
        yield basic.AnsibleModule(argument_spec=common.argument_spec(), supports_check_mode=True)


def test_load_config_from_file_and_inline_options(tmp_path):
    path = tmp_path / 'maglica.conf'
    path.write_text(yaml.safe_dump({'hosts': ['from-file'], 'client': {'host': 'file-client', 'pub_port': 6000}}))
    with module_with({'config': str(path), 'client': {'host': 'inline-client'}, 'libvirt': {'transport': 'ssh'}}) as module:
        cfg = common.load_config(module)
    assert [h.name for h in cfg.hosts] == ['from-file']
    assert cfg.client['host'] == 'inline-client' and cfg.client['pub_port'] == 6000
    assert cfg.libvirt['transport'] == 'ssh' and cfg.libvirt['driver'] == 'qemu'
    with module_with({'config': str(path), 'hosts': [{'name': 'inline', 'weight': 3}]}) as module:
        assert [(h.name, h.weight, h.uri) for h in common.load_config(module).hosts] == [('inline', 3, None)]


def test_load_config_takes_placement_and_host_memory_inline(tmp_path):
    path = tmp_path / 'maglica.conf'
    path.write_text(yaml.safe_dump({'hosts': ['from-file'], 'placement': {'memory_overcommit': 1.5}}))
    with module_with({'config': str(path), 'placement': {'policy': 'resources'},
                      'hosts': [{'name': 'small', 'memory_mb': 2048}, {'name': 'big'}]}) as module:
        cfg = common.load_config(module)
    assert cfg.placement['policy'] == 'resources' and cfg.placement['memory_overcommit'] == 1.5
    assert [h.memory_mb for h in cfg.hosts] == [2048, None]


def test_run_turns_library_errors_into_fail_json(capsys):
    def operation(config):
        raise collection_errors.NotFoundError('image x is not on any host (asked: %s)' % config.hosts[0].name)
    with module_with({'hosts': [{'name': 'kvm1'}]}) as module, pytest.raises(SystemExit) as caught:
        common.run(module, operation)
    assert caught.value.code == 1
    result = json.loads(capsys.readouterr().out)
    assert result['failed'] and result['msg'] == 'image x is not on any host (asked: kvm1)'


def test_run_reports_the_job_of_a_failed_job(capsys):
    def operation(config):
        raise collection_errors.JobFailed('job 1 failed: boom', {'id': '1', 'state': 'failed'})
    with module_with({'hosts': [{'name': 'kvm1'}]}) as module, pytest.raises(SystemExit):
        common.run(module, operation)
    result = json.loads(capsys.readouterr().out)
    assert result['msg'] == 'job 1 failed: boom' and result['job'] == {'id': '1', 'state': 'failed'}


def test_run_returns_the_operations_result():
    with module_with({'hosts': [{'name': 'kvm1', 'uri': 'test:///default'}]}) as module:
        assert common.run(module, lambda config: config.uri(config.hosts[0])) == 'test:///default'


def test_invalid_configuration_fails_with_the_message(capsys):
    with module_with({'hosts': [{'name': 'kvm1', 'weight': 0}]}) as module, pytest.raises(SystemExit):
        common.run(module, lambda config: None)
    assert json.loads(capsys.readouterr().out)['msg'] == 'inline configuration: host kvm1: weight must be a positive integer'


def test_clone_batch_vms_takes_the_top_level_options_where_an_item_sets_none():
    params = dict({key: None for key in common.CLONE_VM_KEYS}, image='debian.original', clone_mode='full', start=True,
                  spread_group='web', exclude_hosts=['kvm9'], ssh_authorized_keys=['ssh-ed25519 AAAA top'])
    params['vms'] = [dict({key: None for key in common.CLONE_VM_KEYS}, hostname='web1'),
                     dict({key: None for key in common.CLONE_VM_KEYS}, hostname='db1', image='rhel.original', start=False,
                          spread_group='db', exclude_hosts=[], ssh_authorized_keys=[])]
    web1, db1 = common.clone_batch_vms(params)
    assert web1 == dict({key: params[key] for key in common.CLONE_VM_KEYS}, hostname='web1')
    assert (db1['image'], db1['start'], db1['spread_group'], db1['clone_mode']) == ('rhel.original', False, 'db', 'full')
    assert db1['exclude_hosts'] == [] and db1['ssh_authorized_keys'] == [], 'an empty list an item gives is its own'


@pytest.mark.parametrize('vms, message', [
    ([], 'vms is empty'),
    ([{'hostname': 'web1', 'image': None}], 'vms[0] (web1) names no image'),
])
def test_clone_batch_vms_refuses_what_cannot_be_cloned(vms, message):
    params = dict({key: None for key in common.CLONE_VM_KEYS}, vms=vms)
    with pytest.raises(collection_errors.MaglicaError, match=re.escape(message)):
        common.clone_batch_vms(params)


def test_clone_vm_options_give_defaults_only_at_the_top_level():
    top, item = common.clone_vm_options(), common.clone_vm_options(defaults=False)
    assert (top['clone_mode'].get('default'), top['start'].get('default')) == ('full', True)
    assert 'default' not in item['clone_mode'] and 'default' not in item['start'], 'an unset item key takes the top level'
    assert item['hostname'].get('required') is True and not top['hostname'].get('required')


def test_image_argument_spec_matches_its_doc_fragment():
    documented = yaml.safe_load(image_fragment.ModuleDocFragment.DOCUMENTATION)['options']
    assert spec_shape(common.IMAGE_ARGUMENT_SPEC) == spec_shape(documented)


def test_image_settings_converts_sizes_and_refuses_bad_ones():
    params = {'vcpus': 2, 'memory': '2G', 'disk_size': '20G', 'libvirt_network': None, 'bridge': 'br0',
              'firmware': 'uefi', 'domain_type': 'qemu'}
    unset = {'max_virtual_size': None, 'max_download_size': None, 'max_download_time': None, 'redirect_schemes': None}
    assert common.image_settings(params) == dict(unset, vcpus=2, memory_mb=2048, disk_size=20 * 1024 ** 3, network=None,
                                                 bridge='br0', firmware='uefi', domain_type='qemu')
    limits = common.image_settings(dict(params, max_virtual_size='200G', max_download_size='8', max_download_time=600,
                                        redirect_schemes=['https', 'http', 'https']))
    assert {k: limits[k] for k in unset} == {'max_virtual_size': 200 * 1024 ** 3, 'max_download_size': 8 * 1024 ** 3,
                                             'max_download_time': 600, 'redirect_schemes': ['http', 'https']}
    with pytest.raises(collection_errors.MaglicaError, match='bad size'):
        common.image_settings(dict(params, memory='lots'))


def spied(module, monkeypatch):
    """What the module is asked to warn of and to deprecate, recorded on their way to Ansible: the printed result
    cannot show them when the controller's code is loaded in the same process (other unit tests load it)."""
    said = {'warn': [], 'deprecate': []}
    for name in said:
        def spy(msg, *args, _real=getattr(module, name), _name=name, **kwargs):
            said[_name].append(msg)
            return _real(msg, *args, **kwargs)
        monkeypatch.setattr(module, name, spy)
    return said


def test_exit_turns_the_results_warnings_into_module_warnings(capsys, monkeypatch):
    # ansible-core deprecates `warnings` passed to exit_json and fail_json (to go in 2.23): they go through warn().
    with module_with({'hosts': [{'name': 'kvm1'}]}) as module, pytest.raises(SystemExit) as caught:
        said = spied(module, monkeypatch)
        common.exit_json(module, changed=True, host='kvm1', warnings=['kvm2 cannot be reached'])
    assert caught.value.code == 0
    assert json.loads(capsys.readouterr().out)['host'] == 'kvm1'
    assert said == {'warn': ['kvm2 cannot be reached'], 'deprecate': []}


def test_fail_turns_the_results_warnings_into_module_warnings(capsys, monkeypatch):
    with module_with({'hosts': [{'name': 'kvm1'}]}) as module, pytest.raises(SystemExit) as caught:
        said = spied(module, monkeypatch)
        common.fail(module, msg='drain incomplete', vms=[], warnings=['kvm2 cannot be reached'])
    assert caught.value.code == 1
    assert json.loads(capsys.readouterr().out)['msg'] == 'drain incomplete'
    assert said == {'warn': ['kvm2 cannot be reached'], 'deprecate': []}
