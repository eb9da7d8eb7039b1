# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The benchmarks' calls into the library fit the library's signatures, without running a benchmark.

`make bench-clone` crashed after 40 s of set-up with "clone_volumes() missing 1 required positional argument:
'domain_uuid'" (issue 17): the library's signature had changed and nothing that runs in `make test` calls the
benchmarks. Here every call of a library function, in the scripts and in the code they run inside a host's
namespace (Python source held in a string), is bound to that function's signature.
"""

from __future__ import annotations

import ast
import glob
import importlib
import inspect
import os
import re

import pytest

BENCHMARKS = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'benchmarks'))


def trees(path):
    """The script's syntax tree, and the trees of the programs it holds in strings (code run in a namespace)."""
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    found = [(os.path.basename(path), tree)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(r'^from maglica[. ]', node.value, re.M):
            # A %-template (module_overhead's LIBRARY_ALONE) is filled in with a name before it runs.
            source = re.sub(r'%[rsd]', 'placeholder', node.value)
            label = '%s, the program in a string at line %d,' % (os.path.basename(path), node.lineno)
            found.append((label, ast.parse(source, label)))
    return found


def library_names(tree):
    """{local name: object} of what the tree imports from the library (`from maglica import X [as Y]`, `from maglica.m import f`)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split('.')[0] == 'maglica' and not node.level:
            package = importlib.import_module(node.module)
            for alias in node.names:
                value = getattr(package, alias.name, None)
                if value is None:  # a submodule not imported by the package itself
                    value = importlib.import_module('%s.%s' % (node.module, alias.name))
                names[alias.asname or alias.name] = value
    return names


def calls(tree, names):
    """(call node, callable) of every call of a library function or class the tree names."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, target = node.func, None
        if isinstance(func, ast.Name) and func.id in names and callable(names[func.id]):
            target = names[func.id]
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and inspect.ismodule(names.get(func.value.id)):
            target = getattr(names[func.value.id], func.attr, None)
            assert target is not None, 'line %d: %s has no %s' % (node.lineno, names[func.value.id].__name__, func.attr)
        if target is not None and callable(target):
            yield node, target


def mismatches(path):
    found = []
    for label, tree in trees(path):
        for node, target in calls(tree, library_names(tree)):
            if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
                continue  # *args or **kwargs: what they hold is not known here
            try:
                signature = inspect.signature(target)
            except (TypeError, ValueError):  # a builtin without one
                continue
            try:
                signature.bind(*node.args, **{k.arg: k.value for k in node.keywords})
            except TypeError as e:
                found.append('%s line %d: %s%s: %s' % (label, node.lineno, getattr(target, '__name__', target), signature, e))
    return found


@pytest.mark.parametrize('script', sorted(os.path.basename(p) for p in glob.glob(os.path.join(BENCHMARKS, '*.py'))))
def test_library_calls_fit_the_library(script):
    assert mismatches(os.path.join(BENCHMARKS, script)) == []


def test_a_call_that_does_not_fit_is_found(tmp_path):
    path = tmp_path / 'stale.py'
    path.write_text('PROGRAM = """\nfrom maglica.host import clone\nclone.clone_volumes(conn, image, "x", volumes, linked=False)\n"""\n')
    found = mismatches(str(path))
    assert len(found) == 1 and "missing a required argument: 'domain_uuid'" in found[0], found


@pytest.mark.parametrize('script', sorted(os.path.basename(p) for p in glob.glob(os.path.join(BENCHMARKS, '*.py'))))
def test_every_library_name_a_script_reads_exists(script):
    """`module.NAME` read anywhere (not only called): bench-image once read image_import.CACHE_DIR after it moved."""
    missing = []
    for label, tree in trees(os.path.join(BENCHMARKS, script)):
        names = library_names(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and inspect.ismodule(names.get(node.value.id))
                    and not hasattr(names[node.value.id], node.attr)):
                missing.append('%s line %d: %s has no %s' % (label, node.lineno, names[node.value.id].__name__, node.attr))
    assert missing == []
