"""Option values coerced without pydantic when the answer is certain (SPEC §13.1, start-up).

Typer 0.29 coerces every option value through a pydantic ``TypeAdapter``, built on first use
(even for a ``None`` value, which it then returns unchanged; defaults are coerced too:
``--limit``'s 100, ``--timeout``'s 30.0); importing
pydantic and building one cost more CPU at each start than the rest of ``arbiter agents
list``'s own code (docs/performance.md, Start-up). ``lighten`` gives each parameter a coercion
that answers the plain cases itself, with the result typer's adapter would give:

- ``None``: ``None``, or ``()`` for a parameter of many values (as typer answers it);
- ``str``: a ``str`` value is returned as is; ``bytes`` go to typer (its decoding rules);
- ``int``: an ``int`` (not a ``bool``), or ASCII digits with an optional leading ``-``;
- ``float``: a ``float``, or ASCII digits with an optional ``-`` and fraction;
- both within ``min``/``max`` (inclusive), and no ``clamp``.

Anything else (a parser, choices, paths, files, lists, out-of-range or unusual numbers) goes
to typer's own coercion, built only then, so every error message and every unusual value is
still typer's. ``tests/cli/test_coercion.py`` checks the two agree on every option of the CLI.
"""

from __future__ import annotations

import re
from typing import Any

_INT = re.compile(r"-?[0-9]{1,18}")
_FLOAT = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{1,15})?")
_MISS = object()


class LightCoercion:
    """The runtime coercion of one parameter: the plain cases here, the rest through typer."""

    __slots__ = ("_kind", "_max", "_min", "_param", "_typer")

    def __init__(self, param: Any) -> None:
        self._param = param
        self._typer: Any = None
        descriptor = param.type_descriptor
        info = descriptor.parameter_info
        self._min, self._max = info.min, info.max
        annotation = descriptor.annotation
        plain = (getattr(info, "parser", None) is None and not getattr(info, "clamp", False)
                 and descriptor.file_annotation is None)
        self._kind = annotation if plain and annotation in (str, int, float) else None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        multi = param.multiple or param.nargs == -1
        if value is None:  # as typer's RuntimeParam.coerce answers it, before any adapter
            return () if multi else None
        if self._kind is not None and not multi and param.nargs == 1:
            fast = self._plain(value)
            if fast is not _MISS:
                return fast
        return self.full().coerce(value, param=param, ctx=ctx)

    def full(self) -> Any:
        """Typer's own coercion of this parameter (pydantic), built on first need: the
        parameter builds it (``get_runtime_param``) while it holds none, then holds this again."""
        if self._typer is None:
            param = self._param
            held, param._runtime_param = param._runtime_param, None
            try:
                self._typer = param.get_runtime_param()
            finally:
                param._runtime_param = held
        return self._typer

    def _plain(self, value: Any) -> Any:
        kind = self._kind
        if kind is str:
            return value if type(value) is str else _MISS
        number: int | float
        if type(value) is kind:
            number = value
        elif type(value) is str and (_INT if kind is int else _FLOAT).fullmatch(value):
            number = kind(value)  # type: ignore[misc]
        else:
            return _MISS
        if kind is float and number != number:  # NaN: typer's answer
            return _MISS
        if (self._min is not None and number < self._min) or \
                (self._max is not None and number > self._max):
            return _MISS  # typer's range error
        return number


def lighten(params: list[Any]) -> None:
    """Give each typer parameter of ``params`` a ``LightCoercion`` before its first value.

    A parameter without typer 0.29's lazy ``get_runtime_param`` is left to typer (a later
    typer may coerce differently; ``tests/cli/test_coercion.py`` then fails, not the CLI)."""
    for param in params:
        if getattr(param, "_runtime_param", _MISS) is None \
                and getattr(param, "type_descriptor", None) is not None \
                and callable(getattr(param, "get_runtime_param", None)):
            param._runtime_param = LightCoercion(param)
