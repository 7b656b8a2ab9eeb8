"""Label selectors: Kubernetes syntax and Calico's expression syntax, parsed once, matched often.

Pure code. Accepted forms (both may appear wherever a Calyx resource takes a selector):
  Calico:      all(), has(k), !has(k), k == 'v', k != 'v', k in {'a','b'}, k not in {...},
               combined with &&, ||, ! and parentheses.
  Kubernetes:  k=v, k==v, k!=v, k in (a,b), k notin (a,b), k, !k, comma-separated (AND).
An empty selector string selects everything (as all()).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


class SelectorError(ValueError):
    """Raised with a message naming the position and the problem in the selector text."""


@dataclass(frozen=True)
class Selector:
    text: str

    @classmethod
    def all(cls) -> "Selector":
        return cls("all()")

    @classmethod
    def parse(cls, text: str) -> "Selector":
        raise NotImplementedError

    def matches(self, labels: Mapping[str, str]) -> bool:
        raise NotImplementedError
