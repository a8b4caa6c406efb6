#!/usr/bin/env python3
"""Quick behaviour probe of an S3 server started by start-s3s.sh / start-ceph.sh (stdlib only).

usage: s3probe.py ENVFILE
Prints one line per check: PASS/FAIL/INFO, name, what the server did. Exits 1 when a
REQUIRED check fails (conditional create 412, SigV4 enforced 403, list continuation);
INFO checks only record behaviour that differs between servers.
"""
import base64
import hashlib
import os
import re
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import s3sign  # noqa: E402


def load_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            k, sep, v = line.strip().partition("=")
            if sep:
                env[k] = v
    return env


def main():
    env = load_env(sys.argv[1])
    ep, ak, sk = env["AWS_ENDPOINT_URL"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    bucket = env["TARVAULT_S3_BUCKET"]
    pre = f"probe-{uuid.uuid4().hex[:8]}/"

    def req(method, path, headers=None, body=b"", sk_=None, ak_=None):
        return s3sign.request(method, path, endpoint=ep, ak=ak_ or ak, sk=sk_ or sk,
                              headers=headers, body=body)

    failed = []
    created = []

    def check(name, ok, detail, required=True):
        tag = ("PASS" if ok else "FAIL") if required else "INFO"
        print(f"{tag:4}  {name:44} {detail}")
        if required and not ok:
            failed.append(name)

    key = f"/{bucket}/{pre}obj"
    st, h, _ = req("PUT", key, body=b"one")
    created.append(key)
    etag = h.get("ETag") or h.get("etag") or ""
    check("PUT new object", st == 200, st)
    st, _, _ = req("PUT", key, {"If-None-Match": "*"}, b"two")
    check("If-None-Match:* PUT on existing -> 412", st == 412, st)
    st, _, body = req("GET", key)
    check("  ...object unchanged", body == b"one", body[:10])
    big = os.urandom(8 << 20)
    kb = f"/{bucket}/{pre}big"
    st, _, _ = req("PUT", kb, body=big)
    created.append(kb)
    st2, _, got = req("GET", kb)
    check("8 MiB PUT + GET round trip", st == 200 and st2 == 200 and got == big, f"{st}/{st2}")
    k2 = f"/{bucket}/{pre}new"
    st, _, _ = req("PUT", k2, {"If-None-Match": "*"}, b"x")
    created.append(k2)
    check("If-None-Match:* PUT on new key -> 200", st == 200, st)

    st, _, _ = req("GET", f"/{bucket}?list-type=2", sk_=sk + "x")
    check("wrong secret -> 403", st == 403, st)
    st, _, _ = req("GET", f"/{bucket}?list-type=2", ak_="nosuchkey")
    check("unknown access key -> 403", st == 403, st)

    n = 5
    for i in range(n):
        p = f"/{bucket}/{pre}list/{i:02}"
        req("PUT", p, body=b"l")
        created.append(p)
    keys, token, pages = [], None, 0
    while pages < 10:
        q = f"/{bucket}?list-type=2&max-keys=2&prefix={pre}list/"
        if token:
            q += "&continuation-token=" + s3sign.urllib.parse.quote(token, safe="")
        st, _, body = req("GET", q)
        pages += 1
        txt = body.decode()
        keys += re.findall(r"<Key>([^<]*)</Key>", txt)
        m = re.search(r"<NextContinuationToken>([^<]*)</NextContinuationToken>", txt)
        if "<IsTruncated>true</IsTruncated>" not in txt or not m:
            break
        token = m.group(1)
    check("list-type=2 continuation (5 keys, 2/page)",
          len(keys) == n and len(set(keys)) == n and pages == 3, f"{len(keys)} keys, {pages} pages")

    # Behaviour that differs between servers (recorded, not required).
    st, _, _ = req("PUT", key, {"If-Match": etag}, b"three")
    check("If-Match: <quoted ETag> PUT", st == 200, st, required=False)
    st, _, _ = req("PUT", key, {"If-Match": '"0123456789abcdef0123456789abcdef"'}, b"four")
    check("If-Match: <wrong ETag> PUT -> 412", st == 412, st, required=False)
    st, h, _ = req("GET", key)
    etag = h.get("ETag") or h.get("etag") or ""
    st, _, _ = req("GET", key, {"If-None-Match": etag})
    check("GET If-None-Match: <ETag> -> 304", st == 304, st, required=False)
    bad_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    k3 = f"/{bucket}/{pre}md5"
    st, _, _ = req("PUT", k3, {"Content-MD5": bad_md5}, b"data")
    created.append(k3)
    check("wrong Content-MD5 -> 400", st == 400, st, required=False)

    for p in created:
        req("DELETE", p)
    print(f"{env.get('TARVAULT_S3_SERVER', '?')}: {'FAILED ' + ', '.join(failed) if failed else 'all required checks passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
