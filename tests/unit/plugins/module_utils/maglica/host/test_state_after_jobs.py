# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host worker takes a new snapshot of its host before it reports the end of a job that may have changed its
domains, and not after one whose action changes none (actions.CHANGE_NO_DOMAIN: a console, a snapshot listing,
the tests' noop): a snapshot is a survey of the host's libvirtd, too dear for every job (issue 21, dispatch)."""

from __future__ import annotations

import os
import threading

import pytest

from maglica.client_worker import worker as client_worker
from maglica.cluster import config
from maglica.controller.client import Client
from maglica.errors import JobFailed
from maglica.host import worker as host_worker
from maglica.protocol import messages
from unit_helpers import free_ports, wait_until, write_yaml


@pytest.fixture
def cloud(tmp_path):
    pub_port, rep_port = free_ports(2)
    cfg = config.load(write_yaml(os.path.join(str(tmp_path), 'maglica.conf'), {
        'hosts': [{'name': 'kvm1', 'uri': 'test:///default'}],
        'client': {'host': '127.0.0.1', 'bind': '127.0.0.1', 'pub_port': pub_port, 'rep_port': rep_port},
        'security': {'curve': False, 'key_dir': os.path.join(str(tmp_path), 'keys')},
        'jobs': {'database': os.path.join(str(tmp_path), 'jobs.sqlite'), 'republish_interval': 0.2, 'request_timeout': 5.0},
        'host_worker': {'state_dir': os.path.join(str(tmp_path), 'state'), 'heartbeat_interval': 0.5,
                        'state_poll_interval': 600},  # the watcher's own rounds stay out of the count
    }))
    cw = client_worker.ClientWorker(cfg)
    hw = host_worker.HostWorker(cfg, 'kvm1')
    takes = []
    real_take = hw.watcher.take

    def counted_take():  # the real snapshot, counted
        takes.append(threading.current_thread().name)
        return real_take()
    hw.watcher.take = counted_take
    threads = [threading.Thread(target=w.run, daemon=True) for w in (cw, hw)]
    for thread in threads:
        thread.start()
    wait_until(lambda: takes, 10, 'the first snapshot')
    yield cfg, takes
    cw.stopping = hw.stopping = True
    for thread in threads:
        thread.join(10)
    hw.close()
    cw.close()


def test_a_job_that_changes_no_domain_costs_no_snapshot_and_one_that_may_does(cloud):
    cfg, takes = cloud
    with Client(cfg) as library:
        before = len(takes)
        noop = library.submit(messages.new_job('kvm1', 'noop', {}))
        assert library.wait(noop['id'], 10)['state'] == 'succeeded'
        assert len(takes) == before, 'a snapshot after a job that changes no domain'
        remove = library.submit(messages.new_job('kvm1', 'vm.remove', {'name': 'ghost'}))
        with pytest.raises(JobFailed):
            library.wait(remove['id'], 10)
        assert len(takes) > before, 'no snapshot before the result of a job that may have removed a domain'
