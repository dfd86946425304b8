"""cli/coercion.py answers every option value as typer's pydantic coercion does (SPEC §13.1).

Each parameter of every command (the root's included) is coerced twice: by the parameter's
``LightCoercion`` and by typer's own ``build_runtime_param`` of the same descriptor. The two
must return the same value of the same type, or fail with the same message.
"""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
from hypothesis import given, settings
from hypothesis import strategies as st
from typer._coercion import build_runtime_param

from arbiter_cli.cli.app import build_app
from arbiter_cli.cli.coercion import LightCoercion
from tests.helpers import cli_commands

VALUES: list[Any] = [
    None, "", " ", "0", "5", "-3", "+3", "007", " 5", "5 ", "5.0", "5.", ".5", "0.05", "0.1",
    "1e3", "nan", "NaN", "inf", "-inf", "1_000", "\u0665", "abc", "True", "99999999999999999999",
    "999999999999999999", "-999999999999999999", "3600", "3600.5", "3600.0", "1000000",
    "\udcff", "code-editing", "a\x00b", 0, 1, -1, 100, 30.0, 0.1, 3600, 3600.0, 1e9,
    float("nan"), float("inf"), True, False, b"bytes", ["a"],
]


def _params() -> list[tuple[str, Any, Any]]:
    root = typer.main.get_command(build_app())
    found = [("arbiter", root, root.make_context("arbiter", [], resilient_parsing=True))]
    for path, command in cli_commands().items():
        found.append((path, command, command.make_context(path, [], resilient_parsing=True)))
    params = []
    for path, command, ctx in found:
        for param in command.get_params(ctx):
            if getattr(param, "type_descriptor", None) is not None:
                params.append((f"{path} {param.name}", param, ctx))
    return params


PARAMS = _params()


def _outcome(coercion: Any, value: Any, param: Any, ctx: Any) -> tuple[str, Any]:
    try:
        result = coercion.coerce(value, param=param, ctx=ctx)
    except Exception as exc:  # the message is the contract
        return ("error", f"{type(exc).__name__}: {exc}")
    if isinstance(result, float) and result != result:
        return ("nan", type(result))
    return ("value", (type(result), result))


def _agree(param: Any, ctx: Any, value: Any) -> None:
    light = LightCoercion(param)
    full = build_runtime_param(param.type_descriptor)
    assert _outcome(light, value, param, ctx) == _outcome(full, value, param, ctx), value


def test_every_parameter_is_coerced_by_the_light_coercion():
    assert len(PARAMS) > 100
    kinds = {p.type_descriptor.annotation for _, p, _ in PARAMS}
    assert {str, int, float} <= kinds
    for name, param, _ in PARAMS:
        assert isinstance(param._runtime_param, LightCoercion), name


@pytest.mark.parametrize(("name", "param", "ctx"), PARAMS, ids=[p[0] for p in PARAMS])
def test_light_and_typer_coercion_agree_on_odd_values(name, param, ctx):
    for value in [*VALUES, param.default]:
        _agree(param, ctx, value)


NUMBERS = [(n, p, c) for n, p, c in PARAMS if p.type_descriptor.annotation in (int, float)]


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, len(NUMBERS) - 1),
       value=st.one_of(st.text(alphabet="0123456789-+._e ", max_size=22), st.integers(),
                       st.floats(), st.from_regex(r"-?[0-9]{1,20}(\.[0-9]{0,20})?", fullmatch=True)))
def test_light_and_typer_coercion_agree_on_numbers(index, value):
    _, param, ctx = NUMBERS[index]
    _agree(param, ctx, value)


@settings(max_examples=200, deadline=None)
@given(value=st.text())
def test_light_and_typer_coercion_agree_on_any_text(value):
    for _, param, ctx in PARAMS[:: max(1, len(PARAMS) // 40)]:
        _agree(param, ctx, value)
