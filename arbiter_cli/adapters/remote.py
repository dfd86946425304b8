"""Remote mode (SPEC §15): the services of an ``arbiter serve`` over HTTP, with a token only.

``RemoteAgents``, ``RemoteRouting`` and ``RemoteSecurity`` implement the service ports by
calling the ``/v1`` resources, so every token-checked command runs unchanged against a server:
no database URL, no SQL import. The server admits each request (token, role, rate bucket at
the database's clock); the principal a command passes in is not sent anywhere.

The documents the server answers are the ``--json`` documents; they are read back into the
domain's values (``agent_of``, ``decision_of``, …) so the command renders them as it renders
local results, and ``to_dict`` of what is read back equals what the server sent.

Errors are the CLI's error object: the remote command exits with the ``exit_code`` the
server's answer carries, as the local one would. Connection errors and 503 are retried with
tenacity within ``timeout_s``; a retried ``route task`` is idempotent because the client
chooses its task id.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from arbiter_cli import errors as E  # noqa: N812 - the error family, by code
from arbiter_cli.domain.agents import Agent, FleetStats, Performance, RegistryPolicy, Status
from arbiter_cli.domain.principal import DEFAULT_TENANT, Principal
from arbiter_cli.domain.results import Bootstrap, IssuedToken, Page, Recorded, Routed
from arbiter_cli.domain.routing import Decision, Outcome, RoutingPolicy
from arbiter_cli.domain.security import AuditEvent, TokenRecord, Verdict
from arbiter_cli.ids import uuid7

if TYPE_CHECKING:
    import httpx

    from arbiter_cli.domain.agents import TaskResult

Doc = dict[str, Any]
T = TypeVar("T")
Since = datetime | timedelta | None

#: The error class of each ``code`` of the error object (SPEC §5.2).
ERRORS: dict[str, type[E.ArbiterError]] = {
    "check_failed": E.CheckFailed, "invalid_input": E.InvalidInput,
    "config_invalid": E.ConfigInvalid, "not_found": E.NotFound, "conflict": E.Conflict,
    "unauthenticated": E.Unauthenticated, "forbidden": E.Forbidden,
    "rate_limited": E.RateLimited, "no_capable_agent": E.NoCapableAgent,
    "at_capacity": E.AtCapacity, "storage_unavailable": E.StorageUnavailable,
    "schema_outdated": E.SchemaOutdated, "limit_exceeded": E.LimitExceeded,
}


def error_of(document: Any, status: int) -> E.ArbiterError:
    """The exception a server's error object stands for, message and details kept."""
    body = document.get("error") if isinstance(document, dict) else None
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        return E.StorageUnavailable(f"the arbiter server answered HTTP {status} without an "
                                    "arbiter error object")
    if body["code"] != "internal_error" and body["code"] not in ERRORS:  # another version's
        return E.StorageUnavailable(f"the arbiter server answered HTTP {status} with an error "
                                    f"this client does not know ({printable(body['code'])[:64]}"
                                    f"): {printable(str(body.get('message', '')))}")
    cls = ERRORS.get(body["code"], E.ArbiterError)
    exc = cls.__new__(cls)
    details = body.get("details") if isinstance(body.get("details"), dict) else None
    E.ArbiterError.__init__(exc, printable(str(body.get("message", ""))), details=details)
    if isinstance(exc, E.InvalidInput) and details:
        exc.field, exc.rule = details.get("field"), details.get("rule")
    if isinstance(exc, E.RateLimited):
        wait = (details or {}).get("retry_after_s")
        exc.retry_after_s = float(wait) if isinstance(wait, int | float) else 0.0
    if isinstance(exc, E.ConfigInvalid):
        problems = (details or {}).get("problems")
        exc.problems = [str(p) for p in problems] if isinstance(problems, builtins.list) else []
    return exc


def printable(text: str) -> str:
    """A server's message without control characters: it goes to the operator's terminal,
    where an escape sequence would be obeyed."""
    return "".join(c if c.isprintable() else " " for c in text)


def _reads_server_documents(cls: type[T]) -> type[T]:
    """Each service method reads what the server answered: a document of another shape (a
    missing key, a wrong type) is the server's fault, exit 10 with one line, not an internal
    error of this client (exit 70)."""
    for name, method in builtins.list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(method):
            setattr(cls, name, _reading(method))
    return cls


def _reading(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def reading(service: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(service, *args, **kwargs)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise E.StorageUnavailable(
                f"the arbiter server at {service._client.url} answered a document this client "
                f"cannot read ({type(exc).__name__}: {printable(str(exc))[:200]}): is it an "
                "arbiter server of this version?") from None

    return reading


def _import_httpx() -> Any:
    """``httpx``, without importing its command-line tool.

    ``import httpx`` imports ``httpx._main`` (click, rich's Syntax and Progress, pygments)
    whenever those are installed, as they are with arbiter: about a third of a remote
    command's start-up CPU (docs/performance.md, Start-up). A stand-in serves that one import
    and leaves ``sys.modules`` afterwards; ``httpx.main`` is the one name it provides.
    """
    if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
        stand_in = types.ModuleType("httpx._main")

        def main() -> None:
            raise RuntimeError("httpx's command-line tool is not loaded in arbiter")

        stand_in.main = main  # type: ignore[attr-defined]
        sys.modules["httpx._main"] = stand_in
        try:
            import httpx  # noqa: F401
        finally:
            if sys.modules.get("httpx._main") is stand_in:
                del sys.modules["httpx._main"]
    import httpx

    return httpx


class RemoteClient:
    """One command's connection to a server: keep-alive, the token, the correlation id."""

    def __init__(self, url: str, token: str | None, *, timeout_s: float,
                 correlation_id: str) -> None:
        httpx = _import_httpx()

        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        if not (correlation_id.isascii() and correlation_id.isprintable()):  # a header value
            raise E.InvalidInput("correlation_id: must be printable ASCII to travel to the "
                                 "server in X-Correlation-ID (e.g. job-42/step:1)",
                                 field="correlation_id", rule="ascii")
        headers = {"X-Correlation-ID": correlation_id, "Accept": "application/json"}
        if token:
            if not (token.isascii() and token.isprintable()):  # cannot be a header value
                raise E.Unauthenticated("malformed token: expected arb_<id>_<secret>")
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers,
                                  timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)))
        #: ``meta`` of the last answer: tenant, durability, journal, staleness.
        self.meta: Doc = {}

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
             body: Any = None, idempotent: bool | None = None) -> Doc:
        """The answer's document without ``meta``; an error answer raises its exception.

        Retried within ``timeout_s``: a connection that never reached the server, and a 503
        (the server could neither commit nor journal); for idempotent calls (GET, and the
        routes whose retry the task id makes idempotent) also an answer lost on the way back.
        """
        import httpx
        from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

        safe = method == "GET" if idempotent is None else idempotent
        clean = {k: v for k, v in (params or {}).items() if v is not None}

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | _Unavailable):
                return True
            return safe and isinstance(exc, httpx.ReadError | httpx.ReadTimeout |
                                       httpx.RemoteProtocolError)

        try:
            for attempt in Retrying(stop=stop_after_delay(self.timeout_s),
                                    wait=wait_exponential(multiplier=0.1, max=2.0),
                                    retry=retry_if_exception(retryable), reraise=True):
                with attempt:
                    answer = self._http.request(method, path, params=clean or None,
                                                json=body)
                    if answer.status_code == 503:
                        raise _Unavailable(answer)
        except _Unavailable as exc:
            answer = exc.answer
        except httpx.TimeoutException:
            raise E.StorageUnavailable(f"the arbiter server at {self.url} did not answer "
                                       f"within {self.timeout_s:g} s (--timeout)") from None
        except httpx.HTTPError as exc:
            raise E.StorageUnavailable(f"cannot reach the arbiter server at {self.url}: "
                                       f"{type(exc).__name__}: {exc}") from None
        return self._document(answer)

    def _document(self, answer: httpx.Response) -> Doc:
        try:
            document = answer.json()
        except ValueError:
            document = None
        if answer.status_code != 200:
            raise error_of(document, answer.status_code)
        if not isinstance(document, dict):
            raise E.StorageUnavailable(f"the arbiter server at {self.url} answered something "
                                       "other than a JSON object")
        meta = document.pop("meta", None)
        self.meta = meta if isinstance(meta, dict) else {}
        return document


class _Unavailable(Exception):
    def __init__(self, answer: httpx.Response) -> None:
        super().__init__("503")
        self.answer = answer


# ----------------------------------------------------------------------------- documents


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _maybe_time(value: Any) -> datetime | None:
    return None if value is None else _time(value)


def agent_of(doc: Doc) -> Agent:
    perf = doc["performance"]
    return Agent(
        uid="", tenant=doc["tenant"], id=doc["id"], name=doc["name"],
        model_family=doc["model_family"], task_types=tuple(doc["task_types"]),
        languages=tuple(doc["languages"]), specializations=tuple(doc["specializations"]),
        capacity=int(doc["capacity"]), registered_at=_time(doc["registered_at"]),
        updated_at=_time(doc["updated_at"]), last_active_at=_time(doc["last_active_at"]),
        active_tasks=int(doc["active_tasks"]), status=Status(doc["status"]),
        status_reason=doc.get("status_reason"),
        performance=Performance(success_rate=perf["success_rate"],
                                average_quality=perf["average_quality"],
                                average_latency_ms=perf["average_latency_ms"],
                                task_count=perf["task_count"]),
        metadata=dict(doc.get("metadata") or {}), version=int(doc["version"]))


def decision_of(doc: Doc) -> Decision:
    return Decision(
        decision_id=doc["decision_id"], tenant=DEFAULT_TENANT, task_id=doc["task_id"],
        task_type=doc["task_type"], requirements=dict(doc.get("requirements") or {}),
        metadata=dict(doc.get("metadata") or {}), priority=int(doc.get("priority", 5)),
        agent_id=doc["agent_id"], agent_uid="", strategy=doc["strategy"], seed=int(doc["seed"]),
        explored=bool(doc["explored"]), confidence=doc.get("confidence"),
        candidates=list(doc.get("candidates") or []), excluded=dict(doc.get("excluded") or {}),
        examples={k: list(v) for k, v in (doc.get("excluded_examples") or {}).items()},
        config_hash=doc.get("config_hash", ""), latency_us=int(doc.get("latency_us", 0)),
        created_at=_time(doc["created_at"]), status=doc["status"],
        correlation_id=doc.get("correlation_id"), closed_at=_maybe_time(doc.get("closed_at")),
        outcome=doc.get("outcome"), over_capacity=bool(doc.get("over_capacity", False)),
        agent_unavailable=bool(doc.get("agent_unavailable", False)))


def token_of(doc: Doc) -> TokenRecord:
    return TokenRecord(id=doc["id"], tenant=doc["tenant"], name=doc["name"], role=doc["role"],
                       secret_hash="", created_at=_time(doc["created_at"]),
                       expires_at=_maybe_time(doc.get("expires_at")),
                       revoked_at=_maybe_time(doc.get("revoked_at")),
                       last_used_at=_maybe_time(doc.get("last_used_at")),
                       rate=doc.get("rate"), burst=doc.get("burst"))


def event_of(doc: Doc) -> AuditEvent:
    return AuditEvent(tenant=doc["tenant"], seq=int(doc["seq"]), at=_time(doc["at"]),
                      actor=doc.get("actor"), action=doc["action"], target=doc.get("target"),
                      result=doc["result"], correlation_id=doc.get("correlation_id"),
                      details=dict(doc.get("details") or {}), prev_hash=doc["prev_hash"],
                      hash=doc["hash"])


def fleet_of(doc: Doc) -> FleetStats:
    return FleetStats(tenant=doc["tenant"], total=int(doc["agents"]),
                      by_status=dict(doc["by_status"]), busy=int(doc["busy"]),
                      idle=int(doc["idle"]), mean_utilization=float(doc["mean_utilization"]),
                      mean_success=float(doc["mean_success"]),
                      total_capacity=int(doc["total_capacity"]),
                      total_active_tasks=int(doc["total_active_tasks"]))


def since_param(since: Since) -> str | None:
    """``--since`` as the server parses it again (inputs.parse_since)."""
    if since is None:
        return None
    if isinstance(since, timedelta):
        return f"{since.total_seconds():g}s"
    return since.isoformat()


def _local_only(what: str) -> E.InvalidInput:
    return E.InvalidInput(f"{what} needs direct database access: run it where the database "
                          "is, not through --server", field="server", rule="local_only")


# ----------------------------------------------------------------------------- services


@_reads_server_documents
class RemoteAgents:
    def __init__(self, client: RemoteClient, policy: RegistryPolicy) -> None:
        self._client = client
        self._policy = policy

    @property
    def policy(self) -> RegistryPolicy:
        return self._policy

    def register(self, principal: Principal, raws: Sequence[Mapping[str, Any]],
                 progress: Callable[[int], None] | None = None,
                 uids: Sequence[str] | None = None) -> builtins.list[Agent]:
        if len(raws) == 1:
            created = [agent_of(self._client.call("POST", "/v1/agents", body=dict(raws[0])))]
        else:
            document = self._client.call("POST", "/v1/agents", body=[dict(r) for r in raws])
            created = [agent_of(item) for item in document["items"]]
        if progress is not None:
            progress(len(created))
        return created

    def update(self, principal: Principal, agent_id: str, raw: Mapping[str, Any]) -> Agent:
        body = {k: v for k, v in raw.items() if v is not None}
        return agent_of(self._client.call("PATCH", f"/v1/agents/{_seg(agent_id)}", body=body))

    def set_status(self, principal: Principal, agent_id: str, status: str,
                   reason: str | None = None) -> Agent:
        return agent_of(self._client.call("POST", f"/v1/agents/{_seg(agent_id)}/status",
                                          body={"status": status, "reason": reason}))

    def heartbeat(self, principal: Principal, agent_id: str) -> Agent:
        return agent_of(self._client.call("POST", f"/v1/agents/{_seg(agent_id)}/heartbeat"))

    def record(self, principal: Principal, agent_id: str, result: TaskResult) -> Agent:
        body = {"success": result.success, "quality": result.quality,
                "latency_ms": result.latency_ms, "task_type": result.task_type}
        return agent_of(self._client.call("POST", f"/v1/agents/{_seg(agent_id)}/record",
                                          body=body))

    def remove(self, principal: Principal, agent_id: str) -> Agent:
        return agent_of(self._client.call("DELETE", f"/v1/agents/{_seg(agent_id)}"))

    def cleanup(self, principal: Principal, older_than_s: float, *,
                dry_run: bool) -> builtins.list[Agent]:
        document = self._client.call("POST", "/v1/agents/cleanup", body={
            "older_than": f"{older_than_s:g}s", "dry_run": dry_run})
        return [agent_of(item) for item in document["items"]]

    def show(self, principal: Principal, agent_id: str) -> Agent:
        return agent_of(self._client.call("GET", f"/v1/agents/{_seg(agent_id)}"))

    def list(self, principal: Principal, *, status: str | None = None,
             task_type: str | None = None, cursor: str | None = None,
             limit: int = 100) -> Page:
        document = self._client.call("GET", "/v1/agents", params={
            "status": status, "task_type": task_type, "cursor": cursor, "limit": limit})
        return Page(items=[agent_of(item) for item in document["items"]],
                    next_cursor=document.get("next_cursor"))

    def query(self, principal: Principal,
              raw: Mapping[str, Any]) -> builtins.list[dict[str, Any]]:
        body = {k: v for k, v in raw.items() if v is not None}
        items: builtins.list[dict[str, Any]] = self._client.call(
            "POST", "/v1/agents/query", body=body, idempotent=True)["items"]
        return items

    def stats(self, principal: Principal) -> FleetStats:
        return fleet_of(self._client.call("GET", "/v1/agents/stats"))


@_reads_server_documents
class RemoteRouting:
    def __init__(self, client: RemoteClient, registry: RegistryPolicy,
                 policy: RoutingPolicy) -> None:
        self._client = client
        self._registry = registry
        self._policy = policy

    @property
    def policy(self) -> RoutingPolicy:
        return self._policy

    @property
    def registry(self) -> RegistryPolicy:
        return self._registry

    def route(self, principal: Principal, raw: Mapping[str, Any], *, strategy: str | None = None,
              seed: Any = None, dry_run: bool = False,
              correlation_id: str | None = None) -> Routed:
        body = {k: v for k, v in raw.items() if v is not None}
        if not dry_run and "task_id" not in body:
            body["task_id"] = uuid7()  # chosen here, so a retried route is the same task
        body.update({k: v for k, v in (("strategy", strategy), ("seed", seed)) if v is not None})
        if dry_run:
            body["dry_run"] = True
        document = self._client.call("POST", "/v1/route", body=body, idempotent=not dry_run)
        return Routed(decision=decision_of(document),
                      already_routed=bool(document.get("already_routed", False)))

    def apply_decision(self, principal: Principal, decision: Decision) -> Routed:
        raise _local_only("replaying a journaled decision")

    def outcome(self, principal: Principal, outcome: Outcome, *, decision_id: str | None = None,
                task_id: str | None = None) -> Recorded:
        body = {**outcome.to_dict(), "decision_id": decision_id, "task_id": task_id}
        document = self._client.call("POST", "/v1/outcomes",
                                     body={k: v for k, v in body.items() if v is not None},
                                     idempotent=True)
        return Recorded(decision=decision_of(document),
                        already_recorded=bool(document.get("already_recorded", False)))

    def apply_outcome(self, principal: Principal, outcome: Outcome, *, decision_id: str,
                      acknowledged_at: datetime) -> Recorded:
        raise _local_only("replaying a journaled outcome")

    def reap(self, principal: Principal, limit: int = 0) -> builtins.list[Decision]:
        document = self._client.call("POST", "/v1/route/reap")
        return [decision_of(item) for item in document["items"]]

    def explain(self, principal: Principal, decision_id: str) -> Decision:
        return decision_of(self._client.call("GET", f"/v1/decisions/{_seg(decision_id)}"))

    def history(self, principal: Principal, *, agent_id: str | None = None,
                task_type: str | None = None, status: str | None = None, since: Since = None,
                cursor: str | None = None, limit: int = 100,
                over_capacity: bool = False) -> tuple[builtins.list[Decision], str | None]:
        document = self._client.call("GET", "/v1/decisions", params={
            "agent": agent_id, "task_type": task_type, "status": status,
            "since": since_param(since), "cursor": cursor, "limit": limit,
            "over_capacity": "true" if over_capacity else None})
        return [decision_of(item) for item in document["items"]], document.get("next_cursor")

    def stats(self, principal: Principal, *, since: Since = None,
              by: str = "agent") -> dict[str, Any]:
        return self._client.call("GET", "/v1/route/stats",
                                 params={"since": since_param(since), "by": by})


@_reads_server_documents
class RemoteSecurity:
    def __init__(self, client: RemoteClient) -> None:
        self._client = client

    def admit(self, token: str | None, command: str) -> Principal:
        """The server admits each request; this asks who the token is (``whoami``)."""
        document = self._client.call("GET", "/v1/whoami")
        return Principal(tenant=document["tenant"], role=document["role"],
                         token_id=document.get("token_id"))

    def peek(self, token: str | None, command: str) -> Principal | None:
        """Completion of ids reads the local database only: nothing to offer remotely."""
        return None

    def readmit(self, tenant: str, token_id: str | None, command: str, at: datetime, *,
                seen: dict[str | None, Any] | None = None) -> Principal:
        raise _local_only("replaying journaled writes")

    def issue(self, principal: Principal, *, role: str, name: str, expires_in_s: float | None,
              rate: float | None = None, burst: int | None = None) -> IssuedToken:
        body: Doc = {"role": role, "name": name, "rate": rate, "burst": burst}
        if expires_in_s is not None:
            body["expires_in"] = f"{expires_in_s:g}s"
        document = self._client.call("POST", "/v1/tokens",
                                     body={k: v for k, v in body.items() if v is not None})
        # The answer has no created_at (IssuedToken.to_dict shows none): the client's now
        # stands in for it, and nothing renders it.
        record = TokenRecord(id=document["id"], tenant=document["tenant"],
                             name=document["name"], role=document["role"], secret_hash="",
                             created_at=datetime.now(UTC), expires_at=_maybe_time(
                                 document.get("expires_at")),
                             rate=document.get("rate"), burst=document.get("burst"))
        return IssuedToken(record=record, token=document["token"])

    def tokens(self, principal: Principal, *, cursor: str | None = None,
               limit: int = 100) -> tuple[builtins.list[TokenRecord], str | None]:
        document = self._client.call("GET", "/v1/tokens",
                                     params={"cursor": cursor, "limit": limit})
        return [token_of(item) for item in document["items"]], document.get("next_cursor")

    def revoke(self, principal: Principal, token_id: str, *,
               force: bool = False) -> TokenRecord:
        return token_of(self._client.call("DELETE", f"/v1/tokens/{_seg(token_id)}",
                                          params={"force": "true" if force else None}))

    def login(self, token: str) -> Principal:
        return self.admit(token, "login")

    def create_tenant(self, name: str) -> IssuedToken:
        raise _local_only("tenants create")

    def tenants(self) -> builtins.list[str]:
        raise _local_only("tenants list")

    def holds_tokens(self) -> bool:
        raise _local_only("checking security.enabled")

    def bootstrap(self, tenant: str = DEFAULT_TENANT, *, issue: bool = True,
                  before_issue: Callable[[], None] | None = None) -> Bootstrap:
        raise _local_only("init")

    def events(self, principal: Principal, *, since: Since = None, action: str | None = None,
               actor: str | None = None, cursor: int | None = None,
               limit: int = 100) -> tuple[builtins.list[AuditEvent], str | None]:
        document = self._client.call("GET", "/v1/audit", params={
            "since": since_param(since), "action": action, "actor": actor,
            "cursor": cursor, "limit": limit})
        return [event_of(item) for item in document["items"]], document.get("next_cursor")

    def verify(self, principal: Principal, expect_head: str | None = None) -> Verdict:
        document = self._client.call("GET", "/v1/audit/verify",
                                     params={"expect_head": expect_head})
        return Verdict(ok=bool(document["ok"]), events=int(document["events"]),
                       head_seq=int(document["head_seq"]), head_hash=document["head_hash"],
                       first_bad_seq=document.get("first_bad_seq"),
                       reason=document.get("reason"))


def _seg(value: str) -> str:
    """One path segment: an id can never reach another resource ('/', '..', '?')."""
    from urllib.parse import quote

    if value in (".", ".."):  # a dot segment would be resolved away by the URL
        return value.replace(".", "%2E")
    return quote(value, safe="")
