"""A set of IMAP UIDs kept as ranges, written like an IMAP sequence set ("1:200,202,205:9000").

Each folder remembers which UIDs a pass has looked at, so the gap check can ask the server which UIDs
it holds below the high-water mark and find any letter that was never looked at (a server whose index
was rebuilt without a new UIDVALIDITY, a FETCH that silently left a message out). Mail arrives with
ascending UIDs, so the set stays a handful of ranges even for a folder of 100,000 letters.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable


class UidSet:
    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._ranges: list[tuple[int, int]] = []
        for low, high in ranges:
            self._add_range(low, high)

    @classmethod
    def parse(cls, text: str) -> UidSet:
        ranges = []
        for part in filter(None, text.split(",")):
            low, _, high = part.partition(":")
            ranges.append((int(low), int(high or low)))
        return cls(ranges)

    def __str__(self) -> str:
        return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in self._ranges)

    def __contains__(self, uid: int) -> bool:
        i = bisect.bisect_right(self._ranges, (uid, float("inf"))) - 1
        return i >= 0 and self._ranges[i][0] <= uid <= self._ranges[i][1]

    def __len__(self) -> int:
        return sum(b - a + 1 for a, b in self._ranges)

    def add(self, uids: Iterable[int]) -> None:
        for uid in sorted(set(uids)):
            self._add_range(uid, uid)

    def _add_range(self, low: int, high: int) -> None:
        """Insert [low, high], merging with neighbours that overlap or touch it."""
        ranges = self._ranges
        i = bisect.bisect_left(ranges, (low, low))
        if i > 0 and ranges[i - 1][1] >= low - 1:
            i -= 1
            low = min(low, ranges[i][0])
        j = i
        while j < len(ranges) and ranges[j][0] <= high + 1:
            high = max(high, ranges[j][1])
            j += 1
        ranges[i:j] = [(low, high)]

    def missing(self, uids: Iterable[int]) -> list[int]:
        """The given UIDs that are not in the set, in order."""
        return sorted(u for u in set(uids) if u not in self)
