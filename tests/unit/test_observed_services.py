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
            if not name.startswith("_") and inspect.isfunction(value)
            and "__mutmut_" not in name and "ǁ" not in name]  # arbiter mutate's copies


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



def test_observed_routing_counts_decisions_refusals_and_outcomes(test_settings) -> None:  # type: ignore[no-untyped-def]
    """The metric table's routing figures come from ``ObservedRouting``, on any store."""
    from arbiter_cli.bootstrap import build_memory, utc_now
    from arbiter_cli.domain.principal import Principal
    from arbiter_cli.domain.routing import Outcome
    from arbiter_cli.errors import ArbiterError
    from arbiter_cli.observability.metrics import Metrics
    from arbiter_cli.observability.runtime import Telemetry
    from arbiter_cli.tools.setup import initialize

    app = build_memory(test_settings)
    initialize(app.uow, lambda: None, utc_now)
    metrics = Metrics()
    app.telemetry = Telemetry("cid-observed", metrics=metrics)
    admin = Principal.local_admin()
    app.agents.register(admin, [{"id": "a1", "name": "A1", "model_family": "claude-3.5",
                                 "task_types": ["code-editing"], "capacity": 2}])
    routed = app.routing.route(admin, {"task_type": "code-editing"}, strategy="ucb")
    with pytest.raises(ArbiterError):
        app.routing.route(admin, {"task_type": "testing"})
    app.routing.outcome(admin, Outcome(success=True, quality=0.9),
                        decision_id=routed.decision.decision_id)
    assert app.routing.reap(admin) == []

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)  # type: ignore[no-any-return]

    assert isinstance(app.routing, ObservedRouting)
    assert value("arbiter_routing_decisions_total", strategy="ucb", explored="false",
                 result="routed") == 1
    assert value("arbiter_routing_decisions_total", strategy=app.routing.policy.strategy,
                 explored="false", result="no_capable_agent") == 1
    assert value("arbiter_routing_decision_seconds_count") == 1
    assert value("arbiter_outcomes_total", result="succeeded") == 1
    assert value("arbiter_outcomes_total", result="expired") is None
