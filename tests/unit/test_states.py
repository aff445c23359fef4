"""The VM state machine: every transition, verb acceptance, QMP events and process exit."""

from __future__ import annotations

import itertools

import pytest

from kvmd.states import (
    ACTIVE,
    INACTIVE,
    TRANSITIONS,
    VERBS,
    IllegalTransition,
    State,
    can,
    check_transition,
    on_event,
    on_exit,
)

S = State
LEGAL = {
    (S.DEFINED, S.STARTING),
    (S.STOPPED, S.STARTING),
    (S.CRASHED, S.STARTING),
    (S.STARTING, S.RUNNING), (S.STARTING, S.PAUSED), (S.STARTING, S.SHUTTING_DOWN),
    (S.STARTING, S.STOPPED), (S.STARTING, S.CRASHED),
    (S.RUNNING, S.PAUSED), (S.RUNNING, S.SHUTTING_DOWN), (S.RUNNING, S.STOPPED), (S.RUNNING, S.CRASHED),
    (S.PAUSED, S.RUNNING), (S.PAUSED, S.SHUTTING_DOWN), (S.PAUSED, S.STOPPED), (S.PAUSED, S.CRASHED),
    (S.SHUTTING_DOWN, S.STOPPED), (S.SHUTTING_DOWN, S.CRASHED), (S.SHUTTING_DOWN, S.RUNNING),
    (S.SHUTTING_DOWN, S.PAUSED),
    # live migration: source (out) and destination / snapshot restore (in)
    (S.RUNNING, S.MIGRATING_OUT), (S.PAUSED, S.MIGRATING_OUT), (S.STARTING, S.MIGRATING_IN),
    *((m, t) for m in (S.MIGRATING_OUT, S.MIGRATING_IN)
      for t in (S.RUNNING, S.PAUSED, S.SHUTTING_DOWN, S.STOPPED, S.CRASHED)),
}
PAIRS = [(a, b) for a, b in itertools.product(State, State) if a != b]


def test_states_are_their_wire_names():
    assert [str(s) for s in State] == ["defined", "starting", "running", "paused", "shutting-down",
                                       "stopped", "crashed", "migrating-out", "migrating-in"]
    assert State("shutting-down") is S.SHUTTING_DOWN


def test_every_state_is_either_active_or_inactive():
    assert ACTIVE | INACTIVE == set(State) and not ACTIVE & INACTIVE


@pytest.mark.parametrize("old,new", sorted(LEGAL), ids=lambda s: str(s))
def test_legal_transition_is_allowed(old, new):
    check_transition(old, new)


@pytest.mark.parametrize("old,new", [p for p in PAIRS if p not in LEGAL], ids=lambda s: str(s))
def test_illegal_transition_is_refused(old, new):
    with pytest.raises(IllegalTransition, match=f"^{old} -> {new}$"):
        check_transition(old, new)


@pytest.mark.parametrize("state", list(State), ids=str)
def test_staying_in_the_same_state_is_always_allowed(state):
    check_transition(state, state)


def test_transition_table_matches_the_documented_graph():
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == LEGAL


def test_an_inactive_vm_can_only_start():
    for state in INACTIVE:
        assert TRANSITIONS[state] == {S.STARTING}


ACCEPTS = {
    "start": {S.DEFINED, S.STOPPED, S.CRASHED},
    "pause": {S.RUNNING},
    "resume": {S.PAUSED},
    "reset": {S.RUNNING, S.PAUSED},
    "shutdown": {S.RUNNING, S.PAUSED, S.SHUTTING_DOWN},
    "destroy": {S.STARTING, S.RUNNING, S.PAUSED, S.SHUTTING_DOWN, S.MIGRATING_OUT, S.MIGRATING_IN},
    "migrate": {S.RUNNING, S.PAUSED},
    "migrate_cancel": {S.MIGRATING_OUT},
    "snapshot": {S.RUNNING, S.PAUSED, S.DEFINED, S.STOPPED, S.CRASHED},
    "revert": {S.RUNNING, S.PAUSED, S.DEFINED, S.STOPPED, S.CRASHED},
}


@pytest.mark.parametrize("verb,state", list(itertools.product(ACCEPTS, State)), ids=lambda v: str(v))
def test_verb_is_accepted_exactly_in_its_states(verb, state):
    assert can(verb, state) is (state in ACCEPTS[verb])


def test_every_verb_is_covered():
    assert set(VERBS) == set(ACCEPTS)


EVENTS = {
    # (state, event) -> new state; anything not listed leaves the state alone
    (S.RUNNING, "STOP"): S.PAUSED,
    (S.STARTING, "STOP"): S.PAUSED,
    (S.PAUSED, "RESUME"): S.RUNNING,
    (S.STARTING, "RESUME"): S.RUNNING,
    (S.STARTING, "SHUTDOWN"): S.SHUTTING_DOWN,
    (S.RUNNING, "SHUTDOWN"): S.SHUTTING_DOWN,
    (S.PAUSED, "SHUTDOWN"): S.SHUTTING_DOWN,
    (S.SHUTTING_DOWN, "SHUTDOWN"): S.SHUTTING_DOWN,
    (S.MIGRATING_OUT, "SHUTDOWN"): S.SHUTTING_DOWN,
    (S.MIGRATING_IN, "SHUTDOWN"): S.SHUTTING_DOWN,
}


@pytest.mark.parametrize("state,event", list(itertools.product(
    State, ["STOP", "RESUME", "SHUTDOWN", "RESET", "POWERDOWN", "DEVICE_DELETED"])), ids=lambda v: str(v))
def test_qmp_event_moves_the_state(state, event):
    assert on_event(state, event, {}) == EVENTS.get((state, event), state)


def test_resume_while_shutting_down_keeps_shutting_down():
    assert on_event(S.SHUTTING_DOWN, "RESUME", {}) == S.SHUTTING_DOWN


def test_stop_while_shutting_down_keeps_shutting_down():
    """QEMU stops the vCPUs on its way out; that is not a pause."""
    assert on_event(S.SHUTTING_DOWN, "STOP", {}) == S.SHUTTING_DOWN


def test_guest_and_host_shutdown_events_are_treated_alike():
    for data in ({"guest": True, "reason": "guest-shutdown"}, {"guest": False, "reason": "host-qmp-quit"}):
        assert on_event(S.RUNNING, "SHUTDOWN", data) == S.SHUTTING_DOWN


@pytest.mark.parametrize("state,event", list(itertools.product(
    State, ["STOP", "RESUME", "SHUTDOWN"])), ids=lambda v: str(v))
def test_every_move_an_event_makes_is_a_legal_transition(state, event):
    check_transition(state, on_event(state, event, {}))


@pytest.mark.parametrize("state", sorted(ACTIVE), ids=str)
@pytest.mark.parametrize("shutdown_seen,destroy_requested,expected", [
    (False, False, S.CRASHED),
    (True, False, S.STOPPED),
    (False, True, S.STOPPED),
    (True, True, S.STOPPED),
])
def test_exit_is_a_crash_unless_a_shutdown_or_destroy_preceded_it(state, shutdown_seen, destroy_requested,
                                                                  expected):
    new = on_exit(state, shutdown_seen, destroy_requested)
    assert new == expected
    check_transition(state, new)


@pytest.mark.parametrize("state", [S.MIGRATING_OUT, S.MIGRATING_IN], ids=str)
@pytest.mark.parametrize("event", ["STOP", "RESUME"])
def test_stop_and_resume_during_a_migration_keep_the_migrating_state(state, event):
    """The source stops for the switch-over and QEMU resumes it after a failure; the
    destination is resumed during postcopy: the migration code, not the event, decides."""
    assert on_event(state, event, {}) == state


@pytest.mark.parametrize("state", [S.MIGRATING_OUT, S.MIGRATING_IN], ids=str)
def test_no_lifecycle_verb_but_destroy_is_accepted_while_migrating(state):
    assert {v for v in VERBS if can(v, state)} == ({"destroy", "migrate_cancel"} if state == S.MIGRATING_OUT
                                                   else {"destroy"})


def test_migrating_states_are_active():
    assert {S.MIGRATING_OUT, S.MIGRATING_IN} <= ACTIVE
