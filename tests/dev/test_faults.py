"""Fault knobs start off and reset to off."""

from __future__ import annotations

import asyncio
from dataclasses import fields

from sidecar.dev.faults import Faults


def test_faults_start_honest_and_reset_turns_everything_off() -> None:
    faults = Faults()
    assert faults == Faults()
    faults.alg_none = True
    faults.token_delay_seconds = 3.0
    faults.authorize_error = "access_denied"
    faults.token_hold = asyncio.Event()
    faults.reset()
    for field in fields(Faults):
        assert getattr(faults, field.name) == field.default
