# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every benchmark takes --quick, the short run CI makes (issue 17), and --quick makes it smaller; nothing is run."""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys

import pytest

BENCHMARKS = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'benchmarks'))
sys.path.insert(0, BENCHMARKS)

from bench_output import parse_args  # noqa: E402  pylint: disable=wrong-import-position

# The benchmarks `make bench-NAME` runs (one script each); helpers are not benchmarks.
# drain_phase.py: a phase of bench-migrate (issue 19), which also runs alone.
HELPERS = {'bench_output.py', 'bench_workers.py', 'drain_phase.py', 'hostile.py', 'ownership_host_worker.py', 'pushers.py'}
SCRIPTS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(BENCHMARKS, '*.py')) if os.path.basename(p) not in HELPERS)

# Imports the script as a module (its main() does not run) and prints its arguments, full and quick.
ARGUMENTS = r'''
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
spec = importlib.util.spec_from_file_location('benchmark_under_test', sys.argv[2])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps([vars(module.arguments([])), vars(module.arguments(['--quick']))], default=str))
'''


def test_the_benchmarks_are_all_here():
    assert [s[:-3].replace('_', '-') for s in SCRIPTS] == sorted(
        ['list', 'clone', 'batch', 'dispatch', 'faults', 'fuzz', 'module-overhead', 'boot', 'placement', 'image', 'migrate'])


@pytest.mark.parametrize('script', SCRIPTS)
def test_every_benchmark_takes_quick_and_is_smaller_with_it(script):
    done = subprocess.run([sys.executable, '-c', ARGUMENTS, BENCHMARKS, os.path.join(BENCHMARKS, script)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert done.returncode == 0, done.stdout.decode()
    full, quick = json.loads(done.stdout.decode().splitlines()[-1])
    assert full['quick'] is False and quick['quick'] is True
    changed = {key: (full[key], quick[key]) for key in full if key != 'quick' and full[key] != quick[key]}
    assert changed, '%s: --quick changes nothing' % script


def test_quick_defaults_give_way_to_options_given():
    def parser():
        made = argparse.ArgumentParser()
        made.add_argument('--rounds', type=int, default=3)
        made.add_argument('--size', type=int, default=300)
        return made
    quick = {'rounds': 1, 'size': 50}
    assert vars(parse_args(parser(), quick, 'smaller', [])) == {'rounds': 3, 'size': 300, 'quick': False}
    assert vars(parse_args(parser(), quick, 'smaller', ['--quick'])) == {'rounds': 1, 'size': 50, 'quick': True}
    assert vars(parse_args(parser(), quick, 'smaller', ['--size', '70', '--quick'])) == {'rounds': 1, 'size': 70, 'quick': True}


def test_ci_runs_every_benchmark_of_the_makefile_in_its_short_mode():
    """A benchmark CI does not run rots: .ci/run's loops (those that boot no guest beside the demo, then the others)
    name each of the Makefile's BENCHMARKS once."""
    root = os.path.dirname(BENCHMARKS)
    with open(os.path.join(root, 'Makefile')) as handle:
        makefile = re.search(r'^BENCHMARKS := (.*)$', handle.read(), re.M).group(1).split()
    with open(os.path.join(root, '.ci', 'run')) as handle:
        ci = [name for loop in re.findall(r'^for bench in (.*); do$', handle.read(), re.M) for name in loop.split()]
    assert sorted(ci) == sorted(makefile) and len(ci) == len(set(ci))
