# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One schema for the configuration: maglica.cluster.config (SCHEMA, HOST_KEYS and their checks).

What else describes the configuration is checked against it, and fails here when it diverges:
- the modules' connection options, common.CONNECTION_ARGUMENT_SPEC, and the inventory plugin's sections;
- their documentation, the doc fragment maglica (plugins/doc_fragments/maglica.py), option by option;
- the roles' options that write configuration keys: the roles' configuration templates say which option
  writes which key, and each such option's type, choices and default in roles/*/meta/argument_specs.yml must
  be the key's.
Also the options that are the library's choices (clone modes, wait_for, image settings) and the job records'
TypedDicts (protocol.messages) against the tables they name."""

from __future__ import annotations

import os
import re
import typing

import pytest
import yaml

from ansible_collections.maglica.cloud.plugins.doc_fragments.maglica import ModuleDocFragment
from ansible_collections.maglica.cloud.plugins.inventory import maglica as inventory
from ansible_collections.maglica.cloud.plugins.module_utils import common
from ansible_collections.maglica.cloud.plugins.module_utils.maglica.controller import cloud, reach
from maglica.cluster import config
from maglica.protocol import messages

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..'))

# Argument spec and role types by the configuration's Python type.
SPEC_TYPES = {str: ('str', 'path'), int: ('int',), float: ('float',), bool: ('bool',), list: ('list',)}
# The configuration's keys that only one of its checks restricts to a set of values: those values.
CONFIG_CHOICES = {('placement', 'policy'): config.PLACEMENT_POLICIES, ('libvirt', 'transport'): config.TRANSPORTS}

# What the modules (and the inventory plugin) take of the configuration, and what they leave out on purpose.
MODULE_SECTIONS = ('client', 'libvirt', 'security', 'placement', 'host_state')
# The modules' sections the inventory plugin does not take, and why.
NOT_FOR_THE_INVENTORY = {'host_state': "its listing asks each host's libvirtd for the guests' addresses, which no pushed state holds"}
NOT_FOR_MODULES = {
    'jobs': "the client worker's own settings",
    'host_worker': "the host worker's own settings",
    'joblog': "the client worker's own settings",
    ('client', 'bind'): 'where the client worker binds its sockets; modules connect to client.host',
}

# Where a role writes a key with a default other than the configuration's, and why.
ROLE_DEFAULTS_OF_THEIR_OWN = {
    'host_worker_pki_path': "the host worker's own client certificate, not the library's (/etc/maglica/pki/library)",
}


def test_connection_spec_takes_the_configurations_keys():
    spec = common.CONNECTION_ARGUMENT_SPEC
    assert set(spec) == {'config', 'hosts'} | set(MODULE_SECTIONS)
    assert set(MODULE_SECTIONS) | {section for section in NOT_FOR_MODULES if isinstance(section, str)} == set(config.SCHEMA)
    for section in MODULE_SECTIONS:
        assert spec[section]['type'] == 'dict', section
        options = spec[section]['options']
        left_out = {key for key in config.SCHEMA[section] if (section, key) in NOT_FOR_MODULES}
        assert set(options) == set(config.SCHEMA[section]) - left_out, section
        for key, option in options.items():
            default, kind = config.SCHEMA[section][key]
            where = '%s.%s' % (section, key)
            assert option['type'] in SPEC_TYPES[kind], where
            # Unset, the configuration file's value (else the configuration's default) holds: no default of its own.
            assert 'default' not in option, where
            if 'choices' in option or (section, key) in CONFIG_CHOICES and '' not in CONFIG_CHOICES[section, key]:
                assert list(option.get('choices') or []) == list(CONFIG_CHOICES[section, key]), where


def test_connection_spec_hosts_are_the_configurations_hosts():
    hosts = common.CONNECTION_ARGUMENT_SPEC['hosts']
    assert (hosts['type'], hosts['elements']) == ('list', 'dict')
    assert set(hosts['options']) == set(config.HOST_KEYS)
    for key, option in hosts['options'].items():
        assert option['type'] in SPEC_TYPES[config.HOST_KEYS[key]], key
        assert option.get('default') == config.HOST_DEFAULTS.get(key), key
    assert hosts['options']['name'].get('required') is True
    assert config.validate({'hosts': ['kvm1']}).hosts[0].as_dict()['weight'] == config.HOST_DEFAULTS['weight']


def test_the_inventory_plugin_takes_the_modules_sections():
    assert set(inventory.CONNECTION_OPTIONS) | set(NOT_FOR_THE_INVENTORY) == set(common.CONNECTION_SECTIONS) == set(MODULE_SECTIONS)


# --- the doc fragment ---------------------------------------------------------------------------------------------

DOC_KEYS = ('type', 'elements', 'default', 'choices', 'required')


def _spec_as_doc(spec):
    """An argument spec in the shape of its documentation: the keys validate-modules compares, suboptions."""
    doc = {}
    for name, option in spec.items():
        entry = {key: option[key] for key in DOC_KEYS if option.get(key) not in (None, False)}
        if option.get('options'):
            entry['suboptions'] = _spec_as_doc(option['options'])
        doc[name] = entry
    return doc


def _doc_options(options):
    result = {}
    for name, option in options.items():
        entry = {key: option[key] for key in DOC_KEYS if option.get(key) not in (None, False)}
        if option.get('suboptions'):
            entry['suboptions'] = _doc_options(option['suboptions'])
        result[name] = entry
    return result


def test_the_doc_fragment_documents_the_connection_spec():
    documented = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)['options']
    for name, option in documented.items():
        assert option.get('description'), name
        for sub, suboption in (option.get('suboptions') or {}).items():
            assert suboption.get('description'), '%s.%s' % (name, sub)
    assert _doc_options(documented) == _spec_as_doc(common.CONNECTION_ARGUMENT_SPEC)


# --- the roles ----------------------------------------------------------------------------------------------------

TEMPLATES = {
    'client_worker': 'roles/client_worker/templates/maglica.conf.j2',
    'host_worker': 'roles/host_worker/templates/host_worker.conf.j2',
}
SECTION_RE = re.compile(r'^([a-z_]+):\s*$')
# `  key: {{ role_variable | filter }}` in a section of a configuration template.
KEY_RE = re.compile(r'^  ([a-z_]+): \{\{ ([a-z_]+)\b[^}]*\}\}\s*$')


def _written_keys(template):
    """{role variable: (section, key)} of the section keys a configuration template writes from role variables."""
    written = {}
    section = None
    with open(os.path.join(ROOT, template)) as handle:
        for line in handle:
            header = SECTION_RE.match(line)
            if header:
                section = header.group(1)
                continue
            found = KEY_RE.match(line)
            if found and section in config.SCHEMA:
                written[found.group(2)] = (section, found.group(1))
    return written


def _role_options(role):
    with open(os.path.join(ROOT, 'roles', role, 'meta', 'argument_specs.yml')) as handle:
        return yaml.safe_load(handle)['argument_specs']['main']['options']


def _role_defaults(role):
    with open(os.path.join(ROOT, 'roles', role, 'defaults', 'main.yml')) as handle:
        return yaml.safe_load(handle)


# `{{ ... | default(VALUE) }}`: a default taken from another host's variables, else VALUE (a quoted string, a number
# or a boolean; a variable's name is no value).
FALLBACK_RE = re.compile(r"\|\s*default\(('[^']*'|\"[^\"]*\"|[0-9.]+|true|false)\)\s*\}\}$")


def _literal_default(option):
    """(True, value) of an option's default when it is a value, or a template's final default(VALUE); else (False, None)."""
    if 'default' not in option:
        return True, None
    default = option['default']
    if isinstance(default, str) and '{{' in default:
        fallback = FALLBACK_RE.search(default)
        if not fallback:
            return False, None
        return True, yaml.safe_load(fallback.group(1))
    return True, default


@pytest.mark.parametrize('role', sorted(TEMPLATES))
def test_role_options_that_write_configuration_keys_are_the_keys(role):
    written = _written_keys(TEMPLATES[role])
    assert len(written) > 5, 'the template of %s writes no section keys: the test reads it wrong' % role
    options = _role_options(role)
    defaults = _role_defaults(role)
    divergences = []
    for variable, (section, key) in sorted(written.items()):
        where = '%s (%s.%s)' % (variable, section, key)
        if variable not in options:
            divergences.append('%s is not in the argument spec' % where)
            continue
        option = options[variable]
        default, kind = config.SCHEMA[section][key]
        if option['type'] not in SPEC_TYPES[kind]:
            divergences.append('%s: type %s, the configuration has %s' % (where, option['type'], kind.__name__))
        if (section, key) in CONFIG_CHOICES and option.get('choices') is not None \
                and list(option['choices']) != [c for c in CONFIG_CHOICES[section, key] if c]:
            divergences.append('%s: choices %s, the configuration has %s' % (where, option['choices'], CONFIG_CHOICES[section, key]))
        if kind is list and option.get('elements') not in ('str', 'path'):
            divergences.append('%s: a list of %s, the configuration takes strings' % (where, option.get('elements')))
        known, value = _literal_default(option)
        if known and variable not in ROLE_DEFAULTS_OF_THEIR_OWN and value != default:
            divergences.append('%s: default %r, the configuration has %r' % (where, value, default))
        if _literal_default({'default': defaults.get(variable)} if variable in defaults else {}) != (known, value):
            divergences.append('%s: defaults/main.yml has %r, the argument spec %r' % (where, defaults.get(variable), option.get('default')))
    assert not divergences, '%s diverges from maglica.cluster.config:\n%s' % (role, '\n'.join(divergences))


def test_the_hosts_the_client_worker_role_writes_have_the_configurations_default_weight():
    with open(os.path.join(ROOT, TEMPLATES['client_worker'])) as handle:
        weight = re.search(r'weight: \{\{ hostvars\[host\]\.maglica_weight \| default\(([0-9]+)\)', handle.read())
    assert weight and int(weight.group(1)) == config.HOST_DEFAULTS['weight']


def test_the_placement_policy_choices_are_the_configurations():
    assert _role_options('client_worker')['client_worker_placement_policy']['choices'] == list(config.PLACEMENT_POLICIES)


# --- the library's choices ----------------------------------------------------------------------------------------

def test_module_choices_are_the_librarys():
    clone = common.clone_vm_options()
    assert clone['clone_mode']['choices'] == list(messages.CLONE_MODES) == list(cloud.CLONE_MODES)
    assert clone['network']['options']['mode']['choices'] == list(messages.NETWORK_MODES)
    image = common.IMAGE_ARGUMENT_SPEC
    assert image['firmware']['choices'] == list(messages.FIRMWARES)
    assert image['domain_type']['choices'] == list(messages.DOMAIN_TYPES)
    assert image['redirect_schemes']['choices'] == list(messages.REDIRECT_SCHEMES)
    assert list(cloud.WAIT_FOR) == list(reach.WAIT_FOR)


def test_a_clones_options_are_the_librarys_clone_keywords():
    assert set(common.clone_vm_options()) == set(cloud.VM_KEYS)
    assert set(common.clone_vm_options(defaults=False)) == set(cloud.VM_KEYS)
    assert set(common.CLONE_VM_KEYS) == set(cloud.VM_KEYS) - {'hostname'}


# --- the job records ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('record, schema', [(messages.Job, messages.JOB), (messages.Notice, messages.NOTICE),
                                            (messages.Result, messages.RESULT)])
def test_job_records_are_their_schemas(record, schema):
    assert set(typing.get_type_hints(record)) == set(schema)
    assert record.__required_keys__ == {name for name, field in schema.items() if field.required}
