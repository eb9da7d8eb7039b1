# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An `image.copy` job on the destination's host worker: it reads each disk volume from the source host's libvirtd
(virStorageVolDownload) and writes it to its own (virStorageVolUpload), so the data goes from host to host and not
through the machine that asked. Holes in the source files are sent as holes (sparse streams): a thin image stays thin.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
import xml.etree.ElementTree as ET
from typing import List, Optional, TypedDict

from ..cluster import virt
from ..cluster.config import Config, Host
from ..cluster.domains import lookup
from ..cluster.virt import Connect, Pool, Volume
from ..errors import ConflictError, HostError, NotFoundError
from ..protocol.import_job import CHUNK
from . import clone


class CopyArgs(TypedDict):
    """An image.copy job's args (messages.ACTIONS['image.copy']): the image, and the host it is copied from."""

    image: str
    source: str


class CopiedDisk(TypedDict):
    source: str  # the disk's path on the source host
    path: str  # ... and here
    bytes: int  # of data sent (holes are not)
    capacity: int


class _CopyResult(TypedDict):
    image: str
    source: str


class CopyResult(_CopyResult, total=False):
    """An image.copy job's result data: the disks copied, or (reconciled) the copy found made after a restart."""

    disks: List[CopiedDisk]
    reconciled: bool


# -- the destination host worker's side ---------------------------------------------------

def pool_for(conn: Connect, directory: str) -> Pool:
    """The active pool of `conn` whose target directory is `directory`, else its `default` pool."""
    lv = virt.libvirt()
    for pool in conn.listAllStoragePools(lv.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        target = ET.fromstring(pool.XMLDesc(0)).findtext('./target/path')
        if target and os.path.normpath(target) == os.path.normpath(directory):
            return pool
    try:
        return conn.storagePoolLookupByName('default')
    except lv.libvirtError:
        raise HostError('no storage pool for %s and no pool called default' % directory)


class _Digest(object):
    """sha256 of a volume's whole content as a sparse stream carries it: holes count as the zeros they read as."""

    ZEROS = b'\0' * CHUNK

    def __init__(self) -> None:
        self.sha = hashlib.sha256()

    def data(self, data: bytes) -> None:
        self.sha.update(data)

    def hole(self, length: int) -> None:
        while length > 0:
            piece = min(length, len(self.ZEROS))
            self.sha.update(self.ZEROS[:piece])
            length -= piece

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


def volume_sha256(conn: Connect, vol: Volume) -> str:
    """sha256 (hex) of a volume's content, read through its libvirtd as a sparse stream."""
    lv = virt.libvirt()
    stream = conn.newStream(0)
    digest = _Digest()
    try:
        vol.download(stream, 0, 0, lv.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
        while True:
            data = stream.recvFlags(CHUNK, lv.VIR_STREAM_RECV_STOP_AT_HOLE)
            if data == -3:
                digest.hole(stream.recvHole(0))
                continue
            if isinstance(data, int):
                raise HostError('reading the stream of %s failed (%d)' % (vol.name(), data))
            if not data:
                break
            digest.data(data)
        stream.finish()
    except BaseException:
        try:
            stream.abort()
        except Exception:  # the stream may be finished or broken already
            pass
        raise
    return digest.hexdigest()


def stream_volume(src_conn: Connect, src_vol: Volume, dst_conn: Connect, dst_vol: Volume, verify: bool = False) -> int:
    """Pump one volume from a source libvirtd to a destination libvirtd, holes as holes. Returns bytes of data sent.

    With `verify`, the sha256 of what was sent is compared with the sha256 of the destination volume read back
    through its libvirtd; a difference is a HostError."""
    digest = _Digest()
    sent = _stream_volume(src_conn, src_vol, dst_conn, dst_vol, digest)
    if verify:
        there = volume_sha256(dst_conn, dst_vol)
        if there != digest.hexdigest():
            raise HostError('the copy of %s does not match its source: sha256 %s sent, %s written'
                            % (src_vol.path(), digest.hexdigest(), there))
    return sent


def _stream_volume(src_conn: Connect, src_vol: Volume, dst_conn: Connect, dst_vol: Volume,
                   digest: Optional[_Digest] = None) -> int:
    """Pump one volume from a source libvirtd to a destination libvirtd, holes as holes. Returns bytes of data sent."""
    lv = virt.libvirt()
    src = src_conn.newStream(0)
    dst = dst_conn.newStream(0)
    sent = 0
    try:
        src_vol.download(src, 0, 0, lv.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
        dst_vol.upload(dst, 0, 0, lv.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
        while True:
            data = src.recvFlags(CHUNK, lv.VIR_STREAM_RECV_STOP_AT_HOLE)
            if data == -3:  # at a hole: pass its length on instead of zeros
                hole = src.recvHole(0)
                dst.sendHole(hole, 0)
                if digest is not None:
                    digest.hole(hole)
                continue
            if isinstance(data, int):
                raise HostError('reading the source stream failed (%d)' % data)
            if not data:
                break
            virt.send_all(dst, data, 'the destination stream')
            if digest is not None:
                digest.data(data)
            sent += len(data)
        src.finish()
        dst.finish()
    except BaseException:
        for stream in (src, dst):
            try:
                stream.abort()
            except Exception:  # the stream may be finished or broken already
                pass
        raise
    return sent


def copy_image(config: Config, host: Host, args: CopyArgs, reconcile: bool = False,
               ownership: Optional[clone.Ownership] = None) -> CopyResult:
    """Runs in the destination's host worker: copy the image's volumes from args['source'] and define it here.

    Each volume, and the domain's UUID, is recorded in `ownership` (a clone.Ownership) before it is made. A
    restarted job takes a same-named domain for its own copy only when it has the UUID this job recorded (the
    definition is the copy's last step), and deletes a same-named volume only when this job recorded it.
    """
    lv = virt.libvirt()
    ownership = ownership if ownership is not None else clone.Ownership()
    name, source = args['image'], args['source']
    dest = host.name
    with contextlib.ExitStack() as stack:
        try:
            src_conn = stack.enter_context(virt.Connection(config, config.host(source)))
        except HostError as e:
            # The only place a host worker reaches another host's libvirtd: the source allows it only where asked.
            raise HostError('%s (an image copy reads %s with the certificate of host-worker@%s; %s\'s libvirtd allows it '
                            'only when %s has host_worker_image_copy_from: [%s] in the inventory, see the host_worker role)'
                            % (e, source, dest, source, dest, source))
        dst_conn = stack.enter_context(virt.Connection(config, host))
        there = lookup(dst_conn, name)
        if there is not None:
            if reconcile and ownership.owns_domain(there):
                return {'image': name, 'source': source, 'reconciled': True}
            raise ConflictError('%s is already defined on %s and this job did not make it' % (name, dest))
        try:
            src_dom = src_conn.lookupByName(name)
        except lv.libvirtError:
            raise NotFoundError('image %s is not on %s' % (name, source))
        if src_dom.isActive():
            raise ConflictError('image %s is running on %s; only an inactive image is copied' % (name, source))
        root = ET.fromstring(src_dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE))
        created: List[Volume] = []
        copied: List[CopiedDisk] = []
        try:
            for disk in root.findall("./devices/disk[@device='disk']"):
                source_element = disk.find('source')
                path = source_element.get('file') if source_element is not None else None
                if source_element is None or not path:
                    raise ConflictError('image %s has a disk that is not a file: it cannot be copied' % name)
                try:
                    src_vol = src_conn.storageVolLookupByPath(path)
                except lv.libvirtError:
                    raise HostError('the disk %s of %s is not in a storage pool on %s' % (path, name, source))
                if ET.fromstring(src_vol.XMLDesc(0)).find('./backingStore/path') is not None:
                    raise ConflictError('the disk %s of %s has a backing file: only self-contained images are copied' % (path, name))
                pool = pool_for(dst_conn, os.path.dirname(path))
                volume = os.path.basename(path)
                try:
                    old = pool.storageVolLookupByName(volume)
                except lv.libvirtError:
                    old = None
                if old is not None:
                    if not (reconcile and ownership.owns_volume(pool.name(), volume)):
                        raise ConflictError('the volume %s already exists on %s' % (old.path(), dest))
                    old.delete(0)  # half written by this very job before the worker restarted
                ownership.intend_volume(pool.name(), volume)
                # An empty raw file: the stream writes the source file as it is, header and all.
                vol_xml = '<volume><name>%s</name><capacity>0</capacity><target><format type="raw"/></target></volume>' % (
                    volume.replace('&', '&amp;').replace('<', '&lt;'))
                try:
                    dst_vol = pool.createXML(vol_xml, 0)
                except lv.libvirtError as e:
                    raise HostError('cannot create the volume %s on %s: %s' % (volume, dest, virt.error_text(e)))
                created.append(dst_vol)
                sent = _stream_volume(src_conn, src_vol, dst_conn, dst_vol)
                source_element.set('file', dst_vol.path())
                copied.append({'source': path, 'path': dst_vol.path(), 'bytes': sent, 'capacity': src_vol.info()[1]})
            for pool_name in set(v.storagePoolLookupByVolume().name() for v in created):
                dst_conn.storagePoolLookupByName(pool_name).refresh(0)
            for element in root.findall('uuid'):
                root.remove(element)
            domain_uuid = str(uuid.uuid4())
            ownership.intend_domain(name, domain_uuid)
            ET.SubElement(root, 'uuid').text = domain_uuid
            try:
                dst_conn.defineXML(ET.tostring(root, encoding='unicode'))
            except lv.libvirtError as e:
                raise HostError('cannot define %s on %s: %s' % (name, dest, virt.error_text(e)))
        except BaseException as failure:
            for vol in created:
                try:
                    vol.delete(0)
                except lv.libvirtError:
                    pass
            if isinstance(failure, lv.libvirtError):
                raise HostError('copying %s from %s failed: %s' % (name, source, virt.error_text(failure)))
            raise
    return {'image': name, 'source': source, 'disks': copied}
