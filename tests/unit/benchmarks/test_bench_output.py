# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A benchmark's JSON line is the last line of its output, whatever the process prints at exit (issue 10, Also)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

BENCHMARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'benchmarks')

# Exit-time noise: an atexit handler, a __del__ that fails at shutdown, a child started at the end (a clean-up
# command). A child started earlier keeps its own stdout: the benchmarks give theirs log files (workers, libvirtds).
NOISY_BENCHMARK = r'''
import atexit, subprocess, sys
sys.path.insert(0, sys.argv[1])
from bench_output import print_last

class Leaky:
    def __del__(self):
        raise RuntimeError('noise from __del__')

atexit.register(lambda: print('noise from atexit', file=sys.stderr))
leaky = Leaky()
print('progress before the result')
print_last({'result': 42}, name=sys.argv[2])
print('noise after the result')
subprocess.run(['sh', '-c', 'echo noise from a child'], check=True)
'''


def test_json_line_is_last_and_exit_output_goes_to_the_log(tmp_path):
    name = 'unit-%d' % os.getpid()
    done = subprocess.run([sys.executable, '-c', NOISY_BENCHMARK, BENCHMARKS, name], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, check=True, env=dict(os.environ, TMPDIR=str(tmp_path)))
    lines = done.stdout.decode().splitlines()
    assert lines == ['progress before the result', '{"result": 42}'], lines
    assert json.loads(lines[-1]) == {'result': 42}
    with open(os.path.join(str(tmp_path), 'maglica-bench-%s.exit.log' % name)) as handle:
        log = handle.read()
    for noise in ('noise after the result', 'noise from atexit', 'noise from __del__', 'noise from a child'):
        assert noise in log, (noise, log)


CONCLUDING_BENCHMARK = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from bench_output import conclude
quick, broken, missed = json.loads(sys.argv[3])
sys.exit(conclude({'figure': 1}, quick, broken, missed, name=sys.argv[2]))
'''


def conclude_in_process(tmp_path, quick, broken, missed):
    done = subprocess.run([sys.executable, '-c', CONCLUDING_BENCHMARK, BENCHMARKS, 'unit-conclude-%d' % os.getpid(),
                           json.dumps([quick, broken, missed])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          check=False, env=dict(os.environ, TMPDIR=str(tmp_path)))
    return done.returncode, json.loads(done.stdout.decode().splitlines()[-1]), done.stderr.decode()


def test_broken_results_fail_every_run_and_say_why(tmp_path):
    for quick in (True, False):
        code, line, err = conclude_in_process(tmp_path, quick, ['lost: 3'], [])
        assert code == 1 and line['broken'] == ['lost: 3'] and line['quick'] is quick, line
        assert 'BROKEN: lost: 3' in err, err


def test_a_quick_run_claims_no_target_and_misses_none(tmp_path):
    code, line, err = conclude_in_process(tmp_path, True, [], ['ratio 2.0 > 1.5'])
    assert code == 0 and line == {'figure': 1, 'quick': True}, line
    assert 'ratio' not in err
    code, line, err = conclude_in_process(tmp_path, False, [], ['ratio 2.0 > 1.5'])
    assert code == 1 and line['quick'] is False and line['targets_met'] is False and line['targets_missed'] == ['ratio 2.0 > 1.5']
    assert 'target missed: ratio 2.0 > 1.5' in err
    code, line, _err = conclude_in_process(tmp_path, False, [], [])
    assert code == 0 and line == {'figure': 1, 'quick': False, 'targets_met': True}, line
