"""A human ranking -> the published preference rows (docs/method.md, "Preference labels").

What the annotator gives for one state with K candidates (candidate k = points 2k, 2k+1):

- ``ranked``: candidates in order, best first;
- ``equal``: pairs of candidates marked equal (taken transitively: a = b and b = c gives a = c);
- ``not_comparable``: candidates that cannot be compared with anything;
- ``own``: whether the annotator gave their own action (stored as ``action_poses``).

Indices are 0-based here and in the API; the page shows candidate k as "#k+1", and the
messages of :class:`RankingError` use the page's numbers.

Rows written (the order and sizes the oracle annotator and the data pipeline use), P = 3K:

1. ranking block, 2K rows: each ranked candidate against each comparable unranked one (rank
   order, then candidate index), code 0; then the ranked ones among themselves (rank order),
   code 0, or 2 when they are marked equal; then the pairs of equal unranked candidates,
   code 2. Rows past 2K are dropped (counted in ``dropped``); missing rows are padding
   ``[0, 1, 0, 1]`` with code 3.
2. own-action block, K rows: ``[2K, 2K+1, 2k, 2k+1]`` for each candidate k, code 0 (the
   annotator's action is better) or 3 when k is not comparable; without an own action,
   K padding rows (code 3). Points 2K, 2K+1 name the annotator's action, one past the stored
   candidate points, which is how the layout reader and the pipeline name it.

A ranking is consistent when: indices are ints in [0, K); a candidate appears at most once in
``ranked``; no not-comparable candidate is ranked or marked equal; a group of equal candidates
is either wholly unranked or wholly ranked in consecutive places (equal candidates cannot have
a third one ranked between them).
"""
from __future__ import annotations

import dataclasses
import math

FIRST_BETTER, SECOND_BETTER, EQUAL, NOT_COMPARABLE = 0, 1, 2, 3
PAD = (0, 1, 0, 1)
MAX_COORD = 100.0    # metres: any coordinate beyond this is a forged or broken value


class RankingError(ValueError):
    """An invalid or inconsistent submission; ``str()`` is one line meant for the page."""


@dataclasses.dataclass(frozen=True)
class Ranking:
    ranked: tuple[int, ...]
    equal: tuple[tuple[int, int], ...]         # normalised: a < b, sorted, unique
    not_comparable: tuple[int, ...]            # sorted
    own_action: tuple[tuple[float, float, float], tuple[float, float, float]] | None

    def as_yaml(self) -> dict:
        return {"ranked": list(self.ranked), "equal": [list(p) for p in self.equal],
                "not_comparable": list(self.not_comparable), "own_action": self.own_action is not None}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _index(v, k: int, what: str) -> int:
    if not _is_int(v):
        raise RankingError(f"{what}: expected a candidate index (an integer), got {v!r:.40}")
    if not 0 <= v < k:
        raise RankingError(f"{what}: candidate index {v} is out of range (this sample has "
                           f"indices 0..{k - 1}, shown as #1..#{k})")
    return v


def _list(v, what: str, limit: int) -> list:
    if v is None:
        return []
    if not isinstance(v, list):
        raise RankingError(f"{what}: expected a list")
    if len(v) > limit:
        raise RankingError(f"{what}: too many entries ({len(v)} > {limit})")
    return v


def _point(v, what: str) -> tuple[float, float, float]:
    if not (isinstance(v, list) and len(v) == 3):
        raise RankingError(f"{what}: expected [x, y, z]")
    out = []
    for c in v:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) \
                or abs(c) > MAX_COORD:
            raise RankingError(f"{what}: coordinates must be finite numbers within "
                               f"{MAX_COORD:g} m, got {c!r:.40}")
        out.append(float(c))
    return tuple(out)


def equal_groups(k: int, pairs) -> list[set[int]]:
    """Transitive closure of the equal pairs: the groups of size >= 2."""
    parent = list(range(k))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[find(a)] = find(b)
    groups: dict[int, set[int]] = {}
    for i in range(k):
        groups.setdefault(find(i), set()).add(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=min)


def parse(payload: dict, k: int) -> Ranking:
    """Validate what the page posted (``ranked``, ``equal``, ``not_comparable``,
    ``own_action``) for a sample with ``k`` candidates; raise :class:`RankingError`."""
    if not _is_int(k) or k < 1:
        raise RankingError("this sample has no candidates to rank")
    ranked = [_index(v, k, "ranked") for v in _list(payload.get("ranked"), "ranked", k)]
    if len(set(ranked)) != len(ranked):
        dup = next(v for v in ranked if ranked.count(v) > 1)
        raise RankingError(f"ranked: candidate #{dup + 1} is ranked twice")
    nc = [_index(v, k, "not_comparable") for v in
          _list(payload.get("not_comparable"), "not_comparable", k)]
    if len(set(nc)) != len(nc):
        raise RankingError("not_comparable: a candidate is listed twice")
    both = sorted(set(nc) & set(ranked))
    if both:
        raise RankingError(f"candidate #{both[0] + 1} is both ranked and marked not comparable")
    eq = set()
    for p in _list(payload.get("equal"), "equal", k * (k - 1) // 2):
        if not (isinstance(p, list) and len(p) == 2):
            raise RankingError("equal: expected pairs [a, b] of candidate indices")
        a, b = (_index(v, k, "equal") for v in p)
        if a == b:
            raise RankingError(f"equal: candidate #{a + 1} is marked equal to itself")
        for c in (a, b):
            if c in nc:
                raise RankingError(f"candidate #{c + 1} is marked not comparable, so it cannot be "
                                   "equal to another")
        eq.add((min(a, b), max(a, b)))
    pos = {c: i for i, c in enumerate(ranked)}
    for g in equal_groups(k, eq):
        r = sorted(c for c in g if c in pos)
        if r and len(r) != len(g):
            u = min(g - set(r))
            raise RankingError(f"candidates #{r[0] + 1} and #{u + 1} are marked equal but only "
                               f"#{r[0] + 1} is ranked: rank both or neither")
        if r:
            places = sorted(pos[c] for c in r)
            if places[-1] - places[0] != len(places) - 1:
                between = next(ranked[i] for i in range(places[0], places[-1]) if ranked[i] not in g)
                raise RankingError(f"candidates {', '.join(f'#{c + 1}' for c in sorted(g))} are marked "
                                   f"equal but candidate #{between + 1} is ranked between them")
    own = payload.get("own_action")
    if own is not None:
        if not (isinstance(own, list) and len(own) == 2):
            raise RankingError("own_action: expected two points [[x, y, z], [x, y, z]]")
        own = (_point(own[0], "own_action"), _point(own[1], "own_action"))
    if not ranked and own is None:
        raise RankingError("rank at least one candidate or give your own action "
                           "(Skip leaves the sample unannotated)")
    return Ranking(tuple(ranked), tuple(sorted(eq)), tuple(sorted(nc)), own)


def rows(r: Ranking, k: int, *, ranking_rows: int | None = None):
    """-> (rows [(p1_a, p1_b, p2_a, p2_b)], codes [int], dropped) for a parsed ranking."""
    budget = 2 * k if ranking_rows is None else int(ranking_rows)
    groups = equal_groups(k, r.equal)
    group_of = {c: i for i, g in enumerate(groups) for c in g}

    def same(a, b):
        return a in group_of and group_of.get(b) == group_of[a]

    def row(a, b):
        return (2 * a, 2 * a + 1, 2 * b, 2 * b + 1)

    ranked, nc = list(r.ranked), set(r.not_comparable)
    unranked = [c for c in range(k) if c not in ranked and c not in nc]
    out: list[tuple[tuple[int, int, int, int], int]] = []
    for a in ranked:
        out += [(row(a, b), FIRST_BETTER) for b in unranked]
    for i, a in enumerate(ranked):
        out += [(row(a, b), EQUAL if same(a, b) else FIRST_BETTER) for b in ranked[i + 1:]]
    for g in groups:
        members = sorted(g)
        if members[0] in ranked:
            continue
        out += [(row(a, b), EQUAL) for i, a in enumerate(members) for b in members[i + 1:]]
    dropped = max(0, len(out) - budget)
    out = out[:budget]
    out += [(PAD, NOT_COMPARABLE)] * (budget - len(out))
    own = k   # candidate K: points 2K and 2K+1
    for c in range(k):
        if r.own_action is None:
            out.append((PAD, NOT_COMPARABLE))
        else:
            out.append((row(own, c), NOT_COMPARABLE if c in nc else FIRST_BETTER))
    return [list(x[0]) for x in out], [x[1] for x in out], dropped
