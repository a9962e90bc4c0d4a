#!/usr/bin/env python3
# tests/e2e/s3_sigv4.py — what S3 checks of a request, for the tests' S3 fronts, and a
# checking proxy in front of s3rver (which checks the access key id but computes no
# SigV4 signature).
#
#   python3 s3_sigv4.py LISTEN_PORT UPSTREAM_PORT DELAY SECRET
#
# The proxy checks each request's AWS SigV4 signature and payload hash with SECRET
# for the key id S3RVER, as S3 does (403 InvalidAccessKeyId / SignatureDoesNotMatch /
# XAmzContentSHA256Mismatch), then forwards it to 127.0.0.1:UPSTREAM_PORT after DELAY
# seconds (a slow link, to kill s3rver mid-upload). tests/e2e/imds_emu.py imports
# read_request, answer, pipe and sigv4_check for its own front.
import asyncio, hashlib, hmac, sys, urllib.parse


def h256(k, m):
    return hmac.new(k, m.encode(), hashlib.sha256).digest()


def sigv4_fields(headers):
    """The Authorization header's fields (Credential, SignedHeaders, Signature), or None."""
    auth = headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return None
    return dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))


def sigv4_check(method, target, headers, body, f, secret):
    """(code, message) of S3's refusal of a request signed as f with secret, or None."""
    date, region, service, term = f["Credential"].split("/")[1:]
    payload = headers.get("x-amz-content-sha256", "")
    if payload != "UNSIGNED-PAYLOAD" and payload != hashlib.sha256(body).hexdigest():
        return "XAmzContentSHA256Mismatch", "payload hash"
    path, _, query = target.partition("?")
    q = sorted(urllib.parse.parse_qsl(query, keep_blank_values=True))
    cq = "&".join(urllib.parse.quote(k, safe="-_.~") + "=" + urllib.parse.quote(v, safe="-_.~") for k, v in q)
    signed = f["SignedHeaders"].split(";")
    ch = "".join(n + ":" + " ".join(headers.get(n, "").split()) + "\n" for n in signed)
    creq = "\n".join([method, path, cq, ch, f["SignedHeaders"], payload])
    sts = "\n".join(["AWS4-HMAC-SHA256", headers.get("x-amz-date", ""), "/".join([date, region, service, term]),
                     hashlib.sha256(creq.encode()).hexdigest()])
    key = h256(h256(h256(h256(("AWS4" + secret).encode(), date), region), service), term)
    if not hmac.compare_digest(hmac.new(key, sts.encode(), hashlib.sha256).hexdigest(), f["Signature"]):
        return "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided."
    return None


async def read_request(r):
    head = await r.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for l in lines[1:]:
        if ":" in l:
            k, v = l.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = await r.readexactly(int(headers.get("content-length", "0")))
    return head, method, target, headers, body


async def answer(w, code, reason, body, ctype="text/plain"):
    if isinstance(body, str):
        body = body.encode()
    w.write(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
            % (code, reason.encode(), ctype.encode(), len(body)) + body)
    try:
        await w.drain()
    finally:
        w.close()


def s3_error(code, msg):
    return "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>%s</Code><Message>%s</Message></Error>" % (code, msg)


async def pipe(r, w):
    try:
        while True:
            b = await r.read(65536)
            if not b:
                break
            w.write(b)
            await w.drain()
    except Exception:
        pass
    finally:
        try:
            w.close()
        except Exception:
            pass


async def proxy(cr, cw, upstream, delay, secret):
    await asyncio.sleep(delay)
    try:
        head, method, target, headers, body = await read_request(cr)
        f = sigv4_fields(headers)
        if f is None:
            bad = ("AccessDenied", "not signed with SigV4")
        elif f["Credential"].split("/")[0] != "S3RVER":
            bad = ("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
        else:
            bad = sigv4_check(method, target, headers, body, f, secret)
    except Exception:
        cw.close()
        return
    if bad:
        return await answer(cw, 403, "Forbidden", s3_error(*bad), "application/xml")
    try:
        ur, uw = await asyncio.open_connection("127.0.0.1", upstream)
    except Exception:
        cw.close()
        return
    uw.write(head + body)
    await asyncio.gather(pipe(cr, uw), pipe(ur, cw))


async def main(listen, upstream, delay, secret):
    srv = await asyncio.start_server(lambda r, w: proxy(r, w, upstream, delay, secret), "127.0.0.1", listen)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]))
