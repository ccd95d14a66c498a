"""Per-key counts in the replicated state, and the top-N series the metrics show of them."""

from __future__ import annotations

import pickle

from qrt.metrics import top_keys
from qrt.state import tallies
from qrt.state.tallies import OTHER, KeyTally, Tallies


def test_key_values_past_the_cap_are_counted_together() -> None:
    t = Tallies()
    for i in range(tallies.MAX_KEY_VALUES + 5):
        t.count_keys({"tenant": f"t{i}", "region": 1}, "submitted")
    assert len(t.by_key) == tallies.MAX_KEY_VALUES + 1
    assert t.by_key["region=1"].submitted == tallies.MAX_KEY_VALUES + 5
    assert t.by_key[OTHER].submitted == 6  # t999 to t1004: region=1 took one of the 1,000 labels
    assert sum(k.submitted for k in t.by_key.values()) == 2 * (tallies.MAX_KEY_VALUES + 5)


def test_a_snapshot_without_per_key_counts_loads() -> None:
    t = Tallies()
    t.of("a").submitted = 3
    del t.__dict__["by_key"]  # as a snapshot written before them
    restored = pickle.loads(pickle.dumps(t))
    assert restored.by_actor["a"].submitted == 3 and restored.by_key == {}


def test_the_top_n_by_volume_and_the_rest_summed_under_other() -> None:
    by_key = {"k=a": KeyTally(5, 5, 4, 1, 0), "k=b": KeyTally(3, 3, 3, 0, 0), "k=c": KeyTally(3, 2, 2, 0, 0),
              "k=d": KeyTally(1, 1, 0, 1, 1), OTHER: KeyTally(10, 9, 9, 0, 0)}
    kept: list[str] = []
    shown = top_keys(by_key, 2, kept)
    assert shown == {"k=a": KeyTally(5, 5, 4, 1, 0), "k=b": KeyTally(3, 3, 3, 0, 0),  # a tie goes by name
                     OTHER: KeyTally(14, 12, 11, 1, 1)}
    assert top_keys(by_key, 0, []) == {OTHER: KeyTally(22, 20, 18, 2, 1)}
    assert top_keys({}, 20, []) == {}
    assert top_keys({"k=a": KeyTally(1)}, 20, []) == {"k=a": KeyTally(1)}
    # k=d overtakes both: the series shown stay, so none counts down (other only grows)
    by_key["k=d"] = KeyTally(50, 50, 50, 0, 0)
    again = top_keys(by_key, 2, kept)
    assert set(again) == {"k=a", "k=b", OTHER} and again[OTHER].submitted == 63 > shown[OTHER].submitted
