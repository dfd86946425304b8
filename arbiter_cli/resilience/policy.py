"""What a service method does on a network primary that fails: its policy (SPEC §7).

Every method of a resilient service (``resilience/services.py``) carries exactly one policy,
written on the line above it:

- ``@journaled(Kind.X)``: a write, journaled under ``Kind.X`` when the primary cannot take it;
- ``@read``: served from the local snapshot, marked stale, when the primary is out;
- ``@needs_primary``: anything else (tokens, tenants, cleanup, reap): exit 10 without it.

The decorators only record the policy on the function (``policy_of``); the method body makes
the matching gateway call. ``tests/unit/test_resilient_policies.py`` checks that every public
method of each plain service has a policy in its resilient class, and that the body agrees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from arbiter_cli.resilience.records import Kind

F = TypeVar("F", bound=Callable[..., object])
POLICY_ATTRIBUTE = "__arbiter_policy__"


@dataclass(frozen=True)
class Policy:
    """``journaled`` (with its kind), ``read`` or ``needs_primary``. ``read_when``: the
    keyword argument that, true, makes a journaled write a read (``route(dry_run=True)``)."""

    mode: Literal["journaled", "read", "needs_primary"]
    kind: Kind | None = None
    read_when: str | None = None


def _mark(policy: Policy) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        setattr(fn, POLICY_ATTRIBUTE, policy)
        return fn

    return mark


def journaled(kind: Kind, *, read_when: str | None = None) -> Callable[[F], F]:
    """A write that is journaled under ``kind`` when the primary cannot take it; with
    ``read_when``, a read when that keyword argument is true."""
    return _mark(Policy("journaled", kind, read_when))


def read(fn: F) -> F:
    """A read that falls back to the local snapshot."""
    return _mark(Policy("read"))(fn)


def needs_primary(fn: F) -> F:
    """A call that runs on the primary only (exit 10 without it)."""
    return _mark(Policy("needs_primary"))(fn)


def policy_of(fn: object) -> Policy | None:
    found = getattr(fn, POLICY_ATTRIBUTE, None)
    return found if isinstance(found, Policy) else None
