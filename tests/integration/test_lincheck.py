"""The linearizability and watch checkers (tests/lincheck.py) on small
hand-made histories that are and are not linearizable.

Run:  /usr/bin/python3 -m pytest -q tests/integration/test_lincheck.py
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from lincheck import (Op, check, check_durability, check_key, check_revisions,  # noqa: E402
                      check_watch)


def put(v, call, ret, rev, key="k", status="ok", c=0):
    return Op("put", key, v, call, ret, status, rev, client=c)


def get(v, mod, call, ret, hrev=None, key="k", c=1):
    return Op("get", key, None, call, ret, "ok", (v, mod, hrev if hrev is not None else mod), client=c)


def delete(n, call, ret, rev, key="k", status="ok", c=0):
    return Op("delete", key, None, call, ret, status, (n, rev), client=c)


def cas(expect, v, call, ret, ok, rev, cur=None, key="k", status="ok", c=0):
    return Op("cas", key, (expect, v), call, ret, status, (ok, rev, cur), client=c)


def lin(ops):
    return check_key(ops)[0]


def test_sequential_history_is_linearizable():
    h = [put("a", 0, 1, 2), get("a", 2, 2, 3), put("b", 4, 5, 3), get("b", 3, 6, 7),
         delete(1, 8, 9, 4), get(None, 0, 10, 11, hrev=4), delete(0, 12, 13, 4)]
    assert lin(h)
    assert check(h) == []


def test_stale_read_is_caught():
    # b overwrote a (both acknowledged) before the read began; the read saw a
    h = [put("a", 0, 1, 2), put("b", 2, 3, 3), get("a", 2, 4, 5, hrev=2)]
    assert not lin(h)
    an = check(h)
    assert any("not linearizable" in a for a in an)
    assert any("stale read" in a for a in an)


def test_stale_read_across_keys_is_caught_by_revisions():
    h = [put("x", 0, 1, 5, key="k1"), get(None, 0, 2, 3, hrev=4, key="k2")]
    assert lin([h[1]]) and lin([h[0]])
    assert any("stale read" in a for a in check_revisions(h))


def test_concurrent_read_may_see_old_or_new():
    old = [put("a", 0, 1, 2), put("b", 2, 6, 3), get("a", 2, 4, 5, hrev=2)]
    new = [put("a", 0, 1, 2), put("b", 2, 6, 3), get("b", 3, 3, 4, hrev=3)]
    assert lin(old) and lin(new)
    # but once a read saw the new value, a later read may not see the old
    back = new + [get("a", 2, 5, 5.5, hrev=3)]
    assert not lin(back)


def test_lost_write_is_caught():
    # an acknowledged put, nothing deletes it, a later read finds nothing
    h = [put("a", 0, 1, 2), get(None, 0, 2, 3, hrev=2)]
    assert not lin(h)
    # and against the final event history
    events = [(3, "PUT", "k", "other", 3, 1)]
    an = check_durability([put("a", 0, 1, 2), put("other", 2, 3, 3)], events)
    assert any("missing" in a for a in an)
    assert check_durability([put("a", 0, 1, 2)], [(2, "PUT", "k", "a", 2, 1)]) == []
    # a write applied twice (e.g. a forwarded proposal re-sent)
    an = check_durability([put("a", 0, 1, 2)], [(2, "PUT", "k", "a", 2, 1),
                                                 (3, "PUT", "k", "a", 2, 2)])
    assert any("applied twice" in a for a in an)


def test_read_of_a_value_nobody_wrote():
    assert not lin([put("a", 0, 1, 2), get("zzz", 9, 2, 3)])
    an = check_durability([put("a", 0, 1, 2)], [(2, "PUT", "k", "a", 2, 1),
                                                 (3, "PUT", "k", "zzz", 2, 2)])
    assert any("no client wrote" in a for a in an)


def test_unknown_writes_may_or_may_not_happen():
    # timed out, later seen (its revision is learned from the read)
    assert lin([put("a", 0, 1, 2), put("b", 2, None, None, status="unknown"),
                get("b", 7, 5, 6), get("b", 7, 7, 8)])
    # timed out, never seen
    assert lin([put("a", 0, 1, 2), put("b", 2, None, None, status="unknown"),
                get("a", 2, 5, 6), get("a", 2, 7, 8)])
    # but not seen, then seen, then not seen again
    assert not lin([put("a", 0, 1, 2), put("b", 2, None, None, status="unknown"),
                    get("b", 7, 5, 6), get("a", 2, 7, 8)])
    # and the revision it was seen with must stay the same
    assert not lin([put("b", 2, None, None, status="unknown"),
                    get("b", 7, 5, 6), get("b", 8, 7, 8)])


def test_writes_must_take_increasing_revisions():
    assert not lin([put("a", 0, 1, 5), put("b", 2, 3, 4)])
    assert any("share revision" in a for a in check_revisions(
        [put("a", 0, 1, 5, key="x"), put("b", 0, 1, 5, key="y")]))


def test_compare_and_set():
    ok = [put("a", 0, 1, 2), cas(2, "b", 2, 3, True, 3),
          cas(2, "c", 4, 5, False, 3, cur=("b", 3)), cas(3, "d", 6, 7, True, 4),
          get("d", 4, 8, 9)]
    assert lin(ok)
    # two CAS on the same expected revision cannot both succeed
    assert not lin([put("a", 0, 1, 2), cas(2, "b", 2, 5, True, 3, c=1),
                    cas(2, "c", 2, 5, True, 4, c=2)])
    # a failed CAS must have seen a different revision
    assert not lin([put("a", 0, 1, 2), cas(2, "b", 3, 4, False, 2, cur=("a", 2))])
    # CAS on "absent" (mod_revision 0)
    assert lin([cas(0, "a", 0, 1, True, 2), cas(0, "b", 2, 3, False, 2, cur=("a", 2))])
    assert not lin([put("a", 0, 1, 2), cas(0, "b", 2, 3, True, 3)])
    # an unknown CAS after an unknown put: either branch
    assert lin([put("a", 0, None, None, status="unknown"),
                cas(5, "b", 1, None, None, None, status="unknown"), get("b", 9, 3, 4)])


def test_delete():
    assert lin([put("a", 0, 1, 2), delete(1, 2, 3, 3), get(None, 0, 4, 5, hrev=3)])
    assert not lin([put("a", 0, 1, 2), delete(0, 2, 3, 2)])         # it was there
    assert not lin([delete(1, 0, 1, 2)])                             # nothing to delete
    assert not lin([put("a", 0, 1, 2), delete(1, 2, 3, 3), get("a", 2, 4, 5)])


def test_watch_checker():
    final = [(2, "PUT", "k", "a", 2, 1), (3, "PUT", "k", "b", 2, 2), (4, "DELETE", "k", None, 0, 0)]
    assert check_watch({"m1": list(final), "m2": final[:2]}, final) == []
    gap = check_watch({"m1": [final[0], final[2]]}, final)
    assert gap and "differs" in gap[0]
    dup = check_watch({"m1": [final[0], final[1], final[1], final[2]]}, final)
    assert any("duplicate" in a or "arrives after" in a for a in dup)
    order = check_watch({"m1": [final[1], final[0], final[2]]}, final)
    assert any("arrives after" in a for a in order)
    other = check_watch({"m1": [final[0], (3, "PUT", "k", "X", 2, 2)]}, final)
    assert other


def test_large_concurrent_history_is_fast():
    # 4 clients, 400 ops on one key, overlapping; built to be linearizable
    import random
    r = random.Random(7)
    h = []
    t = 0.0
    rev = 1
    cur = (None, 0)
    for i in range(400):
        t += 1.0
        if r.random() < 0.5:
            rev += 1
            h.append(put("v%d" % i, t - 0.5, t + 1.5, rev, c=i % 4))
            cur = ("v%d" % i, rev)
        else:
            h.append(get(cur[0], cur[1], t - 0.5, t + 1.5, hrev=rev, c=i % 4))
        if r.random() < 0.05:
            h.append(put("u%d" % i, t, None, None, status="unknown", c=9))
    assert check(h) == []


def test_resolve_unknowns_from_the_final_history():
    from lincheck import resolve_unknowns
    h = [put("a", 0, 1, 2), put("b", 2, None, None, status="unknown"),
         put("c", 2, None, None, status="unknown"),
         cas(2, "d", 3, None, None, None, status="unknown")]
    events = [(2, "PUT", "k", "a", 2, 1), (4, "PUT", "k", "b", 2, 2)]
    r = resolve_unknowns(h, events)
    assert [(o.status, o.out) for o in r] == [("ok", 2), ("ok", 4), ("fail", None), ("fail", None)]
    assert r[1].ret is None       # still open-ended
    assert check(r + [get("b", 4, 5, 6)]) == []
    # a read may not see b before b was invoked
    assert not check_key(r + [get("b", 4, 0.5, 0.8)])[0]
