"""CarryOver: every configuration generation gets the same kept object."""

from __future__ import annotations

from sidecar import keys
from sidecar.app import create_app
from sidecar.carry_over import CarryOver
from sidecar.config.model import SidecarConfig


def test_the_first_ask_builds_and_later_asks_get_the_same_object() -> None:
    carry = CarryOver()
    made: list[int] = []

    def factory() -> list[int]:
        made.append(1)
        return []

    first = carry.keep("revocations", list, factory)
    second = carry.keep("revocations", list, factory)
    assert first is second and made == [1]


def test_an_object_of_another_kind_is_replaced() -> None:
    carry = CarryOver()
    carry.keep("thing", list, list)
    assert carry.keep("thing", dict, dict) == {}


def test_create_app_uses_the_given_carry_over_or_a_fresh_one() -> None:
    config = SidecarConfig.model_validate({"version": 1, "upstream": "http://127.0.0.1:9"})
    carry = CarryOver()
    assert create_app(config, carry_over=carry)[keys.CARRY_OVER] is carry
    assert create_app(config)[keys.CARRY_OVER] is not carry
