# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""messages.py: frames, versions, sizes, every request type, job and argument schemas, topics, redaction."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, strategies as st

from maglica.protocol import messages
from maglica.errors import MessageError

JOB_ID = '0123456789abcdef0123456789abcdef'


def frame(data):
    return json.dumps(data).encode('utf-8')


def clone_job(**args):
    base = {'image': 'debian.original', 'hostname': 'web1.example.com', 'clone_mode': 'full', 'start': True}
    base.update(args)
    return {'id': JOB_ID, 'host': 'kvm1', 'action': 'vm.clone', 'args': base}


def test_encode_decode_round_trip():
    message = {'type': 'status', 'id': JOB_ID, 'text': 'ünïcode'}
    encoded = messages.encode(message)
    assert json.loads(encoded.decode('utf-8'))['version'] == messages.VERSION
    assert messages.decode(encoded) == message
    assert 'version' not in message, 'encode does not change its argument'


def test_decode_accepts_memoryview_like_frames():
    assert messages.decode(bytearray(messages.encode({'a': 1}))) == {'a': 1}


@pytest.mark.parametrize('data', [{'a': 1}, {'a': 1, 'version': 2}, {'a': 1, 'version': '1'}, {'a': 1, 'version': None}])
def test_version_is_checked(data):
    with pytest.raises(MessageError, match='message version must be 1'):
        messages.decode(frame(data))


@pytest.mark.parametrize('version', [True, 1.0])
def test_version_must_be_the_integer(version):
    with pytest.raises(MessageError):
        messages.decode(frame({'version': version}))


def test_size_limits():
    big = {'blob': 'x' * messages.MAX_FRAME_BYTES}
    with pytest.raises(MessageError, match=r'message of \d+ bytes is over the limit of 262144'):
        messages.encode(big)
    with pytest.raises(MessageError, match=r'frame of \d+ bytes is over the limit of 262144'):
        messages.decode(frame(dict(big, version=1)))
    # Just under the limit still passes.
    fits = {'blob': 'x' * (messages.MAX_FRAME_BYTES - 100)}
    assert messages.decode(messages.encode(fits)) == fits


@pytest.mark.parametrize('raw, message', [
    (b'not json', 'frame is not JSON'),
    (b'\xff\xfe{}', 'frame is not JSON'),
    (b'', 'frame is not JSON'),
    (b'[1, 2]', 'message must be a JSON object'),
    (b'"version"', 'message must be a JSON object'),
    (b'null', 'message must be a JSON object'),
])
def test_non_json_and_non_objects(raw, message):
    with pytest.raises(MessageError, match=message):
        messages.decode(raw)


def request(**data):
    return messages.encode(data)


@pytest.mark.parametrize('data, expected', [
    ({'type': 'submit', 'job': {'id': JOB_ID, 'host': 'kvm1', 'action': 'noop', 'args': {}}},
     ('submit', {'job': {'id': JOB_ID, 'host': 'kvm1', 'action': 'noop', 'args': {}}})),
    ({'type': 'status', 'id': JOB_ID}, ('status', {'id': JOB_ID})),
    ({'type': 'list'}, ('list', {})),
    ({'type': 'list', 'limit': 5, 'host': 'kvm1'}, ('list', {'limit': 5, 'host': 'kvm1'})),
    ({'type': 'list', 'limit': 5, 'host': None}, ('list', {'limit': 5, 'host': None})),
    ({'type': 'hosts'}, ('hosts', {})),
    ({'type': 'report', 'host': 'kvm1'}, ('report', {'host': 'kvm1'})),
    ({'type': 'report', 'host': 'kvm1', 'acks': [JOB_ID], 'running': [JOB_ID], 'pid': 42,
      'results': [{'id': JOB_ID, 'status': 'failed', 'message': 'boom', 'data': {'k': 1}}]},
     ('report', {'host': 'kvm1', 'acks': [JOB_ID], 'running': [JOB_ID], 'pid': 42,
                 'results': [{'id': JOB_ID, 'status': 'failed', 'message': 'boom', 'data': {'k': 1}}]})),
])
def test_decode_request_of_every_type(data, expected):
    assert messages.decode_request(request(**data)) == expected


@pytest.mark.parametrize('kind', [['submit'], {'a': 1}])
def test_unhashable_request_type_is_a_message_error(kind):
    with pytest.raises(MessageError, match='unknown request type'):
        messages.decode_request(request(type=kind))


@pytest.mark.parametrize('data, message', [
    ({'type': 'reboot'}, "unknown request type 'reboot'"),
    ({'id': JOB_ID}, "unknown request type 'None'"),
    ({'type': 'hosts', 'extra': 1}, r'hosts has unknown field\(s\) extra'),
    ({'type': 'status', 'id': JOB_ID, 'zz': 1, 'aa': 2}, r'status has unknown field\(s\) aa, zz'),
    ({'type': 'status'}, "status needs the field 'id'"),
    ({'type': 'status', 'id': 'abc'}, r"status\.id 'abc' is not a valid name"),
    ({'type': 'status', 'id': JOB_ID.upper()}, r'status\.id .* is not a valid name'),
    ({'type': 'status', 'id': JOB_ID + '0'}, r'status\.id .* is not a valid name'),
    ({'type': 'status', 'id': 7}, r'status\.id must be str'),
    ({'type': 'list', 'limit': 0}, r'list\.limit must be between 1 and 10000'),
    ({'type': 'list', 'limit': True}, r'list\.limit must be int'),
    ({'type': 'list', 'host': 'bad host'}, r"list\.host 'bad host' is not a valid name"),
    ({'type': 'report', 'host': 'kvm1', 'acks': [JOB_ID] * 1025}, r'report\.acks is longer than 1024'),
    ({'type': 'report', 'host': 'kvm1', 'acks': 'x'}, r'report\.acks must be list'),
    ({'type': 'report', 'host': 'bad host'}, r"report\.host 'bad host' is not a valid name"),
    ({'type': 'report', 'host': 'kvm1', 'pid': 'x'}, r'report\.pid must be int'),
    ({'type': 'submit', 'job': 'x'}, r'submit\.job must be dict'),
])
def test_bad_requests(data, message):
    with pytest.raises(MessageError, match=message):
        messages.decode_request(request(**data))


@pytest.mark.parametrize('data, kept, problem', [
    ({'acks': ['nope', JOB_ID]}, {'acks': [JOB_ID]}, r"report\.acks\[0\] 'nope' is not a valid name"),
    ({'running': [7]}, {'running': []}, r'report\.running\[0\] must be str'),
    ({'progress': [{'id': JOB_ID, 'done': 100, 'total': -1}, {'id': JOB_ID, 'done': 1, 'total': 2}]},
     {'progress': [{'id': JOB_ID, 'done': 1, 'total': 2}]}, r'report\.progress\[0\]\.total must be between 0 and'),
    ({'results': [{'id': JOB_ID, 'status': 'running'}]},
     {'results': [{'id': JOB_ID, 'status': 'failed', 'message': 'the host worker sent a result that does not validate: '
                   'report.results[0].status must be one of succeeded, failed'}]},
     r'report\.results\[0\]\.status must be one of succeeded, failed'),
    ({'results': [{'id': JOB_ID, 'status': 'failed', 'extra': 1}]}, None, r'report\.results\[0\] has unknown field\(s\) extra'),
    ({'results': ['x', {'id': 'nope', 'status': 'failed'}]}, {'results': []}, r'report\.results\[0\] must be an object'),
])
def test_a_bad_item_of_a_report_costs_that_item_only(data, kept, problem):
    """A refused report is sent again for ever while its host looks dead: a bad item is dropped (a result whose id
    validates becomes a failure saying why), the rest of the report stands."""
    kind, decoded = messages.decode_request(request(type='report', host='kvm1', pid=7, **data))
    assert kind == 'report' and decoded['host'] == 'kvm1' and decoded['pid'] == 7
    assert re.match(problem, decoded.pop('problems')[0])
    if kept is not None:
        assert decoded == dict(kept, host='kvm1', pid=7)


@pytest.mark.parametrize('job, message', [
    ({'id': 'x' * 32, 'host': 'kvm1', 'action': 'noop', 'args': {}}, r'job\.id .* is not a valid name'),
    ({'id': JOB_ID, 'host': '-kvm1', 'action': 'noop', 'args': {}}, r"job\.host '-kvm1' is not a valid name"),
    ({'id': JOB_ID, 'host': 'kvm1', 'action': 'os.system', 'args': {}},
     re.escape('job.action must be one of %s' % ', '.join(messages.ACTIONS))),
    ({'id': JOB_ID, 'host': 'kvm1', 'action': 'noop'}, r"job needs the field 'args'"),
    ({'id': JOB_ID, 'host': 'kvm1', 'action': 'noop', 'args': {}, 'ttl': 0}, r'job\.ttl must be between 1 and 604800'),
    ({'id': JOB_ID, 'host': 'kvm1', 'action': 'noop', 'args': {}, 'ttl': True}, r'job\.ttl must be int or float'),
    ({'id': JOB_ID, 'host': 'kvm1', 'action': 'noop', 'args': {}, 'owner': 'me'}, r'job has unknown field\(s\) owner'),
    ({'id': JOB_ID, 'host': 'kvm1', 'action': 'noop', 'args': {'marker': 1}}, r'job\.args\.marker must be str'),
    ({'id': JOB_ID, 'host': 'kvm1', 'action': 'noop', 'args': {'cmd': 'rm'}}, r'job\.args has unknown field\(s\) cmd'),
    ({'id': JOB_ID, 'host': 'kvm1', 'action': 'vm.remove', 'args': {}}, r"job\.args needs the field 'name'"),
])
def test_bad_jobs_in_a_submit(job, message):
    with pytest.raises(MessageError, match=message):
        messages.decode_request(request(type='submit', job=job))


def test_vm_clone_arguments_accepted():
    job = clone_job(network={'mode': 'static', 'device': 'eth0', 'address': '192.0.2.10', 'prefix': 24, 'gateway': '192.0.2.1',
                             'dns': ['192.0.2.53'], 'domain': 'example.com'},
                    root_password_hash='$6$salt$hash', ssh_authorized_keys=['ssh-ed25519 AAAA key'])
    assert messages.validate_job(job) is job
    assert messages.validate_job(clone_job(network={'mode': 'dhcp'}))


@pytest.mark.parametrize('args, message', [
    ({'clone_mode': 'reflinked'}, r'job\.args\.clone_mode must be one of full, linked'),
    ({'start': 'yes'}, r'job\.args\.start must be bool'),
    ({'start': None}, r"job\.args needs the field 'start'"),
    ({'image': '../etc'}, r"job\.args\.image '\.\./etc' is not a valid name"),
    ({'hostname': 'a' * 254}, r'job\.args\.hostname is longer than 253'),
    ({'ssh_authorized_keys': 'ssh-rsa AAA'}, r'job\.args\.ssh_authorized_keys must be list'),
    ({'ssh_authorized_keys': [1]}, r'job\.args\.ssh_authorized_keys\[0\] must be str'),
    ({'network': 'dhcp'}, r'job\.args\.network must be dict'),
    ({'network': {'mode': 'bridge'}}, r'job\.args\.network\.mode must be one of dhcp, static'),
    ({'network': {'address': '192.0.2.1'}}, r"job\.args\.network needs the field 'mode'"),
    ({'network': {'mode': 'static', 'address': '192.0.2.1', 'prefix': 33}}, r'job\.args\.network\.prefix must be between 0 and 32'),
    ({'network': {'mode': 'static', 'address': '192.0.2.1', 'mtu': 1500}}, r'job\.args\.network has unknown field\(s\) mtu'),
    ({'network': {'mode': 'dhcp', 'device': 'a-very-long-device-name'}}, r'job\.args\.network\.device is longer than 15'),
    ({'network': {'mode': 'dhcp', 'dns': '8.8.8.8'}}, r'job\.args\.network\.dns must be list'),
])
def test_vm_clone_argument_errors(args, message):
    with pytest.raises(MessageError, match=message):
        messages.validate_job(clone_job(**args))


def test_static_network_needs_an_address():
    with pytest.raises(MessageError, match='address'):
        messages.validate_job(clone_job(network={'mode': 'static'}))


@pytest.mark.parametrize('network', [
    {'mode': 'static', 'address': '192.0.2.10\n    up touch /pwned'},
    {'mode': 'static', 'address': '192.0.2.10', 'gateway': '$(reboot)'},
    {'mode': 'static', 'address': '192.0.2.10', 'dns': ['8.8.8.8\nDEVICE=evil']},
    {'mode': 'static', 'address': 'not-an-address'},
])
def test_network_values_must_be_addresses(network):
    with pytest.raises(MessageError):
        messages.validate_job(clone_job(network=network))


def test_root_password_hash_cannot_break_shadow():
    with pytest.raises(MessageError):
        messages.validate_job(clone_job(root_password_hash='x:0:0:99999:7:::\nevil::0:0:99999:7'))


def test_new_job_makes_a_valid_job_with_a_fresh_id():
    first = messages.new_job('kvm1', 'noop', {'marker': 'm'}, ttl=30)
    second = messages.new_job('kvm1', 'noop', {})
    assert messages.JOB_ID_RE.match(first['id']) and first['id'] != second['id']
    assert first['ttl'] == 30 and 'ttl' not in second
    with pytest.raises(MessageError):
        messages.new_job('kvm1', 'noop', {'marker': 'm'}, ttl=0)


def test_topics_are_unambiguous_prefixes():
    assert messages.topic('kvm1') == b'kvm1\0'
    assert not messages.topic('kvm10').startswith(messages.topic('kvm1'))
    assert not messages.topic('kvm1.example.com').startswith(messages.topic('kvm1'))
    assert messages.topic('kvm1').startswith(messages.topic('kvm1'))


def test_redact_masks_secrets_without_changing_the_job():
    job = {'id': JOB_ID, 'args': {'root_password_hash': '$6$secret', 'image': 'i'}, 'state': 'queued'}
    shown = messages.redact(job)
    assert shown['args'] == {'root_password_hash': '(secret)', 'image': 'i'}
    assert shown['state'] == 'queued'
    assert job['args']['root_password_hash'] == '$6$secret'
    assert messages.redact({'args': {'image': 'i'}}) == {'args': {'image': 'i'}}


def test_bound_result_leaves_a_small_result_alone():
    result = {'id': 'a' * 32, 'status': 'succeeded', 'message': 'ok', 'data': {'diff': [{'before': 'x' * 100, 'after': 'y'}]}}
    assert messages.bound_result(result) == result


def test_bound_result_trims_long_texts_with_a_note():
    text = 'line\n' * 40000
    result = {'id': 'a' * 32, 'status': 'succeeded', 'data': {'customization': {'diff': [{'before': text, 'after': text}]}}}
    bounded = messages.bound_result(result)
    assert messages.encoded_size(bounded['data']) <= messages.MAX_RESULT_DATA_BYTES
    diff = bounded['data']['customization']['diff'][0]
    assert diff['before'].startswith('line\n' * 100) and 'more characters trimmed by maglica' in diff['before']
    assert bounded['data']['trimmed'] == ['customization.diff[0].before: 200000 characters, the first 8192 kept',
                                          'customization.diff[0].after: 200000 characters, the first 8192 kept']
    messages.check_fields('result', bounded, messages.RESULT)


def test_bound_result_leaves_out_diffs_then_data_when_texts_are_not_enough():
    many = {'customization': {'diff': [{'before': 'b' * 9000, 'after': 'a' * 9000} for _index in range(20)]}, 'hostname': 'web1'}
    bounded = messages.bound_result({'id': 'a' * 32, 'status': 'succeeded', 'data': many})
    assert bounded['data']['hostname'] == 'web1' and 'diff' not in bounded['data']['customization']
    assert bounded['data']['trimmed'][-1].startswith('customization.diff: left out (')
    huge = {'key%d' % n: 'v' * 100 for n in range(2000)}
    bounded = messages.bound_result({'id': 'a' * 32, 'status': 'succeeded', 'data': huge, 'message': 'm' * 20000})
    assert bounded['data'] == {'trimmed': ['data: %d bytes left out, over the limit of 65536' % messages.encoded_size(huge)]}
    assert len(bounded['message']) <= messages.MAX_RESULT_MESSAGE and 'trimmed by maglica' in bounded['message']
    messages.check_fields('result', bounded, messages.RESULT)


def test_result_data_over_the_byte_limit_is_refused():
    result = {'id': 'a' * 32, 'status': 'succeeded', 'data': {'x': 'y' * messages.MAX_RESULT_DATA_BYTES}}
    with pytest.raises(MessageError, match=r'result.data is \d+ bytes, over the limit of 65536'):
        messages.check_fields('result', result, messages.RESULT)


def test_fit_job_always_fits():
    job = {'id': 'a' * 32, 'host': 'kvm1', 'action': 'vm.clone', 'late_result': None,
           'args': {'hostname': 'web1', 'ssh_authorized_keys': ['ssh-ed25519 ' + 'k' * 16000] * 10},
           'data': {'customization': {'diff': [{'before': 'b' * 8000}] * 7}, 'hostname': 'web1'}}
    assert messages.fit_job(job, 10 ** 6) is job
    fitted = messages.fit_job(job, 200 * 1024)
    assert fitted['data'] == {'customization': {}, 'hostname': 'web1'} and fitted['args'] == job['args']
    fitted = messages.fit_job(job, 100 * 1024)
    assert fitted['args']['hostname'] == 'web1' and 'left out of this reply' in fitted['args']['ssh_authorized_keys']
    assert messages.encoded_size(fitted) < 100 * 1024


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
                           lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
                           max_leaves=20)


@given(items=st.lists(json_values, max_size=8), more=st.booleans())
def test_a_list_reply_of_encoded_items_is_the_frame_encode_makes(items, more):
    """The client worker's pages of pushed states are put together from items encoded once (encode_list_reply)."""
    frame = messages.encode_list_reply('states', [messages.encoded_text(item) for item in items], more)
    assert frame == messages.encode({'ok': True, 'more': more, 'states': items})
