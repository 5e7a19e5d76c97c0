"""The seam between the gateway and its doors: what a door may use (``Services``) and what a
door is (``Door``). Doors import this module and ``http``, never the app, so a door written
as a plugin sees exactly what a built-in one sees.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol, TypeVar, runtime_checkable

from ..calllog import CallLog
from ..types import ModelInfo
from .auth import KeyRing
from .http import Request
from .metrics import Metrics
from .pipeline import CallPipeline
from .readiness import Readiness
from .router import Router, Target
from .routes import Route
from .settings import Settings, WorkerInfo

D = TypeVar("D")
T = TypeVar("T")


class Services(Protocol):
    """What the gateway offers its doors."""

    settings: Settings
    config: dict[str, Any]
    router: Router
    pipeline: CallPipeline
    keys: KeyRing
    metrics: Metrics
    readiness: Readiness
    call_log: CallLog | None
    auth_required: bool
    worker: WorkerInfo | None

    def list_models(self, req: Request) -> list[ModelInfo]:
        """The gateway's models that this caller may call."""

    def find_model(self, req: Request, model: str) -> ModelInfo:
        """One model's info; a model the caller may not call does not exist for it (404)."""

    async def admit_model(self, req: Request, model: str) -> Target:
        """Route a model for a request that runs none (token counting), booking one request."""

    async def sync_keys(self, unless_since: float | None = None) -> None:
        """Save unsaved key usage and read every key again."""

    def find_door(self, kind: type[D]) -> D:
        """The gateway's door of this class (a door that works with another's state)."""


@runtime_checkable
class Door(Protocol):
    """A wire format, or any set of endpoints, the gateway serves. Made with the gateway's
    ``Services`` (``DoorClass(services)``); ``startup`` and ``aclose`` are optional."""

    def routes(self) -> Iterable[Route]: ...


class Lifecycle(Protocol):
    async def startup(self) -> None: ...

    async def aclose(self) -> None: ...
