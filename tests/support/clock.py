"""The fake clock the test stacks share: sidecar and the development provider read the same `now`
(so token lifetimes agree), and tests move it forward instead of sleeping."""

from __future__ import annotations

import time


class FakeClock:
    """Starts at the current whole second; `advance(seconds)` moves it on."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
