# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ZeroMQ sockets as Maglica uses them: CURVE keys applied, REQ that never wedges."""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Protocol

from .. import deps
from ..errors import DispatchError, MessageError
from . import curve, messages

LOG = logging.getLogger('maglica.transport')
ZAP_DOMAIN_PUB = 'maglica-pub'
ZAP_DOMAIN_REP = 'maglica-rep'

# pyzmq is imported on first use (deps.load), so its objects are not typed here: a zmq.Socket and a zmq.Context.
Socket = Any
Context = Any


class Config(Protocol):
    """What the sockets take of the configuration (cluster.config.Config, a package above this one)."""
    security: Dict[str, Any]

    def endpoints(self, which: str) -> List[str]:
        """The client workers' addresses for `which` socket, in the order they are tried."""


def zmq() -> deps.Library:
    return deps.load('zmq')


def curve_enabled(config: Config) -> bool:
    return bool(config.security['curve'])


def secure_client(sock: Socket, config: Config, name: str) -> Socket:
    """Make `sock` a CURVE client with NAME's key pair, trusting the client worker's server key."""
    if not curve_enabled(config):
        return sock
    public, secret = curve.load_pair(config.security['key_dir'], name)
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_serverkey = curve.load_public(config.security['key_dir'], curve.SERVER)
    return sock


class AllowList(object):
    """ZAP credentials provider: a key is let in when it is in the allow-list and its role fits the socket."""

    def __init__(self, allowed: Dict[bytes, str], hosts_only: bool = False) -> None:
        self.allowed = allowed
        self.hosts_only = hosts_only

    def callback(self, domain: str, key: bytes) -> bool:
        identity = self.allowed.get(key)
        if identity is None or self.hosts_only and identity == curve.LIBRARY:
            LOG.warning('refused CURVE key %s on %s', key.decode('ascii', 'replace'), domain)
            return False
        return True


class Requester(object):
    """A REQ socket that times out instead of wedging: after a timeout it is closed and reopened.

    With several client workers (one active, the others standby), a request goes to the one that answered last;
    when it does not answer, or answers that it is standby, the request goes to the next one in turn, until one
    takes it or `timeout` has passed. Every request may be sent twice: job ids make a resent submit harmless."""

    # Seconds between rounds when every client worker said it is standby: one is taking over.
    STANDBY_PAUSE = 0.2

    def __init__(self, config: Config, name: str, endpoint: Optional[str] = None, context: Optional[Context] = None) -> None:
        self.config = config
        self.name = name
        self.endpoints = [endpoint] if endpoint else config.endpoints('rep')
        self.current = 0
        self.context = context or zmq().Context.instance()
        self.sock: Optional[Socket] = None
        self.send_timeout_ms = -1  # the open socket's sndtimeo

    @property
    def endpoint(self) -> str:
        return self.endpoints[self.current]

    def _open(self) -> Socket:
        z = zmq()
        sock = self.context.socket(z.REQ)
        sock.linger = 0
        secure_client(sock, self.config, self.name)
        sock.connect(self.endpoint)
        self.sock = sock
        self.send_timeout_ms = -1
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def request(self, message: Dict[str, Any], timeout: float) -> Dict[str, Any]:
        """Send one request and return its reply, decoded and validated, or raise DispatchError after `timeout` seconds."""
        if len(self.endpoints) == 1:
            return self._request_one(message, timeout)
        deadline = time.monotonic() + timeout
        # A client worker that answered nothing gets a share of the time; the next one is tried after it.
        share = max(1.0, timeout / len(self.endpoints))
        standby: Dict[str, str] = {}
        while True:
            remaining = deadline - time.monotonic()
            try:
                reply = self._request_one(message, min(share, max(0.1, remaining)))
            except DispatchError as e:
                self.current = (self.current + 1) % len(self.endpoints)  # the next request starts with the next one
                if remaining <= share:
                    raise DispatchError('no client worker answered within %gs (%s); last: %s'
                                        % (timeout, ', '.join(self.endpoints), e))
                continue
            if reply.get('ok') or reply.get('code') != 'standby':
                return reply
            standby[self.endpoint] = reply.get('error') or 'standby'
            self.close()
            self.current = (self.current + 1) % len(self.endpoints)
            if len(standby) == len(self.endpoints):
                if time.monotonic() + self.STANDBY_PAUSE >= deadline:
                    raise DispatchError('no client worker is active (each one answered standby within %gs): %s'
                                        % (timeout, '; '.join(standby.values())))
                standby = {}
                time.sleep(self.STANDBY_PAUSE)  # a back-off between rounds, not synchronisation

    def _request_one(self, message: Dict[str, Any], timeout: float) -> Dict[str, Any]:
        sock = self.sock if self.sock is not None else self._open()
        # A send waits for a connection at most the timeout too: a REQ socket whose CURVE handshake was refused (an
        # unknown key) has none, and its send would block for ever.
        if self.send_timeout_ms != int(timeout * 1000):  # (a socket option set per request costs more than the send)
            self.send_timeout_ms = sock.sndtimeo = int(timeout * 1000)
        began = time.monotonic()
        try:
            sock.send(messages.encode(message))
            answered = sock.poll(max(0, int((timeout - (time.monotonic() - began)) * 1000)))
        except zmq().Again:
            answered = False
        if not answered:
            self.close()
            hint = ' and accepts the key %r' % self.name if curve_enabled(self.config) else ''
            raise DispatchError('no answer from the client worker at %s within %gs: check that it is running%s'
                                % (self.endpoint, timeout, hint))
        frame = sock.recv()
        try:
            return messages.validate_reply(message['type'], messages.decode(frame))
        except MessageError as e:
            self.close()
            raise DispatchError('the client worker answered with a malformed message: %s' % e)
