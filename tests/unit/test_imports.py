# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The library's imports have no cycle, TYPE_CHECKING imports included (the layers themselves: .importlinter)."""

from __future__ import annotations

from typing import Dict, List, Set

import grimp


def cycles(imports: Dict[str, Set[str]]) -> List[List[str]]:
    """Each cycle of a directed graph once, as the path that closes it (depth-first, colouring)."""
    found, state, path = [], {}, []

    def visit(module: str) -> None:
        state[module] = 'open'
        path.append(module)
        for imported in sorted(imports.get(module, ())):
            if state.get(imported) == 'open':
                found.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported)
        path.pop()
        state[module] = 'done'

    for module in sorted(imports):
        if module not in state:
            visit(module)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c', 'a']]
    assert cycles({'a': {'b'}, 'b': set()}) == []


def test_the_library_has_no_import_cycle():
    graph = grimp.build_graph('maglica', exclude_type_checking_imports=False)
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    assert len(imports) > 40
    assert cycles(imports) == []
