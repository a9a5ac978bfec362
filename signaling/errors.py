"""Errors a user can cause: each has a code, an HTTP status and a message."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import TransitionRefused


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra
        self.ref: str | None = None  # the refused WebSocket message's ref, when known

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def forbidden(message: str = "your role may not do this") -> ApiError:
    return ApiError(403, "forbidden", message)


def store_unavailable() -> ApiError:
    return ApiError(503, "store_unavailable", "session state is unavailable; try again shortly")


TAKEN_STATES = ("accepted", "live", "ended")


def refused(exc: TransitionRefused) -> ApiError:
    """The one place a refused state change becomes the API's answer."""
    if exc.kind == "consult" and exc.transition.name == "accept":
        if exc.current_state in TAKEN_STATES:
            return ApiError(409, "already_accepted", "another specialist accepted this consult")
    return ApiError(409, "invalid_state", f"the {exc.kind} is {exc.current_state}")
