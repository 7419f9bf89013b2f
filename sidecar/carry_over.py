"""State that outlives one configuration: kept by the server, handed to every app it builds.

A live reload (`sidecar.reload`) builds a whole new application from the new config; almost
everything in it should be new. A few objects, though, record facts about the running process that
a reload must not forget — forgetting the per-process back-channel logout revocations would bring
revoked sessions back to life. `create_app` puts one `CarryOver` in `app[keys.CARRY_OVER]` (the
reloading server passes the same one to every generation); a component asks it for such an object
with `keep(name, kind, factory)`: the first app builds it, every later app gets that same object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class CarryOver:
    """Named objects shared by every configuration generation of one process."""

    def __init__(self) -> None:
        self._objects: dict[str, object] = {}

    def keep(self, name: str, kind: type[T], factory: Callable[[], T]) -> T:
        """The object kept under `name`; `factory` makes it the first time it is asked for."""
        found = self._objects.get(name)
        if isinstance(found, kind):
            return found
        made = factory()
        self._objects[name] = made
        return made
