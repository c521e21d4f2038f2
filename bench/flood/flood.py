"""A connection flood against `fluxadmit serve`, and the well-behaved clients it must not lock
out (BENCHMARKS.md, "Connection floods at the cap"; run.sh runs all three at once).

    flood.py PORT CA flood SECONDS   1,500 TCP connections that say nothing; each one the server
                                     closes is opened again at once
    flood.py PORT CA new SECONDS     reviews, each on a new TLS connection (after 3 s)
    flood.py PORT CA keep SECONDS    reviews on one kept-alive connection, as the API server
                                     sends them (after 3 s)
    flood.py PORT CA loris SECONDS   200 TLS connections sending a request a byte a second
    flood.py PORT CA garbage SECONDS 8 kept-alive connections posting mangled reviews (bytes
                                     flipped, cut, repeated, deep nesting, 3 MiB + 1)

The clients print one JSON line: reviews sent, answered (200), failed, latency percentiles."""
import asyncio, ssl, sys, time, json, socket

HOST, PORT = "127.0.0.1", int(sys.argv[1])
CA = sys.argv[2]
MODE = sys.argv[3]                # flood | new | keep
FLOOD = 1500                      # silent connections kept open (flood)
SECONDS = float(sys.argv[4])
REVIEW = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
    "request": {"uid": "u", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
      "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
      "namespace": "apps", "operation": "CREATE", "userInfo": {"username": "x"},
      "object": {"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "apps", "labels": {"team": "a"}},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
          "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}}}}).encode()

stop = False
opened = 0
async def hog():
    global opened
    while not stop:
        try:
            r, w = await asyncio.open_connection(HOST, PORT)
            opened += 1
            # Say nothing; wait until the server closes it, then come back.
            await r.read(1)
            w.close()
        except Exception:
            await asyncio.sleep(0.05)

async def good(results):
    ctx = ssl.create_default_context(cafile=CA)
    ctx.set_alpn_protocols(["http/1.1"])
    while not stop:
        t = time.monotonic()
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(HOST, PORT, ssl=ctx, server_hostname="localhost"), 10)
            w.write(b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(REVIEW) + REVIEW)
            await w.drain()
            head = await asyncio.wait_for(r.readline(), 10)
            w.close()
            ok = head.startswith(b"HTTP/1.1 200")
            results.append((ok, time.monotonic() - t, head[:20]))
        except Exception as e:
            results.append((False, time.monotonic() - t, repr(e)[:60]))
        await asyncio.sleep(0.02)

async def keepalive(results):
    ctx = ssl.create_default_context(cafile=CA)
    ctx.set_alpn_protocols(["http/1.1"])
    conn = None
    while not stop:
        t = time.monotonic()
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(HOST, PORT, ssl=ctx, server_hostname="localhost"), 10)
            r, w = conn
            w.write(b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(REVIEW) + REVIEW)
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
            await r.readexactly(n)
            ok = head.startswith(b"HTTP/1.1 200")
            if b"connection: close" in head.lower():
                w.close(); conn = None
            results.append((ok, time.monotonic() - t, head[:20]))
        except Exception as e:
            conn = None
            results.append((False, time.monotonic() - t, repr(e)[:60]))
        await asyncio.sleep(0.02)

async def loris():
    ctx = ssl.create_default_context(cafile=CA)
    ctx.set_alpn_protocols(["http/1.1"])
    req = b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n"
    while not stop:
        try:
            r, w = await asyncio.open_connection(HOST, PORT, ssl=ctx, server_hostname="localhost")
            for b in req:
                if stop: break
                w.write(bytes([b])); await w.drain()
                await asyncio.sleep(1)
            w.close()
        except Exception:
            await asyncio.sleep(0.1)

def mangled(rnd):
    kind = rnd.randrange(6)
    b = bytearray(REVIEW)
    if kind == 0:
        for _ in range(rnd.randrange(1, 20)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
    elif kind == 1:
        b = b[:rnd.randrange(len(b))]
    elif kind == 2:
        i = rnd.randrange(len(b)); j = rnd.randrange(i, len(b))
        b = b[:j] + b[i:j] * rnd.randrange(2, 50) + b[j:]
    elif kind == 3:
        b = b"[" * 100000 + b"]" * 100000
    elif kind == 4:
        b = b" " * (3 * 1024 * 1024 + 1)
    else:
        b = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 4096)))
    return bytes(b)

garbage_sent = 0
async def garbage():
    global garbage_sent
    import random
    rnd = random.Random()
    ctx = ssl.create_default_context(cafile=CA)
    ctx.set_alpn_protocols(["http/1.1"])
    conn = None
    while not stop:
        try:
            if conn is None:
                conn = await asyncio.open_connection(HOST, PORT, ssl=ctx, server_hostname="localhost")
            r, w = conn
            body = mangled(rnd)
            w.write(b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            cl = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
            if cl:
                await r.readexactly(int(cl[0].split(b":")[1]))
            garbage_sent += 1
            if b"connection: close" in head.lower():
                w.close(); conn = None
        except Exception:
            conn = None
            await asyncio.sleep(0.01)

async def main():
    global stop
    results = []
    if MODE in ("flood", "loris", "garbage"):
        make = {"flood": (hog, FLOOD), "loris": (loris, 200), "garbage": (garbage, 8)}[MODE]
        hogs = [asyncio.create_task(make[0]()) for _ in range(make[1])]
        await asyncio.sleep(SECONDS)
        stop = True
        for h in hogs: h.cancel()
        print(json.dumps({MODE: {"flood": opened, "loris": 200, "garbage": garbage_sent}[MODE]}))
        return
    await asyncio.sleep(3)   # the flood fills the slots first
    g = asyncio.create_task(good(results) if MODE == "new" else keepalive(results))
    await asyncio.sleep(SECONDS)
    stop = True
    await g
    ok = [d for o, d, _ in results if o]
    bad = [x for o, _, x in results if not o]
    ok.sort()
    p = lambda q: ok[min(len(ok) - 1, int(q * len(ok)))] * 1000 if ok else float("nan")
    print(json.dumps({"reviews": len(results), "answered": len(ok), "failed": len(bad),
        "p50_ms": round(p(0.5), 1), "p99_ms": round(p(0.99), 1), "max_ms": round(max(ok) * 1000, 1) if ok else None,
        "mode": MODE, "failures": sorted(set(map(str, bad)))[:5]}))
asyncio.run(main())
