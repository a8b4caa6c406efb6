#!/usr/bin/env python3
"""Minimal AWS SigV4 S3 client (stdlib only), path-style addressing.

CLI:
  s3sign.py [--endpoint URL] [--ak KEY] [--sk SECRET] [--region R]
            [-H 'Name: value']... [--data STRING | --data-file PATH]
            [--expect CODE[,CODE...]] [--timeout S] [--quiet] METHOD PATH
Defaults come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
AWS_REGION (us-east-1). PATH is '/bucket[/key][?query]'. Prints the HTTP status on
stdout (and the body on stderr unless --quiet); with --expect, exits 1 when the
status is not one of the codes. Connection errors exit 2.

Library: request(method, path, ...) -> (status, headers, body).
"""
import argparse
import datetime
import hashlib
import hmac
import http.client
import os
import sys
import urllib.parse

UNSIGNED_OK = "UNSIGNED-PAYLOAD"


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _uri_encode(s, keep_slash):
    safe = "-_.~" + ("/" if keep_slash else "")
    return urllib.parse.quote(s, safe=safe)


def request(method, path, *, endpoint=None, ak=None, sk=None, region=None,
            headers=None, body=b"", timeout=10.0):
    endpoint = endpoint or os.environ["AWS_ENDPOINT_URL"]
    ak = ak if ak is not None else os.environ["AWS_ACCESS_KEY_ID"]
    sk = sk if sk is not None else os.environ["AWS_SECRET_ACCESS_KEY"]
    region = region or os.environ.get("AWS_REGION", "us-east-1")
    u = urllib.parse.urlsplit(endpoint)
    host = u.netloc
    raw_path, _, raw_query = path.partition("?")
    # Canonical URI: each segment URI-encoded once (S3 does not double-encode).
    canon_uri = _uri_encode(urllib.parse.unquote(raw_path), keep_slash=True) or "/"
    pairs = urllib.parse.parse_qsl(raw_query, keep_blank_values=True)
    canon_query = "&".join(
        f"{_uri_encode(k, False)}={_uri_encode(v, False)}" for k, v in sorted(pairs))
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    hdrs = {k.lower(): str(v).strip() for k, v in (headers or {}).items()}
    hdrs["host"] = host
    hdrs["x-amz-date"] = amz_date
    hdrs["x-amz-content-sha256"] = payload_hash
    signed = sorted(hdrs)
    canon_headers = "".join(f"{k}:{hdrs[k]}\n" for k in signed)
    signed_headers = ";".join(signed)
    canon_req = "\n".join([method, canon_uri, canon_query, canon_headers,
                           signed_headers, payload_hash])
    scope = f"{date}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canon_req.encode()).hexdigest()])
    k = _hmac(("AWS4" + sk).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, "s3")
    k = _hmac(k, "aws4_request")
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    hdrs["authorization"] = (f"AWS4-HMAC-SHA256 Credential={ak}/{scope}, "
                             f"SignedHeaders={signed_headers}, Signature={sig}")
    hdrs["content-length"] = str(len(body))
    conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(host, timeout=timeout)
    try:
        url = canon_uri + (("?" + canon_query) if canon_query else "")
        conn.request(method, url, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, dict(resp.getheaders()), data
    finally:
        conn.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("method")
    p.add_argument("path")
    p.add_argument("--endpoint")
    p.add_argument("--ak")
    p.add_argument("--sk")
    p.add_argument("--region")
    p.add_argument("-H", "--header", action="append", default=[])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--data")
    g.add_argument("--data-file")
    p.add_argument("--expect")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    body = b""
    if a.data is not None:
        body = a.data.encode()
    elif a.data_file:
        with open(a.data_file, "rb") as f:
            body = f.read()
    headers = {}
    for h in a.header:
        k, _, v = h.partition(":")
        headers[k.strip()] = v.strip()
    try:
        status, _, data = request(a.method.upper(), a.path, endpoint=a.endpoint, ak=a.ak,
                                  sk=a.sk, region=a.region, headers=headers, body=body,
                                  timeout=a.timeout)
    except (OSError, http.client.HTTPException) as e:
        print(f"s3sign: {e}", file=sys.stderr)
        return 2
    print(status)
    if data and not a.quiet:
        sys.stderr.write(data.decode(errors="replace") + "\n")
    if a.expect and str(status) not in a.expect.split(","):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
