# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wire messages: one JSON object per frame, versioned, validated field by field.

Nothing that arrives over the network is turned into code: an action is a key
into a fixed table, every field is checked for type and size.
"""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse
import uuid
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    List,
    Mapping,
    Optional,
    Pattern,
    Sequence,
    Tuple,
    TypedDict,
    Union,
    cast,
)

from ..errors import MessageError
from .user_data import check_user_data

VERSION = 1
MAX_FRAME_BYTES = 256 * 1024
MAX_STRING = 4096
# Every pattern is applied with fullmatch: `$` alone would accept a trailing newline.
NAME_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+-]{0,252}')
JOB_ID_RE = re.compile(r'[0-9a-f]{32}')
# A spread group (placement): a short name, also written into the clone's libvirt metadata.
SPREAD_GROUP_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,62}')
STATES = ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'expired')
FINAL_STATES = ('succeeded', 'failed', 'expired')
# A snapshot's name (a qcow2 snapshot tag and a libvirt name) and description (one printable line); cluster/snapshots.py
# parses what users and libvirt give with them.
SNAPSHOT_NAME_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+-]{0,62}')
SNAPSHOT_DESCRIPTION_RE = re.compile(r'[^\x00-\x1f\x7f]{0,1024}')
SNAPSHOT_STATES = ('present', 'absent', 'reverted')
# A host's states (maglica_host): in maintenance it takes no new VMs and is drained.
HOST_STATES = ('maintenance', 'active')
# Choices of job arguments, named for the library's options (image_import, the modules' argument specs).
CLONE_MODES = ('full', 'linked')
NETWORK_MODES = ('dhcp', 'static')
FIRMWARES = ('bios', 'uefi')
DISK_MODES = ('copy', 'overlay')
DOMAIN_TYPES = ('kvm', 'qemu')
# Where a redirect of an image download may lead (never file://, ftp:// or data:).
REDIRECT_SCHEMES = ('http', 'https')

# The type (or types) a field's value has.
Kind = Union[type, Tuple[type, ...]]
# A field's own check: (where, value) -> the value normalised, or None to keep it as it is.
Check = Callable[[str, Any], Any]


# Records of the job protocol, as TypedDicts of their schemas below (JOB, NOTICE, RESULT); on the wire and in memory
# they are plain dicts. A test checks each against its schema (tests/unit/plugins/module_utils/test_schema.py).
class _JobRequired(TypedDict):
    id: str
    host: str
    action: str
    args: Dict[str, Any]


class Job(_JobRequired, total=False):
    """A job (JOB) as new_job makes it: what the library submits and a host worker fetches.

    new_job and validate_job return it as Dict[str, Any] for now: the library's callers still keep jobs in variables of
    that type (controller.client), which a TypedDict does not convert to."""
    ttl: float
    created: float


class Notice(TypedDict):
    """What PUB carries of a job (NOTICE): never its arguments."""
    id: str
    host: str
    action: str


class _ResultRequired(TypedDict):
    id: str
    status: str


class Result(_ResultRequired, total=False):
    """A host worker's result of one job (RESULT), in its report."""
    message: str
    data: Dict[str, Any]


class Field(object):
    """A field of a message: its type, whether it must be there, and its bounds."""

    def __init__(self, kind: Kind, required: bool = True, max_len: int = MAX_STRING, pattern: Optional[Pattern[str]] = None,
                 choices: Optional[Collection[str]] = None, items: Union[Field, Fields, None] = None,
                 minimum: Optional[float] = None, maximum: Optional[float] = None, check: Optional[Check] = None,
                 fields: Optional[Fields] = None) -> None:
        self.kind = kind
        self.fields = fields  # the schema of an object (dict) value
        self.extra_check = check
        self.required = required
        self.max_len = max_len
        self.pattern = pattern
        self.choices = choices
        self.items = items
        # Any: callers read a field's bounds as the numbers they know them to be (host.worker.progress_figures).
        self.minimum: Any = minimum
        self.maximum: Any = maximum

    def check(self, where: str, value: Any) -> Any:
        """The value, checked; a `check` function may return it normalised (addresses), which replaces it."""
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if not _is_of(value, kinds):
            raise MessageError('%s must be %s' % (where, ' or '.join(k.__name__ for k in kinds)))
        if isinstance(value, (str, list, dict)) and len(value) > self.max_len:
            raise MessageError('%s is longer than %d' % (where, self.max_len))
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise MessageError('%s %r is not a valid name' % (where, value[:80]))
        if self.choices is not None and value not in self.choices:
            raise MessageError('%s must be one of %s' % (where, ', '.join(self.choices)))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum or self.maximum is not None and value > self.maximum:
                raise MessageError('%s must be between %s and %s' % (where, self.minimum, self.maximum))
        if self.extra_check is not None:
            normalised = self.extra_check(where, value)
            if normalised is not None:
                value = normalised
        if self.fields is not None:
            check_fields(where, value, self.fields)
        if self.items is not None:
            for index, item in enumerate(value):
                if isinstance(self.items, dict):
                    check_fields('%s[%d]' % (where, index), item, self.items)
                else:
                    value[index] = self.items.check('%s[%d]' % (where, index), item)
        return value


def _is_of(value: Any, kinds: Tuple[type, ...]) -> bool:
    """Whether `value` has one of `kinds`; a bool only when bool is one of them (isinstance takes it for an int)."""
    return isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)


# A message's schema: {field name: Field}.
Fields = Dict[str, Field]


def check_fields(where: str, data: Any, fields: Fields) -> Dict[str, Any]:
    """Validate a dict against {name: Field}; unknown fields are refused."""
    if not isinstance(data, dict):
        raise MessageError('%s must be an object' % where)
    unknown = set(data) - set(fields)
    if unknown:
        raise MessageError('%s has unknown field(s) %s' % (where, ', '.join(sorted(str(u)[:40] for u in unknown))))
    for name, field in fields.items():
        if name not in data or data[name] is None:
            if field.required:
                raise MessageError('%s needs the field %r' % (where, name))
            continue
        data[name] = field.check('%s.%s' % (where, name), data[name])
    return data


def ip_address(where: str, value: str) -> str:
    """An address as ipaddress writes it, which is what goes into guest files, never the string as given.

    IPv6 scope ids (`fe80::1%eth0`) are refused: ipaddress takes anything after the `%`, newlines and shell included.
    """
    if '%' in value:
        raise MessageError('%s %r has a scope id (%%...): give the address without it' % (where, value[:80]))
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise MessageError('%s %r is not an IP address' % (where, value[:80]))
    return str(address)


def ipv4_address(where: str, value: str) -> str:
    """An IPv4 address as ipaddress writes it: static settings are IPv4 only (ifupdown `inet`, NM [ipv4], ifcfg IPADDR)."""
    address = ip_address(where, value)
    if ipaddress.ip_address(address).version != 4:
        raise MessageError('%s %r is not an IPv4 address: static network settings are IPv4 only' % (where, value[:80]))
    return address


SHA256_RE = re.compile(r'[0-9a-f]{64}')
URL_SCHEMES = ('http', 'https', 'file')


def sha256_checksum(where: str, value: str) -> str:
    """`sha256:HEX` (or the 64 hex digits alone) -> 'sha256:hex'; other algorithms are refused by name."""
    text = value.strip() if isinstance(value, str) else ''
    algorithm, _sep, digest = text.rpartition(':')
    if (algorithm.lower() or 'sha256') != 'sha256':
        raise MessageError('%s %r: only sha256 is supported (give sha256:<64 hex digits>)' % (where, text[:80]))
    if not SHA256_RE.fullmatch(digest.lower()):
        raise MessageError('%s %r is not sha256:<64 hex digits>' % (where, text[:80]))
    return 'sha256:' + digest.lower()


def fetch_url(where: str, value: str) -> None:
    """A URL a host worker may fetch: http://, https:// or file:///ABSOLUTE-PATH, no spaces or control characters."""
    if any(c in value for c in '\r\n\0\t '):
        raise MessageError('%s %r has a space or control character' % (where, value[:120]))
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in URL_SCHEMES:
        raise MessageError('%s %r: only http://, https:// and file:// URLs are fetched' % (where, value[:120]))
    if parsed.scheme == 'file' and (parsed.netloc not in ('', 'localhost') or not parsed.path.startswith('/')):
        raise MessageError('%s %r: a file:// URL names an absolute path on the host (file:///path)' % (where, value[:120]))
    if parsed.scheme != 'file' and not parsed.hostname:
        raise MessageError('%s %r has no host' % (where, value[:120]))


# A crypt(3) hash (or a locked `!`/`*`): no `:` or newline that could rewrite other /etc/shadow fields.
PASSWORD_HASH_RE = re.compile(r'[A-Za-z0-9./$=*!-]+')
# One authorized_keys line, not blank: no line breaks that would smuggle in more.
ONE_LINE_RE = re.compile(r'[^\r\n\0]*[^\s\0][^\r\n\0]*')
DOMAIN_RE = re.compile(r'(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?')

# An attached disk's volume: VM@DISK.qcow2 (vm.disk_volume_name). `@` is in no NAME, so the split is unambiguous.
VOLUME_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+-]{0,252}@[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}\.qcow2\Z')
NAME = Field(str, pattern=NAME_RE, max_len=253)
# A `path` import's upload in the pool (image_import.upload_volume_name): made by the library, taken by the job.
UPLOAD_VOLUME_RE = re.compile(r'\.maglica-upload-[0-9a-f]{32}')
OPT_NAME = Field(str, required=False, pattern=NAME_RE, max_len=253)
STRINGS = Field(list, required=False, max_len=64, items=Field(str))

NETWORK = {
    'mode': Field(str, choices=NETWORK_MODES),
    'device': Field(str, required=False, pattern=NAME_RE, max_len=15),
    'address': Field(str, required=False, max_len=64, check=ipv4_address),
    'prefix': Field(int, required=False, minimum=0, maximum=32),
    'gateway': Field(str, required=False, max_len=64, check=ipv4_address),
    'dns': Field(list, required=False, max_len=8, items=Field(str, max_len=64, check=ipv4_address)),
    'domain': Field(str, required=False, pattern=DOMAIN_RE, max_len=253),
}

BATCH = {
    'id': Field(str, pattern=JOB_ID_RE),
    'size': Field(int, minimum=1, maximum=1000),
}

# The fixed table of job actions and their arguments. Workers look actions up here.
ACTIONS = {
    'vm.clone': {
        'image': NAME,
        'hostname': NAME,
        'clone_mode': Field(str, choices=CLONE_MODES),
        'start': Field(bool),
        'network': Field(dict, required=False),
        'root_password_hash': Field(str, required=False, max_len=512, pattern=PASSWORD_HASH_RE),
        'ssh_authorized_keys': Field(list, required=False, max_len=64, items=Field(str, max_len=16384, pattern=ONE_LINE_RE)),
        # Parsed here (YAML, MIME) so that bad user-data is refused before anything is made.
        'cloud_init_user_data': Field(str, required=False, max_len=65536, check=check_user_data),
        # Placement sends the members of one group to different hosts; the host side keeps it in the metadata.
        'spread_group': Field(str, required=False, pattern=SPREAD_GROUP_RE, max_len=63),
        # A batch of clones submitted together (maglica_vm_clone vms:): `size` of its jobs go to this host, and
        # its host worker customises them in one appliance launch whatever its concurrency (batching.py).
        'batch': Field(dict, required=False, fields=BATCH),
        # False: the clone's disks are left as the image's (no appliance launch; none of the settings above apply).
        'customize': Field(bool, required=False),
    },
    # force_dependants: also an original image, or a VM whose disks back linked clones (those are removed first).
    # image: only an original image is removed (anything else fails the job); its linked clones with force_dependants.
    'vm.remove': {'name': NAME, 'force_dependants': Field(bool, required=False), 'image': Field(bool, required=False)},
    # Read-only: the last `lines` lines of the VM's serial console log (its <serial><log file=...>).
    'vm.console': {'name': NAME, 'lines': Field(int, required=False, minimum=1, maximum=200)},
    # A new qcow2 volume of `size` bytes, named `volume`, in the pool of the VM's disks, attached to its persistent config.
    'vm.attach_disk': {'name': NAME, 'volume': Field(str, pattern=VOLUME_RE, max_len=320), 'size': Field(int, minimum=1048576, maximum=2 ** 50)},
    # Run by the SOURCE's host worker: move the VM `name` to host `destination`, live (it runs) or cold (it is
    # stopped); see host/migration.py.
    'vm.migrate': {'name': NAME, 'destination': NAME, 'live': Field(bool)},
    # Run by the destination's host worker: copy the image's volumes from host `source` through libvirt streams.
    'image.copy': {'image': NAME, 'source': NAME},
    # A new original image `image` copied from the shut-off VM `vm` of the same host, sealed (no machine identity).
    'image.from_vm': {'image': NAME, 'vm': NAME},
    # Run by each target's host worker: fetch `url` (checked against `checksum`) into its cache, make the disk, define
    # the original image `name`. See image_import.py.
    'image.import': {
        'name': NAME,
        # The URL the host worker fetches, or (a `path` import) the volume of its pool the library uploaded the file
        # to, and that file's path on the uploading machine (`origin`, only recorded in the image's metadata).
        'url': Field(str, required=False, max_len=2048, check=fetch_url),
        'upload': Field(str, required=False, pattern=UPLOAD_VOLUME_RE, max_len=64),
        'origin': Field(str, required=False, max_len=2048, pattern=ONE_LINE_RE),
        'checksum': Field(str, max_len=80, check=sha256_checksum),
        'vcpus': Field(int, required=False, minimum=1, maximum=1024),
        'memory_mb': Field(int, required=False, minimum=16, maximum=2 ** 24),
        'disk_size': Field(int, required=False, minimum=1048576, maximum=2 ** 50),
        'network': Field(str, required=False, pattern=NAME_RE, max_len=253),
        'bridge': Field(str, required=False, pattern=NAME_RE, max_len=15),
        'firmware': Field(str, required=False, choices=FIRMWARES),
        'disk_mode': Field(str, required=False, choices=DISK_MODES),
        # disk_mode copy: keep the cache entry the copy was made from (by default it goes once the copy is made).
        'keep_cache': Field(bool, required=False),
        'domain_type': Field(str, required=False, choices=DOMAIN_TYPES),
        'pool': Field(str, required=False, pattern=NAME_RE, max_len=253),
        # Limits of the import (import_job.Limits; the host worker's defaults when not given): the image's virtual
        # size, the bytes and seconds of its download, and the schemes a redirect may lead to (never file or ftp).
        'max_virtual_size': Field(int, required=False, minimum=1048576, maximum=2 ** 50),
        'max_download_size': Field(int, required=False, minimum=1, maximum=2 ** 50),
        'max_download_time': Field(int, required=False, minimum=1, maximum=86400 * 7),
        'redirect_schemes': Field(list, required=False, max_len=2, items=Field(str, choices=REDIRECT_SCHEMES)),
    },
    # Snapshots (host/snapshots.py): create (present, then prune the oldest beyond `keep`), revert, delete one
    # internal snapshot of VM `name`; and list them with their sizes (read-only).
    'vm.snapshot': {
        'name': NAME,
        'snapshot': Field(str, pattern=SNAPSHOT_NAME_RE, max_len=63),
        'state': Field(str, choices=SNAPSHOT_STATES),
        'memory': Field(bool, required=False),
        'description': Field(str, required=False, max_len=1024, pattern=SNAPSHOT_DESCRIPTION_RE),
        'keep': Field(int, required=False, minimum=1, maximum=1000),
    },
    'vm.snapshot_list': {'name': NAME},
}
# Production has no test action: the test suite adds its `noop` to this table and actions.ACTIONS itself
# (tests/noop_action.py). `choices` below are the live table, so such an entry is known wherever it was added.

JOB = {
    'id': Field(str, pattern=JOB_ID_RE),
    'host': NAME,
    'action': Field(str, choices=ACTIONS),
    'args': Field(dict),
    'ttl': Field((int, float), required=False, minimum=1, maximum=86400 * 7),
    'created': Field((int, float), required=False),
}

# What one result may carry: a report of several results (and its acks and heartbeat) always fits one frame.
MAX_RESULT_MESSAGE = 16384
MAX_RESULT_DATA_BYTES = 64 * 1024
# A text (a diff's before or after) kept whole in a result that is over MAX_RESULT_DATA_BYTES.
MAX_RESULT_TEXT = 8 * 1024


# The frames' JSON: compact, keys sorted, non-ASCII escaped. One encoder for every message (json.dumps with options
# builds a new one per call).
FRAME_JSON = json.JSONEncoder(separators=(',', ':'), sort_keys=True)


def encoded_text(value: Any) -> str:
    """`value` as encode() writes it in a frame (ASCII: non-ASCII characters escaped)."""
    return FRAME_JSON.encode(value)


def encoded_size(value: Any) -> int:
    """Bytes of `value` in a frame, encoded as encode() does."""
    return len(encoded_text(value))


def encode_list_reply(key: str, items: Sequence[str], more: bool) -> bytes:
    """The frame of an ok reply {key: [items], more}, each item already encoded (encoded_text): what encode() would
    make of the reply with the items decoded, without encoding them a second time."""
    fields = {'ok': 'true', 'more': 'true' if more else 'false', 'version': str(VERSION), key: '[%s]' % ','.join(items)}
    frame = ('{%s}' % ','.join('%s:%s' % (json.dumps(name), fields[name]) for name in sorted(fields))).encode('ascii')
    if len(frame) > MAX_FRAME_BYTES:
        raise MessageError('message of %d bytes is over the limit of %d' % (len(frame), MAX_FRAME_BYTES))
    return frame


def result_data_size(where: str, data: Dict[str, Any]) -> None:
    size = encoded_size(data)
    if size > MAX_RESULT_DATA_BYTES:
        raise MessageError('%s is %d bytes, over the limit of %d' % (where, size, MAX_RESULT_DATA_BYTES))


RESULT = {
    'id': Field(str, pattern=JOB_ID_RE),
    'status': Field(str, choices=('succeeded', 'failed')),
    'message': Field(str, required=False, max_len=MAX_RESULT_MESSAGE),
    'data': Field(dict, required=False, max_len=1024, check=result_data_size),
}

# A host's state as its host worker pushes it (cluster/host_state.py: snapshot). Names as libvirt allows them (a
# domain made with virsh need not follow NAME_RE); everything shown, nothing used as a path by the library.
DOMAIN_NAME_RE = re.compile(r'[^\x00-\x1f\x7f/]{1,253}')
DIGEST_RE = re.compile(r'[0-9a-f]{64}')
UUID_RE = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}')
DOMAIN_STATES = ('nostate', 'running', 'blocked', 'paused', 'shutdown', 'shutoff', 'crashed', 'pmsuspended', 'unknown')
OPT_SHORT = Field(str, required=False, max_len=64)
OPT_SIZE = Field(int, required=False, minimum=0, maximum=2 ** 62)


def _string_map(where: str, value: Dict[Any, Any]) -> None:
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str) or len(key) > 64 or len(item) > MAX_STRING:
            raise MessageError('%s must map short names to strings' % where)


DOMAIN_DISK = {'device': Field(str, max_len=16), 'target': OPT_SHORT, 'path': Field(str, required=False),
               'format': OPT_SHORT, 'capacity': OPT_SIZE, 'allocation': OPT_SIZE}
DOMAIN_INFO = {
    'name': Field(str, pattern=DOMAIN_NAME_RE, max_len=253), 'uuid': Field(str, pattern=UUID_RE, max_len=36),
    'active': Field(bool), 'state': Field(str, choices=DOMAIN_STATES), 'vcpus': Field(int, minimum=0, maximum=2 ** 20),
    'memory_mb': Field(int, minimum=0, maximum=2 ** 40), 'disks': Field(list, max_len=64, items=DOMAIN_DISK),
    'interfaces': Field(list, max_len=64, items={'type': OPT_SHORT, 'mac': OPT_SHORT}),
    'vnc_port': Field(int, required=False, minimum=0, maximum=65535), 'clone_of': Field(str, required=False, max_len=253),
    'clone_mode': OPT_SHORT, 'ssh_host_keys': Field(list, required=False, max_len=16, items=Field(str)),
    'spread_group': Field(str, required=False, max_len=63), 'image': Field(dict, required=False, max_len=32, check=_string_map),
}
IMAGE_STORAGE = {'disk_bytes': OPT_SIZE, 'pool': Field(str, required=False, max_len=253), 'pool_free_bytes': OPT_SIZE}


def _storage_map(where: str, value: Dict[Any, Any]) -> None:
    for key, item in value.items():
        if not isinstance(key, str) or not DOMAIN_NAME_RE.fullmatch(key):
            raise MessageError('%s has an image name that is not one' % where)
        check_fields('%s[%s]' % (where, key[:80]), item, IMAGE_STORAGE)


HOST_STATE = {'memory_mb': Field(int, minimum=0, maximum=2 ** 40), 'cpus': Field(int, minimum=0, maximum=2 ** 20),
              'domains': Field(list, max_len=4096, items=DOMAIN_INFO),
              'storage': Field(dict, max_len=4096, check=_storage_map)}
# The views of the pushed states the library asks for (cluster/host_state.py): each host's whole state (VM
# listings), its original images only (image listings), or what one placement reads of it.
STATE_VIEWS = ('domains', 'images', 'placement')
HOST_NAMES = Field(list, required=False, max_len=10000, items=NAME)

PROGRESS = {'done': Field(int, minimum=0, maximum=2 ** 62), 'total': Field(int, minimum=0, maximum=2 ** 62)}
PROGRESS_ENTRY = dict(PROGRESS, id=Field(str, pattern=JOB_ID_RE))

# Requests on the client worker's REP socket, by their `type`.
REQUESTS = {
    # `seen`: the slot reservations on the job's host that the library counted when it chose that host. The
    # client worker refuses the job as stale (code 'stale') when that host has others now; the library re-plans.
    'submit': {'job': Field(dict), 'seen': Field(list, required=False, max_len=4096, items=Field(str, pattern=JOB_ID_RE))},
    # The slot reservations of every open clone job, and the hosts in maintenance: what placement counts.
    'slots': {},
    # A host's maintenance flag (maglica_host): set (maintenance), cleared (active), or only read (no state).
    'maintenance': {'host': NAME, 'state': Field(str, required=False, choices=HOST_STATES)},
    'status': {'id': Field(str, pattern=JOB_ID_RE)},
    # A listing comes in pages that each fit a frame: `after` is the last job id of the page before.
    'list': {'limit': Field(int, required=False, minimum=1, maximum=10000), 'host': OPT_NAME,
             'after': Field(str, required=False, pattern=JOB_ID_RE)},
    'hosts': {},
    # A host worker asks for the jobs whose notices it got (only its own are given out).
    'fetch': {'host': NAME, 'ids': Field(list, max_len=256, items=Field(str, pattern=JOB_ID_RE))},
    # A host worker's report: acknowledgements, results and its heartbeat in one message.
    'report': {
        'host': NAME,
        'acks': Field(list, required=False, max_len=1024, items=Field(str, pattern=JOB_ID_RE)),
        'results': Field(list, required=False, max_len=256, items=RESULT),
        'running': Field(list, required=False, max_len=1024, items=Field(str, pattern=JOB_ID_RE)),
        'pid': Field(int, required=False),
        # How far running jobs are (bytes done of total; total 0 when unknown), for status and progress bars.
        'progress': Field(list, required=False, max_len=1024, items=PROGRESS_ENTRY),
        # The digest of the host's state as its host worker last took it (host_state.digest): the client worker
        # asks for the state (`state_wanted`) when it holds another.
        'state_digest': Field(str, required=False, pattern=DIGEST_RE),
        # Seconds since that state was taken.
        'state_age_s': Field((int, float), required=False, minimum=0, maximum=86400),
    },
    # A host worker pushes its host's state: on a change, as a whole copy every host_worker.state_interval, and when
    # the client worker asks.
    'state': {'host': NAME, 'digest': Field(str, pattern=DIGEST_RE), 'state': Field(dict, fields=HOST_STATE),
              'age_s': Field((int, float), required=False, minimum=0, maximum=86400)},
    # The library changed a host's domains itself (maglica_vm: settings, power): the host's pushed state is not read
    # again until one taken after this request comes.
    'state_changed': {'host': NAME},
    # The pushed states, one page (`after`: the last host of the page before) of one view: `images` and `names` say
    # which domains placement's view keeps.
    'states': {'view': Field(str, choices=STATE_VIEWS), 'hosts': HOST_NAMES, 'after': OPT_NAME,
               'images': Field(list, required=False, max_len=1024, items=NAME),
               'names': Field(list, required=False, max_len=10000, items=NAME)},
}

JOB_IDS = Field(list, required=False, max_len=1024, items=Field(str, pattern=JOB_ID_RE))
NUMBER = Field((int, float))
OPT_NUMBER = Field((int, float), required=False)
# A job as the client worker's log holds it (joblog.COLUMNS), in status, list and submit replies.
JOB_ROW = {
    'id': Field(str, pattern=JOB_ID_RE), 'host': NAME, 'action': Field(str, max_len=64), 'args': Field(dict),
    'state': Field(str, choices=STATES), 'message': Field(str, max_len=MAX_FRAME_BYTES), 'data': Field(dict),
    'attempts': Field(int), 'created': NUMBER, 'updated': NUMBER, 'expires': NUMBER,
    'published': OPT_NUMBER, 'acked': OPT_NUMBER, 'finished': OPT_NUMBER,
    # A result that came after the job had expired: recorded, never taken for success.
    'late_result': Field(dict, required=False),
    # The last progress its host worker reported: {done, total} bytes (image jobs).
    'progress': Field(dict, required=False, fields=PROGRESS),
}
# One slot reservation: an open clone job and what it will make where.
SLOT = {'host': NAME, 'job_id': Field(str, pattern=JOB_ID_RE), 'hostname': NAME, 'image': NAME, 'start': Field(bool),
        'clone_mode': Field(str, max_len=16), 'spread_group': Field(str, required=False, pattern=SPREAD_GROUP_RE, max_len=63)}
HOST_STATUS = {'host': NAME, 'alive': Field(bool), 'last_seen_s': OPT_NUMBER, 'pid': Field(int, required=False),
               'running': Field(list, max_len=1024, items=Field(str, pattern=JOB_ID_RE)),
               'maintenance': Field(bool, required=False)}
# Replies of the client worker, by the request they answer; `ok` false replies are ERROR_REPLY.
REPLIES = {
    'submit': {'job': Field(dict, fields=JOB_ROW)},
    'status': {'job': Field(dict, fields=JOB_ROW)},
    'list': {'jobs': Field(list, max_len=10000, items=JOB_ROW), 'more': Field(bool, required=False)},
    'hosts': {'hosts': Field(list, max_len=10000, items=HOST_STATUS)},
    'slots': {'slots': Field(list, max_len=100000, items=SLOT),
              'maintenance': Field(list, required=False, max_len=10000, items=NAME)},
    'maintenance': {'host': NAME, 'maintenance': Field(bool), 'since': OPT_NUMBER, 'changed': Field(bool)},
    # Each fetched job is checked in full by validate_job before it is recorded.
    'fetch': {'jobs': Field(list, max_len=256, items=Field(dict)), 'gone': Field(list, max_len=256, items=Field(str, pattern=JOB_ID_RE))},
    'report': {'taken': JOB_IDS, 'refused': JOB_IDS, 'state_wanted': Field(bool, required=False)},
    'state': {},
    'state_changed': {},
    # Each entry's state is the client worker's (it validated the push): checked here for its shape only.
    'states': {'states': Field(list, max_len=10000, items={'host': NAME, 'age_s': NUMBER, 'state': Field(dict)}),
               'more': Field(bool)},
}
# code 'standby': a standby client worker's answer to every request; `active` names the active one when it knows it.
ERROR_REPLY = {'ok': Field(bool), 'error': Field(str, max_len=MAX_FRAME_BYTES), 'code': Field(str, required=False, max_len=64),
               'active': Field(str, required=False, max_len=255)}


def validate_reply(kind: str, reply: Dict[str, Any]) -> Dict[str, Any]:
    """A decoded reply to a `kind` request, checked like requests are: types, sizes, no unknown fields."""
    Field(bool).check('%s reply.ok' % kind, reply.get('ok'))
    fields = dict(REPLIES[kind], ok=Field(bool)) if reply['ok'] else ERROR_REPLY
    return check_fields('%s reply' % kind, reply, fields)


# Job arguments never sent back in job listings.
SECRET_ARGS = ('root_password_hash', 'cloud_init_user_data')


def redact(job: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of a logged job with secret arguments masked, for status and list replies."""
    args = dict(job['args'])
    for key in SECRET_ARGS:
        if key in args:
            args[key] = '(secret)'
    return dict(job, args=args)


TRIM_NOTE = '\n(... %d more characters trimmed by maglica: the result was over %d bytes)\n'


def _trim_texts(value: Any, path: str, notes: List[str]) -> Any:
    """A copy of `value` whose strings longer than MAX_RESULT_TEXT are cut, each with a note."""
    if isinstance(value, str) and len(value) > MAX_RESULT_TEXT:
        notes.append('%s: %d characters, the first %d kept' % (path, len(value), MAX_RESULT_TEXT))
        return value[:MAX_RESULT_TEXT] + TRIM_NOTE % (len(value) - MAX_RESULT_TEXT, MAX_RESULT_DATA_BYTES)
    if isinstance(value, dict):
        return {k: _trim_texts(v, '%s.%s' % (path, k) if path else str(k), notes) for k, v in value.items()}
    if isinstance(value, list):
        return [_trim_texts(v, '%s[%d]' % (path, i), notes) for i, v in enumerate(value)]
    return value


def _drop_key(value: Any, key: str, path: str, notes: List[str]) -> Any:
    """A copy of `value` without any dict entry named `key` (diffs), each noted."""
    if isinstance(value, dict):
        kept = {}
        for k, v in value.items():
            where = '%s.%s' % (path, k) if path else str(k)
            if k == key:
                notes.append('%s: left out (%d bytes)' % (where, encoded_size(v)))
                continue
            kept[k] = _drop_key(v, key, where, notes)
        return kept
    if isinstance(value, list):
        return [_drop_key(v, key, '%s[%d]' % (path, i), notes) for i, v in enumerate(value)]
    return value


def bound_result(result: Dict[str, Any]) -> Dict[str, Any]:
    """A result the client worker accepts and a report can carry: its message at most MAX_RESULT_MESSAGE
    characters, its data at most MAX_RESULT_DATA_BYTES. Long texts (file diffs) are trimmed first, then
    diffs left out, then the data replaced; `data.trimmed` says what was cut. A small result is returned as is."""
    result = dict(result)
    message = result.get('message') or ''
    if len(message) > MAX_RESULT_MESSAGE:
        cut = MAX_RESULT_MESSAGE - 200
        result['message'] = message[:cut] + TRIM_NOTE % (len(message) - cut, MAX_RESULT_MESSAGE)
    data = result.get('data') or {}
    if not isinstance(data, dict) or encoded_size(data) <= MAX_RESULT_DATA_BYTES and len(data) <= 1024:
        return result
    notes: List[str] = []
    data = _trim_texts(data, '', notes)
    data['trimmed'] = notes
    if encoded_size(data) > MAX_RESULT_DATA_BYTES:
        data = _drop_key(data, 'diff', '', notes)
        data['trimmed'] = notes
    if encoded_size(data) > MAX_RESULT_DATA_BYTES or len(data) > 1024:
        size = encoded_size(result.get('data'))
        data = {'trimmed': ['data: %d bytes left out, over the limit of %d' % (size, MAX_RESULT_DATA_BYTES)]}
    result['data'] = data
    return result


def without_diffs(job: Dict[str, Any]) -> Dict[str, Any]:
    """A job row for a listing: its result's file diffs left out (the status of the one job has them)."""
    job = dict(job)
    notes: List[str] = []
    job['data'] = _drop_key(job.get('data') or {}, 'diff', '', notes)
    if job.get('late_result'):
        job['late_result'] = _drop_key(job['late_result'], 'diff', '', notes)
    return job


def fit_job(job: Dict[str, Any], limit: int) -> Dict[str, Any]:
    """`job` if it encodes within `limit` bytes; else without diffs; else with its data, and arguments longer
    than 1 KiB, left out with a note. A reply of one job always fits a frame."""
    if encoded_size(job) <= limit:
        return job
    job = without_diffs(job)
    if encoded_size(job) <= limit:
        return job
    size = encoded_size(job['data'])
    args = {k: v if encoded_size(v) <= 1024 else '(%d bytes, left out of this reply)' % encoded_size(v) for k, v in job['args'].items()}
    return dict(job, args=args, data={'trimmed': ['data: %d bytes left out of this reply' % size]},
                late_result=job.get('late_result') and {'status': job['late_result'].get('status')})


def new_job_id() -> str:
    return uuid.uuid4().hex


def new_job(host: str, action: str, args: Mapping[str, Any], ttl: Optional[float] = None) -> Dict[str, Any]:
    """Build and validate a job (a Job) for `host`."""
    job: Job = {'id': new_job_id(), 'host': host, 'action': action, 'args': dict(args)}
    if ttl is not None:
        job['ttl'] = ttl
    return validate_job(cast(Dict[str, Any], job))


def validate_job(job: Dict[str, Any]) -> Dict[str, Any]:
    """`job` itself, checked against JOB and its action's arguments (values normalised in place)."""
    check_fields('job', job, JOB)
    check_fields('job.args', job['args'], ACTIONS[job['action']])
    if job['action'] == 'vm.clone' and job['args'].get('network'):
        check_network('job.args.network', job['args']['network'])
    if job['action'] == 'image.import' and ('url' in job['args']) == ('upload' in job['args']):
        raise MessageError('job.args needs url or upload, one of them')
    return job


def check_network(where: str, network: Any) -> None:
    """Guest network settings: every value checked, since they are written into guest files."""
    check_fields(where, network, NETWORK)
    if network['mode'] == 'static':
        if not network.get('address'):
            raise MessageError('%s: mode static needs an address' % where)


def encode(message: Mapping[str, Any]) -> bytes:
    """Serialise a message (adds the version) to one frame of bytes."""
    data = dict(message, version=VERSION)
    frame = encoded_text(data).encode('utf-8')
    if len(frame) > MAX_FRAME_BYTES:
        raise MessageError('message of %d bytes is over the limit of %d' % (len(frame), MAX_FRAME_BYTES))
    return frame


def decode(frame: Union[bytes, bytearray, memoryview]) -> Dict[str, Any]:
    """Parse one frame into a dict, checking size, JSON, version and that it is an object."""
    if len(frame) > MAX_FRAME_BYTES:
        raise MessageError('frame of %d bytes is over the limit of %d' % (len(frame), MAX_FRAME_BYTES))
    try:
        data = json.loads(bytes(frame).decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as e:
        raise MessageError('frame is not JSON: %s' % str(e)[:200])
    except RecursionError:
        raise MessageError('frame is nested too deeply')
    if not isinstance(data, dict):
        raise MessageError('message must be a JSON object')
    version = data.pop('version', None)
    if not isinstance(version, int) or isinstance(version, bool) or version != VERSION:
        raise MessageError('message version must be %d' % VERSION)
    return data


def decode_request(frame: Union[bytes, bytearray, memoryview]) -> Tuple[str, Dict[str, Any]]:
    """Decode and validate a request for the client worker's REP socket."""
    data = decode(frame)
    kind = data.pop('type', None)
    if not isinstance(kind, str) or kind not in REQUESTS:
        raise MessageError('unknown request type %r' % (str(kind)[:40],))
    if kind == 'report':
        problems = check_report(data)
        if problems:  # for the client worker's log; it takes them out before anything else sees the report
            data['problems'] = problems
        return kind, data
    check_fields(kind, data, REQUESTS[kind])
    if kind == 'submit':
        validate_job(data['job'])
    return kind, data


# The lists of a report, checked item by item (check_report).
REPORT_LISTS = ('acks', 'results', 'running', 'progress')


def check_report(data: Dict[str, Any]) -> List[str]:
    """Validate a host worker's report so that one bad item costs that item, never the report: a refused report
    is sent again and again, and meanwhile the host looks dead (no heartbeat) and its results and acks wait.

    The envelope (host, pid, the lists' types and lengths) must validate. In the lists, an entry that does not is
    dropped - a progress entry, an ack, a running id; a result whose id validates becomes a failure saying why (its
    job ends, the host worker forgets it). Returns what was dropped or replaced, for the log."""
    envelope = dict(REQUESTS['report'])
    for name in REPORT_LISTS:
        envelope[name] = Field(list, required=False, max_len=REQUESTS['report'][name].max_len)
    check_fields('report', data, envelope)
    problems: List[str] = []
    for name in REPORT_LISTS:
        items = REQUESTS['report'][name].items
        if items is None:  # every list of a report says what its items are
            raise AssertionError('REQUESTS[report].%s has no item schema' % name)
        kept: List[Any] = []
        for index, item in enumerate(data.get(name) or []):
            where = 'report.%s[%d]' % (name, index)
            try:
                kept.append(check_fields(where, item, items) if isinstance(items, dict) else items.check(where, item))
            except MessageError as e:
                problems.append(str(e)[:300])
                job_id = item.get('id') if isinstance(item, dict) else None
                if name == 'results' and isinstance(job_id, str) and JOB_ID_RE.fullmatch(job_id):
                    failure: Result = {'id': job_id, 'status': 'failed',
                                       'message': 'the host worker sent a result that does not validate: %s' % str(e)[:500]}
                    kept.append(failure)
        if name in data:
            data[name] = kept
    return problems


# What PUB carries: a notice that a job waits, never its arguments (any host key can subscribe to any topic).
NOTICE = {'id': Field(str, pattern=JOB_ID_RE), 'host': NAME, 'action': Field(str, choices=ACTIONS)}


def validate_notice(notice: Any) -> Notice:
    return cast(Notice, check_fields('notice', notice, NOTICE))


def topic(host: str) -> bytes:
    """The PUB topic frame of a host: its name and a NUL, so that `kvm1` never matches `kvm10`."""
    return host.encode('utf-8') + b'\0'
