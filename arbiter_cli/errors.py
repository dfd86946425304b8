"""The one exception family of arbiter, with the exit codes of SPEC §5.2.

    ArbiterError (70 internal_error)
    ├── CheckFailed (1 check_failed)
    ├── InvalidInput (2 invalid_input)            field + rule in details
    ├── ConfigInvalid (3 config_invalid)          problems (+ field/rule of each) in details
    ├── NotFound (4 not_found)
    ├── Conflict (5 conflict)
    ├── Unauthenticated (6 unauthenticated)
    ├── Forbidden (6 forbidden)
    ├── RateLimited (7 rate_limited)              retry_after_s in details
    ├── NoCapableAgent (8 no_capable_agent)       excluded in details
    ├── AtCapacity (9 at_capacity)                excluded in details
    ├── StorageUnavailable (10 storage_unavailable)
    │   └── SchemaOutdated (10 schema_outdated)
    ├── LimitExceeded (11 limit_exceeded)
    └── MissingExtra (2 invalid_input)            an optional extra is not installed

This module imports nothing from arbiter, so every layer may raise these.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ArbiterError(Exception):
    """Base of every error arbiter reports; the CLI boundary maps it to an exit code."""

    exit_code: ClassVar[int] = 70
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "exit_code": self.exit_code,
        }
        if self.details:
            body["details"] = self.details
        return {"error": body}


class CheckFailed(ArbiterError):
    exit_code = 1
    code = "check_failed"


class InvalidInput(ArbiterError):
    exit_code = 2
    code = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None, rule: str | None = None) -> None:
        details = {"field": field, "rule": rule} if field or rule else None
        super().__init__(message, details=details)
        self.field = field
        self.rule = rule


class MissingExtra(ArbiterError):
    exit_code = 2
    code = "invalid_input"

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(f"this command needs {module}: install arbiter[{extra}]")


class ConfigInvalid(ArbiterError):
    exit_code = 3
    code = "config_invalid"

    def __init__(self, message: str, *, problems: list[str] | None = None,
                 errors: list[dict[str, str]] | None = None) -> None:
        details: dict[str, Any] = {"problems": problems} if problems else {}
        if errors:  # the same problems with their key and rule: {"field", "rule", "message"}
            details["errors"] = errors
        super().__init__(message, details=details or None)
        self.problems = problems or []


class NotFound(ArbiterError):
    exit_code = 4
    code = "not_found"


class Conflict(ArbiterError):
    exit_code = 5
    code = "conflict"


class Unauthenticated(ArbiterError):
    exit_code = 6
    code = "unauthenticated"


class Forbidden(ArbiterError):
    exit_code = 6
    code = "forbidden"


class RateLimited(ArbiterError):
    exit_code = 7
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, details={"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


class NoCapableAgent(ArbiterError):
    exit_code = 8
    code = "no_capable_agent"

    def __init__(self, message: str, *, excluded: dict[str, int]) -> None:
        super().__init__(message, details={"excluded": excluded})


class AtCapacity(ArbiterError):
    exit_code = 9
    code = "at_capacity"

    def __init__(self, message: str, *, excluded: dict[str, int]) -> None:
        super().__init__(message, details={"excluded": excluded})


class StorageUnavailable(ArbiterError):
    exit_code = 10
    code = "storage_unavailable"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None,
                 driver: BaseException | None = None) -> None:
        super().__init__(message, details=details)
        self.driver = driver  # the driver's exception, for retry classification (never printed)


class SchemaOutdated(StorageUnavailable):
    code = "schema_outdated"


class LimitExceeded(ArbiterError):
    exit_code = 11
    code = "limit_exceeded"


class Interrupted(ArbiterError):
    exit_code = 130
    code = "interrupted"
