"""Registers the `bench` marker (the benchmark's quick run); deselect it with `-m "not bench"`."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "bench: runs bench/run.py --quick (real nginx, Apache, oidc-provider, wrk); slow",
    )
