"""Every public service method has a degraded-mode policy, next to it (SPEC §7, issue 18).

A method added to (or renamed in) a plain service must get a method of its own, with a policy
decorator, in its resilient class: otherwise it would silently lose its journaling. These
tests enumerate the plain services' public methods and fail when one has none.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from arbiter_cli.resilience.policy import Policy, policy_of
from arbiter_cli.resilience.records import Kind
from arbiter_cli.resilience.services import ResilientAgents, ResilientRouting, ResilientSecurity
from arbiter_cli.services.agents import AgentService
from arbiter_cli.services.routing import RoutingService
from arbiter_cli.services.security import SecurityService

PAIRS = [("agents", AgentService, ResilientAgents), ("routing", RoutingService, ResilientRouting),
         ("security", SecurityService, ResilientSecurity)]
#: What each policy's body must call on the gateway helpers of ``_Resilient``.
CALLS = {"journaled": "_write", "read": "_read", "needs_primary": "_needs_primary"}


def public_methods(cls: type) -> list[str]:
    """The service calls of ``cls``: public functions of its own body. Static methods are
    helpers that take a unit of work (``AgentService.guard``), not calls a command makes."""
    return [name for name, value in vars(cls).items()
            if not name.startswith("_") and inspect.isfunction(value) and not mutmut_copy(name)]


def mutmut_copy(name: str) -> bool:
    """A copy that ``arbiter mutate`` (mutmut 3) adds to a class beside each method."""
    return "__mutmut_" in name or "ǁ" in name


def policies(resilient: type) -> dict[str, Policy | None]:
    return {name: policy_of(value) for name, value in vars(resilient).items()
            if inspect.isfunction(value) and not name.startswith("_")}


def gateway_calls(fn: Callable[..., Any]) -> set[str]:
    """The ``self._write`` / ``self._read`` / ``self._needs_primary`` calls in ``fn``'s body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    return {node.func.attr for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "self"
            and node.func.attr in CALLS.values()}


@pytest.mark.parametrize(("area", "plain", "resilient"), PAIRS, ids=[p[0] for p in PAIRS])
def test_every_public_service_method_has_a_policy_in_its_resilient_class(
        area: str, plain: type, resilient: type) -> None:
    """Defined in the resilient class's own body (not inherited), with a policy decorator."""
    found = policies(resilient)
    missing = [name for name in public_methods(plain) if name not in found]
    assert not missing, f"{resilient.__name__} does not define {missing}"
    unmarked = [name for name in public_methods(plain) if found[name] is None]
    assert not unmarked, (f"{resilient.__name__} methods without @journaled/@read/"
                          f"@needs_primary: {unmarked}")


@pytest.mark.parametrize(("area", "plain", "resilient"), PAIRS, ids=[p[0] for p in PAIRS])
def test_a_resilient_class_adds_no_method_the_service_does_not_have(
        area: str, plain: type, resilient: type) -> None:
    """Nothing extra to keep in step: the resilient class mirrors the service exactly."""
    assert set(policies(resilient)) == set(public_methods(plain))


@pytest.mark.parametrize(("area", "plain", "resilient"), PAIRS, ids=[p[0] for p in PAIRS])
def test_each_method_body_makes_the_gateway_call_its_policy_names(
        area: str, plain: type, resilient: type) -> None:
    """A ``@journaled`` method journals (``_write``), a ``@read`` one reads, and so on; a
    journaled write that is a read under a flag (``route(dry_run=True)``) also reads."""
    for name, policy in policies(resilient).items():
        assert policy is not None
        expected = {CALLS[policy.mode]} | ({"_read"} if policy.read_when else set())
        assert gateway_calls(vars(resilient)[name]) == expected, name


def test_each_journaled_kind_is_the_policy_of_the_method_it_names() -> None:
    """``@journaled(Kind.AGENTS_REGISTER)`` sits on ``ResilientAgents.register``, and every
    kind the journal knows has exactly one such method."""
    journaled = {policy.kind: f"{area}.{name}" for area, _, resilient in PAIRS
                 for name, policy in policies(resilient).items()
                 if policy is not None and policy.mode == "journaled"}
    assert set(journaled) == set(Kind)
    assert all(str(kind) == method for kind, method in journaled.items())


def test_a_dry_run_route_is_a_read() -> None:
    """SPEC §7: a dry run decides without writing, so it falls back to the snapshot."""
    policy = policy_of(ResilientRouting.route)
    assert policy == Policy("journaled", Kind.ROUTING_ROUTE, read_when="dry_run")
    assert "dry_run" in inspect.signature(RoutingService.route).parameters


@pytest.mark.parametrize(("area", "plain", "resilient"), PAIRS, ids=[p[0] for p in PAIRS])
def test_a_resilient_method_takes_what_the_service_method_takes(
        area: str, plain: type, resilient: type) -> None:
    """Same parameters, same kinds, same defaults (mypy checks the types via the Protocols)."""
    for name in public_methods(plain):
        ours = inspect.signature(vars(resilient)[name]).parameters
        theirs = inspect.signature(vars(plain)[name]).parameters
        assert [(p.name, p.kind, p.default) for p in ours.values()] == \
               [(p.name, p.kind, p.default) for p in theirs.values()], name
