"""A fault-injecting TCP proxy for cluster tests (asyncio, one thread).

One listener per proxied port of a member (its peer port, and optionally
its client port): members advertise the proxy's address
(--initial-advertise-peer-urls / --initial-cluster, --advertise-client-urls)
and listen on the real port.  Every connection a proxy accepts is
attributed to the member process that opened it (its ephemeral port is
looked up in /proc/net/tcp, the socket inode in /proc/<pid>/fd of every
registered member), so faults are per directed pair of members:

    net.set_rule(src, dst, mode)   mode: None (pass), "drop" (close and
                                   refuse), "blackhole" (accept, forward
                                   nothing), ("delay", seconds)
    net.partition([["m1"], ["m2", "m3"]], mode="drop")
    net.isolate("m1"); net.heal()

Bytes travelling from src to dst follow rule (src, dst).  Connections
from processes that are not registered members (the test's own clients)
always pass.  Network namespaces with veth pairs would need root; this
proxy is enough to cut, stall and slow the traffic between members on
one machine, including a member's forwarded requests to the leader when
the client port is proxied too.

A connection that was blackholed is closed when the rule is lifted (its
byte stream has holes; the members reconnect).
"""

import asyncio
import os
import socket
import threading
import time


def _inode_of(local_port, remote_port):
    """Inode of the IPv4 socket 127.0.0.1:local_port -> 127.0.0.1:remote_port."""
    want_l = ":%04X" % local_port
    want_r = ":%04X" % remote_port
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                p = line.split()
                if p[1].endswith(want_l) and p[2].endswith(want_r):
                    return p[9]
    except OSError:
        pass
    return None


def _pid_has_socket(pid, inode):
    target = "socket:[%s]" % inode
    d = "/proc/%d/fd" % pid
    try:
        for fd in os.listdir(d):
            try:
                if os.readlink(os.path.join(d, fd)) == target:
                    return True
            except OSError:
                continue
    except OSError:
        pass
    return False


class _Conn:
    def __init__(self, net, src, dst, creader, cwriter):
        self.net = net
        self.src = src
        self.dst = dst
        self.creader = creader
        self.cwriter = cwriter
        self.treader = None
        self.twriter = None
        self.tainted = False     # saw a blackhole: its stream has holes
        self.closed = False
        self.tasks = []

    def close(self):
        if self.closed:
            return
        self.closed = True
        for w in (self.cwriter, self.twriter):
            if w is not None:
                try:
                    w.transport.abort()
                except Exception:
                    pass
        for t in self.tasks:
            t.cancel()
        self.net._conns.discard(self)

    async def pump(self, reader, writer, frm, to):
        """Copy frm->to bytes under the current rule for (frm, to)."""
        q = asyncio.Queue()

        async def sender():
            while True:
                due, data = await q.get()
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                if data is None:
                    return
                writer.write(data)
                await writer.drain()

        st = asyncio.ensure_future(sender())
        self.tasks.append(st)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                mode = self.net._mode(frm, to)
                if mode == "drop":
                    break
                if mode == "blackhole":
                    self.tainted = True
                    continue
                delay = mode[1] if isinstance(mode, tuple) else 0.0
                q.put_nowait((time.monotonic() + delay, data))
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            self.close()


class FaultNet:
    def __init__(self):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultnet",
                                        daemon=True)
        self._thread.start()
        self._pids = {}         # member name -> pid
        self._rules = {}        # (src, dst) -> mode
        self._conns = set()
        self._servers = []
        self.stats = {"accepted": 0, "refused": 0, "unknown_src": 0}

    # -- thread plumbing -------------------------------------------------
    def _call(self, fn, *args):
        fut = asyncio.run_coroutine_threadsafe(self._run(fn, *args), self._loop)
        return fut.result(10)

    async def _run(self, fn, *args):
        r = fn(*args)
        if asyncio.iscoroutine(r):
            r = await r
        return r

    # -- configuration ---------------------------------------------------
    def add_proxy(self, dst, listen_port, target_port):
        """Listen on 127.0.0.1:listen_port, forward to 127.0.0.1:target_port;
        connections arriving here are traffic to member `dst`."""
        async def start():
            srv = await asyncio.start_server(
                lambda r, w: self._accept(dst, listen_port, target_port, r, w),
                "127.0.0.1", listen_port, reuse_address=True)
            self._servers.append(srv)
        self._call(start)

    def register(self, name, pid):
        """The process of member `name` is now `pid` (after every (re)start)."""
        self._pids[name] = pid

    def set_rule(self, src, dst, mode):
        def apply():
            if mode is None:
                self._rules.pop((src, dst), None)
            else:
                self._rules[(src, dst)] = mode
            self._enforce()
        self._call(apply)

    def partition(self, groups, mode="drop"):
        """Cut every pair of members in different groups (both directions)."""
        def apply():
            self._rules.clear()
            for i, g in enumerate(groups):
                for h in groups[i + 1:]:
                    for a in g:
                        for b in h:
                            self._rules[(a, b)] = mode
                            self._rules[(b, a)] = mode
            self._enforce()
        self._call(apply)

    def isolate(self, name, mode="drop"):
        others = [n for n in self._pids if n != name]
        self.partition([[name], others], mode)

    def heal(self):
        def apply():
            self._rules.clear()
            self._enforce()
        self._call(apply)

    def rules(self):
        return dict(self._rules)

    def close(self):
        def stop():
            for c in list(self._conns):
                c.close()
            for s in self._servers:
                s.close()
        try:
            self._call(stop)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    # -- internals (loop thread) ------------------------------------------
    def _mode(self, src, dst):
        if src is None or dst is None:
            return None
        return self._rules.get((src, dst))

    def _enforce(self):
        for c in list(self._conns):
            m1, m2 = self._mode(c.src, c.dst), self._mode(c.dst, c.src)
            if "drop" in (m1, m2):
                c.close()
            elif c.tainted and "blackhole" not in (m1, m2):
                c.close()

    def _source_of(self, conn_port, proxy_port):
        inode = _inode_of(conn_port, proxy_port)
        if inode is None:
            return None
        for name, pid in list(self._pids.items()):
            if _pid_has_socket(pid, inode):
                return name
        return None

    async def _accept(self, dst, listen_port, target_port, reader, writer):
        peer = writer.get_extra_info("peername")
        src = self._source_of(peer[1], listen_port) if peer else None
        if src is None:
            self.stats["unknown_src"] += 1
        m1, m2 = self._mode(src, dst), self._mode(dst, src)
        if "drop" in (m1, m2):
            self.stats["refused"] += 1
            writer.transport.abort()
            return
        self.stats["accepted"] += 1
        c = _Conn(self, src, dst, reader, writer)
        self._conns.add(c)
        if "blackhole" in (m1, m2):
            # accept, read and forget; never reach the target
            c.tainted = True
            try:
                while await reader.read(65536):
                    pass
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass
            c.close()
            return
        try:
            c.treader, c.twriter = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            c.close()
            return
        if c.closed:
            c.twriter.transport.abort()
            return
        c.tasks.append(asyncio.ensure_future(c.pump(reader, c.twriter, src, dst)))
        c.tasks.append(asyncio.ensure_future(c.pump(c.treader, writer, dst, src)))


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p
