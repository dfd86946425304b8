"""``arbiter tokens|tenants|audit …``, ``whoami`` and ``login`` (SPEC §4)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from arbiter_cli.cli import completion, render
from arbiter_cli.cli.boundary import command
from arbiter_cli.cli.consent import YesOpt, require_consent
from arbiter_cli.cli.helptext import HelpGroup
from arbiter_cli.cli.inputs import parse_since
from arbiter_cli.cli.options import CursorOpt, JsonOpt, LimitOpt, SinceOpt, TokenOpt, state_of
from arbiter_cli.cli.setup import save_new_token
from arbiter_cli.domain.validation import fail, integer

if TYPE_CHECKING:
    from rich.console import Console

tokens_app = typer.Typer(help="Create, list and revoke API tokens of your tenant (admin).\n\n"
                         "Example: arbiter tokens list",
                         no_args_is_help=True)
tenants_app = typer.Typer(help="Create and list tenants (direct database authority).\n\n"
                          "Example: arbiter tenants list",
                          no_args_is_help=True)
audit_app = typer.Typer(help="Read and verify the tamper-evident audit log (admin).\n\n"
                        "Example: arbiter audit verify",
                        no_args_is_help=True)


def add_commands(app: typer.Typer) -> None:
    app.add_typer(tokens_app, name="tokens", cls=HelpGroup)
    app.add_typer(tenants_app, name="tenants", cls=HelpGroup)
    app.add_typer(audit_app, name="audit", cls=HelpGroup)
    command(app, "whoami")(whoami)
    command(app, "login")(login)


def whoami(ctx: typer.Context, json_out: JsonOpt = False, token: TokenOpt = None) -> None:
    """Show the tenant, role and token id you act as.

    Example: arbiter whoami --json
    """
    state = state_of(ctx)
    principal = state.principal()
    document = {"tenant": principal.tenant, "role": principal.role,
                "token_id": principal.token_id}
    render.emit(state, document, lambda c: c.print(
        f"tenant [bold]{principal.tenant}[/], role {principal.role}, "
        f"token {principal.token_id}"))


def login(
    ctx: typer.Context,
    token: Annotated[str, typer.Option("--token", help="The token to check and save.",
                                       show_default=False)],
    profile: Annotated[str | None, typer.Option(
        "--profile", help="Profile to save it as (default: ARBITER_PROFILE or default).",
        show_default=False, autocompletion=completion.profiles)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a token saved under that "
                                        "profile.")] = False,
    server: Annotated[str | None, typer.Option(
        "--server", help="The arbiter server the token is for: checked there, and saved "
        "with the token (remote mode).", show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check a token against the database (or a server) and save it in the credentials file
    (0600); with --server, later commands of that profile run on the server.

    Example: arbiter login --server https://arbiter.internal:8787 --token arb_abcd1234efgh_...
    """
    # deferred: start-up of `arbiter --help`
    from arbiter_cli.adapters.credentials import check_profile, save_token

    state = state_of(ctx)
    name = check_profile(profile) if profile is not None else state.profile_name()
    path = state.settings.paths.credentials_file
    if server is not None:
        state.server = server
    state.token = token  # remote mode: the server checks this token, not a saved one
    principal = state.app().security.login(token)
    replaced = save_token(path, name, token, force=force, server=state.remote_url())
    state.tenant = principal.tenant
    render.emit(state, {"profile": name, "credentials_file": str(path), "tenant":
                        principal.tenant, "role": principal.role,
                        "token_id": principal.token_id, "replaced": replaced},
                lambda c: c.print(f"saved token {principal.token_id} ({principal.role} of "
                                  f"{principal.tenant}) as profile [bold]{name}[/] in {path}"))


@command(tokens_app, "create")
def tokens_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option("--role", help="viewer, orchestrator, manager or admin.",
                                      autocompletion=completion.choices(*completion.ROLES),
                                      show_default=False)],
    name: Annotated[str, typer.Option("--name", help="What the token is for.",
                                      show_default=False)],
    expires_in: Annotated[str | None, typer.Option(
        "--expires-in", help="Lifetime, e.g. 30d (default: never).", show_default=False)] = None,
    rate: Annotated[float | None, typer.Option(
        "--rate", help="Calls per second for this token (default security.rate_limit.rate).",
        show_default=False)] = None,
    burst: Annotated[int | None, typer.Option(
        "--burst", help="Bucket size for this token (default security.rate_limit.burst).",
        show_default=False)] = None,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Create a token in your tenant; the full token is shown once.

    Example: arbiter tokens create --role orchestrator --name ci-router --expires-in 90d
    """
    from arbiter_cli.config import parse_duration  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    seconds = None
    if expires_in is not None:
        try:
            seconds = parse_duration(expires_in)
        except ValueError as exc:
            raise fail("expires_in", "duration", str(exc)) from None
    issued = state.app().security.issue(state.principal(), role=role, name=name,
                                        expires_in_s=seconds, rate=rate, burst=burst)
    render.emit(state, issued.to_dict(), lambda c: c.print(
        f"created {issued.record.role} token [bold]{issued.record.id}[/] "
        f"(shown once):\n{issued.token}"), durability="committed")


@command(tokens_app, "list")
def tokens_list(
    ctx: typer.Context,
    limit: LimitOpt = 100,
    cursor: CursorOpt = None,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """List your tenant's tokens (never their secrets).

    Example: arbiter tokens list
    """
    state = state_of(ctx)
    found, next_cursor = state.app().security.tokens(state.principal(), cursor=cursor,
                                                     limit=limit)

    def human(console: Console) -> None:
        console.print(render.table(f"{len(found)} tokens", (
            "id", "name", "role", "expires", "revoked", "last used"), [
            (t.id, t.name, t.role, render.Stamp.of(t.to_dict()["expires_at"], missing="never"),
             render.Stamp.of(t.to_dict()["revoked_at"]),
             render.Stamp.of(t.to_dict()["last_used_at"], missing="never"))
            for t in found]))

    render.emit_list(state, [t.to_dict() for t in found], next_cursor, human,
                     empty="no tokens" + (" after this cursor" if cursor else ""))


@command(tokens_app, "revoke")
def tokens_revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(help="Token id (the part after arb_).",
                                            show_default=False)],
    force: Annotated[bool, typer.Option(
        "--force", help="Revoke even the last active admin token of the tenant.")] = False,
    yes: YesOpt = False,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Revoke a token of your tenant; it stops working at once. Asks first on a terminal;
    needs --yes off one. The last active admin token is kept unless --force.

    Example: arbiter tokens revoke abcd1234efgh --yes
    """
    state = state_of(ctx)
    principal = state.principal()
    require_consent(f"revoke token {token_id!r} of tenant {principal.tenant!r} (it stops "
                    "working at once)", yes=yes)
    record = state.app().security.revoke(principal, token_id, force=force)
    render.emit(state, record.to_dict(), lambda c: c.print(f"revoked token {record.id}"),
                durability="committed")


@command(tenants_app, "create")
def tenants_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Tenant name (lower-case slug).",
                                        show_default=False)],
    save: Annotated[bool, typer.Option("--save", help="Save its admin token as profile NAME.")
                    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Create a tenant and its first admin token (shown once).

    With --save the profile NAME is checked first: if it already holds a token, nothing is
    created (exit 5).

    Example: arbiter tenants create team-b --save
    """
    from arbiter_cli.adapters.credentials import check_saveable  # deferred: start-up of `arbiter --help`
    from arbiter_cli.services.security import check_tenant_name  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    path = state.settings.paths.credentials_file
    if save:  # before anything is committed: a tenant never exists with its token unshown
        check_saveable(path, check_tenant_name(name), force=False, hint=(
            "nothing was created; run without --save and keep the token yourself, or "
            "`arbiter login` it under another profile"))
    issued = state.app().security.create_tenant(name)
    state.tenant = name
    saved = save and save_new_token(path, name, issued.token)
    render.emit(state, {"tenant": name, "admin_token": issued.token, "saved": saved},
                lambda c: c.print(f"created tenant [bold]{name}[/]; admin token (shown once"
                                  f"{f'; saved as profile {name!r}' if saved else ''}):"
                                  f"\n{issued.token}"), durability="committed")


@command(tenants_app, "list")
def tenants_list(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List tenants.

    Example: arbiter tenants list --json
    """
    state = state_of(ctx)
    names = state.app().security.tenants()
    render.emit_list(state, [{"tenant": n} for n in names], None,
                     lambda c: c.print(render.table(None, ("tenant",), [(n,) for n in names])),
                     empty="no tenants: run `arbiter init`")


@command(audit_app, "list")
def audit_list(
    ctx: typer.Context,
    since: SinceOpt = None,
    action: Annotated[str | None, typer.Option("--action", help="e.g. agent.register.",
                                               show_default=False)] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="A token id.",
                                              show_default=False)] = None,
    limit: LimitOpt = 100,
    cursor: CursorOpt = None,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """List your tenant's audit events, newest first.

    Example: arbiter audit list --since 1h --action route.task
    """
    state = state_of(ctx)
    app = state.app()
    before = None if cursor is None else integer(cursor, "cursor", low=1, high=2**62)
    events, next_cursor = app.security.events(state.principal(), since=parse_since(since),
                                              action=action, actor=actor, cursor=before,
                                              limit=limit)

    def human(console: Console) -> None:
        console.print(render.table(f"{len(events)} events", (
            "seq", "time", "actor", "action", "target", "result"), [
            (e.seq, render.Stamp.of(e.body()["at"]), e.actor or "-", e.action, e.target or "",
             e.result)
            for e in events]))

    render.emit_list(state, [e.to_dict() for e in events], next_cursor, human,
                     empty="no audit event matches" if since or action or actor or cursor
                     else "no audit events yet")


@command(audit_app, "verify")
def audit_verify(
    ctx: typer.Context,
    expect_head: Annotated[str | None, typer.Option(
        "--expect-head", help="An anchor SEQ:HASH printed by an earlier verify: the chain "
        "must still hold that hash at that seq (catches truncation and rewrites).",
        show_default=False)] = None,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
) -> None:
    """Walk the hash chain: exit 1 naming the first bad seq; prints the head SEQ:HASH to anchor.

    Keep the printed head somewhere the database's users cannot write (a ticket, a log
    shipper), and pass it back later: a log that grew since still passes.

    Example: arbiter audit verify --expect-head 1042:3f5a...
    """
    state = state_of(ctx)
    verdict = state.app().security.verify(state.principal(), expect_head)
    document = verdict.document(keyed=bool(state.settings.security.audit_key))
    render.emit(state, document, lambda c: c.print(
        f"audit chain intact: {verdict.events} events, head {verdict.head}"))
