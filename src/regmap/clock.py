"""CLOCK eviction over a dict's insertion order, for regmap's bounded caches."""
from __future__ import annotations

TYPE_CHECKING = False     # typing costs `regmap exec` start-up its import: for checkers only
if TYPE_CHECKING:
    from typing import Callable, TypeVar

    K = TypeVar("K")
    V = TypeVar("V")


def evict(cache: dict[K, V], keep: int, used: Callable[[V], bool],
          retire: Callable[[K, V], None] | None = None) -> None:
    """Drop entries, oldest first, until at most `keep` remain.

    An entry `used` since the last sweep (`used` also clears that mark) gets a
    second chance at the back; after one sweep every survivor is unmarked, so a
    second sweep always reaches `keep`.  `retire(key, value)` is told of each
    entry dropped.
    """
    for sweep in range(2):
        for key in list(cache):
            if len(cache) <= keep:
                return
            value = cache.pop(key)
            if sweep == 0 and used(value):
                cache[key] = value
            elif retire is not None:
                retire(key, value)
