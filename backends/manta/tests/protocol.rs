//! Protocol tests against the in-process server with a Rust client:
//! authentication failures, date freshness, `100 Continue` ordering, objects,
//! ranges, conditional requests, listings, directories, SnapLinks, multipart
//! uploads and fault injection. Expected codes and messages are muskie's.

mod common;

use std::time::{Duration, Instant};

use common::{md5_b64, pseudo_random, Body, Client, Scratch, USER};
use manta_test_server::sign::Signer;
use manta_test_server::{util, Faults};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const DIR_CT: &str = "application/x-json-stream; type=directory";

struct Env {
    scratch: Scratch,
    key: std::path::PathBuf,
    server: manta_test_server::ServerHandle,
    c: Client,
}

async fn env() -> Env {
    let scratch = Scratch::new();
    let key = scratch.rsa();
    let server = common::start(&scratch.root(), &[&key]).await;
    let c = Client::new(&server, &key);
    Env {
        scratch,
        key,
        server,
        c,
    }
}

fn authz(signer: &Signer, date: &str) -> String {
    signer.authorization(date)
}

#[tokio::test]
async fn signature_failures() {
    let e = env().await;
    e.c.mkdir("/testuser/stor/d").await;
    e.c.put("/testuser/public/p.txt", b"public").await;

    // No credentials: anonymous may only read /public.
    let anon = Client {
        addr: e.server.addr(),
        signer: None,
    };
    let r = anon.get("/testuser/stor/d").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "AuthorizationFailed")
    );
    assert_eq!(
        r.json()["message"],
        "anonymous is not allowed to access /testuser/stor/d"
    );
    let r = anon.get("/testuser/public/p.txt").await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"public");
    let r = anon
        .req(
            "PUT",
            "/testuser/public/q.txt",
            &[],
            Body::Bytes(b"x".to_vec()),
        )
        .await;
    assert_eq!(r.code(), "AuthorizationFailed");

    // A key the account does not have.
    let other = e.scratch.keygen("other_rsa", &["-t", "rsa", "-b", "2048"]);
    let other_signer = Signer::from_file(&other, USER).expect("signer");
    let unknown = Client {
        addr: e.server.addr(),
        signer: Some(Signer::from_file(&other, USER).expect("signer")),
    };
    let r = unknown.get("/testuser/stor/d").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "KeyDoesNotExist")
    );
    assert_eq!(
        r.json()["message"],
        format!(
            "/testuser/keys/{} does not exist",
            other_signer.fingerprint()
        )
    );

    // Right keyId, wrong private key: the signature does not verify.
    let good = Signer::from_file(&e.key, USER).expect("signer");
    let forged = Client {
        addr: e.server.addr(),
        signer: Some(
            Signer::from_file(&other, USER)
                .expect("signer")
                .with_key_id(good.key_id()),
        ),
    };
    let r = forged.get("/testuser/stor/d").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "InvalidSignature")
    );
    assert_eq!(
        r.json()["message"],
        "The signature we calculated does not match the one you sent"
    );

    let with = |key_id: String| Client {
        addr: e.server.addr(),
        signer: Some(
            Signer::from_file(&e.key, USER)
                .expect("signer")
                .with_key_id(key_id),
        ),
    };
    // SHA256 fingerprints are not key ids.
    let r = with("/testuser/keys/SHA256:abcdef".into())
        .get("/testuser/stor/d")
        .await;
    assert_eq!(r.code(), "KeyDoesNotExist");
    // Another account, a sub-user, a malformed keyId.
    let r = with(format!("/nobody/keys/{}", good.fingerprint()))
        .get("/testuser/stor/d")
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "AccountDoesNotExist")
    );
    assert_eq!(r.json()["message"], "nobody does not exist");
    let r = with(format!("/testuser/sub1/keys/{}", good.fingerprint()))
        .get("/testuser/stor/d")
        .await;
    assert_eq!(r.code(), "UserDoesNotExist");
    let r = with(format!("/testuser/nokeys/{}", good.fingerprint()))
        .get("/testuser/stor/d")
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "InvalidKeyId")
    );
    let r = with("testuser-keys".into()).get("/testuser/stor/d").await;
    assert_eq!(r.code(), "InvalidKeyId");

    // Algorithms: rsa-sha1/sha512 verify; sha384 is refused by the parser;
    // hmac passes the parser but not muskie's list.
    for alg in ["rsa-sha1", "rsa-sha512"] {
        let c = Client {
            addr: e.server.addr(),
            signer: Some(
                Signer::from_file(&e.key, USER)
                    .expect("signer")
                    .with_algorithm(alg),
            ),
        };
        assert_eq!(c.get("/testuser/stor/d").await.status, 200, "{alg}");
    }
    let date = util::http_date(util::now_ms());
    let fp = good.fingerprint().to_string();
    let hdr = |alg: &str| {
        format!("Signature keyId=\"/testuser/keys/{fp}\",algorithm=\"{alg}\",headers=\"date\",signature=\"AAAA\"")
    };
    let r =
        e.c.req(
            "GET",
            "/testuser/stor/d",
            &[("date", &date), ("authorization", &hdr("rsa-sha384"))],
            Body::Empty,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "InvalidHeader")
    );
    assert_eq!(
        r.json()["message"],
        "Invalid Signature Authorization header: rsa-sha384 is not supported"
    );
    let r =
        e.c.req(
            "GET",
            "/testuser/stor/d",
            &[("date", &date), ("authorization", &hdr("hmac-sha256"))],
            Body::Empty,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (401, "InvalidAlgorithm")
    );
    let r =
        e.c.req(
            "GET",
            "/testuser/stor/d",
            &[("date", &date), ("authorization", &hdr("ed25519-sha512"))],
            Body::Empty,
        )
        .await;
    assert_eq!(r.code(), "InvalidHeader");

    // The parser wants `name="value"` pairs with bare commas.
    let spaced = authz(&good, &date).replace("\",", "\", ");
    let r =
        e.c.req(
            "GET",
            "/testuser/stor/d",
            &[("date", &date), ("authorization", &spaced)],
            Body::Empty,
        )
        .await;
    assert_eq!(r.code(), "InvalidHeader");
    assert_eq!(
        r.json()["message"],
        "Invalid Signature Authorization header: bad param format"
    );

    // Other schemes.
    let r =
        e.c.req(
            "GET",
            "/testuser/stor/d",
            &[("authorization", "Basic dGVzdDp0ZXN0")],
            Body::Empty,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "AuthorizationSchemeNotAllowed")
    );

    // `date` must be signed; `(request-target)` may be signed too.
    let rt = format!("(request-target): get /testuser/stor/d\ndate: {date}");
    let sig = good.sign_string(&rt);
    let h = format!(
        "Signature keyId=\"{}\",algorithm=\"rsa-sha256\",headers=\"(request-target) date\",signature=\"{sig}\"",
        good.key_id()
    );
    let r =
        e.c.req(
            "GET",
            "/testuser/stor/d",
            &[("date", &date), ("authorization", &h)],
            Body::Empty,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sig = good.sign_string("(request-target): get /testuser/stor/d");
    let h = format!(
        "Signature keyId=\"{}\",algorithm=\"rsa-sha256\",headers=\"(request-target)\",signature=\"{sig}\"",
        good.key_id()
    );
    let r =
        e.c.req(
            "GET",
            "/testuser/stor/d",
            &[("date", &date), ("authorization", &h)],
            Body::Empty,
        )
        .await;
    assert_eq!(r.code(), "InvalidHeader");
    assert_eq!(
        r.json()["message"],
        "Invalid Signature Authorization header: date was not a signed header"
    );

    // The path's owner must exist.
    let r = e.c.get("/someoneelse/stor").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "AccountDoesNotExist")
    );
}

#[tokio::test]
async fn ecdsa_keys() {
    let scratch = Scratch::new();
    let key = scratch.ecdsa();
    let server = common::start(&scratch.root(), &[&key]).await;
    let c = Client::new(&server, &key);
    c.mkdir("/testuser/stor/e").await;
    c.put("/testuser/stor/e/x", b"ecdsa").await;
    assert_eq!(&c.get("/testuser/stor/e/x").await.body[..], b"ecdsa");
    let c512 = Client {
        addr: server.addr(),
        signer: Some(
            Signer::from_file(&key, USER)
                .expect("signer")
                .with_algorithm("ecdsa-sha512"),
        ),
    };
    assert_eq!(c512.get("/testuser/stor/e/x").await.status, 200);
    // The key type must match the algorithm.
    let wrong = Client {
        addr: server.addr(),
        signer: Some(
            Signer::from_file(&key, USER)
                .expect("signer")
                .with_algorithm("rsa-sha256"),
        ),
    };
    assert_eq!(
        wrong.get("/testuser/stor/e/x").await.code(),
        "InvalidSignature"
    );

    // P-384: node-manta signs with ecdsa-sha384, which muskie's parser refuses.
    let scratch = Scratch::new();
    let key = scratch.keygen("id_ecdsa", &["-t", "ecdsa", "-b", "384"]);
    let server = common::start(&scratch.root(), &[&key]).await;
    let c = Client::new(&server, &key);
    let r = c.get("/testuser/stor").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "InvalidHeader")
    );
    let c = Client {
        addr: server.addr(),
        signer: Some(
            Signer::from_file(&key, USER)
                .expect("signer")
                .with_algorithm("ecdsa-sha256"),
        ),
    };
    assert_eq!(c.get("/testuser/stor").await.status, 200);
}

#[tokio::test]
async fn date_freshness() {
    let e = env().await;
    let signer = Signer::from_file(&e.key, USER).expect("signer");
    let at = |offset_secs: i64| {
        let ms = (util::now_ms() as i64 + offset_secs * 1000) as u64;
        util::http_date(ms)
    };
    let c = &e.c;
    let signer = &signer;
    let send = |date: String| async move {
        let a = authz(signer, &date);
        c.req(
            "GET",
            "/testuser/stor",
            &[("date", &date), ("authorization", &a)],
            Body::Empty,
        )
        .await
    };
    let r = send(at(-200)).await;
    assert_eq!(r.status, 200);
    let old = at(-400);
    let r = send(old.clone()).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "RequestExpired")
    );
    assert_eq!(r.json()["message"], format!("Date header {old} is too old"));
    let r = send(at(400)).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "InvalidHeader")
    );
    let msg = r.json()["message"].as_str().unwrap_or("").to_string();
    assert!(
        msg.starts_with("Invalid Signature Authorization header: clock skew of ")
            && msg.ends_with("s was greater than 300s"),
        "{msg}"
    );
}

/// Reads one response head (up to the blank line) from a raw socket.
async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = Duration::from_secs(10);
    loop {
        let n = tokio::time::timeout(deadline, s.read(&mut byte))
            .await
            .expect("server answered in time")
            .expect("read");
        if n == 0 {
            break;
        }
        buf.push(byte[0]);
        if buf.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

async fn read_body(s: &mut TcpStream, head: &str) -> String {
    let mut body = vec![0u8; content_length(head)];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut body))
        .await
        .expect("body in time")
        .expect("body");
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn continue_only_after_validation() {
    let e = env().await;
    let signer = Signer::from_file(&e.key, USER).expect("signer");
    e.c.mkdir("/testuser/stor/ok").await;
    e.c.put("/testuser/stor/ok/existing", b"v1").await;
    let head = |path: &str, extra: &str, auth: bool| {
        let (date, a) = signer.sign_now();
        let auth = if auth {
            format!("authorization: {a}\r\n")
        } else {
            String::new()
        };
        format!(
            "PUT {path} HTTP/1.1\r\nhost: x\r\ndate: {date}\r\n{auth}content-type: text/plain\r\n\
             content-length: 5\r\nexpect: 100-continue\r\n{extra}\r\n"
        )
    };

    // Missing parent: the error comes back without the body ever being sent.
    let mut s = TcpStream::connect(e.server.addr()).await.expect("connect");
    s.write_all(head("/testuser/stor/nope/x.txt", "", true).as_bytes())
        .await
        .expect("write");
    let h = read_head(&mut s).await;
    assert!(h.starts_with("HTTP/1.1 404"), "{h}");
    let b = read_body(&mut s, &h).await;
    assert_eq!(
        b,
        "{\"code\":\"DirectoryDoesNotExist\",\"message\":\"/testuser/stor/nope does not exist\"}"
    );
    assert!(h.to_ascii_lowercase().contains("content-md5: "), "{h}");

    // Auth and preconditions are checked before 100 Continue too.
    for (path, extra, auth, want) in [
        ("/testuser/stor/ok/y", "", false, "HTTP/1.1 403"),
        (
            "/testuser/stor/ok/existing",
            "if-match: nope\r\n",
            true,
            "HTTP/1.1 412",
        ),
        ("/testuser/stor/ok", "", true, "HTTP/1.1 400"),
        (
            "/testuser/stor/ok/y",
            "durability-level: 12\r\n",
            true,
            "HTTP/1.1 400",
        ),
    ] {
        let mut s = TcpStream::connect(e.server.addr()).await.expect("connect");
        s.write_all(head(path, extra, auth).as_bytes())
            .await
            .expect("write");
        let h = read_head(&mut s).await;
        assert!(h.starts_with(want), "{path}: {h}");
    }

    // A valid PUT gets 100 Continue first, then 204 once the body arrived.
    let mut s = TcpStream::connect(e.server.addr()).await.expect("connect");
    s.write_all(head("/testuser/stor/ok/new.txt", "", true).as_bytes())
        .await
        .expect("write");
    let h = read_head(&mut s).await;
    assert!(h.starts_with("HTTP/1.1 100 Continue"), "{h}");
    s.write_all(b"hello").await.expect("body");
    let h = read_head(&mut s).await;
    assert!(h.starts_with("HTTP/1.1 204"), "{h}");
    let lower = h.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("computed-md5: {}", md5_b64(b"hello")).to_ascii_lowercase()),
        "{h}"
    );
    assert_eq!(
        &e.c.get("/testuser/stor/ok/new.txt").await.body[..],
        b"hello"
    );
}

#[tokio::test]
async fn objects() {
    let e = env().await;
    let c = &e.c;
    c.mkdir("/testuser/stor/o").await;
    let data = pseudo_random(10_000, 7);
    let md5 = md5_b64(&data);
    let r = c
        .req(
            "PUT",
            "/testuser/stor/o/a.bin",
            &[
                ("content-type", "application/x-tar"),
                ("content-md5", &md5),
                ("durability-level", "3"),
                ("m-foo", "bar"),
                ("m-Other", "x"),
                ("cache-control", "no-cache"),
                ("x-not-stored", "1"),
            ],
            Body::Bytes(data.clone()),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let etag = r.header("etag").expect("etag").to_string();
    assert_eq!(etag.len(), 36, "etags are object uuids");
    assert_eq!(r.header("computed-md5"), Some(md5.as_str()));
    assert!(r.header("last-modified").is_some());

    for method in ["GET", "HEAD"] {
        let r = c
            .req(method, "/testuser/stor/o/a.bin", &[], Body::Empty)
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.header("content-md5"), Some(md5.as_str()));
        assert_eq!(r.header("content-type"), Some("application/x-tar"));
        assert_eq!(r.header("content-length"), Some("10000"));
        assert_eq!(r.header("durability-level"), Some("3"));
        assert_eq!(r.header("m-foo"), Some("bar"));
        assert_eq!(r.header("m-other"), Some("x"));
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        assert_eq!(r.header("x-not-stored"), None);
        assert_eq!(r.header("server"), Some("Manta"));
        assert!(r.header("x-request-id").is_some() && r.header("x-response-time").is_some());
        if method == "GET" {
            assert_eq!(r.body, data);
            assert_eq!(r.header("accept-ranges"), Some("bytes"));
        } else {
            assert!(r.body.is_empty());
            assert_eq!(r.header("accept-ranges"), None);
        }
    }

    // Content-MD5 checks happen on the received bytes.
    let r = c
        .req(
            "PUT",
            "/testuser/stor/o/b",
            &[("content-md5", &md5_b64(b"other"))],
            Body::Bytes(b"data".to_vec()),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "ContentMD5Mismatch")
    );
    assert_eq!(
        r.json()["message"],
        format!(
            "Content-MD5 expected {}, but was {}",
            md5_b64(b"data"),
            md5_b64(b"other")
        )
    );
    assert_eq!(
        c.get("/testuser/stor/o/b").await.status,
        404,
        "a failed PUT stores nothing"
    );
    let r = c
        .req(
            "PUT",
            "/testuser/stor/o/b",
            &[("content-md5", "not-base64!")],
            Body::Bytes(b"data".to_vec()),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "BadRequest"));

    // Zero-byte and chunked objects; defaults.
    let r = c
        .req("PUT", "/testuser/stor/o/empty", &[], Body::Empty)
        .await;
    assert_eq!(r.header("computed-md5"), Some(util::ZERO_BYTE_MD5));
    let r = c
        .req("HEAD", "/testuser/stor/o/empty", &[], Body::Empty)
        .await;
    assert_eq!(r.header("durability-level"), Some("0"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("content-length"), Some("0"));
    let r = c
        .req(
            "PUT",
            "/testuser/stor/o/chunked",
            &[],
            Body::Chunked(vec![b"ab".to_vec(), b"cd".to_vec()]),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = c.get("/testuser/stor/o/chunked").await;
    assert_eq!(
        (&r.body[..], r.header("durability-level")),
        (&b"abcd"[..], Some("2"))
    );
    let r = c
        .req(
            "PUT",
            "/testuser/stor/o/big",
            &[("max-content-length", "3")],
            Body::Chunked(vec![b"ab".to_vec(), b"cd".to_vec()]),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (413, "MaxContentLengthExceeded")
    );

    // Argument and namespace errors.
    let r = c
        .req(
            "PUT",
            "/testuser/stor/o/c",
            &[("durability-level", "10")],
            Body::Bytes(b"x".to_vec()),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "InvalidDurabilityLevel")
    );
    assert_eq!(
        r.json()["message"],
        "durability-level must be between 1 and 9"
    );
    let r = c
        .req("PUT", "/testuser/stor/o", &[], Body::Bytes(b"x".to_vec()))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "InvalidUpdate")
    );
    let r = c
        .req(
            "PUT",
            "/testuser/stor/o",
            &[],
            Body::Chunked(vec![b"x".to_vec()]),
        )
        .await;
    assert_eq!(r.code(), "OperationNotAllowedOnDirectory");
    let r = c
        .req(
            "PUT",
            "/testuser/stor/o/a.bin/child",
            &[],
            Body::Bytes(b"x".to_vec()),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "ParentNotDirectory")
    );
    assert_eq!(
        r.json()["message"],
        "/testuser/stor/o/a.bin is not a directory"
    );
    let r = c.get("/testuser/stor/o/missing").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (404, "ResourceNotFound")
    );
    assert_eq!(
        r.json()["message"],
        "/testuser/stor/o/missing was not found"
    );
    let r = c
        .req("HEAD", "/testuser/stor/o/missing", &[], Body::Empty)
        .await;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    assert!(r.header("content-length").is_some_and(|l| l != "0"));
    let r = c
        .req(
            "GET",
            "/testuser/stor/o/a.bin",
            &[("accept", "application/json")],
            Body::Empty,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (406, "NotAcceptable")
    );

    // Metadata update (mchattr) and its restrictions.
    let r = c
        .req(
            "PUT",
            "/testuser/stor/o/a.bin?metadata=true",
            &[("m-new", "1"), ("content-type", "text/plain")],
            Body::Empty,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = c
        .req("HEAD", "/testuser/stor/o/a.bin", &[], Body::Empty)
        .await;
    assert_eq!((r.header("m-new"), r.header("m-foo")), (Some("1"), None));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = c
        .req(
            "PUT",
            "/testuser/stor/o/a.bin?metadata=true",
            &[("content-md5", &md5)],
            Body::Empty,
        )
        .await;
    assert_eq!(r.code(), "InvalidUpdate");

    // Deletes.
    let r = c
        .req(
            "DELETE",
            "/testuser/stor/o/a.bin",
            &[("if-match", "wrong")],
            Body::Empty,
        )
        .await;
    assert_eq!(r.status, 412);
    let r = c
        .req("DELETE", "/testuser/stor/o/a.bin", &[], Body::Empty)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(c.get("/testuser/stor/o/a.bin").await.status, 404);
    let r = c
        .req("DELETE", "/testuser/stor/o/a.bin", &[], Body::Empty)
        .await;
    assert_eq!(r.code(), "ResourceNotFound");
}

#[tokio::test]
async fn ranges() {
    let e = env().await;
    let data = pseudo_random(1000, 3);
    e.c.put("/testuser/stor/r", &data).await;
    let c = &e.c;
    let get = |range: &'static str| async move {
        c.req("GET", "/testuser/stor/r", &[("range", range)], Body::Empty)
            .await
    };
    let r = get("bytes=0-9").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 0-9/1000"));
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(r.header("content-md5"), None);
    assert_eq!(r.body, data[..10]);
    let r = get("bytes=990-").await;
    assert_eq!(
        (r.status.as_u16(), r.header("content-range")),
        (206, Some("bytes 990-999/1000"))
    );
    assert_eq!(r.body, data[990..]);
    let r = get("bytes=-5").await;
    assert_eq!(r.body, data[995..]);
    let r = get("bytes=500-5000").await;
    assert_eq!(r.header("content-range"), Some("bytes 500-999/1000"));
    let r = get("bytes=1000-").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (416, "RequestedRangeNotSatisfiable")
    );
    assert_eq!(r.header("content-range"), Some("bytes */1000"));
    let r = get("bytes=0-1,5-6").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (501, "NotImplemented")
    );
    // node-manta's resume: If-Match + Range.
    let etag =
        e.c.get("/testuser/stor/r")
            .await
            .header("etag")
            .unwrap_or("")
            .to_string();
    let r =
        e.c.req(
            "GET",
            "/testuser/stor/r",
            &[("if-match", &etag), ("range", "bytes=100-999")],
            Body::Empty,
        )
        .await;
    assert_eq!((r.status.as_u16(), r.body.len()), (206, 900));
}

#[tokio::test]
async fn conditional_requests() {
    let e = env().await;
    let c = &e.c;
    let r = c.put("/testuser/stor/c", b"v1").await;
    let etag = r.header("etag").expect("etag").to_string();
    let lm = r.header("last-modified").expect("lm").to_string();
    let with = |h: &'static str, v: String, m: &'static str| async move {
        c.req(m, "/testuser/stor/c", &[(h, v.as_str())], Body::Empty)
            .await
    };
    for m in ["GET", "HEAD"] {
        let r = with("if-none-match", etag.clone(), m).await;
        assert_eq!(r.status, 304, "{m}");
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert!(r.body.is_empty());
    }
    assert_eq!(
        with("if-none-match", "other".into(), "GET").await.status,
        200
    );
    assert_eq!(with("if-match", etag.clone(), "GET").await.status, 200);
    assert_eq!(
        with("if-match", format!("W/{etag}"), "GET").await.status,
        200
    );
    // restify only unquotes \w* etags: a quoted UUID never matches.
    let r = with("if-match", format!("\"{etag}\""), "GET").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (412, "PreconditionFailed")
    );
    let r = with("if-match", "nope".into(), "GET").await;
    assert_eq!(
        r.json()["message"],
        format!("if-match 'nope' didn't match etag '{etag}'")
    );
    let future = util::http_date(util::now_ms() + 60_000);
    let past = util::http_date(util::now_ms() - 3_600_000);
    assert_eq!(
        with("if-modified-since", future.clone(), "GET")
            .await
            .status,
        304
    );
    assert_eq!(
        with("if-modified-since", past.clone(), "GET").await.status,
        200
    );
    assert_eq!(
        with("if-unmodified-since", past.clone(), "GET")
            .await
            .status,
        412
    );
    assert_eq!(
        with("if-unmodified-since", lm.clone(), "GET").await.status,
        200
    );

    // PUT: `*` matches even a missing object.
    let put = |path: &'static str, h: &'static str, v: String| async move {
        c.req("PUT", path, &[(h, v.as_str())], Body::Bytes(b"v2".to_vec()))
            .await
    };
    let r = put("/testuser/stor/new1", "if-none-match", "*".into()).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (412, "PreconditionFailed")
    );
    assert_eq!(r.json()["message"], "if-none-match '*' matched etag ''");
    assert_eq!(
        put("/testuser/stor/new2", "if-match", "*".into())
            .await
            .status,
        204
    );
    assert_eq!(
        put("/testuser/stor/new3", "if-match", "abc".into())
            .await
            .status,
        412
    );
    assert_eq!(
        put("/testuser/stor/c", "if-none-match", "different".into())
            .await
            .status,
        204
    );
    assert_eq!(
        put("/testuser/stor/c", "if-match", etag.clone())
            .await
            .status,
        412,
        "etag changed"
    );
    let cur = c
        .get("/testuser/stor/c")
        .await
        .header("etag")
        .unwrap_or("")
        .to_string();
    assert_eq!(put("/testuser/stor/c", "if-match", cur).await.status, 204);
    assert_eq!(
        put("/testuser/stor/c", "if-modified-since", future)
            .await
            .status,
        412
    );
}

#[tokio::test]
async fn listings() {
    let e = env().await;
    let c = &e.c;
    c.mkdir("/testuser/stor/l").await;
    for i in 0..25 {
        c.put(
            &format!("/testuser/stor/l/f{i:02}"),
            format!("{i}").as_bytes(),
        )
        .await;
    }
    c.mkdir("/testuser/stor/l/sub1").await;
    c.mkdir("/testuser/stor/l/sub2").await;

    let r = c.get("/testuser/stor/l").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(DIR_CT));
    assert_eq!(r.header("result-set-size"), Some("27"));
    assert!(r.header("last-modified").is_some());
    assert_eq!(r.header("etag"), None);
    let text = r.text();
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 27);
    let first: serde_json::Value = serde_json::from_str(lines[0]).expect("json line");
    let f00 = c
        .req("HEAD", "/testuser/stor/l/f00", &[], Body::Empty)
        .await;
    let expect = format!(
        "{{\"name\":\"f00\",\"etag\":\"{}\",\"size\":1,\"type\":\"object\",\"contentType\":\"application/octet-stream\",\"contentMD5\":\"{}\",\"mtime\":\"{}\",\"durability\":2}}",
        f00.header("etag").unwrap_or(""),
        md5_b64(b"0"),
        first["mtime"].as_str().unwrap_or("")
    );
    assert_eq!(lines[0], expect, "field order and content as muskie");
    assert!(lines[25].starts_with("{\"name\":\"sub1\",\"type\":\"directory\",\"mtime\":\""));
    let mtime = first["mtime"].as_str().unwrap_or("");
    assert_eq!(
        util::parse_iso_time(mtime).map(util::iso_time).as_deref(),
        Some(mtime)
    );

    // HEAD: headers only.
    let r = c.req("HEAD", "/testuser/stor/l", &[], Body::Empty).await;
    assert_eq!(
        (r.header("content-type"), r.header("result-set-size")),
        (Some(DIR_CT), Some("27"))
    );
    assert!(r.body.is_empty());

    // Paging as node-manta does it: inclusive marker, drop the repeat.
    let mut names = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let url = match &marker {
            Some(m) => format!("/testuser/stor/l?limit=10&marker={m}"),
            None => "/testuser/stor/l?limit=10".to_string(),
        };
        let r = c.get(&url).await;
        assert_eq!(r.header("result-set-size"), Some("27"));
        let page: Vec<String> = r
            .text()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("line")["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        let n = page.len();
        if let Some(m) = &marker {
            assert_eq!(page.first(), Some(m), "marker is inclusive");
        }
        for p in page {
            if Some(&p) != marker.as_ref() {
                names.push(p);
            }
        }
        if n < 10 {
            break;
        }
        marker = names.last().cloned();
    }
    assert_eq!(names.len(), 27);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);

    // Ordering and filters.
    let names_of = |text: String| -> Vec<String> {
        text.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("line")["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    let r = c.get("/testuser/stor/l?sort_order=reverse&limit=3").await;
    assert_eq!(names_of(r.text()), ["sub2", "sub1", "f24"]);
    let r = c
        .get("/testuser/stor/l?sort_order=reverse&marker=f10&limit=2")
        .await;
    assert_eq!(names_of(r.text()), ["f10", "f09"]);
    let r = c.get("/testuser/stor/l?dir=true").await;
    assert_eq!(names_of(r.text()), ["sub1", "sub2"]);
    assert_eq!(r.header("result-set-size"), Some("27"));
    let r = c.get("/testuser/stor/l?obj=true&limit=1024").await;
    assert_eq!(names_of(r.text()).len(), 25);
    let r = c.get("/testuser/stor/l?sort=mtime&limit=1").await;
    assert_eq!(names_of(r.text()), ["sub2"], "newest first");
    let r = c
        .get("/testuser/stor/l?sort=mtime&sort_order=reverse&limit=1")
        .await;
    assert_eq!(names_of(r.text()), ["f00"]);

    // Bad arguments.
    for (q, code, status) in [
        ("limit=0", "InvalidArgumentError", 400),
        ("limit=1025", "InvalidArgumentError", 400),
        ("sort=mtime&marker=yesterday", "InvalidParameter", 400),
        ("sort=none", "QueryParameterForbidden", 403),
    ] {
        let r = c.get(&format!("/testuser/stor/l?{q}")).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (status, code),
            "{q}"
        );
    }
    let r = c.get("/testuser/stor/l?limit=1025").await;
    assert_eq!(
        r.json()["message"],
        "limit=1025 is invalid: must be between [1, 1024]"
    );

    // The account root.
    let r = c.get("/testuser").await;
    assert_eq!(r.header("content-type"), Some(DIR_CT));
    assert_eq!(r.header("result-set-size"), Some("4"));
    assert_eq!(
        r.text(),
        ["public", "reports", "stor", "uploads"]
            .iter()
            .map(|n| format!("{{\"name\":\"{n}\",\"type\":\"directory\",\"mtime\":\"2013-05-22T17:39:43.714Z\"}}\n"))
            .collect::<String>()
    );
    let r = c.get("/testuser?marker=reports").await;
    assert_eq!(
        names_of(r.text()),
        ["stor", "uploads"],
        "exclusive marker at the root"
    );
}

#[tokio::test]
async fn directories() {
    let e = env().await;
    let c = &e.c;
    let r = c
        .req(
            "PUT",
            "/testuser/stor/a/b",
            &[("content-type", "application/json; type=directory")],
            Body::Empty,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (404, "DirectoryDoesNotExist")
    );
    assert_eq!(r.json()["message"], "/testuser/stor/a does not exist");
    c.mkdir("/testuser/stor/a").await;
    c.mkdir("/testuser/stor/a").await;
    c.mkdir("/testuser/stor/a/b").await;
    c.mkdir("/testuser/stor").await;
    let r = c.req("HEAD", "/testuser/stor/a", &[], Body::Empty).await;
    assert_eq!(
        (r.header("content-type"), r.header("result-set-size")),
        (Some(DIR_CT), Some("1"))
    );
    let r = c.req("DELETE", "/testuser/stor/a", &[], Body::Empty).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "DirectoryNotEmpty")
    );
    assert_eq!(r.json()["message"], "/testuser/stor/a is not empty");
    assert_eq!(
        c.req("DELETE", "/testuser/stor/a/b", &[], Body::Empty)
            .await
            .status,
        204
    );
    assert_eq!(
        c.req("DELETE", "/testuser/stor/a", &[], Body::Empty)
            .await
            .status,
        204
    );
    let r = c.req("DELETE", "/testuser/stor", &[], Body::Empty).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "OperationNotAllowedOnRootDirectory")
    );
    let r = c.req("PUT", "/testuser", &[], Body::Empty).await;
    assert_eq!(r.code(), "OperationNotAllowedOnRootDirectory");
    let r = c.req("POST", "/testuser/stor/x", &[], Body::Empty).await;
    assert_eq!(r.status, 405);
    // PUT of a directory over an object replaces it.
    c.put("/testuser/stor/obj", b"x").await;
    c.mkdir("/testuser/stor/obj").await;
    let r = c.req("HEAD", "/testuser/stor/obj", &[], Body::Empty).await;
    assert_eq!(r.header("content-type"), Some(DIR_CT));
    // Names that look like our own bookkeeping are ordinary names.
    c.mkdir("/testuser/stor/.meta").await;
    c.put("/testuser/stor/.meta/.tmp-1", b"dot").await;
    let r = c.get("/testuser/stor/.meta").await;
    assert!(r.text().contains("\"name\":\".tmp-1\""), "{}", r.text());
    assert_eq!(&c.get("/testuser/stor/.meta/.tmp-1").await.body[..], b"dot");
    // Reports are not writable.
    let r = c
        .req(
            "PUT",
            "/testuser/reports/x",
            &[],
            Body::Bytes(b"x".to_vec()),
        )
        .await;
    assert_eq!(r.code(), "AuthorizationFailed");
}

#[tokio::test]
async fn snaplinks() {
    let e = env().await;
    let c = &e.c;
    let r = c.put("/testuser/stor/src", b"original").await;
    let etag = r.header("etag").unwrap_or("").to_string();
    let link = |dst: &'static str, loc: Option<&'static str>| async move {
        let mut h = vec![("content-type", "application/json; type=link")];
        if let Some(l) = loc {
            h.push(("location", l));
        }
        c.req("PUT", dst, &h, Body::Empty).await
    };
    let r = link("/testuser/stor/dst", Some("/testuser/stor/src")).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = c.get("/testuser/stor/dst").await;
    assert_eq!(
        (&r.body[..], r.header("etag")),
        (&b"original"[..], Some(etag.as_str()))
    );
    // Overwriting the source does not change the link.
    c.put("/testuser/stor/src", b"changed").await;
    assert_eq!(&c.get("/testuser/stor/dst").await.body[..], b"original");
    let r = link("/testuser/stor/d2", None).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "LocationRequired")
    );
    let r = link("/testuser/stor/d2", Some("/testuser/stor/none")).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (404, "SourceObjectNotFound")
    );
    c.mkdir("/testuser/stor/dir").await;
    let r = link("/testuser/stor/d2", Some("/testuser/stor/dir")).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "LinkNotObject")
    );
    let r = link("/testuser/stor/nodir/d2", Some("/testuser/stor/src")).await;
    assert_eq!(r.code(), "DirectoryDoesNotExist");

    // Manta v2 mode.
    let mut cfg = manta_test_server::Config::new(e.scratch.dir.path().join("v2"), USER)
        .pubkey_file(common::pub_path(&e.key));
    cfg.snaplinks = false;
    let v2 = manta_test_server::serve(cfg).await.expect("serve");
    let c2 = Client::new(&v2, &e.key);
    c2.put("/testuser/stor/src", b"x").await;
    let r = c2
        .req(
            "PUT",
            "/testuser/stor/dst",
            &[
                ("content-type", "application/json; type=link"),
                ("location", "/testuser/stor/src"),
            ],
            Body::Empty,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "SnaplinksDisabledError")
    );
}

async fn part(c: &Client, dir: &str, n: usize, data: &[u8]) -> String {
    let r = c
        .req(
            "PUT",
            &format!("{dir}/{n}"),
            &[],
            Body::Bytes(data.to_vec()),
        )
        .await;
    assert_eq!(r.status, 204, "part {n}: {}", r.text());
    assert_eq!(r.header("computed-md5"), Some(md5_b64(data).as_str()));
    r.header("etag").unwrap_or("").to_string()
}

async fn create_upload(c: &Client, body: serde_json::Value) -> common::Resp {
    let text = body.to_string();
    let md5 = md5_b64(text.as_bytes());
    c.req(
        "POST",
        "/testuser/uploads",
        &[("content-type", "application/json"), ("content-md5", &md5)],
        Body::Bytes(text.into_bytes()),
    )
    .await
}

#[tokio::test]
async fn multipart_uploads() {
    let e = env().await;
    let c = &e.c;
    c.mkdir("/testuser/stor/m").await;
    let r = create_upload(
        c,
        serde_json::json!({"objectPath": "/testuser/stor/m/obj", "headers": {"content-type": "text/plain", "m-mpu": "yes"}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap_or("").to_string();
    let dir = r.json()["partsDirectory"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(dir, format!("/testuser/uploads/{}/{id}", &id[..3]));

    // The client finds uploads through this redirect.
    let r = c
        .req("HEAD", &format!("/testuser/uploads/{id}"), &[], Body::Empty)
        .await;
    assert_eq!(
        (r.status.as_u16(), r.header("location")),
        (301, Some(dir.as_str()))
    );
    let r = c
        .req(
            "PUT",
            &format!("/testuser/uploads/{id}/3"),
            &[],
            Body::Empty,
        )
        .await;
    assert_eq!(r.header("location"), Some(format!("{dir}/3").as_str()));
    assert_eq!(
        c.req(
            "DELETE",
            &format!("/testuser/uploads/{id}"),
            &[],
            Body::Empty
        )
        .await
        .status,
        405
    );
    let missing = "/testuser/uploads/00000000-0000-4000-8000-000000000000";
    assert_eq!(c.req("HEAD", missing, &[], Body::Empty).await.status, 404);

    let r = c
        .req(
            "POST",
            &format!("{dir}/commit"),
            &[],
            Body::Bytes(b"{\"parts\":[\"x\"]}".to_vec()),
        )
        .await;
    assert_eq!(
        r.json()["message"],
        format!("upload {id}: [part 0] part does not exist")
    );
    let p0 = pseudo_random(5 * 1024 * 1024, 1);
    let p1 = pseudo_random(1000, 2);
    let small = pseudo_random(10, 3);
    let e0 = part(c, &dir, 0, &small).await;
    let e1 = part(c, &dir, 1, &p1).await;
    let r = c
        .req(
            "POST",
            &format!("{dir}/commit"),
            &[],
            Body::Bytes(
                serde_json::json!({"parts": [e0, e1]})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (409, "MultipartUploadInvalidArgument")
    );
    assert_eq!(
        r.json()["message"],
        format!("upload {id}: [part 0] part is too small (size 10)")
    );
    let e0 = part(c, &dir, 0, &p0).await;
    let dir_ref = &dir;
    let commit = |parts: serde_json::Value| async move {
        c.req(
            "POST",
            &format!("{dir_ref}/commit"),
            &[],
            Body::Bytes(
                serde_json::json!({ "parts": parts })
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await
    };
    let r = commit(serde_json::json!([e0, "bogus"])).await;
    assert_eq!(
        r.json()["message"],
        format!("upload {id}: [part 1] invalid etag \"bogus\"")
    );
    let r = commit(serde_json::json!([e0, e1, "x"])).await;
    assert_eq!(
        r.json()["message"],
        format!("upload {id}: [part 1] part is too small (size 1000)")
    );

    let listing = c.get(&dir).await;
    assert_eq!(listing.header("result-set-size"), Some("2"));
    let r = commit(serde_json::json!([e0, e1])).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("location"), Some("/testuser/stor/m/obj"));
    let whole = [p0.clone(), p1.clone()].concat();
    assert_eq!(r.header("computed-md5"), Some(md5_b64(&whole).as_str()));
    let obj = c.get("/testuser/stor/m/obj").await;
    assert_eq!(obj.body.len(), whole.len());
    assert!(obj.body == whole);
    assert_eq!(obj.header("content-type"), Some("text/plain"));
    assert_eq!(obj.header("m-mpu"), Some("yes"));
    assert_eq!(obj.header("etag"), r.header("etag"));
    // Committing again with the same parts is fine; anything else is not.
    assert_eq!(commit(serde_json::json!([e0, e1])).await.status, 201);
    let r = commit(serde_json::json!([e0])).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (409, "InvalidMultipartUploadState")
    );
    let r = c
        .req("POST", &format!("{dir}/abort"), &[], Body::Empty)
        .await;
    assert_eq!(
        r.json()["message"],
        format!("upload {id}: already committed")
    );
    let st = c.get(&format!("{dir}/state")).await.json();
    assert_eq!(
        (st["state"].as_str(), st["result"].as_str()),
        (Some("done"), Some("committed"))
    );
    assert_eq!(st["targetObject"], "/testuser/stor/m/obj");

    // Abort, then commit fails.
    let r = create_upload(
        c,
        serde_json::json!({"objectPath": "/testuser/stor/m/aborted"}),
    )
    .await;
    let dir2 = r.json()["partsDirectory"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let st = c.get(&format!("{dir2}/state")).await.json();
    assert_eq!(
        (st["state"].as_str(), st["numCopies"].as_u64()),
        (Some("created"), Some(2))
    );
    assert_eq!(
        c.req("POST", &format!("{dir2}/abort"), &[], Body::Empty)
            .await
            .status,
        204
    );
    assert_eq!(
        c.req("POST", &format!("{dir2}/abort"), &[], Body::Empty)
            .await
            .status,
        204
    );
    let r = c
        .req("POST", &format!("{dir2}/commit"), &[], Body::Empty)
        .await;
    assert_eq!(r.code(), "InvalidMultipartUploadState");
    let st = c.get(&format!("{dir2}/state")).await.json();
    assert_eq!(st["result"], "aborted");
    assert_eq!(c.get("/testuser/stor/m/aborted").await.status, 404);
    assert_eq!(
        c.req("GET", &format!("{dir2}/commit"), &[], Body::Empty)
            .await
            .status,
        405
    );

    // Creation arguments; content-length/md5 checks at commit.
    let r = create_upload(
        c,
        serde_json::json!({"objectPath": "/testuser/stor/m/x", "headers": {"If-Match": "x"}}),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (409, "MultipartUploadInvalidArgument")
    );
    assert_eq!(
        r.json()["message"],
        "cannot create upload: conditional headers are not supported for multipart upload objects"
    );
    let r = create_upload(c, serde_json::json!({"objectPath": "/testuser/stor/m/x", "headers": {"durability-level": 20}})).await;
    assert_eq!(r.code(), "InvalidDurabilityLevel");
    let r = create_upload(c, serde_json::json!({"headers": {}})).await;
    assert_eq!(r.code(), "MultipartUploadInvalidArgument");
    let r = create_upload(c, serde_json::json!({"objectPath": "/testuser/stor/m/sized", "headers": {"content-length": 5}})).await;
    let dir3 = r.json()["partsDirectory"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let e = part(c, &dir3, 0, b"four").await;
    let r = c
        .req(
            "POST",
            &format!("{dir3}/commit"),
            &[],
            Body::Bytes(serde_json::json!({"parts": [e]}).to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.code(), "MultipartUploadInvalidArgument");
    // A target whose parent does not exist.
    let r = create_upload(
        c,
        serde_json::json!({"objectPath": "/testuser/stor/nodir/x"}),
    )
    .await;
    let dir4 = r.json()["partsDirectory"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let r = c
        .req(
            "POST",
            &format!("{dir4}/commit"),
            &[],
            Body::Bytes(b"{\"parts\":[]}".to_vec()),
        )
        .await;
    assert_eq!(r.code(), "DirectoryDoesNotExist");
    // The body MD5 is checked like restify's body parser.
    let r = c
        .req(
            "POST",
            "/testuser/uploads",
            &[
                ("content-type", "application/json"),
                ("content-md5", &md5_b64(b"x")),
            ],
            Body::Bytes(b"{\"objectPath\":\"/testuser/stor/m/y\"}".to_vec()),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "BadDigest"));
}

#[tokio::test]
async fn presigned_urls() {
    let e = env().await;
    e.c.put("/testuser/stor/ps", b"presigned").await;
    let signer = Signer::from_file(&e.key, USER).expect("signer");
    let host = e.server.addr().to_string();
    let url = |expires: u64| {
        let key_id: String = signer
            .key_id()
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let q = format!("algorithm=RSA-SHA256&expires={expires}&keyId={key_id}");
        let sig = signer.sign_string(&format!("GET\n{host}\n/testuser/stor/ps\n{q}"));
        let sig: String = sig
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!("/testuser/stor/ps?{q}&signature={sig}")
    };
    let anon = Client {
        addr: e.server.addr(),
        signer: None,
    };
    let r = anon.get(&url(util::now_ms() / 1000 + 3600)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(&r.body[..], b"presigned");
    let r = anon.get(&url(util::now_ms() / 1000 - 10)).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "InvalidQueryStringAuthentication")
    );
    assert_eq!(r.json()["message"], "request expired");
}

#[tokio::test]
async fn fault_injection() {
    let e = env().await;
    let c = &e.c;
    c.put("/testuser/stor/f", &pseudo_random(100_000, 9)).await;

    e.server.set_faults(Faults {
        fail_503_rate: 1.0,
        ..Faults::default()
    });
    let mut codes = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let r = c.get("/testuser/stor/f").await;
        assert_eq!(r.status, 503);
        codes.insert(r.code());
    }
    assert!(
        codes
            .iter()
            .all(|c| c == "ServiceUnavailable" || c == "ThrottledError"),
        "{codes:?}"
    );
    assert_eq!(codes.len(), 2, "both 503 flavours are produced");

    e.server.set_faults(Faults {
        slow_ms: 300,
        ..Faults::default()
    });
    let t = Instant::now();
    assert_eq!(c.get("/testuser/stor/f").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    e.server.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    assert!(
        c.send("GET", "/testuser/stor/f", &[], Body::Empty)
            .await
            .is_err(),
        "body cut mid-way"
    );
    assert!(
        c.send("HEAD", "/testuser/stor/f", &[], Body::Empty)
            .await
            .is_err(),
        "no answer"
    );
    let put = c
        .send(
            "PUT",
            "/testuser/stor/g",
            &[],
            Body::Chunked(vec![vec![1; 1000], vec![2; 1000]]),
        )
        .await;
    assert!(put.is_err(), "upload cut: {put:?}");

    e.server.set_faults(Faults::default());
    assert_eq!(
        c.get("/testuser/stor/g").await.status,
        404,
        "a dropped upload stores nothing"
    );
    assert_eq!(c.get("/testuser/stor/f").await.body.len(), 100_000);
}
