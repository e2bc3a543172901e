"""A tiny registry: things register themselves by key; lookups that miss suggest close keys."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError, TrtDeployError

T = TypeVar("T")


def did_you_mean(word: str, choices, n: int = 3) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=n, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


class Registry(Generic[T]):
    def __init__(self, kind: str, error: type[TrtDeployError] = ConfigError):
        self.kind = kind
        self.error = error
        self._items: dict[str, T] = {}

    def register(self, key: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if key in self._items:
                raise KeyError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            return obj
        return deco

    def get(self, key: str, field: str = "") -> T:
        try:
            return self._items[key]
        except KeyError:
            where = f"{field}: " if field else ""
            raise self.error(
                f"{where}unknown {self.kind} {key!r}{did_you_mean(key, self._items)}; "
                f"known: {', '.join(sorted(self._items))}") from None

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def items(self):
        return self._items.items()
