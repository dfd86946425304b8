"""The ``/v1`` resources: the token-checked commands of the CLI over HTTP (SPEC §15).

Each request is one command: the same permission entry (``PERMISSIONS``), the same admission
(token, role, rate bucket, at the database's clock), the same service call and the same JSON
document as ``--json``, ``meta`` envelope included. Domain validation stays the one authority:
bodies and query values reach the services as the CLI's flags do, so an input the CLI rejects
is rejected here with the same ``field`` and ``rule`` (status 400).

Every request gets its own app (``bootstrap.serving_app``) on the server's shared engine, so the
per-command state of the resilience layer is never shared between threads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from arbiter_cli.api import errors as api_errors
from arbiter_cli.api import schema
from arbiter_cli.bootstrap import serving_app
from arbiter_cli.domain.validation import fail, integer
from arbiter_cli.errors import ArbiterError, ConfigInvalid, InvalidInput, NotFound
from arbiter_cli.ids import uuid7
from arbiter_cli.inputs import parse_since
from arbiter_cli.observability import logging as log

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from arbiter_cli.bootstrap import App
    from arbiter_cli.config import Settings
    from arbiter_cli.domain.principal import Principal

#: A correlation id a client may choose: short, printable, no spaces (it goes into logs).
CORRELATION_ID = re.compile(r"[A-Za-z0-9._:/@+=-]{1,128}")
BEARER = re.compile(r"Bearer +(\S*) *", re.IGNORECASE)

Work = Callable[["App", "Principal"], tuple[dict[str, Any], dict[str, Any]]]
Doc = dict[str, Any]


class Api:
    """The API's dependencies: settings and the shared engine, handed over by ``serve``."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine

    def run(self, request: Request, command: str, work: Work) -> JSONResponse:
        """Admit the caller for ``command``, do the work, answer its document or its error."""
        correlation_id = correlation_of(request)
        headers = {"X-Correlation-ID": correlation_id}
        app: App | None = None
        tenant: str | None = None
        try:
            app = serving_app(self.settings, self.engine, correlation_id=correlation_id)
            principal = self.admit(app, request, command)
            tenant = principal.tenant
            document, extra = work(app, principal)
            meta = self.meta(app, command, correlation_id, tenant, extra)
            return JSONResponse({**document, "meta": meta}, status_code=200, headers=headers)
        except ArbiterError as exc:
            return self.error(exc, headers, command=command, tenant=tenant)
        except Exception:  # noqa: BLE001 - a bug answers 500 with no detail; the log has it
            log.get_logger().exception("internal error", command=command,
                                       correlation_id=correlation_id)
            return JSONResponse(api_errors.INTERNAL, status_code=500, headers=headers)
        finally:
            if app is not None:
                if app.resilience is not None:
                    app.resilience.flush_warnings()
                app.close()

    def admit(self, app: App, request: Request, command: str) -> Principal:
        from arbiter_cli.domain.principal import Principal

        if not self.settings.security.enabled:
            if app.security.holds_tokens():
                raise ConfigInvalid("security.enabled = false is refused: this database holds "
                                    "tokens")
            return Principal.local_admin()
        return app.security.admit(token_of(request), command)

    def meta(self, app: App, command: str, correlation_id: str, tenant: str | None,
             extra: Mapping[str, Any]) -> dict[str, Any]:
        """The CLI's ``meta`` (cli/state.py): the last write's durability wins over the
        command's expectation, and a snapshot read says how stale it is."""
        meta: dict[str, Any] = {"correlation_id": correlation_id, "command": command,
                                "tenant": tenant, **extra}
        res = app.resilience
        if res is not None:
            if "durability" in extra and app.writes:
                last = app.writes[-1]
                meta["durability"] = last.state
                if last.journal is not None:
                    meta["journal"] = dict(last.journal)
            if res.stale_age_s is not None:
                meta["stale"] = True
                meta["stale_age_s"] = res.stale_age_s
        return meta

    def error(self, exc: ArbiterError, headers: dict[str, str], *, command: str,
              tenant: str | None) -> JSONResponse:
        status = api_errors.status_of(exc)
        cid = headers["X-Correlation-ID"]  # the request's, not the server's (bound at start)
        if status == 500:  # the answer says nothing: the log has what happened
            log.get_logger().error("request failed", command=command, tenant=tenant,
                                   code=exc.code, status=status, error=exc.message,
                                   correlation_id=cid)
        elif status == 503:  # nor does an outage's: the reason is the operator's to see
            log.get_logger().warning("request unavailable", command=command, tenant=tenant,
                                     code=exc.code, status=status, error=exc.message,
                                     correlation_id=cid)
        else:
            log.get_logger().info("request refused", command=command, tenant=tenant,
                                  code=exc.code, status=status, correlation_id=cid)
        retry = self.settings.breaker.reset_timeout
        return JSONResponse(api_errors.body_of(exc), status_code=status,
                            headers={**headers, **api_errors.headers_of(
                                exc, unavailable_retry_s=retry)})


def correlation_of(request: Request) -> str:
    given = request.headers.get("x-correlation-id", "")
    return given if CORRELATION_ID.fullmatch(given) else uuid7()


def token_of(request: Request) -> str | None:
    """The bearer token; an ``Authorization`` header of another scheme counts as none."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    match = BEARER.fullmatch(header)
    return match[1] if match else None


# ----------------------------------------------------------------------------- inputs


def limit_of(value: str | None, default: int = 100) -> int:
    return default if value is None else integer(value, "limit", low=0, high=10_000)


def flag_of(value: Any, name: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise fail(name, "type", "must be true or false")


#: How a body field of the wrong type is described (``typed``).
KIND_WORDS: dict[type, str] = {str: "must be a string", bool: "must be true or false"}


def typed(value: Any, name: str, kind: type, *, required: str | None = None) -> Any:
    """A body field's ``value`` if it is a ``kind``; None if absent and optional. Otherwise
    the 400 the services would give: rule ``required`` (with the hint ``required``) for a
    field that must be there, ``type`` for an optional one of the wrong type."""
    if isinstance(value, kind):
        return value
    if required is not None:
        raise fail(name, "required", required)
    if value is not None:
        raise fail(name, "type", KIND_WORDS[kind])
    return None


def listed(items: list[Doc], next_cursor: str | None, **more: Any) -> Doc:
    return {"items": items, "count": len(items), "next_cursor": next_cursor, **more}


COMMITTED = {"durability": "committed"}


# ----------------------------------------------------------------------------- the app


class JsonBodies:
    """Every ``/v1`` request body is read as JSON, whatever its ``Content-Type`` says.

    ``curl -d '{"task_type": "testing"}'`` sends ``application/x-www-form-urlencoded``; the API
    takes nothing but JSON, so the header is not a choice the client has to get right. A body
    that is not JSON is the usual 400 with ``field`` ``body``.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (scope["type"] == "http" and scope["method"] in ("POST", "PATCH", "PUT")
                and scope["path"].startswith("/v1/")):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            headers.append((b"content-type", b"application/json"))
            scope["headers"] = headers  # in place: serve reads the route the router sets
        await self.app(scope, receive, send)


def create_api(settings: Settings, engine: Engine) -> FastAPI:
    """The FastAPI application of ``/v1`` on ``engine`` (the composition root's)."""
    api = Api(settings, engine)
    app = FastAPI(title="arbiter", version=_version(), openapi_url="/openapi.json",
                  docs_url=None, redoc_url=None,
                  description="The arbiter API: the token-checked commands of the CLI over "
                  "HTTP, with the same JSON documents and errors (docs/api.md).")

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":  # not JSON at all
            field, rule = "body", "json"
        else:
            where = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
            field = ".".join(where) or "body"
            rule = "object" if field == "body" else "type"
        return api.error(InvalidInput(f"{field}: {first.get('msg', 'invalid')}", field=field,
                                      rule=rule),
                         {"X-Correlation-ID": correlation_of(request)},
                         command=request.url.path, tenant=None)

    @app.exception_handler(HTTPException)
    def framework(request: Request, exc: HTTPException) -> JSONResponse:
        """The framework's own refusals (no such path, a method the resource does not take,
        a body its JSON parser gives up on) answer the error object too, not ``{"detail"}``."""
        error: ArbiterError
        if exc.status_code == 404:
            error = NotFound(f"no such resource: {request.url.path}")
        elif exc.status_code == 405:
            error = InvalidInput(f"method {request.method} not allowed on {request.url.path}",
                                 field="method", rule="allowed")
        else:
            error = InvalidInput(f"body: {exc.detail}", field="body", rule="json")
        headers = {"X-Correlation-ID": correlation_of(request), **(exc.headers or {})}
        log.get_logger().info("request refused", command=request.url.path, tenant=None,
                              code=error.code, status=exc.status_code,
                              correlation_id=headers["X-Correlation-ID"])
        return JSONResponse(api_errors.body_of(error), status_code=exc.status_code,
                            headers=headers)

    app.add_middleware(JsonBodies)
    _agents(app, api)
    _routing(app, api)
    _security(app, api)
    schema.install(app)
    return app


def _version() -> str:
    from arbiter_cli import __version__

    return __version__


def _agents(app: FastAPI, api: Api) -> None:
    responses = schema.responses

    @app.post("/v1/agents", tags=["agents"], responses=responses(schema.AGENT_OR_LIST),
              summary="Register one agent (an object) or many (an array): all or nothing")
    def register(request: Request, body: Any = Body(..., openapi_examples=schema.REGISTER)
                 ) -> JSONResponse:
        def work(app_: App, who: Principal) -> tuple[Doc, Doc]:
            if isinstance(body, dict):
                return app_.agents.register(who, [body])[0].to_dict(), COMMITTED
            if not isinstance(body, list) or not all(isinstance(b, dict) for b in body):
                raise fail("body", "object", "must be an agent object or an array of them")
            created = app_.agents.register(who, body)
            return listed([a.to_dict() for a in created], None), COMMITTED

        return api.run(request, "agents register", work)

    @app.get("/v1/agents", tags=["agents"], responses=responses(schema.AGENT_LIST))
    def list_agents(request: Request, status: str | None = None, task_type: str | None = None,
                    limit: str | None = None, cursor: str | None = None) -> JSONResponse:
        def work(app_: App, who: Principal) -> tuple[Doc, Doc]:
            page = app_.agents.list(who, status=status, task_type=task_type, cursor=cursor,
                                    limit=limit_of(limit))
            return listed([a.to_dict() for a in page.items], page.next_cursor), {}

        return api.run(request, "agents list", work)

    @app.post("/v1/agents/query", tags=["agents"], responses=responses(schema.QUERY_LIST))
    def query(request: Request, body: dict[str, Any] = Body(..., openapi_examples=schema.QUERY)
              ) -> JSONResponse:
        def work(app_: App, who: Principal) -> tuple[Doc, Doc]:
            raw = {"limit": 10, **body}
            return listed(app_.agents.query(who, raw), None), {}

        return api.run(request, "agents query", work)

    @app.get("/v1/agents/stats", tags=["agents"], responses=responses(schema.OBJECT))
    def stats(request: Request) -> JSONResponse:
        return api.run(request, "agents stats",
                       lambda app_, who: (app_.agents.stats(who).to_dict(), {}))

    @app.post("/v1/agents/cleanup", tags=["agents"], responses=responses(schema.AGENT_LIST))
    def cleanup(request: Request, body: dict[str, Any] = Body(...)) -> JSONResponse:
        from arbiter_cli.config import parse_duration

        def work(app_: App, who: Principal) -> tuple[Doc, Doc]:
            older_than = body.get("older_than", "24h")
            try:
                seconds = parse_duration(str(older_than))
            except ValueError as exc:
                raise fail("older_than", "duration", str(exc)) from None
            dry_run = flag_of(body.get("dry_run"), "dry_run")
            marked = app_.agents.cleanup(who, seconds, dry_run=dry_run)
            return (listed([a.to_dict() for a in marked], None, dry_run=dry_run),
                    {} if dry_run else COMMITTED)

        return api.run(request, "agents cleanup", work)

    @app.get("/v1/agents/{agent_id}", tags=["agents"], responses=responses(schema.AGENT))
    def show(request: Request, agent_id: str) -> JSONResponse:
        return api.run(request, "agents show",
                       lambda app_, who: (app_.agents.show(who, agent_id).to_dict(), {}))

    @app.patch("/v1/agents/{agent_id}", tags=["agents"], responses=responses(schema.AGENT))
    def update(request: Request, agent_id: str, body: dict[str, Any] = Body(...)
               ) -> JSONResponse:
        return api.run(request, "agents update", lambda app_, who: (
            app_.agents.update(who, agent_id, body).to_dict(), COMMITTED))

    @app.delete("/v1/agents/{agent_id}", tags=["agents"], responses=responses(schema.AGENT))
    def remove(request: Request, agent_id: str) -> JSONResponse:
        return api.run(request, "agents remove", lambda app_, who: (
            {**app_.agents.remove(who, agent_id).to_dict(), "removed": True}, COMMITTED))

    @app.post("/v1/agents/{agent_id}/status", tags=["agents"], responses=responses(schema.AGENT))
    def set_status(request: Request, agent_id: str, body: dict[str, Any] = Body(...)
                   ) -> JSONResponse:
        def work(app_: App, who: Principal) -> tuple[Doc, Doc]:
            status = typed(body.get("status"), "status", str, required="give the new status")
            reason = typed(body.get("reason"), "reason", str)
            return app_.agents.set_status(who, agent_id, status, reason).to_dict(), COMMITTED

        return api.run(request, "agents status", work)

    @app.post("/v1/agents/{agent_id}/heartbeat", tags=["agents"],
              responses=responses(schema.AGENT))
    def heartbeat(request: Request, agent_id: str) -> JSONResponse:
        return api.run(request, "agents heartbeat", lambda app_, who: (
            app_.agents.heartbeat(who, agent_id).to_dict(), COMMITTED))

    @app.post("/v1/agents/{agent_id}/record", tags=["agents"], responses=responses(schema.AGENT))
    def record(request: Request, agent_id: str, body: dict[str, Any] = Body(...)
               ) -> JSONResponse:
        from arbiter_cli.domain.agents import TaskResult

        def work(app_: App, who: Principal) -> tuple[Doc, Doc]:
            success = typed(body.get("success"), "success", bool,
                            required="give success: true or false")
            result = TaskResult.parse(success=success, quality=body.get("quality"),
                                      latency_ms=body.get("latency_ms"),
                                      task_type=body.get("task_type"),
                                      policy=app_.agents.policy)
            return app_.agents.record(who, agent_id, result).to_dict(), COMMITTED

        return api.run(request, "agents record", work)


def _routing(app: FastAPI, api: Api) -> None:
    responses = schema.responses

    @app.post("/v1/route", tags=["routing"], responses=responses(schema.DECISION),
              summary="Route a task: pick an agent, claim a slot, record the decision")
    def route(request: Request, body: dict[str, Any] = Body(..., openapi_examples=schema.ROUTE)
              ) -> JSONResponse:
        def work(app_: App, who: Principal) -> tuple[Doc, Doc]:
            raw = dict(body)
            strategy = raw.pop("strategy", None)
            seed = raw.pop("seed", None)
            dry_run = flag_of(raw.pop("dry_run", None), "dry_run")
            typed(strategy, "strategy", str)
            routed = app_.routing.route(who, raw, strategy=strategy, seed=seed, dry_run=dry_run,
                                        correlation_id=app_.correlation_id)
            document = routed.decision.to_dict()
            if routed.already_routed:
                document["already_routed"] = True
            fresh = not dry_run and not routed.already_routed
            return document, COMMITTED if fresh else {}

        return api.run(request, "route task", work)

    @app.post("/v1/outcomes", tags=["routing"], responses=responses(schema.DECISION),
              summary="Record how a routed task ended (by decision_id or task_id); idempotent")
    def outcome(request: Request, body: dict[str, Any] = Body(...,
                                                               openapi_examples=schema.OUTCOME)
                ) -> JSONResponse:
        from arbiter_cli.domain.routing import Outcome

        def work(app_: App, who: Principal) -> tuple[Doc, Doc]:
            success = typed(body.get("success"), "success", bool)
            decision_id = typed(body.get("decision_id"), "decision_id", str)
            task_id = typed(body.get("task_id"), "task_id", str)
            result = Outcome.parse(success=success, quality=body.get("quality"),
                                   latency_ms=body.get("latency_ms"), tokens=body.get("tokens"),
                                   error=body.get("error"))
            recorded = app_.routing.outcome(who, result, decision_id=decision_id,
                                            task_id=task_id)
            document = recorded.decision.to_dict()
            if recorded.already_recorded:
                document["already_recorded"] = True
            return document, {} if recorded.already_recorded else COMMITTED

        return api.run(request, "route outcome", work)

    @app.get("/v1/decisions", tags=["routing"], responses=responses(schema.DECISION_LIST))
    def history(request: Request, agent: str | None = None, task_type: str | None = None,
                status: str | None = None, since: str | None = None,
                over_capacity: str | None = None, limit: str | None = None,
                cursor: str | None = None) -> JSONResponse:
        def work(app_: App, who: Principal) -> tuple[Doc, Doc]:
            decisions, next_cursor = app_.routing.history(
                who, agent_id=agent, task_type=task_type, status=status,
                since=parse_since(since), cursor=cursor, limit=limit_of(limit),
                over_capacity=flag_of(over_capacity, "over_capacity"))
            return listed([d.to_dict() for d in decisions], next_cursor), {}

        return api.run(request, "route history", work)

    @app.get("/v1/decisions/{decision_id}", tags=["routing"], responses=responses(schema.DECISION))
    def explain(request: Request, decision_id: str) -> JSONResponse:
        return api.run(request, "route explain", lambda app_, who: (
            app_.routing.explain(who, decision_id).to_dict(), {}))

    @app.get("/v1/route/stats", tags=["routing"], responses=responses(schema.OBJECT))
    def route_stats(request: Request, since: str | None = None,
                    by: str = Query("agent", description="agent, task-type or strategy")
                    ) -> JSONResponse:
        return api.run(request, "route stats", lambda app_, who: (
            app_.routing.stats(who, since=parse_since(since), by=by), {}))

    @app.post("/v1/route/reap", tags=["routing"], responses=responses(schema.DECISION_LIST))
    def reap(request: Request) -> JSONResponse:
        def work(app_: App, who: Principal) -> tuple[Doc, Doc]:
            expired = app_.routing.reap(who)
            return listed([d.to_dict() for d in expired], None), COMMITTED

        return api.run(request, "route reap", work)


def _security(app: FastAPI, api: Api) -> None:
    responses = schema.responses

    @app.get("/v1/whoami", tags=["security"], responses=responses(schema.WHOAMI))
    def whoami(request: Request) -> JSONResponse:
        return api.run(request, "whoami", lambda app_, who: (
            {"tenant": who.tenant, "role": who.role, "token_id": who.token_id}, {}))

    @app.post("/v1/tokens", tags=["security"], responses=responses(schema.OBJECT),
              summary="Create a token in your tenant; the full token is in this answer only")
    def tokens_create(request: Request, body: dict[str, Any] = Body(...)) -> JSONResponse:
        from arbiter_cli.config import parse_duration

        def work(app_: App, who: Principal) -> tuple[Doc, Doc]:
            expires_in = body.get("expires_in")
            seconds = None
            if expires_in is not None:
                try:
                    seconds = parse_duration(str(expires_in))
                except ValueError as exc:
                    raise fail("expires_in", "duration", str(exc)) from None
            role = typed(body.get("role"), "role", str, required="give role")
            name = typed(body.get("name"), "name", str, required="give name")
            issued = app_.security.issue(who, role=role, name=name,
                                         expires_in_s=seconds, rate=body.get("rate"),
                                         burst=body.get("burst"))
            return issued.to_dict(), COMMITTED

        return api.run(request, "tokens create", work)

    @app.get("/v1/tokens", tags=["security"], responses=responses(schema.LIST))
    def tokens_list(request: Request, limit: str | None = None, cursor: str | None = None
                    ) -> JSONResponse:
        def work(app_: App, who: Principal) -> tuple[Doc, Doc]:
            found, next_cursor = app_.security.tokens(who, cursor=cursor, limit=limit_of(limit))
            return listed([t.to_dict() for t in found], next_cursor), {}

        return api.run(request, "tokens list", work)

    @app.delete("/v1/tokens/{token_id}", tags=["security"], responses=responses(schema.OBJECT))
    def tokens_revoke(request: Request, token_id: str, force: str | None = None) -> JSONResponse:
        return api.run(request, "tokens revoke", lambda app_, who: (
            app_.security.revoke(who, token_id, force=flag_of(force, "force")).to_dict(),
            COMMITTED))

    @app.get("/v1/audit", tags=["security"], responses=responses(schema.LIST))
    def audit_list(request: Request, since: str | None = None, action: str | None = None,
                   actor: str | None = None, limit: str | None = None,
                   cursor: str | None = None) -> JSONResponse:
        def work(app_: App, who: Principal) -> tuple[Doc, Doc]:
            before = None if cursor is None else integer(cursor, "cursor", low=1, high=2**62)
            events, next_cursor = app_.security.events(who, since=parse_since(since),
                                                       action=action, actor=actor,
                                                       cursor=before, limit=limit_of(limit))
            return listed([e.to_dict() for e in events], next_cursor), {}

        return api.run(request, "audit list", work)

    @app.get("/v1/audit/verify", tags=["security"], responses=responses(schema.OBJECT))
    def audit_verify(request: Request, expect_head: str | None = None) -> JSONResponse:
        keyed = bool(api.settings.security.audit_key)
        return api.run(request, "audit verify", lambda app_, who: (
            app_.security.verify(who, expect_head).document(keyed=keyed), {}))
