"""Desired state against actual state for keyed values, with the difference kept up to date on
every change instead of recomputed from both sides.

Pure code. A dataplane manager records what it wants (``set_desired``/``delete_desired``) and
what the dataplane holds (``set_actual``/``delete_actual``, or ``replace_actual`` after a full
dump); :attr:`pending_updates` and :attr:`pending_deletions` then name exactly the keys to write.
Each call costs the keys it touches, so a manager whose inputs change one key at a time does
work in proportion to that key, not to the size of the table.
"""
from __future__ import annotations

from typing import Generic, Hashable, Mapping, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_ABSENT = object()


class DeltaTracker(Generic[K, V]):
    """Two maps, desired and actual, and the keys on which they differ.

    - a key is a *pending update* when it is desired and the actual value differs (or is absent);
    - a key is a *pending deletion* when it is present in the dataplane and not desired.

    A key is never both. Values are compared with ``==``.
    """

    def __init__(self) -> None:
        self._desired: dict[K, V] = {}
        self._actual: dict[K, V] = {}
        self._updates: dict[K, V] = {}
        self._deletions: dict[K, V] = {}

    # --- views -------------------------------------------------------------------------

    @property
    def desired(self) -> Mapping[K, V]:
        return self._desired

    @property
    def actual(self) -> Mapping[K, V]:
        return self._actual

    @property
    def pending_updates(self) -> Mapping[K, V]:
        """Desired values the dataplane does not hold yet (key -> desired value)."""
        return self._updates

    @property
    def pending_deletions(self) -> Mapping[K, V]:
        """Dataplane values nobody desires (key -> actual value)."""
        return self._deletions

    @property
    def in_sync(self) -> bool:
        return not self._updates and not self._deletions

    # --- desired side ------------------------------------------------------------------

    def set_desired(self, key: K, value: V) -> None:
        self._desired[key] = value
        self._deletions.pop(key, None)
        if self._actual.get(key, _ABSENT) == value:
            self._updates.pop(key, None)
        else:
            self._updates[key] = value

    def delete_desired(self, key: K) -> None:
        if self._desired.pop(key, _ABSENT) is _ABSENT:
            return
        self._updates.pop(key, None)
        actual = self._actual.get(key, _ABSENT)
        if actual is not _ABSENT:
            self._deletions[key] = actual   # type: ignore[assignment]

    def replace_desired(self, desired: Mapping[K, V]) -> int:
        """Make ``desired`` the whole desired state; returns how many keys changed."""
        gone = [key for key in self._desired if key not in desired]
        for key in gone:
            self.delete_desired(key)
        changed = len(gone)
        for key, value in desired.items():
            if self._desired.get(key, _ABSENT) != value:
                self.set_desired(key, value)
                changed += 1
        return changed

    # --- actual side -------------------------------------------------------------------

    def set_actual(self, key: K, value: V) -> None:
        self._actual[key] = value
        want = self._desired.get(key, _ABSENT)
        if want is _ABSENT:
            self._deletions[key] = value
        elif want == value:
            self._updates.pop(key, None)
        else:
            self._updates[key] = want    # type: ignore[assignment]

    def delete_actual(self, key: K) -> None:
        if self._actual.pop(key, _ABSENT) is _ABSENT:
            return
        self._deletions.pop(key, None)
        want = self._desired.get(key, _ABSENT)
        if want is not _ABSENT:
            self._updates[key] = want    # type: ignore[assignment]

    def replace_actual(self, actual: Mapping[K, V]) -> int:
        """Make ``actual`` the whole actual state (after a full dump); returns how many keys
        differed from what was believed, which is how much the dataplane drifted unseen."""
        gone = [key for key in self._actual if key not in actual]
        for key in gone:
            self.delete_actual(key)
        drift = len(gone)
        for key, value in actual.items():
            if self._actual.get(key, _ABSENT) != value:
                self.set_actual(key, value)
                drift += 1
        return drift
