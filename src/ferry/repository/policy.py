"""Version policies: which of the versions found on disk should be served.

The same three policies as TF Serving's `model_version_policy`. A policy is a pure
function of the version numbers found, so it is trivially testable and swappable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass


class VersionPolicy(ABC):
    """Chooses the aspired versions among those available in storage."""

    @abstractmethod
    def select(self, versions: Iterable[int]) -> set[int]:
        """The versions that should be served."""

    @abstractmethod
    def describe(self) -> str:
        """A short human description for logs and status."""


@dataclass(frozen=True)
class Latest(VersionPolicy):
    """Serve the `num_versions` highest version numbers (TF Serving's default, with 1)."""

    num_versions: int = 1

    def select(self, versions: Iterable[int]) -> set[int]:
        return set(sorted(versions, reverse=True)[: max(self.num_versions, 1)])

    def describe(self) -> str:
        return f"latest {self.num_versions}"


@dataclass(frozen=True)
class AllVersions(VersionPolicy):
    """Serve every version found."""

    def select(self, versions: Iterable[int]) -> set[int]:
        return set(versions)

    def describe(self) -> str:
        return "all"


@dataclass(frozen=True)
class Specific(VersionPolicy):
    """Serve exactly the listed versions (those of them that exist)."""

    versions: frozenset[int]

    def select(self, versions: Iterable[int]) -> set[int]:
        return set(versions) & self.versions

    def describe(self) -> str:
        return "specific " + ",".join(str(v) for v in sorted(self.versions))
