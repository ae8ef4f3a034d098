"""Near-duplicate jokes: an in-memory index of the stored jokes' keys, searched with rapidfuzz.

Exact copies share a `normalise_key` (the database refuses them); this index also catches a
near-copy: a word changed, a plural, a typo. It is loaded once from the database and kept up
to date on insert and delete; one lookup at 100,000 stored jokes takes a few milliseconds
(`benchmarks/bench_near_duplicates.py`). Pure Python + rapidfuzz, no discord.
"""

from __future__ import annotations

from collections.abc import Iterable

from rapidfuzz import fuzz, process

# fuzz.ratio (normalised Indel similarity, 0-100) at or above this is "the same joke"; tuned
# with benchmarks/bench_near_duplicates.py on the tutorial's 2,950 one-liners.
DEFAULT_THRESHOLD = 88.0
# Keys shorter than this are compared exactly only: in three words, one changed word is
# a different joke more often than a copy.
MIN_FUZZY_CHARS = 16


class NearDuplicateIndex:
    """Stored jokes' normalised keys by id; `find` returns the closest one above the threshold.

    Keys are bucketed by length: fuzz.ratio of two strings whose lengths differ by more
    than the threshold allows cannot reach it, so only the buckets that can are searched.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0 < threshold <= 100:
            raise ValueError(f"threshold must be in (0, 100], got {threshold}")
        self.threshold = threshold
        self._by_length: dict[int, dict[int, str]] = {}
        self._length_of: dict[int, int] = {}
        self._exact: dict[str, int] = {}
        # the newest stored joke indexed: the index catches up from the rows above it. Removing
        # it lowers the mark, since SQLite may give its id to the next joke stored.
        self.highest_id = 0

    @classmethod
    def from_keys(
        cls, rows: Iterable[tuple[int, str]], threshold: float = DEFAULT_THRESHOLD
    ) -> NearDuplicateIndex:
        index = cls(threshold)
        for joke_id, key in rows:
            index.add(joke_id, key)
        return index

    def __len__(self) -> int:
        return len(self._length_of)

    def add(self, joke_id: int, key: str) -> None:
        """Index a stored joke (replaces an earlier key of the same id)."""
        self.remove(joke_id)
        self._by_length.setdefault(len(key), {})[joke_id] = key
        self._length_of[joke_id] = len(key)
        self._exact.setdefault(key, joke_id)
        self.highest_id = max(self.highest_id, joke_id)

    def key_of(self, joke_id: int) -> str | None:
        """The key indexed for `joke_id`, if any."""
        length = self._length_of.get(joke_id)
        return None if length is None else self._by_length[length][joke_id]

    def remove(self, joke_id: int) -> None:
        """Forget a deleted joke (or one whose storing was rolled back); unknown ids are ignored."""
        length = self._length_of.pop(joke_id, None)
        if length is None:
            return
        if joke_id == self.highest_id:
            self.highest_id = max(self._length_of, default=0)
        key = self._by_length[length].pop(joke_id)
        if not self._by_length[length]:
            del self._by_length[length]
        if self._exact.get(key) == joke_id:
            del self._exact[key]
            twin = next((i for i, k in self._by_length.get(length, {}).items() if k == key), None)
            if twin is not None:
                self._exact[key] = twin

    def find(self, key: str) -> tuple[int, float] | None:
        """(id, score) of the most similar stored joke at or above the threshold, else None."""
        if key in self._exact:
            return self._exact[key], 100.0
        if len(key) < MIN_FUZZY_CHARS:
            return None
        best: tuple[int, float] | None = None
        cutoff = self.threshold
        for length in self._candidate_lengths(len(key)):
            found = process.extractOne(
                key, self._by_length[length], scorer=fuzz.ratio, score_cutoff=cutoff
            )
            if found is not None and (best is None or found[1] > best[1]):
                best = (found[2], found[1])
                cutoff = found[1]
        return best

    def _candidate_lengths(self, length: int) -> list[int]:
        """Lengths l whose ratio with `length` can reach the threshold: |L-l| <= (1-t)(L+l)."""
        t = self.threshold / 100
        low, high = length * t / (2 - t), length * (2 - t) / t
        return [n for n in self._by_length if low <= n <= high and n >= MIN_FUZZY_CHARS]
