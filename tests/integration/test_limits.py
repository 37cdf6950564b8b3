# SPDX-License-Identifier: Apache-2.0
"""Limits and abuse (issue 8 item 6; THREATS T7, T16) against the real idbrokerd over real sockets:

- per-pod rate limit: one pod hammering (1000 requests) gets 429 + Retry-After while another pod is
  still served, and the provider is asked once;
- 100 concurrent identical requests -> 1 upstream call (single-flight);
- request size caps: request target (414, ours and libmicrohttpd's), header bytes and header count
  (431), a body (413);
- connections per pod (http.maxConnectionsPerPod): the N+1th connection of a pod is closed without an
  answer while another pod connects and is served; one closed, the pod is served again;
- slow clients (slowloris): many connections trickling their headers byte by byte do not stop a
  normal request from being served; silent connections, and connections whose request head is not
  complete, are closed after http.timeoutSeconds.

Each check fails if its control is removed (no rate limit -> no 429; no cap -> 200; no per-pod limit
-> the extra connection is answered; no idle timeout -> the silent connection stays open)."""
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from idbtest import (API, IMDS_PATH, Broker, binding_yaml, check, equal,  # noqa: E402
                     identity_yaml, parallel, pod_yaml, run_main)

R = "https://management.azure.com/"
CID = "00000000-0000-0000-0000-0000000000b1"
TOKEN_REQ = "GET %s?api-version=%s&resource=%s HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n" % (
    IMDS_PATH, API, R)


def policy(pods):
    out = identity_yaml("id", client_id=CID, provider="good") + binding_yaml("b", "id", "s")
    for p in pods:
        out += pod_yaml(p, "s")
    return out


def raw_conn(br, source, timeout=30):
    return socket.create_connection(("127.0.0.1", br.port), timeout=timeout, source_address=(source, 0))


def read_reply(s):
    """Reads one HTTP reply (status line + headers + Content-Length body) from a raw socket.
    Returns (status, body bytes) or (None, b"") when the server closed the connection first."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            k = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return None, b""
        if not k:
            return None, b""
        data += k
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    n = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            n = int(line.split(":", 1)[1])
    while len(body) < n:
        k = s.recv(65536)
        if not k:
            break
        body += k
    return status, body


def exchange(br, request, source="127.0.0.2"):
    s = raw_conn(br, source)
    try:
        s.sendall(request)
        return read_reply(s)
    finally:
        s.close()


def closed_by_server(s, wait_s):
    """Whether the server closes `s` (EOF or reset) within wait_s seconds; an upper bound against
    hanging, not a timing assertion."""
    s.settimeout(wait_s)
    try:
        while True:
            k = s.recv(4096)
            if not k:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_rate_limit_neighbour():
    """T16: a pod at full speed is throttled; its neighbour is not."""
    with Broker(policy(["hammer", "calm"]), providers={"good": {}}, test_plugins=["good"],
                conf={"rateLimit": {"requestsPerSecond": 5, "burst": 15}}) as br:
        br.register("default", "hammer", "127.0.0.2")
        br.register("default", "calm", "127.0.0.3")
        codes = {}
        retry_after = set()
        calm = []
        s = raw_conn(br, "127.0.0.2")
        req = (TOKEN_REQ + "\r\n").encode()
        try:
            for i in range(1000):
                s.sendall(req)
                st, body = read_reply(s)
                if st is None:  # the server may close a keep-alive connection; reconnect
                    s.close()
                    s = raw_conn(br, "127.0.0.2")
                    s.sendall(req)
                    st, body = read_reply(s)
                codes[st] = codes.get(st, 0) + 1
                if st == 429:
                    retry_after.add(json.loads(body).get("error"))
                if i % 100 == 50:
                    calm.append(br.token(R, source="127.0.0.3")[0])
        finally:
            s.close()
        print("     hammering pod: %s; neighbour: %s" % (codes, calm))
        equal(sum(codes.values()), 1000, "1000 requests from one pod were all answered")
        check(codes.get(429, 0) > 0, "the hammering pod gets 429 (%d of 1000)" % codes.get(429, 0))
        check(set(codes) <= {200, 429}, "... and only 200 or 429")
        check(codes.get(200, 0) < 1000, "... it is not served at full speed")
        equal(retry_after, {"too_many_requests"}, "429 carries the IMDS-shaped error body")
        st, h, _ = br.token(R)
        while st == 200:  # drain what refilled meanwhile
            st, h, _ = br.token(R)
        equal(st, 429, "still throttled")
        check(int(h.get("retry-after", "0")) >= 1, "429 carries Retry-After >= 1 (%s)" % h.get("retry-after"))
        equal(calm, [200] * 10, "the neighbour pod was served every time meanwhile")
        equal(br.token(R, source="127.0.0.3")[0], 200, "... and still is")
        check(br.metric("idbroker_rate_limited_total") >= codes.get(429, 0), "rate-limited requests are counted")
        equal(br.provider_calls("good"), 1, "the provider was asked once for all of it")


def test_singleflight_identical():
    """T16: 100 concurrent identical cold requests -> 1 upstream call."""
    with Broker(policy(["one"] + ["p%d" % k for k in range(10)]),
                providers={"good": {"delayMs": 500}}, test_plugins=["good"],
                conf={"rateLimit": {"requestsPerSecond": 0}, "http": {"maxConnectionsPerPod": 128}}) as br:
        br.register("default", "one", "127.0.0.2")
        res = parallel(100, lambda i: br.token(R))
        ok = [r for r in res if not isinstance(r, Exception) and r[0] == 200]
        equal(len(ok), 100, "100 concurrent identical requests from one pod: all 200")
        equal(len({json.loads(r[2])["access_token"] for r in ok}), 1, "... with one token")
        equal(br.provider_calls("good"), 1, "... from one upstream call")
        for k in range(10):
            br.register("default", "p%d" % k, "127.0.0.%d" % (10 + k))
        R2 = "https://vault.azure.net"
        res = parallel(100, lambda i: br.token(R2, source="127.0.0.%d" % (10 + i % 10)))
        ok = [r for r in res if not isinstance(r, Exception) and r[0] == 200]
        equal(len(ok), 100, "100 concurrent identical requests from 10 pods of one identity: all 200")
        equal(br.provider_calls("good"), 2, "... from one more upstream call")


def test_size_caps():
    with Broker(policy(["p"]), providers={"good": {}}, test_plugins=["good"]) as br:
        br.register("default", "p", "127.0.0.2")
        ok = (TOKEN_REQ + "Connection: close\r\n\r\n").encode()
        equal(exchange(br, ok)[0], 200, "a normal raw request is served")

        pad = "&x=" + "a" * 5000
        st, body = exchange(br, (TOKEN_REQ.replace(R, R + pad, 1) + "Connection: close\r\n\r\n").encode())
        equal(st, 414, "request target over 4 KiB -> 414")
        check(b"invalid_request" in body, "... in IMDS' error shape")
        st, _ = exchange(br, (TOKEN_REQ.replace(R, R + "&x=" + "a" * 100000, 1) + "\r\n").encode())
        check(st in (414, None), "request target of 100 KB -> 414 or closed (%s)" % st)

        big = "X-Big: " + "a" * 17000 + "\r\n"
        st, body = exchange(br, (TOKEN_REQ + big + "Connection: close\r\n\r\n").encode())
        equal(st, 431, "headers over 16 KiB -> 431")
        st, _ = exchange(br, (TOKEN_REQ + "X-Big: " + "a" * 200000 + "\r\n\r\n").encode())
        check(st in (431, None), "headers of 200 KB -> 431 or closed (%s)" % st)

        # Host, Metadata and Connection are 3: 61 more make 64 (served), 62 more make 65 (431).
        many = "".join("X-H%d: v\r\n" % i for i in range(61))
        equal(exchange(br, (TOKEN_REQ + many + "Connection: close\r\n\r\n").encode())[0], 200,
              "64 headers are served")
        many = "".join("X-H%d: v\r\n" % i for i in range(62))
        st, body = exchange(br, (TOKEN_REQ + many + "Connection: close\r\n\r\n").encode())
        equal(st, 431, "65 headers -> 431")
        check(b"invalid_request" in body, "... in IMDS' error shape")

        st, _ = exchange(br, (TOKEN_REQ + "Content-Length: 5\r\nConnection: close\r\n\r\nhello").encode())
        equal(st, 413, "a request body -> 413")
        st, _ = exchange(br, (TOKEN_REQ + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                              "5\r\nhello\r\n0\r\n\r\n").encode())
        equal(st, 413, "a chunked request body -> 413")
        equal(br.provider_calls("good"), 1, "no refused request reached the provider")
        check(br.metric("idbroker_http_requests_total", {"code": "431"}) >= 2, "431 answers are counted")


def test_connections_per_pod():
    with Broker(policy(["p", "q"]), providers={"good": {}}, test_plugins=["good"],
                conf={"http": {"maxConnectionsPerPod": 4}}) as br:
        br.register("default", "p", "127.0.0.2")
        br.register("default", "q", "127.0.0.3")
        held = []
        try:
            for i in range(4):
                s = raw_conn(br, "127.0.0.2")
                s.sendall((TOKEN_REQ + "\r\n").encode())
                st, _ = read_reply(s)  # an answer proves the server holds this connection
                equal(st, 200, "pod connection %d of 4 is served and kept open" % (i + 1))
                held.append(s)
            extra = raw_conn(br, "127.0.0.2")
            extra.sendall((TOKEN_REQ + "Connection: close\r\n\r\n").encode())
            st, _ = read_reply(extra)
            extra.close()
            equal(st, None, "the pod's 5th connection is closed without an answer")
            equal(exchange(br, (TOKEN_REQ + "Connection: close\r\n\r\n").encode(), source="127.0.0.3")[0], 200,
                  "another pod connects and is served meanwhile")
            held.pop().close()
            served = None
            for _ in range(100):  # the server notices the close asynchronously
                served = exchange(br, (TOKEN_REQ + "Connection: close\r\n\r\n").encode())[0]
                if served == 200:
                    break
                time.sleep(0.05)
            equal(served, 200, "one of its connections closed, the pod is served again")
        finally:
            for s in held:
                s.close()


class Tricklers:
    """Connections that send a request head one byte every 0.2 s (a head of ~4 KB: ~15 minutes)."""

    def __init__(self, br, sources):
        self.br = br
        self.stop = threading.Event()
        self.outcome = {"refused": 0, "closed": 0}
        self.lock = threading.Lock()
        self.ts = [threading.Thread(target=self.run, args=(src,)) for src in sources]
        for t in self.ts:
            t.start()

    def run(self, source):
        try:
            s = raw_conn(self.br, source)
        except OSError:
            with self.lock:
                self.outcome["refused"] += 1
            return
        try:
            for ch in (TOKEN_REQ + "X-Pad: " + "a" * 4000).encode():
                if self.stop.is_set():
                    break
                s.sendall(bytes([ch]))
                time.sleep(0.2)
        except OSError:
            with self.lock:
                self.outcome["closed"] += 1
        finally:
            s.close()

    def wait_all_closed(self, bound_s):
        """Whether every connection ended without the test stopping it (bounded wait)."""
        deadline = time.time() + bound_s  # a bound against hanging, not a timing assertion
        for t in self.ts:
            t.join(timeout=max(0.0, deadline - time.time()))
        return sum(1 for t in self.ts if t.is_alive()) == 0

    def close(self):
        self.stop.set()
        for t in self.ts:
            t.join()


def test_slowloris():
    # Serving under a slowloris: a long timeout, so the slow connections stay for the whole round.
    with Broker(policy(["p", "slow"]), providers={"good": {}}, test_plugins=["good"],
                conf={"http": {"timeoutSeconds": 120, "maxConnectionsPerPod": 8}}) as br:
        br.register("default", "p", "127.0.0.2")
        br.register("default", "slow", "127.0.0.4")
        # 12 connections from a registered pod (over its cap of 8) and 4 from each of 8 other
        # addresses: 44 slow connections in all.
        tr = Tricklers(br, ["127.0.0.4"] * 12 + ["127.0.0.%d" % (20 + k) for k in range(8) for _ in range(4)])
        try:
            time.sleep(1.0)  # not an assertion: lets the slow connections open before we look
            for i in range(3):
                st, _, _ = br.token(R)
                equal(st, 200, "a normal request is served while 44 connections trickle their headers (%d)" % (i + 1))
            s = raw_conn(br, "127.0.0.4")
            s.sendall((TOKEN_REQ + "Connection: close\r\n\r\n").encode())
            st, _ = read_reply(s)
            s.close()
            equal(st, None, "the trickling pod cannot open more than its cap")
        finally:
            tr.close()
        equal(br.token(R)[0], 200, "served after the slow clients went away")

    # Slow connections are closed: a short timeout.
    with Broker(policy(["p"]), providers={"good": {}}, test_plugins=["good"],
                conf={"http": {"timeoutSeconds": 2}}) as br:
        br.register("default", "p", "127.0.0.2")
        half = raw_conn(br, "127.0.0.2")
        half.sendall(b"GET /metadata/ide")
        idle = raw_conn(br, "127.0.0.2")
        check(closed_by_server(half, 30), "a half-sent request is closed after http.timeoutSeconds")
        check(closed_by_server(idle, 30), "a silent connection is closed after http.timeoutSeconds")
        half.close()
        idle.close()
        # Trickling connections are cut too: a request head gets http.timeoutSeconds in all,
        # however steadily its bytes come (MHD's own timeout is only an idle timeout).
        tr = Tricklers(br, ["127.0.0.2"] * 4 + ["127.0.0.30"] * 4)
        try:
            check(tr.wait_all_closed(60), "every trickling connection was closed by the broker (%s)" % tr.outcome)
            equal(tr.outcome["closed"] + tr.outcome["refused"], 8, "... none of them finished its head")
        finally:
            tr.close()
        equal(br.token(R)[0], 200, "served after the slow clients went away")
        check(br.proc.poll() is None, "the broker is alive")


def main():
    test_rate_limit_neighbour()
    test_singleflight_identical()
    test_size_caps()
    test_connections_per_pod()
    test_slowloris()


run_main(main)
