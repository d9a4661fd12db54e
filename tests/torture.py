#!/usr/bin/python3
"""`make torture`: test_faults.py's checks for longer, with random faults.

Runs clusters of 3 or 5 members behind fault proxies (tests/faultlib.py)
for TORTURE_SECONDS (default 600). Each round (TORTURE_ROUND seconds,
default 20) starts a recorded workload on fresh keys, injects random
faults drawn from the seed (leader or follower kill -9, SIGTERM restart,
SIGSTOP/SIGCONT of the leader or a member, a member dropped or blackholed,
one direction of one link blackholed, the leader with a minority, no majority,
slow links, heal), then heals and checks the round's history:
linearizable, no acknowledged write lost, watches ordered, gap- and
duplicate-free and equal on every member, no member crashed. Every
TORTURE_EPOCH seconds (default 120) a fresh cluster of a size drawn from
the seed replaces the old one.

On the first failure it prints the seed, the round and the faults, keeps
the members' data dirs and logs, and exits 1.  Replay with the same seed:
TORTURE_SEED=<seed> make torture (the same faults in the same order; the
thread interleavings of clients and servers are not reproducible).

Knobs: TORTURE_SECONDS, TORTURE_SEED, TORTURE_MEMBERS (3 or 5; default:
drawn per epoch), TORTURE_ROUND, TORTURE_EPOCH, KETCH_BIN.
"""

import os
import random
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultlib import FaultCluster, Workload  # noqa: E402


def log(msg):
    print("[torture %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def fault_step(fc, r):
    """One random fault, its duration drawn from r, then maybe heal."""
    alive = [m for m in fc.members if m.running()]
    dead = [m for m in fc.members if not m.running()]
    quorum = len(fc.members) // 2 + 1
    kinds = ["kill_leader", "kill_follower", "term_restart", "isolate_drop", "isolate_blackhole",
             "leader_minority", "no_majority", "delay", "pause", "oneway", "heal", "heal"]
    kind = r.choice(kinds)
    dur = r.uniform(0.5, 4.0)
    if dead and (r.random() < 0.5 or len(alive) <= quorum):
        m = r.choice(dead)
        fc.restart(m)
        return
    if kind in ("kill_leader", "kill_follower"):
        if len(alive) <= quorum:    # keep a majority alive: the checks need progress
            kind = "heal"
        else:
            try:
                leader = fc.leader(timeout=5)
            except AssertionError:
                leader = None
            if kind == "kill_leader" and leader is not None:
                victim = leader
            else:
                victim = r.choice([m for m in alive if m is not leader] or alive)
            fc.kill(victim)
            time.sleep(dur)
            return
    if kind == "pause":
        try:
            m = fc.leader(timeout=5) if r.random() < 0.6 else r.choice(alive)
        except AssertionError:
            m = r.choice(alive)
        fc.pause(m)
        try:
            time.sleep(dur)
        finally:
            fc.resume(m)
        return
    if kind == "term_restart":
        m = r.choice(alive)
        fc.note("SIGTERM + restart %s" % m.name)
        fc.killed.add(m.name)
        m.stop()
        time.sleep(dur / 2)
        fc.restart(m)
        return
    names = [m.name for m in fc.members]
    if kind in ("isolate_drop", "isolate_blackhole"):
        n = r.choice(names)
        mode = "drop" if kind == "isolate_drop" else "blackhole"
        fc.note("isolate %s (%s)" % (n, mode))
        fc.net.isolate(n, mode=mode)
    elif kind == "leader_minority":
        try:
            leader = fc.leader(timeout=5).name
        except AssertionError:
            leader = r.choice(names)
        others = [n for n in names if n != leader]
        r.shuffle(others)
        k = len(names) // 2 - 1          # leader + k: a minority
        minority = [leader] + others[:k]
        majority = others[k:]
        fc.note("partition %s | %s" % (minority, majority))
        fc.net.partition([minority, majority], mode=r.choice(["drop", "blackhole"]))
    elif kind == "no_majority":
        shuffled = names[:]
        r.shuffle(shuffled)
        groups = [shuffled[i:i + 2] for i in range(0, len(shuffled), 2)] \
            if len(names) == 5 else [[n] for n in shuffled]
        fc.note("no majority: %s" % groups)
        fc.net.partition(groups)
    elif kind == "oneway":
        # one direction only: b stops hearing a (bytes from a to b vanish)
        try:
            a = fc.leader(timeout=5).name if r.random() < 0.6 else r.choice(names)
        except AssertionError:
            a = r.choice(names)
        b = r.choice([n for n in names if n != a])
        fc.note("one-way blackhole %s -> %s" % (a, b))
        fc.net.set_rule(a, b, "blackhole")
    elif kind == "delay":
        d = r.choice([0.01, 0.05, 0.2])
        fc.note("delay %.0fms on every link" % (d * 1000))
        for a in names:
            for b in names:
                if a != b:
                    fc.net.set_rule(a, b, ("delay", d))
    else:
        fc.note("heal")
        fc.net.heal()
        time.sleep(dur)
        return
    time.sleep(dur)
    if r.random() < 0.7:
        fc.note("heal")
        fc.net.heal()


def main():
    total = float(os.environ.get("TORTURE_SECONDS", "600"))
    seed = int(os.environ.get("TORTURE_SEED") or random.SystemRandom().randrange(1 << 31))
    round_s = float(os.environ.get("TORTURE_ROUND", "20"))
    epoch_s = float(os.environ.get("TORTURE_EPOCH", "120"))
    fixed_n = os.environ.get("TORTURE_MEMBERS")
    r = random.Random(seed)
    log("seed %d, %.0f s, rounds of %.0f s, a fresh cluster every %.0f s "
        "(replay: TORTURE_SEED=%d make torture)" % (seed, total, round_s, epoch_s, seed))
    t_end = time.monotonic() + total
    rounds = 0
    ops = 0
    fc = None
    epoch_end = 0
    try:
        while time.monotonic() < t_end:
            if fc is None or time.monotonic() > epoch_end:
                if fc is not None:
                    fc.cleanup()
                n = int(fixed_n) if fixed_n else r.choice([3, 5])
                fc = FaultCluster(n, label="tort").start()
                epoch_end = time.monotonic() + epoch_s
                log("cluster of %d members" % n)
            rounds += 1
            fc.log = []
            wl = Workload(fc, prefix="t/%d/" % rounds, seed=r.randrange(1 << 30)).start()
            rt_end = min(time.monotonic() + round_s, t_end + 5)
            try:
                while time.monotonic() < rt_end:
                    fault_step(fc, r)
            except Exception:
                wl.stop_clients()
                raise
            anomalies = wl.finish()
            ops += len(wl.history)
            faults = [w for _, w in fc.log]
            if anomalies:
                print("\nTORTURE FAILURE: seed %d, round %d, %d members\nfaults: %s\n%s\n" % (
                    seed, rounds, len(fc.members), faults, "\n".join(anomalies[:20])),
                    flush=True)
                os.environ["KETCH_TEST_KEEP"] = "1"
                print("replay: TORTURE_SEED=%d make torture" % seed)
                return 1
            log("round %d ok: %s; faults: %s" % (rounds, wl.summary(), faults))
    except Exception:
        traceback.print_exc()
        print("\nTORTURE FAILURE: seed %d, round %d: the harness failed (above)\n"
              "replay: TORTURE_SEED=%d make torture" % (seed, rounds, seed), flush=True)
        os.environ["KETCH_TEST_KEEP"] = "1"
        return 1
    finally:
        if fc is not None:
            try:
                fc.cleanup()
            except AssertionError as e:
                print("TORTURE FAILURE: seed %d: %s" % (seed, e))
                return 1
    log("passed: seed %d, %d rounds, %d ops, zero anomalies" % (seed, rounds, ops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
