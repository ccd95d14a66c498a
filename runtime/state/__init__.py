"""The pure state machine (DESIGN.md, "state machine"): no clock, no I/O, no unseeded randomness."""

from .machine import StateMachine
from .model import TaskState

__all__ = ["StateMachine", "TaskState"]
