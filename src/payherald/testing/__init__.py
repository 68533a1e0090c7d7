"""Fakes for tests, next to the interfaces they stand in for: a channel that answers from
a script (``Channel``), a clock that moves when told (``Clock``), the store's event log and
notification queue (``Store``), and the job queue (``JobQueue``)."""

from __future__ import annotations

from payherald.clock import FrozenClock
from payherald.testing.channels import ScriptedChannel
from payherald.testing.jobs import InMemoryJobs
from payherald.testing.store import InMemoryQueue, InMemoryStore

__all__ = ["FrozenClock", "InMemoryJobs", "InMemoryQueue", "InMemoryStore", "ScriptedChannel"]
