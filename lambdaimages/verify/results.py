"""How verification ended: one check, one runtime on one architecture, one runtime; read and written as JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

CHECKS = ("tarballs", "identity", "tree", "config", "invoke")
PASS = "pass"
FAIL = "FAIL"
CANNOT_RUN = "cannot run"
NO_SMOKE = "no smoke test"
SKIPPED = "skipped"


@dataclass(frozen=True)
class Check:
    """How one check ended: `status` is PASS, FAIL or why it did not apply; `summary` is one line."""

    name: str
    status: str
    summary: str = ""
    details: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status == FAIL


@dataclass(frozen=True)
class ArchResult:
    """The five checks of one runtime on one architecture; `notes` are information, never failures."""

    runtime: str
    arch: str
    checks: tuple[Check, ...]
    notes: tuple[str, ...] = ()
    image: str | None = None
    image_id: str | None = None

    def check(self, name: str) -> Check:
        return next(check for check in self.checks if check.name == name)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if check.failed]

    @property
    def seconds(self) -> float:
        return sum(check.seconds for check in self.checks)


@dataclass(frozen=True)
class RuntimeResult:
    runtime: str
    architectures: tuple[ArchResult, ...]

    @property
    def failed(self) -> bool:
        return any(result.failures for result in self.architectures)

    def failure_message(self) -> str:
        """One line naming every architecture and check that failed, with the first difference of each."""
        parts = [f"{r.arch} {c.name}: {c.summary}" for r in self.architectures for c in r.failures]
        return "; ".join(parts)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> RuntimeResult:
        archs = []
        for arch in data["architectures"]:
            checks = tuple(Check(**{**c, "details": tuple(c["details"])}) for c in arch["checks"])
            archs.append(ArchResult(**{**arch, "checks": checks, "notes": tuple(arch["notes"])}))
        return cls(data["runtime"], tuple(archs))
