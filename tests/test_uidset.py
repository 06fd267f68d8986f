from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from hanna_sync.uidset import UidSet


def test_ranges_merge_and_round_trip():
    s = UidSet()
    s.add(range(1, 201))
    s.add([202, 205, 206, 207, 203])
    assert str(s) == "1:200,202:203,205:207"
    s.add([201, 204])
    assert str(s) == "1:207"
    assert str(UidSet.parse("1:5,7,9:12")) == "1:5,7,9:12"
    assert str(UidSet.parse("")) == ""
    assert len(UidSet.parse("1:5,7")) == 6


def test_missing_finds_what_was_never_looked_at():
    s = UidSet.parse("1:100,150:200")
    assert s.missing([1, 50, 120, 150, 201]) == [120, 201]
    assert 100 in s and 101 not in s and 0 not in s


@given(st.lists(st.integers(min_value=1, max_value=500), max_size=300))
def test_behaves_like_a_set(uids):
    s = UidSet()
    chunks = list(uids)
    random.Random(0).shuffle(chunks)
    for start in range(0, len(chunks), 7):
        s.add(chunks[start : start + 7])
    assert len(s) == len(set(uids))
    assert all(u in s for u in uids)
    assert UidSet.parse(str(s)).missing(range(1, 501)) == sorted(set(range(1, 501)) - set(uids))
