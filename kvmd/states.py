"""The VM state machine, pure: which states exist, which moves are legal, which verbs
each state accepts, and how QMP events and process exit move a VM.

    defined -> starting -> running <-> paused -> shutting-down -> stopped
                               \\______________________________-> crashed

Live migration adds `migrating-out` (source: entered from running/paused; back to
running/paused when the migration fails or is cancelled, stopped once it completed and
QEMU ended) and `migrating-in` (destination, and a snapshot restore: entered from
starting; running/paused once the incoming state is loaded and resumed).

`vm.py` feeds it QMP events (STOP, RESUME, SHUTDOWN, ...) and the QEMU process's exit;
nothing here does I/O, so every transition is unit-tested on its own.
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    DEFINED = "defined"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting-down"
    STOPPED = "stopped"
    CRASHED = "crashed"
    MIGRATING_OUT = "migrating-out"
    MIGRATING_IN = "migrating-in"

    def __str__(self) -> str:
        return self.value


INACTIVE = frozenset({State.DEFINED, State.STOPPED, State.CRASHED})
ACTIVE = frozenset({State.STARTING, State.RUNNING, State.PAUSED, State.SHUTTING_DOWN,
                    State.MIGRATING_OUT, State.MIGRATING_IN})

TRANSITIONS: dict[State, frozenset[State]] = {
    State.DEFINED: frozenset({State.STARTING}),
    State.STOPPED: frozenset({State.STARTING}),
    State.CRASHED: frozenset({State.STARTING}),
    State.STARTING: frozenset({State.RUNNING, State.PAUSED, State.SHUTTING_DOWN, State.STOPPED,
                               State.CRASHED, State.MIGRATING_IN}),
    State.RUNNING: frozenset({State.PAUSED, State.SHUTTING_DOWN, State.STOPPED, State.CRASHED,
                              State.MIGRATING_OUT}),
    State.PAUSED: frozenset({State.RUNNING, State.SHUTTING_DOWN, State.STOPPED, State.CRASHED,
                             State.MIGRATING_OUT}),
    State.SHUTTING_DOWN: frozenset({State.STOPPED, State.CRASHED, State.RUNNING, State.PAUSED}),
    State.MIGRATING_OUT: frozenset({State.RUNNING, State.PAUSED, State.SHUTTING_DOWN, State.STOPPED,
                                    State.CRASHED}),
    State.MIGRATING_IN: frozenset({State.RUNNING, State.PAUSED, State.SHUTTING_DOWN, State.STOPPED,
                                   State.CRASHED}),
}

# verb -> states in which it is accepted
VERBS: dict[str, frozenset[State]] = {
    "start": INACTIVE,
    "pause": frozenset({State.RUNNING}),
    "resume": frozenset({State.PAUSED}),
    "reset": frozenset({State.RUNNING, State.PAUSED}),
    "shutdown": frozenset({State.RUNNING, State.PAUSED, State.SHUTTING_DOWN}),
    "destroy": ACTIVE,
    "migrate": frozenset({State.RUNNING, State.PAUSED}),
    "migrate_cancel": frozenset({State.MIGRATING_OUT}),
    "snapshot": frozenset({State.RUNNING, State.PAUSED}) | INACTIVE,
    "revert": frozenset({State.RUNNING, State.PAUSED}) | INACTIVE,
}


class IllegalTransition(ValueError):
    pass


def can(verb: str, state: State) -> bool:
    return state in VERBS[verb]


def check_transition(old: State, new: State) -> None:
    if new != old and new not in TRANSITIONS.get(old, frozenset()):
        raise IllegalTransition(f"{old} -> {new}")


def on_event(state: State, event: str, data: dict) -> State:
    """The state after QMP `event` (data as QEMU sent it) arrives in `state`."""
    if event == "STOP" and state in (State.RUNNING, State.STARTING):
        return State.PAUSED
    if event == "RESUME" and state in (State.PAUSED, State.STARTING, State.SHUTTING_DOWN):
        return State.RUNNING if state != State.SHUTTING_DOWN else state
    if event == "SHUTDOWN" and state in ACTIVE:
        return State.SHUTTING_DOWN
    return state


def on_exit(state: State, shutdown_seen: bool, destroy_requested: bool) -> State:
    """The state after the QEMU process ended.

    A clean end follows a SHUTDOWN event (guest powered off, or a host quit/SIGTERM)
    or a destroy kvmd asked for; anything else is a crash.
    """
    if shutdown_seen or destroy_requested:
        return State.STOPPED
    return State.CRASHED
