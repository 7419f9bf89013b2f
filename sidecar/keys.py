"""Every typed application and request key, so no module invents string keys.

Each component that needs per-app state (the upstream client, the provider directory, the session
store, ...) adds its key here, next to the others.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from sidecar.config.model import SidecarConfig

CONFIG: web.AppKey[SidecarConfig] = web.AppKey("config", SidecarConfig)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock", Callable[[], float])  # type: ignore[arg-type]

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
