#!/usr/bin/env python3
# tests/e2e/imds_emu.py — an EC2 instance metadata service (IMDSv2) and an S3 front
# that accepts the temporary credentials it hands out, for tests/e2e/test_backup_imds.sh.
#
#   python3 imds_emu.py IMDS_PORT S3_PORT CTL_PORT UPSTREAM_S3RVER_PORT
#
# IMDS (127.0.0.1:IMDS_PORT), as AWS documents IMDSv2 with http_tokens = required:
#   PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds: 1..21600 → a
#     session token (400 without a valid TTL, 403 with X-Forwarded-For);
#   GET /latest/... without a valid, unexpired X-aws-ec2-metadata-token → 401;
#   GET /latest/meta-data/iam/security-credentials/ → the role name;
#   GET /latest/meta-data/iam/security-credentials/<role> → {"Code": "Success",
#     "LastUpdated", "Type": "AWS-HMAC", "AccessKeyId": "ASIA…", "SecretAccessKey",
#     "Token", "Expiration"}.
# S3 front (127.0.0.1:S3_PORT): checks each request's SigV4 signature with the secret
# of its access key id, as S3 does for temporary credentials: unknown key id → 403
# InvalidAccessKeyId; revoked or past Expiration → 403 ExpiredToken; no or another
# X-Amz-Security-Token, or one not among the signed headers → 403 InvalidToken; bad
# signature or payload hash → SignatureDoesNotMatch / XAmzContentSHA256Mismatch.
# Accepted requests go to s3rver (which knows one key id, S3RVER: the Credential is
# rewritten to it after the check).
# Control (127.0.0.1:CTL_PORT), GET:
#   /rotate?ttl=S   the next credentials handed out are new ones, expiring in S seconds
#   /revoke?akid=K  (or all=1: every key id but the current) S3 refuses them from now on
#   /mode?m=M       ok | norole | code (Code AssumeRoleUnauthorizedAccess) | badjson |
#                   expired (Expiration in the past) | v1only (no token service: PUT
#                   answers 403, GETs are served without a token, like IMDSv1)
#   /imds?up=0|1    stop or resume listening on IMDS_PORT (unreachable)
#   /state          JSON: current key id, every key id's secret, token, expiry and
#                   revocation, the S3 and IMDS request logs
import asyncio, base64, json, os, secrets, string, sys, time, urllib.parse

from s3_sigv4 import answer, pipe, read_request, s3_error, sigv4_check, sigv4_fields

IMDS_PORT, S3_PORT, CTL_PORT, UPSTREAM = (int(x) for x in sys.argv[1:5])
ROLE = "ward-uk-backup"
st = {"mode": "ok", "current": None, "creds": {}, "tokens": {}, "s3": [], "imds": [], "ttl": 21600}
imds_server = None


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def new_creds(ttl):
    akid = "ASIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    st["creds"][akid] = {
        "secret": base64.b64encode(os.urandom(30)).decode(),
        "token": base64.b64encode(os.urandom(600)).decode(),
        "expires": int(time.time()) + ttl,
        "revoked": False,
        "issued": iso(time.time()),
    }
    st["current"] = akid
    return akid


# ------------------------------------------------------------------ IMDS
async def imds(cr, cw):
    try:
        _, method, target, h, _ = await read_request(cr)
    except Exception:
        cw.close()
        return
    path = target.split("?", 1)[0]
    tok = h.get("x-aws-ec2-metadata-token")
    now = time.time()
    tstate = "none" if tok is None else ("valid" if st["tokens"].get(tok, 0) > now else "invalid")
    ent = {"method": method, "path": path, "token": tstate, "t": now}
    st["imds"].append(ent)

    def done(code):
        ent["status"] = code

    mode = st["mode"]
    if method == "PUT" and path == "/latest/api/token":
        if mode == "v1only":
            done(403)
            return await answer(cw, 403, "Forbidden", "")
        if "x-forwarded-for" in h:
            done(403)
            return await answer(cw, 403, "Forbidden", "")
        ttl = h.get("x-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            done(400)
            return await answer(cw, 400, "Bad Request", "")
        t = base64.urlsafe_b64encode(os.urandom(42)).decode()
        st["tokens"][t] = now + int(ttl)
        done(200)
        return await answer(cw, 200, "OK", t)
    if method != "GET":
        done(405)
        return await answer(cw, 405, "Method Not Allowed", "")
    if mode != "v1only" and tstate != "valid":
        done(401)
        return await answer(cw, 401, "Unauthorized", "")
    base = "/latest/meta-data/iam/security-credentials/"
    if path == base:
        if mode == "norole":
            done(404)
            return await answer(cw, 404, "Not Found", "")
        done(200)
        return await answer(cw, 200, "OK", ROLE)
    if path == base + ROLE and mode != "norole":
        if st["current"] is None:
            new_creds(st["ttl"])
        c = st["creds"][st["current"]]
        doc = {"Code": "Success", "LastUpdated": c["issued"], "Type": "AWS-HMAC",
               "AccessKeyId": st["current"], "SecretAccessKey": c["secret"], "Token": c["token"],
               "Expiration": iso(c["expires"])}
        if mode == "code":
            doc = {"Code": "AssumeRoleUnauthorizedAccess", "LastUpdated": c["issued"],
                   "Message": "EC2 cannot assume the role ward-uk-backup."}
        elif mode == "expired":
            doc["Expiration"] = iso(time.time() - 60)
        body = json.dumps(doc, indent=2)
        if mode == "badjson":
            body = body[: len(body) // 2]
        done(200)
        return await answer(cw, 200, "OK", body)
    done(404)
    return await answer(cw, 404, "Not Found", "")


# ------------------------------------------------------------------ S3 front
def check(method, target, headers, body):
    f = sigv4_fields(headers)
    if f is None:
        return None, "AccessDenied", "not signed with SigV4"
    akid = f["Credential"].split("/")[0]
    c = st["creds"].get(akid)
    if c is None:
        return akid, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."
    if c["revoked"] or c["expires"] <= time.time():
        return akid, "ExpiredToken", "The provided token has expired."
    if headers.get("x-amz-security-token") != c["token"] or "x-amz-security-token" not in f["SignedHeaders"].split(";"):
        return akid, "InvalidToken", "The provided token is malformed or otherwise invalid."
    bad = sigv4_check(method, target, headers, body, f, c["secret"])
    return (akid, *bad) if bad else (akid, None, None)


async def s3(cr, cw):
    try:
        head, method, target, headers, body = await read_request(cr)
        akid, code, msg = check(method, target, headers, body)
    except Exception:
        cw.close()
        return
    st["s3"].append({"method": method, "path": target.split("?", 1)[0], "akid": akid, "refused": code})
    if code:
        return await answer(cw, 403, "Forbidden", s3_error(code, msg), "application/xml")
    try:
        ur, uw = await asyncio.open_connection("127.0.0.1", UPSTREAM)
    except Exception:
        cw.close()
        return
    head = head.replace(("Credential=%s/" % akid).encode(), b"Credential=S3RVER/")
    uw.write(head + body)
    await asyncio.gather(pipe(cr, uw), pipe(ur, cw))


# ------------------------------------------------------------------ control
async def ctl(cr, cw):
    global imds_server
    try:
        _, _, target, _, _ = await read_request(cr)
    except Exception:
        cw.close()
        return
    path, _, query = target.partition("?")
    q = dict(urllib.parse.parse_qsl(query))
    out = {"ok": True}
    if path == "/rotate":
        st["ttl"] = int(q.get("ttl", "21600"))
        out["akid"] = new_creds(st["ttl"])
    elif path == "/revoke":
        for k, c in st["creds"].items():
            if k == q.get("akid") or (q.get("all") == "1" and k != st["current"]):
                c["revoked"] = True
    elif path == "/mode":
        st["mode"] = q["m"]
    elif path == "/imds":
        if q.get("up") == "0" and imds_server is not None:
            imds_server.close()
            await imds_server.wait_closed()
            imds_server = None
        elif q.get("up") == "1" and imds_server is None:
            imds_server = await asyncio.start_server(imds, "127.0.0.1", IMDS_PORT)
    elif path == "/state":
        out = {k: st[k] for k in ("mode", "current", "creds", "s3", "imds")}
    else:
        return await answer(cw, 404, "Not Found", "")
    return await answer(cw, 200, "OK", json.dumps(out), "application/json")


async def main():
    global imds_server
    imds_server = await asyncio.start_server(imds, "127.0.0.1", IMDS_PORT)
    s = await asyncio.start_server(s3, "127.0.0.1", S3_PORT)
    c = await asyncio.start_server(ctl, "127.0.0.1", CTL_PORT)
    async with s, c:
        await asyncio.gather(s.serve_forever(), c.serve_forever())

asyncio.run(main())
