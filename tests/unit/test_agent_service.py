"""Agent registry use cases through the in-memory unit of work, with a fake clock and uids."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter_cli.adapters.memory import MemoryUnitOfWorkFactory
from arbiter_cli.domain.agents import Performance, RegistryPolicy, Status, TaskResult
from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.validation import AGENT_ID_RE
from arbiter_cli.errors import Conflict, InvalidInput, NotFound
from arbiter_cli.services.agents import AgentService, decode_cursor, encode_cursor

OTHER = Principal(tenant="other", role="admin")


def ids_in(service, principal) -> list[str]:
    return [a.id for a in service.list(principal, limit=0).items]


def register(service, admin, raw, *ids, **fields):
    return service.register(admin, [raw(i, **fields) for i in ids])


def invalid_input(call, *args, **kwargs) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args, **kwargs)
    assert caught.value.exit_code == 2
    return caught.value


# ---------------------------------------------------------------------------- register


def test_register_creates_an_agent_with_uid_tenant_and_clock_times(service, admin, raw, clock):
    """A registration is stored with a fresh uid, the caller's tenant and the clock's time."""
    [agent] = service.register(admin, [raw("coder-1", capacity=4)])
    assert (agent.uid, agent.tenant, agent.id, agent.capacity) == ("uid-0001", "default",
                                                                   "coder-1", 4)
    assert (agent.registered_at, agent.updated_at, agent.last_active_at) == (clock(),) * 3
    assert (agent.version, agent.status, agent.active_tasks) == (1, Status.AVAILABLE, 0)
    assert service.show(admin, "coder-1") == agent


def test_register_many_gives_each_agent_its_own_uid(service, admin, raw):
    """uids are drawn once per agent, in input order."""
    created = register(service, admin, raw, "b", "a", "c")
    assert [(a.id, a.uid) for a in created] == [("b", "uid-0001"), ("a", "uid-0002"),
                                                ("c", "uid-0003")]
    assert ids_in(service, admin) == ["a", "b", "c"]


def test_register_uses_the_policy_default_capacity(make_service, policy, admin, raw):
    """Without capacity, registry.default_capacity applies."""
    service = make_service(RegistryPolicy(policy.task_types, policy.languages, default_capacity=3))
    assert service.register(admin, [raw("a")])[0].capacity == 3


def test_a_bad_item_in_a_batch_writes_nothing(service, admin, raw):
    """All or nothing: the third item's error names it and no agent is stored."""
    batch = [raw("a"), raw("b"), raw("c", capacity=0), raw("d")]
    error = invalid_input(service.register, admin, batch)
    assert (error.field, error.rule) == ("[2].capacity", "range")
    assert ids_in(service, admin) == []


def test_two_registrations_already_carry_item_prefixes(service, admin, raw):
    """From two items on, fields are prefixed with the item index."""
    error = invalid_input(service.register, admin, [raw("a"), raw("b", capacity=0)])
    assert error.field == "[1].capacity"


def test_a_single_registration_has_no_item_prefix(service, admin, raw):
    """One input reports plain field names."""
    error = invalid_input(service.register, admin, [raw("a", capacity=0)])
    assert error.field == "capacity"


def test_registering_an_existing_id_is_a_conflict_and_writes_nothing(service, admin, raw):
    """An existing id gives exit 5, and the batch's other agents are not stored."""
    [first] = register(service, admin, raw, "b")
    with pytest.raises(Conflict) as caught:
        register(service, admin, raw, "a", "b", "c")
    assert caught.value.exit_code == 5
    assert caught.value.message == "agent 'b' already exists"
    assert ids_in(service, admin) == ["b"]
    assert service.show(admin, "b") == first


def test_an_id_repeated_in_one_input_is_a_conflict(service, admin, raw):
    """The same id twice in a file is rejected before anything is written."""
    with pytest.raises(Conflict, match="appears more than once"):
        register(service, admin, raw, "a", "b", "a")
    assert ids_in(service, admin) == []


def test_ids_are_case_sensitive(service, admin, raw):
    """'Coder' and 'coder' are different agents."""
    register(service, admin, raw, "Coder", "coder")
    assert ids_in(service, admin) == ["Coder", "coder"]


def test_the_same_id_in_another_tenant_is_not_a_conflict(service, admin, raw):
    """Ids are unique within a tenant only."""
    register(service, admin, raw, "a")
    register(service, OTHER, raw, "a")
    assert ids_in(service, admin) == ids_in(service, OTHER) == ["a"]


def test_max_agents_is_enforced_per_tenant(make_service, policy, admin, raw):
    """Exactly max_agents fit; one more is a conflict that writes nothing; other tenants are free."""
    service = make_service(RegistryPolicy(policy.task_types, policy.languages, max_agents=3))
    register(service, admin, raw, "a", "b")
    with pytest.raises(Conflict) as caught:
        register(service, admin, raw, "c", "d")
    assert caught.value.exit_code == 5
    assert "registry.max_agents" in caught.value.message
    assert ids_in(service, admin) == ["a", "b"]
    register(service, admin, raw, "c")
    with pytest.raises(Conflict):
        register(service, admin, raw, "d")
    register(service, OTHER, raw, "a", "b", "c")
    assert len(ids_in(service, OTHER)) == 3


def test_progress_reports_every_hundred_items_then_the_rest(service, admin, raw):
    """A 250-item file reports 100, 100 and 50."""
    calls: list[int] = []
    service.register(admin, [raw(f"a{i:03d}") for i in range(250)], progress=calls.append)
    assert calls == [100, 100, 50]


@pytest.mark.parametrize("count", [99, 100, 101, 199, 200])
def test_progress_adds_up_to_the_number_of_items(service, admin, raw, count):
    """Whatever the size, the increments sum to it, one per full hundred plus the rest."""
    calls: list[int] = []
    service.register(admin, [raw(f"a{i:03d}") for i in range(count)], progress=calls.append)
    assert sum(calls) == count
    assert calls[:-1] == [100] * (count // 100)


def test_progress_for_a_small_batch_reports_its_size(service, admin, raw):
    """Three items report 3 once."""
    calls: list[int] = []
    service.register(admin, [raw("a"), raw("b"), raw("c")], progress=calls.append)
    assert calls == [3]


# ---------------------------------------------------------------------------- update


def test_update_changes_fields_bumps_version_and_moves_updated_at(service, admin, raw, clock):
    """A patch replaces the given fields, version +1, updated_at = now."""
    register(service, admin, raw, "a")
    clock.advance(minutes=3)
    changed = service.update(admin, "a", {"name": "Renamed", "languages": ["go", "rust"]})
    assert (changed.name, changed.languages, changed.version) == ("Renamed", ("Go", "Rust"), 2)
    assert changed.updated_at == clock()
    assert changed.registered_at == clock() - timedelta(minutes=3)
    assert service.show(admin, "a") == changed


def test_update_with_the_current_expected_version_succeeds(service, admin, raw):
    """--expect-version equal to the stored version lets the update through."""
    register(service, admin, raw, "a")
    assert service.update(admin, "a", {"capacity": 5, "expect_version": 1}).version == 2


def test_update_with_a_stale_expected_version_is_a_conflict(service, admin, raw):
    """A version mismatch is exit 5 and changes nothing."""
    [agent] = register(service, admin, raw, "a")
    with pytest.raises(Conflict) as caught:
        service.update(admin, "a", {"capacity": 5, "expect_version": 2})
    assert caught.value.exit_code == 5
    assert caught.value.message == "agent 'a' is at version 1, not 2"
    assert service.show(admin, "a") == agent


def test_update_with_nothing_to_change_is_invalid(service, admin, raw):
    """An update must give at least one field (expect_version alone is not a change)."""
    register(service, admin, raw, "a")
    error = invalid_input(service.update, admin, "a", {"expect_version": 1})
    assert error.details == {"field": "", "rule": "required"}
    assert error.message == "nothing to update: give at least one field"


def test_update_can_correct_active_tasks(service, admin, raw):
    """Admin correction of active_tasks changes utilization."""
    register(service, admin, raw, "a", capacity=4)
    assert service.update(admin, "a", {"active_tasks": 3}).utilization == 0.75


def test_update_of_an_unknown_agent_is_not_found(service, admin):
    """A missing agent is exit 4."""
    with pytest.raises(NotFound) as caught:
        service.update(admin, "ghost", {"name": "x"})
    assert caught.value.exit_code == 4
    assert caught.value.message == "agent 'ghost' not found"


def test_invalid_update_input_is_reported_before_the_lookup(service, admin):
    """Input model (2) comes before tenant-scoped lookup (4), as SPEC §0 orders the checks."""
    assert invalid_input(service.update, admin, "ghost", {"capacity": 0}).field == "capacity"


@pytest.mark.parametrize("method", ["show", "remove", "heartbeat"])
def test_an_invalid_agent_id_is_invalid_input(service, admin, method):
    """Ids are validated, never looked up as given."""
    error = invalid_input(getattr(service, method), admin, "-bad id")
    assert (error.field, error.rule) == ("id", "pattern")
    assert error.message.startswith("id: '-bad id' is not a valid agent id (")


def test_update_with_an_invalid_id_is_invalid_input(service, admin):
    """update validates the id too."""
    assert invalid_input(service.update, admin, "bad id", {"name": "x"}).field == "id"


def test_agents_of_other_tenants_are_not_found(service, admin, raw):
    """Another tenant's agent is indistinguishable from a missing one."""
    register(service, admin, raw, "a")
    for call in (lambda: service.show(OTHER, "a"), lambda: service.heartbeat(OTHER, "a"),
                 lambda: service.remove(OTHER, "a")):
        with pytest.raises(NotFound):
            call()
    assert ids_in(service, admin) == ["a"]


# ---------------------------------------------------------------------------- status, heartbeat, record


def test_set_status_stores_status_and_reason(service, admin, raw, clock):
    """status changes the status and reason and bumps the version."""
    register(service, admin, raw, "a")
    clock.advance(seconds=10)
    changed = service.set_status(admin, "a", "draining", "deploying v2")
    assert (changed.status, changed.status_reason, changed.version) == (
        Status.DRAINING, "deploying v2", 2)
    assert changed.updated_at == clock()
    assert service.show(admin, "a").status == Status.DRAINING


def test_set_status_rejects_an_unknown_status_and_keeps_the_agent(service, admin, raw):
    """An unknown status is exit 2 and writes nothing."""
    [agent] = register(service, admin, raw, "a")
    assert invalid_input(service.set_status, admin, "a", "busy").field == "status"
    assert service.show(admin, "a") == agent


def test_set_status_reports_a_bad_status_before_a_missing_agent(service, admin):
    """Regression, SPEC §0 order of checks: input model (2) before tenant-scoped lookup (4)."""
    assert invalid_input(service.set_status, admin, "ghost", "busy").field == "status"
    assert invalid_input(service.set_status, admin, "ghost", "draining", "r" * 501).field == "reason"


def test_heartbeat_moves_last_active(service, admin, raw, clock):
    """A heartbeat sets last_active_at to now."""
    register(service, admin, raw, "a")
    clock.advance(hours=1)
    beat = service.heartbeat(admin, "a")
    assert (beat.last_active_at, beat.updated_at, beat.version) == (clock(), clock(), 2)


def test_record_folds_one_task_with_the_policy_window(make_service, policy, admin, raw, clock):
    """record replaces the prior on the first task and uses the policy's window afterwards."""
    service = make_service(RegistryPolicy(policy.task_types, policy.languages, window=2))
    register(service, admin, raw, "a")
    clock.advance(seconds=5)
    first = service.record(admin, "a", TaskResult.parse(success=True, quality=0.5, latency_ms=100))
    assert first.performance == Performance(1.0, 0.5, 100.0, 1)
    assert (first.last_active_at, first.version) == (clock(), 2)
    second = service.record(admin, "a", TaskResult.parse(success=False, latency_ms=300))
    assert second.performance == Performance(0.5, 0.25, 200.0, 2)
    third = service.record(admin, "a", TaskResult.parse(success=True, quality=1.0))
    assert third.performance == Performance(0.75, 0.625, 200.0, 3, latency_count=2)
    assert service.show(admin, "a") == third


# ---------------------------------------------------------------------------- remove


def test_remove_returns_the_agent_and_forgets_it(service, admin, raw):
    """A removed agent is gone; removing it again is not found."""
    [agent] = register(service, admin, raw, "a")
    assert service.remove(admin, "a") == agent
    with pytest.raises(NotFound):
        service.show(admin, "a")
    with pytest.raises(NotFound):
        service.remove(admin, "a")


def test_a_removed_id_registered_again_is_a_new_agent(service, admin, raw):
    """Re-registration gets a new uid, version 1 and the performance prior."""
    register(service, admin, raw, "a")
    service.record(admin, "a", TaskResult.parse(success=False))
    service.remove(admin, "a")
    [again] = register(service, admin, raw, "a")
    assert again.uid == "uid-0002"
    assert again.version == 1
    assert again.performance == Performance()


# ---------------------------------------------------------------------------- list


def test_list_pages_by_id_with_a_cursor(service, admin, raw):
    """Pages of 2 walk the ids in order; the last page has no next cursor."""
    register(service, admin, raw, "e", "c", "a", "d", "b")
    first = service.list(admin, limit=2)
    assert [a.id for a in first.items] == ["a", "b"]
    assert first.next_cursor == encode_cursor("b")
    second = service.list(admin, limit=2, cursor=first.next_cursor)
    assert [a.id for a in second.items] == ["c", "d"]
    third = service.list(admin, limit=2, cursor=second.next_cursor)
    assert [a.id for a in third.items] == ["e"]
    assert third.next_cursor is None


@pytest.mark.parametrize(("limit", "count", "has_next"), [(0, 3, False), (2, 2, True),
                                                          (3, 3, False), (4, 3, False),
                                                          (1, 1, True)])
def test_list_limit_zero_means_all_and_a_full_last_page_has_no_cursor(
    service, admin, raw, limit, count, has_next
):
    """limit = n returns everything without a cursor; limit < n gives one."""
    register(service, admin, raw, "a", "b", "c")
    page = service.list(admin, limit=limit)
    assert len(page.items) == count
    assert (page.next_cursor is not None) is has_next


def test_list_defaults_to_100_per_page(service, admin, raw):
    """Without --limit a page holds 100 agents."""
    service.register(admin, [raw(f"a{i:03d}") for i in range(101)])
    page = service.list(admin)
    assert len(page.items) == 100
    assert page.next_cursor == encode_cursor("a099")


def test_list_filters_by_status_and_canonical_task_type(service, admin, raw):
    """--status and --task-type (any case) narrow the list."""
    register(service, admin, raw, "a", "b")
    register(service, admin, raw, "c", task_types=["testing"])
    service.set_status(admin, "b", "offline")
    assert [a.id for a in service.list(admin, status="available", limit=0).items] == ["a", "c"]
    assert [a.id for a in service.list(admin, task_type="CODE-REVIEW", limit=0).items] == ["a", "b"]


@pytest.mark.parametrize(("kwargs", "field", "rule"), [
    ({"status": "busy"}, "status", "allowed"),
    ({"task_type": "cooking"}, "task_type", "allowed"),
    ({"limit": -1}, "limit", "range"),
    ({"limit": 1_000_001}, "limit", "range"),
    ({"cursor": "a"}, "cursor", "format"),
    ({"cursor": encode_cursor("-not an id")}, "cursor", "pattern"),
    ({"cursor": "_w"}, "cursor", "format"),
])
def test_list_rejects_bad_options(service, admin, kwargs, field, rule):
    """Unknown statuses and task types, out-of-range limits and foreign cursors are exit 2."""
    error = invalid_input(service.list, admin, **kwargs)
    assert (error.field, error.rule) == (field, rule)


def test_list_errors_explain_themselves(service, admin):
    """Bad statuses and cursors say what is expected."""
    assert invalid_input(service.list, admin, status="busy").message == (
        "status: must be one of available, draining, offline, maintenance")
    assert invalid_input(service.list, admin, cursor="a").message == (
        "cursor: is not a cursor returned by a previous page")
    assert "is not a valid cursor (" in invalid_input(
        service.list, admin, cursor=encode_cursor("-x")).message


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.from_regex(AGENT_ID_RE, fullmatch=True))
def test_every_agent_id_survives_a_cursor_round_trip(agent_id):
    """decode(encode(id)) is the id, for any valid id."""
    cursor = encode_cursor(agent_id)
    assert "=" not in cursor
    assert decode_cursor(cursor) == agent_id


def test_cursors_round_trip_without_padding():
    """A cursor is the url-safe base64 of the last id, without '=' padding."""
    assert encode_cursor("a") == "YQ"
    assert decode_cursor("YQ") == "a"
    assert encode_cursor("aaW") == "YWFX"
    assert decode_cursor("YWFX") == "aaW"
    assert decode_cursor(encode_cursor("agent:1.x-y_z")) == "agent:1.x-y_z"
    assert decode_cursor(None) is None


# ---------------------------------------------------------------------------- query


def test_query_returns_ranked_items_with_components_and_reasons(service, admin, raw):
    """Each item holds the agent, its match score, components and reasons, best first."""
    register(service, admin, raw, "a", "b", capacity=10)
    service.update(admin, "a", {"active_tasks": 5})
    items = service.query(admin, {"task_type": "code-review", "languages": ["python"]})
    assert [item["agent"]["id"] for item in items] == ["b", "a"]
    assert items[0]["match_score"] == 0.88
    assert items[0]["components"] == {"fit": 0.3, "success": 0.24, "quality": 0.14, "load": 0.2}
    assert items[0]["reasons"] == ["supports code-review", "has Python", "success 80.0%",
                                   "utilization 0%"]
    assert items[1]["match_score"] == 0.78
    assert items[1]["agent"] == service.show(admin, "a").to_dict()


def test_query_uses_the_service_weights(make_service, admin, raw):
    """The weights given to the service are the ones the scorer uses."""
    service = make_service(weights={"fit": 0.0, "success": 0.0, "quality": 0.0, "load": 1.0})
    register(service, admin, raw, "a")
    service.update(admin, "a", {"active_tasks": 4})
    assert service.query(admin, {"task_type": "code-review"})[0]["match_score"] == 0.6


def test_query_applies_hard_filters_and_limit(service, admin, raw):
    """Utilization, success, status, language and limit all narrow the answer."""
    register(service, admin, raw, "a", "b", "c", "d")
    service.update(admin, "a", {"active_tasks": 10})
    service.record(admin, "b", TaskResult.parse(success=False))
    service.set_status(admin, "c", "maintenance")
    q = {"task_type": "code-review"}

    def found(**extra):
        return [item["agent"]["id"] for item in service.query(admin, {**q, **extra})]

    assert found(limit=0) == ["c", "d", "a", "b"]
    assert found(max_utilization=0.9) == ["c", "d", "b"]
    assert found(min_success_rate=0.8) == ["c", "d", "a"]
    assert found(status="available") == ["d", "a", "b"]
    assert found(status="maintenance") == ["c"]
    assert found(limit=1) == ["c"]
    assert found(languages=["Go"]) == []


def test_query_prefers_agents_with_preferred_labels(service, admin, raw):
    """--prefer-specialization raises the fit component of agents that have the label."""
    register(service, admin, raw, "a", specializations=["api"])
    register(service, admin, raw, "b", specializations=["GPU"])
    items = service.query(admin, {"task_type": "code-review", "prefer": ["gpu", "web"]})
    assert [item["agent"]["id"] for item in items] == ["b", "a"]
    assert [item["components"]["fit"] for item in items] == [0.15, 0.0]
    assert "prefers gpu" in items[0]["reasons"]


def test_query_answers_stay_right_after_updates_removes_and_reregistration(service, admin, raw):
    """The memory index follows every change the service makes."""
    register(service, admin, raw, "a", "b", "c")

    def ranked():
        return [i["agent"]["id"] for i in service.query(admin, {"task_type": "code-review",
                                                                "status": "available"})]

    assert ranked() == ["a", "b", "c"]
    service.update(admin, "a", {"active_tasks": 5})
    assert ranked() == ["b", "c", "a"]
    service.set_status(admin, "b", "draining")
    assert ranked() == ["c", "a"]
    service.update(admin, "c", {"task_types": ["testing"]})
    assert ranked() == ["a"]
    service.remove(admin, "a")
    assert ranked() == []
    register(service, admin, raw, "a")
    assert ranked() == ["a"]
    service.set_status(admin, "b", "available")
    assert ranked() == ["a", "b"]


def test_query_input_is_validated(service, admin):
    """A query without a task type is exit 2."""
    assert invalid_input(service.query, admin, {}).field == "task_type"


# ---------------------------------------------------------------------------- stats


def test_stats_report_the_callers_tenant(service, admin, raw):
    """Counts by status, busy and idle, means and totals for one tenant."""
    register(service, admin, raw, "a", "b", capacity=4)
    register(service, OTHER, raw, "z")
    service.update(admin, "a", {"active_tasks": 2})
    service.set_status(admin, "b", "maintenance")
    assert service.stats(admin).to_dict() == {
        "tenant": "default", "agents": 2,
        "by_status": {"available": 1, "draining": 0, "offline": 0, "maintenance": 1},
        "busy": 1, "idle": 1, "mean_utilization": 0.25, "mean_success": 0.8,
        "total_capacity": 8, "total_active_tasks": 2,
    }


# ---------------------------------------------------------------------------- cleanup


@pytest.fixture
def fleet(service, admin, raw, clock):
    """At now = T0 + 25h: quiet and busy (working) silent since T0, gone offline, edge seen
    at T0 + 23h, fresh at T0 + 24h."""
    register(service, admin, raw, "quiet", "busy", "fresh", "gone", "edge")
    service.update(admin, "busy", {"active_tasks": 1})
    service.set_status(admin, "gone", "offline")
    clock.advance(hours=23)
    service.heartbeat(admin, "edge")
    clock.advance(hours=1)
    service.heartbeat(admin, "fresh")
    clock.advance(hours=1)
    return service


def test_cleanup_dry_run_lists_but_changes_nothing(fleet, admin):
    """--dry-run reports the silent idle agents and writes nothing."""
    before = fleet.list(admin, limit=0).items
    found = fleet.cleanup(admin, 24 * 3600, dry_run=True)
    assert [a.id for a in found] == ["quiet"]
    assert found[0].status == Status.AVAILABLE
    assert fleet.list(admin, limit=0).items == before


def test_cleanup_marks_silent_idle_agents_offline_and_never_deletes(fleet, admin, clock):
    """Only agents silent past the cutoff with no active tasks go offline; nothing is removed."""
    marked = fleet.cleanup(admin, 24 * 3600, dry_run=False)
    assert [a.id for a in marked] == ["quiet"]
    quiet = fleet.show(admin, "quiet")
    assert (quiet.status, quiet.status_reason, quiet.updated_at) == (
        Status.OFFLINE, "cleanup: silent", clock())
    assert quiet == marked[0]
    assert fleet.show(admin, "busy").status == Status.AVAILABLE
    assert fleet.show(admin, "fresh").status == Status.AVAILABLE
    assert ids_in(fleet, admin) == ["busy", "edge", "fresh", "gone", "quiet"]


def test_cleanup_cutoff_is_strict(fleet, admin):
    """An agent last seen exactly at the cutoff is not silent; one second later it is."""
    assert [a.id for a in fleet.cleanup(admin, 7200, dry_run=True)] == ["quiet"]
    assert [a.id for a in fleet.cleanup(admin, 7199, dry_run=True)] == ["edge", "quiet"]


def test_cleanup_twice_marks_nothing_the_second_time(fleet, admin):
    """Agents already offline are not marked again."""
    fleet.cleanup(admin, 60, dry_run=False)
    assert fleet.cleanup(admin, 60, dry_run=False) == []


# ---------------------------------------------------------------------------- unit-of-work contract


class RecordingFactory(MemoryUnitOfWorkFactory):
    """The memory fake, remembering each unit of work's ``write`` flag and each locked read."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__(clock=clock)
        self.writes: list[bool] = []
        self.one_statement: list[bool] = []
        self.locked_reads: list[bool] = []

    def __call__(self, *, write: bool = False, one_statement: bool = False):  # type: ignore[no-untyped-def]
        self.writes.append(write)
        self.one_statement.append(one_statement)
        uow = super().__call__(write=write, one_statement=one_statement)
        plain_get = uow.agents.get

        def get(tenant, agent_id, *, for_update=False):  # type: ignore[no-untyped-def]
            self.locked_reads.append(for_update)
            return plain_get(tenant, agent_id, for_update=for_update)

        uow.agents.get = get  # type: ignore[method-assign]
        return uow


@pytest.fixture
def recorded(policy, clock, uids, admin, raw):  # type: ignore[no-untyped-def]
    """A service on a RecordingFactory, with agent 'a' registered and the records cleared."""
    factory = RecordingFactory(clock)
    service = AgentService(factory, policy, {"fit": 0.3, "success": 0.3, "quality": 0.2,
                                             "load": 0.2}, uids)
    service.register(admin, [raw("a")])
    factory.writes.clear()
    factory.one_statement.clear()
    factory.locked_reads.clear()
    return service, factory


READS = {"query": lambda s, p: s.query(p, {"task_type": "code-review"})}


@pytest.mark.parametrize(("action", "write"), [
    (lambda s, p: s.register(p, [{"id": "b", "name": "b", "model_family": "m",
                                  "task_types": ["general"]}]), True),
    (lambda s, p: s.update(p, "a", {"name": "x"}), True),
    (lambda s, p: s.set_status(p, "a", "draining"), True),
    (lambda s, p: s.heartbeat(p, "a"), True),
    (lambda s, p: s.record(p, "a", TaskResult.parse(success=True)), True),
    (lambda s, p: s.remove(p, "a"), True),
    (lambda s, p: s.cleanup(p, 60, dry_run=False), True),
    (lambda s, p: s.cleanup(p, 60, dry_run=True), False),
    (lambda s, p: s.show(p, "a"), False),
    (lambda s, p: s.list(p), False),
    (READS["query"], False),
    (lambda s, p: s.stats(p), False),
], ids=["register", "update", "status", "heartbeat", "record", "remove", "cleanup",
        "cleanup-dry-run", "show", "list", "query", "stats"])
def test_writes_open_write_units_of_work_and_reads_do_not(recorded, admin, action, write):
    """Each use case opens exactly one unit of work, a write one only when it may write."""
    service, factory = recorded
    action(service, admin)
    assert factory.writes == [write]
    # only the query is a single statement, run without a transaction around it
    assert factory.one_statement == [action is READS["query"]]


@pytest.mark.parametrize(("action", "locked"), [
    (lambda s, p: s.update(p, "a", {"name": "x"}), True),
    (lambda s, p: s.set_status(p, "a", "draining"), True),
    (lambda s, p: s.heartbeat(p, "a"), True),
    (lambda s, p: s.record(p, "a", TaskResult.parse(success=True)), True),
    (lambda s, p: s.show(p, "a"), False),
], ids=["update", "status", "heartbeat", "record", "show"])
def test_read_modify_write_reads_the_agent_for_update(recorded, admin, action, locked):
    """Changes read the agent under a row lock (for_update) before writing it back."""
    service, factory = recorded
    action(service, admin)
    assert factory.locked_reads[0] is locked
