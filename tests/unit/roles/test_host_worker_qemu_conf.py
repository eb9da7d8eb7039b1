# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host_worker role's qemu.conf block, templated by Ansible's own templar: libvirtd refuses to start with a
migration_host it takes for the local machine ("migration_host must not be the address of the local machine",
libvirt 9.0: a name beginning "localhost", 127.0.0.1, ::1), so a one-host cloud there gets none; every other address
or name (127.0.0.2 included, as the testbed's hosts have) is written as libvirt reads it."""

from __future__ import annotations

import ipaddress
import os

import pytest
import yaml
from hypothesis import given, settings, strategies as st
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                    'roles', 'host_worker')


def qemu_conf_block(migration_host):
    with open(os.path.join(ROLE, 'vars', 'main.yml')) as handle:
        role_vars = yaml.safe_load(handle)
    with open(os.path.join(ROLE, 'tasks', 'libvirtd.yml')) as handle:
        tasks = yaml.safe_load(handle)
    block = next(task['ansible.builtin.blockinfile']['block'] for task in tasks
                 if task['name'] == "Configure QEMU's migration (TLS, address)")
    variables = {name: trust_as_template(value) for name, value in role_vars.items() if isinstance(value, str)}
    variables.update(host_worker_migration_host=migration_host, host_worker_migrate_tls_dir='/etc/maglica/pki/migrate')
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(block))


# libvirt parses a numeric address before it compares (virSocketAddrIsNumericLocalhost): every spelling of ::1 is ::1.
@pytest.mark.parametrize('address', ['127.0.0.1', 'localhost', 'localhost.localdomain', '::1', '[::1]', '0:0:0:0:0:0:0:1',
                                     '0::1', '::0:1', '0:0::1', '[0::0001]', '0000:0000:0000:0000:0000:0000:0000:0001'])
def test_a_migration_host_libvirt_takes_for_the_local_machine_is_left_out(address):
    block = qemu_conf_block(address)
    assert 'migration_host =' not in block
    assert '# migration_host: not set, %s is the local machine for libvirt' % address in block
    assert 'migrate_tls_x509_cert_dir = "/etc/maglica/pki/migrate"' in block


@pytest.mark.parametrize('address', ['127.0.0.2', '127.0.0.11', '10.0.0.5', 'kvm1.example.com', 'my-localhost', '2001:db8::1', '::11',
                                     '::10', '1::1', '::1:1', '0:0:0:0:0:0:1:1'])
def test_any_other_migration_host_is_written(address):
    assert 'migration_host = "%s"' % address in qemu_conf_block(address).splitlines()


def spellings(draw, address):
    """One of the ways to write an IPv6 address: each group with or without its leading zeros, one run of zero
    groups (or none) written as "::"."""
    groups = address.exploded.split(':')
    written = [group.lstrip('0') or '0' if draw(st.booleans()) else group for group in groups]
    runs = [(start, end) for start in range(8) for end in range(start + 1, 9) if all(g == '0000' for g in groups[start:end])]
    if not runs or draw(st.booleans()):
        return ':'.join(written)
    start, end = draw(st.sampled_from(runs))
    return ':'.join(written[:start]) + '::' + ':'.join(written[end:])


@st.composite
def ipv6_spellings(draw):
    # ::1, any address, and its neighbours ::, ::2 .. ::ff.
    address = draw(st.one_of(st.just(ipaddress.IPv6Address('::1')), st.ip_addresses(v=6),
                             st.integers(0, 255).map(ipaddress.IPv6Address)))
    return spellings(draw, address)


@settings(max_examples=300, deadline=None)
@given(ipv6_spellings())
def test_an_ipv6_address_is_left_out_exactly_when_libvirt_reads_it_as_loopback(text):
    loopback = ipaddress.IPv6Address(text) == ipaddress.IPv6Address('::1')
    assert ('migration_host =' not in qemu_conf_block(text)) == loopback, text
