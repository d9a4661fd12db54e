"""A linearizability checker for etcd-style histories (our own; WGL as in
Wing & Gong / Lowe, with porcupine's cache of (linearized set, state)).

History: a list of Op.  Every op touches one key; ops are checked per key
against a register model whose state is (value, mod_revision):

  put(key, value)            -> ok: revision of the put
  get(key)                   -> ok: (value or None, mod_revision, header rev)
  delete(key)                -> ok: (deleted count, header revision)
  cas(key, expect_mod, val)  -> ok: (succeeded, header revision,
                                     (value, mod_revision) read in the
                                     failure branch, or None)
                                 Txn: compare mod_revision(key) == expect_mod
                                 (0: the key does not exist), success put,
                                 failure range.

status "ok": the response was seen; "unknown": the request timed out or
failed in a way that does not say whether it happened (it may take effect
at any point after its invocation, or never); "fail": it certainly did
not happen (only reads are ever marked so; they are dropped).

Values written must be unique per history (the value names the write);
that lets a read name the write it saw and lets the model learn the
revision of a write whose response was lost.

Besides the per-key check, `check_revisions` checks the whole history:
acknowledged writes have distinct revisions, and revisions respect real
time (an op that starts after another ended never sees an older
revision) -- that catches stale reads across keys too.  `check_durability`
compares acknowledged writes with the final event history, `check_watch`
checks watch streams.
"""

import math

INF = math.inf


class Op:
    __slots__ = ("id", "client", "kind", "key", "arg", "call", "ret", "status", "out", "member")

    def __init__(self, kind, key, arg=None, call=0.0, ret=None, status="ok", out=None,
                 client=0, member=None, id=None):
        self.id = id
        self.client = client
        self.kind = kind
        self.key = key
        self.arg = arg
        self.call = call
        self.ret = ret
        self.status = status
        self.out = out
        self.member = member

    def __repr__(self):
        return "Op(#%s c%s %s %r arg=%r [%.3f, %s] %s out=%r%s)" % (
            self.id, self.client, self.kind, self.key, self.arg, self.call,
            "inf" if self.ret in (None, INF) else "%.3f" % self.ret, self.status, self.out,
            " @%s" % self.member if self.member else "")

    # revision helpers for the global checks
    def write_rev(self):
        """Revision of the write this op made, if it acknowledged one."""
        if self.status != "ok":
            return None
        if self.kind == "put":
            return self.out
        if self.kind == "delete" and self.out[0] > 0:
            return self.out[1]
        if self.kind == "cas" and self.out[0]:
            return self.out[1]
        return None

    def seen_rev(self):
        """Header revision of a completed op that wrote nothing."""
        if self.status != "ok":
            return None
        if self.kind == "get":
            return self.out[2]
        if self.kind == "delete" and self.out[0] == 0:
            return self.out[1]
        if self.kind == "cas" and not self.out[0]:
            return self.out[1]
        return None


# --- the register model ----------------------------------------------------
# state: (value, rev): value None = absent (rev 0); rev None = written by an
# op whose response was lost (revision not known yet).

INIT = (None, 0)


def _read_ok(s, val, mod):
    """Does state s agree with a read that returned (val, mod)?"""
    if val is None:
        return s[0] is None
    return s[0] == val and (s[1] is None or s[1] == mod)


def step(s, op):
    """Successor states of state s under op (empty: op illegal here)."""
    k = op.kind
    if k == "put":
        if op.status == "ok":
            rev = op.out
            if s[1] is not None and rev <= s[1]:
                return ()
            return ((op.arg, rev),)
        return ((op.arg, None),)
    if k == "get":
        val, mod, _ = op.out
        if not _read_ok(s, val, mod):
            return ()
        return ((val, mod if val is not None else 0),)
    if k == "delete":
        if op.status == "ok":
            deleted, rev = op.out
            if s[0] is None:
                return (s,) if deleted == 0 else ()
            if deleted != 1 or (s[1] is not None and rev <= s[1]):
                return ()
            return (INIT,)
        return (INIT,)
    if k == "cas":
        expect, val = op.arg
        if s[1] is None:
            could_match = expect != 0     # an unknown write: some revision > 0
            could_miss = True
        else:
            could_match = s[1] == expect
            could_miss = not could_match
        if op.status == "ok":
            ok, rev, cur = op.out
            if ok:
                if not could_match or (s[1] is not None and rev <= s[1]):
                    return ()
                return ((val, rev),)
            if not could_miss:
                return ()
            cval, cmod = cur
            if not _read_ok(s, cval, cmod):
                return ()
            if s[1] is None and cmod == expect:
                return ()
            return ((cval, cmod if cval is not None else 0),)
        out = []
        if could_match:
            out.append((val, None))
        if could_miss:
            out.append(s)
        return tuple(out)
    raise ValueError("unknown op kind %r" % k)


def _step_set(states, op):
    nxt = set()
    for s in states:
        nxt.update(step(s, op))
    return frozenset(nxt)


# --- WGL -------------------------------------------------------------------
class _Entry:
    __slots__ = ("op", "idx", "is_call", "match", "prev", "next", "time")

    def __init__(self, op, idx, is_call, time):
        self.op = op
        self.idx = idx
        self.is_call = is_call
        self.time = time
        self.match = None
        self.prev = None
        self.next = None


def _lift(e):
    e.prev.next = e.next
    if e.next:
        e.next.prev = e.prev
    m = e.match
    m.prev.next = m.next
    if m.next:
        m.next.prev = m.prev


def _unlift(e):
    m = e.match
    m.prev.next = m
    if m.next:
        m.next.prev = m
    e.prev.next = e
    if e.next:
        e.next.prev = e


def check_key(ops, init=INIT, max_steps=5_000_000):
    """WGL on one key's ops. Returns (ok, info): info is None when
    linearizable, else a dict with the longest linearizable prefix found
    and the ops that could not be placed.  Raises RuntimeError when the
    search exceeds max_steps (inconclusive, never silently "ok")."""
    ops = [o for o in ops if o.status != "fail"]
    events = []
    for i, o in enumerate(ops):
        ret = INF if (o.status == "unknown" or o.ret is None) else o.ret
        c = _Entry(o, i, True, o.call)
        r = _Entry(o, i, False, ret)
        c.match = r
        events.append((o.call, 0, i, c))
        events.append((ret, 1, i, r))
    # a call at the same instant as a return counts as concurrent
    events.sort(key=lambda t: (t[0], t[1], t[2]))
    head = _Entry(None, -1, False, -INF)
    prev = head
    for _, _, _, e in events:
        prev.next = e
        e.prev = prev
        prev = e
    cache = set()
    stack = []
    linearized = 0
    state = frozenset([init])
    entry = head.next
    steps = 0
    best = (0, [])
    while head.next is not None:
        steps += 1
        if steps > max_steps:
            raise RuntimeError("linearizability search gave up after %d steps (%d ops)" %
                               (max_steps, len(ops)))
        if entry.is_call:
            nxt = _step_set(state, entry.op)
            if nxt:
                lin = linearized | (1 << entry.idx)
                key = (lin, nxt)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state = nxt
                    linearized = lin
                    _lift(entry)
                    if len(stack) > best[0]:
                        best = (len(stack), [e.op for e, _ in stack])
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:
                return False, _explain(ops, best)
            entry, state = stack.pop()
            linearized &= ~(1 << entry.idx)
            _unlift(entry)
            entry = entry.next
    return True, None


def _explain(ops, best):
    placed = best[1]
    placed_ids = {id(o) for o in placed}
    pending = [o for o in ops if id(o) not in placed_ids]
    pending.sort(key=lambda o: (o.ret if o.ret is not None and o.status == "ok" else INF))
    return {"longest_prefix": placed[-8:], "prefix_len": len(placed),
            "stuck_at": pending[:5]}


def by_key(history):
    out = {}
    for o in history:
        out.setdefault(o.key, []).append(o)
    return out


def check(history, max_steps=5_000_000):
    """Per-key WGL over the whole history. Returns a list of anomaly strings."""
    anomalies = []
    for key, ops in sorted(by_key(history).items()):
        ok, info = check_key(ops, max_steps=max_steps)
        if not ok:
            anomalies.append("key %r is not linearizable (%d ops); longest linearizable "
                             "prefix %d ops ending %r; could not place next: %r" % (
                                 key, len(ops), info["prefix_len"], info["longest_prefix"],
                                 info["stuck_at"]))
    anomalies.extend(check_revisions(history))
    return anomalies


def check_revisions(history):
    """Whole-history revision checks (see module doc)."""
    anomalies = []
    seen = {}
    for o in history:
        r = o.write_rev()
        if r is None:
            continue
        if r in seen:
            anomalies.append("two acknowledged writes share revision %d: %r and %r" % (
                r, seen[r], o))
        seen[r] = o
    done = sorted((o for o in history if o.status == "ok" and o.ret is not None),
                  key=lambda o: o.ret)
    starts = sorted((o for o in history if o.status == "ok"), key=lambda o: o.call)
    i = 0
    max_w = (0, None)   # highest write revision among ops finished so far
    max_r = (0, None)   # highest revision seen by a read finished so far
    for b in starts:
        while i < len(done) and done[i].ret < b.call:
            a = done[i]
            wr, sr = a.write_rev(), a.seen_rev()
            if wr is not None and wr > max_w[0]:
                max_w = (wr, a)
            if sr is not None and sr > max_r[0]:
                max_r = (sr, a)
            i += 1
        wr, sr = b.write_rev(), b.seen_rev()
        if wr is not None:
            for m in (max_w, max_r):
                if m[1] is not None and wr <= m[0]:
                    anomalies.append("write at revision %d started after %r had finished" % (
                        wr, m[1]))
        if sr is not None:
            for m in (max_w, max_r):
                if m[1] is not None and sr < m[0]:
                    anomalies.append("stale read: %r saw revision %d after %r had finished" % (
                        b, sr, m[1]))
    return anomalies


# --- durability and watches ---------------------------------------------------
# An event is a tuple (revision, type, key, value, create_rev, version) with
# type "PUT" or "DELETE" (value None for deletes).

def check_durability(history, events):
    """Every acknowledged write is in the final event history, at its
    revision, with its key and value; every event there was written by
    some op (acknowledged or unknown); no acknowledged write is lost."""
    anomalies = []
    by_rev = {}
    for ev in events:
        by_rev.setdefault(ev[0], []).append(ev)
    lost = []
    for o in history:
        r = o.write_rev()
        if r is None:
            continue
        evs = by_rev.get(r, [])
        want_type = "DELETE" if o.kind == "delete" else "PUT"
        want_val = None if o.kind == "delete" else (o.arg if o.kind == "put" else o.arg[1])
        if not any(e[1] == want_type and e[2] == o.key and e[3] == want_val for e in evs):
            lost.append(o)
    if lost:
        anomalies.append("%d acknowledged writes are missing from the final history, e.g. %r" % (
            len(lost), lost[:5]))
    written = set()
    for o in history:
        if o.kind == "put":
            written.add((o.key, o.arg))
        elif o.kind == "cas":
            written.add((o.key, o.arg[1]))
    phantom = [e for e in events if e[1] == "PUT" and (e[2], e[3]) not in written]
    if phantom:
        anomalies.append("%d events no client wrote, e.g. %r" % (len(phantom), phantom[:5]))
    # every value is written by one op: twice in the history = applied twice
    seen = {}
    twice = []
    for e in events:
        if e[1] != "PUT":
            continue
        if (e[2], e[3]) in seen:
            twice.append((seen[(e[2], e[3])], e))
        seen[(e[2], e[3])] = e
    if twice:
        anomalies.append("%d writes were applied twice, e.g. %r" % (len(twice), twice[:3]))
    return anomalies


def check_watch(streams, final):
    """streams: {member: [event, ...]} as each member's watch delivered them
    (across reconnects from the last revision + 1); final: the complete
    event history.  Each stream must be ordered by revision, hold no
    duplicate, and be exactly the final history up to the last revision it
    reached (no gap, nothing extra, same events on every member)."""
    anomalies = []
    for name, evs in sorted(streams.items()):
        last = None
        seen = set()
        for e in evs:
            if last is not None and (e[0], e[2]) <= last:
                anomalies.append("watch on %s: event %r arrives after revision %r" % (
                    name, e, last))
                break
            if (e[0], e[2]) in seen:
                anomalies.append("watch on %s: duplicate event %r" % (name, e))
                break
            seen.add((e[0], e[2]))
            last = (e[0], e[2])
        upto = evs[-1][0] if evs else 0
        want = [e for e in final if e[0] <= upto]
        if list(evs) != want:
            diff = next((i for i, (a, b) in enumerate(zip(evs, want)) if a != b),
                        min(len(evs), len(want)))
            anomalies.append("watch on %s differs from the final history at event #%d: "
                             "got %r, want %r (%d vs %d events)" % (
                                 name, diff, evs[diff:diff + 2], want[diff:diff + 2],
                                 len(evs), len(want)))
    return anomalies


def resolve_unknowns(history, events):
    """Use a complete final event history (no compaction) to settle ops
    whose response was lost: a put or CAS whose (unique) value is in the
    history happened, at that revision, at some point after its
    invocation (it stays open-ended); one whose value is not there never
    took effect (or was a CAS whose compare failed: a read nobody saw)
    and is dropped.  Unknown deletes stay unknown.  Returns a new list;
    ops acknowledged by the server are not touched."""
    put_rev = {}
    for e in events:
        if e[1] == "PUT":
            put_rev[(e[2], e[3])] = e[0]
    out = []
    for o in history:
        if o.status != "unknown" or o.kind not in ("put", "cas"):
            out.append(o)
            continue
        val = o.arg if o.kind == "put" else o.arg[1]
        rev = put_rev.get((o.key, val))
        n = Op(o.kind, o.key, o.arg, o.call, None, "fail", None, o.client, o.member, o.id)
        if rev is not None:
            n.status = "ok"
            n.out = rev if o.kind == "put" else (True, rev, None)
        out.append(n)
    return out
