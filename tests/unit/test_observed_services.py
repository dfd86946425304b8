"""Every service call is observed by a method of its own (CONVENTIONS.md: no ``__getattr__``).

A method added to (or renamed in) a service Protocol must get a method in its observed class:
otherwise the call would lose its span (and, for routing, its metrics), or the class would not
implement the Protocol. These tests enumerate the Protocols' methods and fail when one has
no method of its own in the observed class's body.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from arbiter_cli.observability.observed import ObservedAgents, ObservedRouting, ObservedSecurity
from arbiter_cli.ports import AgentsPort, RoutingPort, SecurityPort
from arbiter_cli.services.agents import AgentService
from arbiter_cli.services.routing import RoutingService
from arbiter_cli.services.security import SecurityService

AREAS = [("agents", AgentsPort, AgentService, ObservedAgents),
         ("routing", RoutingPort, RoutingService, ObservedRouting),
         ("security", SecurityPort, SecurityService, ObservedSecurity)]
IDS = [area[0] for area in AREAS]


def methods(cls: type) -> list[str]:
    """The public functions of ``cls``'s own body (not inherited)."""
    return [name for name, value in vars(cls).items()
            if not name.startswith("_") and inspect.isfunction(value)]


def properties(cls: type) -> list[str]:
    return [name for name, value in vars(cls).items() if isinstance(value, property)]


def spans(fn: Callable[..., Any]) -> list[str]:
    """The span names ``fn``'s body opens: ``self._span("a.b", ...)`` or
    ``self._telemetry.span("a.b")``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    return [node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"_span", "span"} and node.args
            and isinstance(node.args[0], ast.Constant)]


@pytest.mark.parametrize(("area", "port", "plain", "observed"), AREAS, ids=IDS)
def test_every_protocol_method_is_defined_in_its_observed_class(
        area: str, port: type, plain: type, observed: type) -> None:
    """In the observed class's own body, so that no call goes unobserved."""
    missing = [name for name in methods(port) if name not in methods(observed)]
    assert not missing, f"{observed.__name__} does not define {missing}"
    assert set(properties(observed)) == set(properties(port))


@pytest.mark.parametrize(("area", "port", "plain", "observed"), AREAS, ids=IDS)
def test_an_observed_class_adds_no_method_the_protocol_does_not_have(
        area: str, port: type, plain: type, observed: type) -> None:
    assert set(methods(observed)) == set(methods(port))


@pytest.mark.parametrize(("area", "port", "plain", "observed"), AREAS, ids=IDS)
def test_each_method_opens_the_span_named_after_it(
        area: str, port: type, plain: type, observed: type) -> None:
    """``ObservedRouting.route`` opens ``routing.route`` and no other span."""
    for name in methods(observed):
        assert spans(vars(observed)[name]) == [f"{area}.{name}"], name


@pytest.mark.parametrize(("area", "port", "plain", "observed"), AREAS, ids=IDS)
def test_an_observed_method_takes_what_the_service_method_takes(
        area: str, port: type, plain: type, observed: type) -> None:
    """Same parameters, kinds and defaults as the plain service (mypy checks the types)."""
    for name in methods(port):
        ours = inspect.signature(vars(observed)[name]).parameters
        theirs = inspect.signature(vars(plain)[name]).parameters
        assert [(p.name, p.kind, p.default) for p in ours.values()] == \
               [(p.name, p.kind, p.default) for p in theirs.values()], name

