# -*- coding: utf-8 -*-
# Copyright: Maglica contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host worker's action table runs exactly the actions the protocol carries."""

from __future__ import annotations

from maglica.host import actions
from maglica.protocol import messages


def test_every_action_of_the_protocol_has_a_runner_and_no_other():
    assert set(actions.ACTIONS) == set(messages.ACTIONS)
