//! `tarvault::publish::ingest`: npm publish documents streamed into a store, verified against the
//! document, and every kind of bad input refused with a one-line reason and nothing stored.

mod common;

use base64::Engine;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use tarvault::publish::{ingest, PublishOptions, Published};
use tarvault::{Error, ErrorKind, Store};

use common::tarbuild::{gzip, Tar};
use common::{chunked, noise, sha1_hex, sha512_sri};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A publish document shaped as npm 11 sends it: `versions` first, the attachment last, its
/// `length` after its `data`.
fn npm_doc(name: &str, version: &str, tgz: &[u8]) -> Value {
    let file = format!("{name}-{version}.tgz");
    json!({
        "_id": name,
        "name": name,
        "description": "a test package",
        "dist-tags": {"latest": version},
        "versions": {version: {
            "name": name, "version": version, "_id": format!("{name}@{version}"),
            "dist": {
                "integrity": sha512_sri(tgz),
                "shasum": sha1_hex(tgz),
                "tarball": format!("http://127.0.0.1/{name}/-/{file}"),
            },
        }},
        "access": null,
        "_attachments": {file: {
            "content_type": "application/octet-stream",
            "data": B64.encode(tgz),
            "length": tgz.len(),
        }},
    })
}

fn package(name: &str, version: &str) -> Vec<u8> {
    let mut tar = Tar::new();
    tar.dir("package/")
        .package_json(name, version)
        .file("package/index.js", b"module.exports = 42;\n");
    gzip(&tar.finish())
}

async fn publish(store: &Store, text: &[u8], chunk: usize) -> tarvault::Result<Published> {
    ingest(store, chunked(text, chunk), &PublishOptions::default()).await
}

async fn stored(store: &Store) -> usize {
    store
        .list()
        .try_collect::<Vec<_>>()
        .await
        .map_or(0, |v| v.len())
}

fn text(doc: &Value) -> Vec<u8> {
    serde_json::to_vec(doc).expect("json")
}

#[tokio::test]
async fn npm_documents_are_stored_verified_in_any_chunking() {
    let tgz = noise(300_000, 7);
    let doc = npm_doc("@scope/demo", "1.2.3", &tgz);
    for chunk in [1usize, 3, 4096, 65_536, 1 << 20] {
        if chunk == 1 && tgz.len() > 100_000 {
            // One byte at a time is slow in a debug build; a small document proves the same.
            let small = noise(3000, 1);
            let store = Store::memory();
            let p = publish(&store, &text(&npm_doc("a", "1.0.0", &small)), 1)
                .await
                .expect("byte by byte");
            assert_eq!(p.tarball.expect("stored").digests.size, 3000);
            continue;
        }
        let store = Store::memory();
        let p = publish(&store, &text(&doc), chunk).await.expect("publish");
        assert_eq!(p.name, "@scope/demo");
        assert!(!p.document.contains_key("_attachments"));
        assert_eq!(p.document["dist-tags"]["latest"], "1.2.3");
        assert_eq!(p.document["versions"], doc["versions"]);
        let t = p.tarball.expect("a tarball");
        assert_eq!(t.file, "@scope/demo-1.2.3.tgz");
        assert_eq!(t.version, "1.2.3");
        assert!(t.stored);
        assert_eq!(t.digests.integrity().to_string(), sha512_sri(&tgz));
        let back = common::read_verified(&store, &t.digests.integrity()).await;
        assert_eq!(&back[..], &tgz[..]);
    }
}

/// JSON lets a writer escape any character, and some do in base64: `\/` (PHP, some Java
/// encoders), `\u002B` (.NET's System.Text.Json escapes `+` by default). Each decodes to the
/// character it stands for, wherever the body's chunks cut it.
#[tokio::test]
async fn base64_characters_escaped_as_json_allows_still_verify() {
    let tgz = noise(3001, 5);
    let doc = npm_doc("p", "1.0.0", &tgz);
    let plain = B64.encode(&tgz);
    let escaped = plain
        .replace('+', "\\u002B")
        .replace('=', "\\u003d")
        .replacen('A', "\\u0041", 3);
    assert!(
        escaped.contains("\\u002B") && escaped.contains("\\u003d") && escaped.contains("\\u0041")
    );
    let text = serde_json::to_string(&doc)
        .expect("json")
        .replace(&plain, &escaped);
    for chunk in [1usize, 3, 7, 65_536] {
        let store = Store::memory();
        let p = publish(&store, text.as_bytes(), chunk)
            .await
            .unwrap_or_else(|e| panic!("chunks of {chunk}: {e}"));
        let t = p.tarball.expect("stored");
        assert_eq!(t.digests.integrity().to_string(), sha512_sri(&tgz));
        assert_eq!(
            &common::read_verified(&store, &t.digests.integrity()).await[..],
            &tgz[..]
        );
    }
}

#[tokio::test]
async fn attachment_before_versions_and_escaped_slashes_still_verify() {
    let tgz = noise(5000, 3);
    let doc = npm_doc("p", "1.0.0", &tgz);
    // `_attachments` first, with every `/` of its base64 escaped as JSON allows.
    let data = B64.encode(&tgz).replace('/', "\\/");
    assert!(data.contains("\\/"));
    let body = format!(
        r#"{{"_attachments":{{"p-1.0.0.tgz":{{"length":{},"data":"{data}"}}}},"name":"p","versions":{}}}"#,
        tgz.len(),
        doc["versions"]
    );
    let store = Store::memory();
    let p = publish(&store, body.as_bytes(), 777)
        .await
        .expect("publish");
    assert_eq!(p.tarball.expect("stored").digests.shasum(), sha1_hex(&tgz));

    // The same order with a wrong shasum: refused only at the end, still nothing stored.
    let mut bad = doc.clone();
    bad["versions"]["1.0.0"]["dist"]["shasum"] = json!(sha1_hex(b"other"));
    let body = format!(
        r#"{{"_attachments":{{"p-1.0.0.tgz":{{"data":"{}"}}}},"name":"p","versions":{}}}"#,
        B64.encode(&tgz),
        bad["versions"]
    );
    let err = publish(&store, body.as_bytes(), 777)
        .await
        .expect_err("sha1");
    assert_eq!(err.kind(), ErrorKind::IntegrityMismatch, "{err}");
    assert!(err.to_string().contains("dist.shasum"), "{err}");
}

#[tokio::test]
async fn metadata_only_documents_store_nothing() {
    let store = Store::memory();
    let doc = json!({"_id": "p", "name": "p", "versions": {}, "_attachments": {}});
    let p = publish(&store, &text(&doc), 10)
        .await
        .expect("no attachment");
    assert!(p.tarball.is_none());
    assert_eq!(stored(&store).await, 0);
}

/// A change to a publish document.
type Edit<'a> = Box<dyn Fn(&mut Value) + 'a>;

/// A document that lies about its tarball: refused, the field named, nothing stored.
#[tokio::test]
async fn a_mismatch_names_the_field_and_stores_nothing() {
    let tgz = noise(200_000, 11);
    let other = noise(200_000, 12);
    let cases: Vec<(&str, Edit<'_>)> = vec![
        (
            "dist.integrity",
            Box::new(|d: &mut Value| {
                d["versions"]["1.0.0"]["dist"]["integrity"] = json!(sha512_sri(&other));
            }),
        ),
        (
            "dist.shasum",
            Box::new(|d: &mut Value| {
                d["versions"]["1.0.0"]["dist"]["shasum"] = json!(sha1_hex(&other));
            }),
        ),
        (
            ".length",
            Box::new(|d: &mut Value| {
                d["_attachments"]["p-1.0.0.tgz"]["length"] = json!(199_999);
            }),
        ),
    ];
    for (field, edit) in cases {
        let mut doc = npm_doc("p", "1.0.0", &tgz);
        edit(&mut doc);
        let store = Store::memory();
        let err = publish(&store, &text(&doc), 65_536).await.expect_err(field);
        assert_eq!(err.kind(), ErrorKind::IntegrityMismatch, "{field}: {err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
        assert!(!err.to_string().contains('\n'), "one line: {err}");
        assert_eq!(stored(&store).await, 0, "{field}: nothing stored");
    }
}

/// Bad documents: each refused with its kind and a one-line reason naming the problem, and
/// nothing stored.
#[tokio::test]
async fn bad_documents_are_refused_and_store_nothing() {
    let tgz = noise(100_000, 5);
    let good = text(&npm_doc("p", "1.0.0", &tgz));
    let good_str = String::from_utf8(good.clone()).expect("utf-8");
    let data = B64.encode(&tgz);
    let with_data = |replacement: &str| good_str.replace(&data, replacement).into_bytes();
    let mut two = npm_doc("p", "1.0.0", &tgz);
    two["_attachments"]["p-1.0.1.tgz"] = two["_attachments"]["p-1.0.0.tgz"].clone();
    let mut orphan = npm_doc("p", "1.0.0", &tgz);
    let att = orphan["_attachments"]["p-1.0.0.tgz"].take();
    orphan["_attachments"] = json!({"p-2.0.0.tgz": att});
    let mut no_data = npm_doc("p", "1.0.0", &tgz);
    no_data["_attachments"]["p-1.0.0.tgz"] = json!({"stub": true, "length": 1});
    let mut no_digest = npm_doc("p", "1.0.0", &tgz);
    no_digest["versions"]["1.0.0"]["dist"] = json!({"tarball": "http://x/p/-/p-1.0.0.tgz"});
    let mut wrong_id = npm_doc("p", "1.0.0", &tgz);
    wrong_id["_id"] = json!("q");
    let length = format!(r#""length":{}"#, tgz.len());
    let with_length = |value: &str| {
        let text = good_str.replacen(&length, &format!(r#""length":{value}"#), 1);
        assert_ne!(text, good_str);
        text.into_bytes()
    };

    let cases: Vec<(&str, Vec<u8>, ErrorKind, &str)> = vec![
        (
            "not JSON",
            b"hello".to_vec(),
            ErrorKind::InvalidInput,
            "expected `{`",
        ),
        (
            "empty body",
            Vec::new(),
            ErrorKind::InvalidInput,
            "ends early",
        ),
        (
            "trailing garbage",
            [&good[..], b"}"].concat(),
            ErrorKind::InvalidInput,
            "end of the body",
        ),
        (
            "bad member",
            good_str
                .replacen("\"description\":", "\"description\" ", 1)
                .into_bytes(),
            ErrorKind::InvalidInput,
            "expected `:`",
        ),
        (
            "bad value",
            good_str
                .replacen("\"a test package\"", "nope", 1)
                .into_bytes(),
            ErrorKind::InvalidInput,
            "body",
        ),
        (
            "several attachments",
            text(&two),
            ErrorKind::InvalidInput,
            "several attachments",
        ),
        (
            "attachment without a version",
            text(&orphan),
            ErrorKind::InvalidInput,
            "no version",
        ),
        (
            "attachment without data",
            text(&no_data),
            ErrorKind::InvalidInput,
            "no `data`",
        ),
        (
            "no digest to check",
            text(&no_digest),
            ErrorKind::InvalidInput,
            "neither",
        ),
        (
            "_id differs from name",
            text(&wrong_id),
            ErrorKind::InvalidInput,
            "_id",
        ),
        (
            "padding in the middle",
            with_data(&format!("QQ=={data}")),
            ErrorKind::InvalidInput,
            "bad base64",
        ),
        (
            "a character outside base64",
            with_data(&data.replacen('A', "*", 1)),
            ErrorKind::InvalidInput,
            "bad base64",
        ),
        (
            "a short last quad",
            with_data(&data[..data.len() - 1]),
            ErrorKind::InvalidInput,
            "bad base64",
        ),
        (
            "an escape in base64",
            with_data(&format!("\\n{data}")),
            ErrorKind::InvalidInput,
            "escape",
        ),
        (
            "a length that is not a number",
            with_length(r#""12""#),
            ErrorKind::InvalidInput,
            r#"_attachments["p-1.0.0.tgz"].length"#,
        ),
        (
            "a length longer than any size",
            with_length(&"9".repeat(80)),
            ErrorKind::InvalidInput,
            r#"_attachments["p-1.0.0.tgz"].length: is no size in bytes"#,
        ),
        (
            "an escaped character outside base64",
            with_data(&format!("{}\\u002A{}", &data[..8], &data[9..])),
            ErrorKind::InvalidInput,
            "an escaped `*`, not a base64 character",
        ),
        (
            "an escape of a character outside ASCII",
            with_data(&format!("\\u00e9{data}")),
            ErrorKind::InvalidInput,
            "`\\u00e9` stands for a character outside ASCII",
        ),
        (
            "a unicode escape cut short",
            with_data(&format!("{data}\\u04")),
            ErrorKind::InvalidInput,
            "`\\u` not followed by four hex digits",
        ),
        (
            "no JSON escape at all",
            with_data(&format!("\\x{data}")),
            ErrorKind::InvalidInput,
            "`\\x` is not a JSON escape",
        ),
        (
            "bad JSON beside the data, where nothing reads it",
            good_str
                .replacen(
                    r#""content_type":"application/octet-stream""#,
                    r#""content_type":[1,}"#,
                    1,
                )
                .into_bytes(),
            ErrorKind::InvalidInput,
            r#"_attachments["p-1.0.0.tgz"].content_type"#,
        ),
        (
            "data not a string",
            good_str
                .replacen("\"data\":\"", "\"data\":12,\"x\":\"", 1)
                .into_bytes(),
            ErrorKind::InvalidInput,
            "base64 string",
        ),
    ];
    for (what, body, kind, says) in cases {
        for chunk in [5usize, 65_536] {
            let store = Store::memory();
            let err = publish(&store, &body, chunk).await.expect_err(what);
            assert_eq!(err.kind(), kind, "{what}: {err}");
            assert!(err.to_string().contains(says), "{what}: {err}");
            assert!(!err.to_string().contains('\n'), "{what}: one line: {err}");
            assert_eq!(stored(&store).await, 0, "{what}: nothing stored");
        }
    }
}

#[tokio::test]
async fn a_body_cut_short_anywhere_stores_nothing() {
    let tgz = noise(50_000, 9);
    let body = text(&npm_doc("p", "1.0.0", &tgz));
    let store = Store::memory();
    for cut in [
        0,
        1,
        40,
        body.len() / 3,
        body.len() / 2,
        body.len() - 30,
        body.len() - 1,
    ] {
        let err = publish(&store, &body[..cut], 4096).await.expect_err("cut");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "cut at {cut}: {err}");
        assert!(
            err.to_string().contains("ends early"),
            "cut at {cut}: {err}"
        );
    }
    // Cut inside a JSON escape in the base64, at each of its characters, in pieces of any size.
    let b64 = B64.encode(&tgz);
    let escaped = String::from_utf8_lossy(&body).replacen(&b64, &format!("\\u0041{b64}"), 1);
    let at = escaped.find("\\u0041").expect("the escape");
    for cut in at + 1..at + 6 {
        for chunk in [1, 2, 4096] {
            let err = publish(&store, &escaped.as_bytes()[..cut], chunk)
                .await
                .expect_err("cut in an escape");
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "cut at {cut}: {err}");
            assert!(
                err.to_string().contains("ends early"),
                "cut at {cut}: {err}"
            );
        }
    }
    assert_eq!(stored(&store).await, 0);
    // A connection that fails mid-body is an input error, not a document error.
    let half = Bytes::copy_from_slice(&body[..body.len() / 2]);
    let failing = futures::stream::iter(vec![
        Ok(half),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )),
    ]);
    let err = ingest(&store, failing, &PublishOptions::default())
        .await
        .expect_err("reset");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert_eq!(stored(&store).await, 0);
}

#[tokio::test]
async fn a_huge_document_is_refused_at_the_limit() {
    let tgz = noise(1000, 2);
    let mut doc = npm_doc("p", "1.0.0", &tgz);
    doc["readme"] = json!("x".repeat(3 << 20));
    let store = Store::memory();
    let options = PublishOptions {
        max_document: 1 << 20,
        ..PublishOptions::default()
    };
    let err = ingest(&store, chunked(&text(&doc), 65_536), &options)
        .await
        .expect_err("too large");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(matches!(err, Error::TooLarge { limit, .. } if limit == 1 << 20));
    assert_eq!(stored(&store).await, 0);
    // A long member name is refused too, without reading it to its end.
    let long = format!(r#"{{"{}":1}}"#, "k".repeat(100_000));
    let err = publish(&store, long.as_bytes(), 4096)
        .await
        .expect_err("key");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    // So is a long value beside the attachment's data.
    let mut doc = npm_doc("p", "1.0.0", &tgz);
    doc["_attachments"]["p-1.0.0.tgz"]["content_type"] = json!("x".repeat(100_000));
    let err = publish(&store, &text(&doc), 4096).await.expect_err("value");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(err.to_string().contains("content_type"), "{err}");
    assert_eq!(stored(&store).await, 0);
    // And endless distinct members beside the data, each small: every key is kept to refuse a
    // repeat, so they are bounded together rather than grow memory for as long as they come.
    let good = String::from_utf8(text(&npm_doc("p", "1.0.0", &tgz))).expect("utf-8");
    let many: String = (0..100_000).map(|i| format!(r#""k{i}":0,"#)).collect();
    let body = good.replacen(r#""data":"#, &format!(r#"{many}"data":"#), 1);
    assert_ne!(body, good);
    let err = publish(&store, body.as_bytes(), 65_536)
        .await
        .expect_err("members");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(
        err.to_string()
            .contains(r#"_attachments["p-1.0.0.tgz"] without its `data`"#),
        "{err}"
    );
    assert_eq!(stored(&store).await, 0);
    // A document within the limit but made of the smallest values (`0,` parses into a 32-byte
    // value; 24 times the text) is refused past one unit per 16 bytes of the limit, in
    // `versions` (parsed when the attachment comes) and in any other member (parsed at the end).
    let zeros = |n: usize| json!(vec![0; n]);
    // Small objects (a B-tree node each, about 640 bytes) count as twenty values.
    let small_objects = json!(vec![json!({"a": 0}); 30_000]);
    for member in ["versions", "keywords", "contributors"] {
        let mut doc = npm_doc("p", "1.0.0", &tgz);
        match member {
            "versions" => doc["versions"]["1.0.0"]["zeros"] = zeros(300_000),
            "keywords" => doc[member] = zeros(300_000),
            _ => doc[member] = small_objects.clone(),
        }
        let Err(err) = ingest(&Store::memory(), chunked(&text(&doc), 65_536), &options).await
        else {
            panic!("{member}: a document of 300,000 values was accepted");
        };
        assert_eq!(err.kind(), ErrorKind::TooLarge, "{member}: {err}");
        assert!(err.to_string().contains("JSON values"), "{member}: {err}");
        // Under one value per 16 bytes of the limit it is read as before.
        match member {
            "versions" => doc["versions"]["1.0.0"]["zeros"] = zeros(1_000),
            _ => doc[member] = zeros(1_000),
        }
        let ok = ingest(&Store::memory(), chunked(&text(&doc), 65_536), &options).await;
        assert!(ok.is_ok(), "{member}: {:?}", ok.err());
    }
}

#[tokio::test]
async fn inspection_refuses_a_tarball_of_another_package() {
    let options = PublishOptions {
        inspect: Some(tarvault::tarball::Policy::default()),
        ..PublishOptions::default()
    };
    let store = Store::memory();
    let tgz = package("p", "1.0.0");
    let ok = ingest(
        &store,
        chunked(&text(&npm_doc("p", "1.0.0", &tgz)), 999),
        &options,
    )
    .await
    .expect("the right package");
    let report = ok.tarball.and_then(|t| t.report).expect("inspected");
    assert_eq!(
        (report.name.as_str(), report.version.as_str()),
        ("p", "1.0.0")
    );

    let store = Store::memory();
    let liar = package("p", "9.9.9");
    let err = ingest(
        &store,
        chunked(&text(&npm_doc("p", "1.0.0", &liar)), 999),
        &options,
    )
    .await
    .expect_err("another version");
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert!(err.to_string().contains("p@9.9.9"), "{err}");
    assert_eq!(stored(&store).await, 0);
}

fn inspecting() -> PublishOptions {
    PublishOptions {
        inspect: Some(tarvault::tarball::Policy::default()),
        ..PublishOptions::default()
    }
}

/// A tarball the inspector rejects at its first bytes, with megabytes of attachment after that
/// point, is refused promptly: the put stops reading and does not wait for the document's end
/// (which the scanner could only reach by pushing the whole attachment into the put's channel).
/// Only a few blocks of the body are read, and nothing is stored or left in the store's `tmp/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_inspection_rejection_does_not_hang_the_publish() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let not_gzip = noise(8 << 20, 42);
    let mut tar = Tar::new();
    tar.file("package/../../evil.js", b"x")
        .package_json("p", "1.0.0")
        .file("package/big.bin", &noise(8 << 20, 43));
    let traversal = gzip(&tar.finish());
    for (what, tgz) in [("not gzip", not_gzip), ("`../` first", traversal)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_fs(dir.path().join("store")).expect("store");
        let body = text(&npm_doc("p", "1.0.0", &tgz));
        let read = Arc::new(AtomicUsize::new(0));
        let counter = read.clone();
        let stream = futures::StreamExt::inspect(chunked(&body, 65_536), move |c| {
            if let Ok(c) = c {
                counter.fetch_add(c.len(), Ordering::Relaxed);
            }
        });
        // The limit only tells a hang from an answer; an answer comes in well under a second.
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            ingest(&store, stream, &inspecting()),
        )
        .await;
        let err = out
            .unwrap_or_else(|_| panic!("{what}: no answer within 60 s"))
            .expect_err(what);
        assert_eq!(err.kind(), ErrorKind::Rejected, "{what}: {err}");
        assert!(matches!(err, Error::Tarball { .. }), "{what}: {err:?}");
        let read = read.load(Ordering::Relaxed);
        assert!(
            read < body.len() / 2,
            "{what}: read {read} of {} body bytes before refusing",
            body.len()
        );
        assert_eq!(stored(&store).await, 0, "{what}");
        let tmp = dir.path().join("store/tmp");
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{what}: left behind {left:?}");
    }
}

/// npm publishes a package.json version with build metadata under `semver.clean(version)`
/// (libnpmpublish: `1.0.0+build.5` becomes `1.0.0` in the document and the attachment name)
/// while the tarball keeps its package.json as written: with inspection that is the same
/// version. A prerelease is part of the version, though, so `1.0.0-rc.1` is not `1.0.0`.
#[tokio::test]
async fn a_version_with_build_metadata_publishes_as_npm_sends_it() {
    let store = Store::memory();
    let tgz = package("bmtest", "1.0.0+build.5");
    let p = ingest(
        &store,
        chunked(&text(&npm_doc("bmtest", "1.0.0", &tgz)), 65_536),
        &inspecting(),
    )
    .await
    .expect("npm's own document for a 1.0.0+build.5 package.json");
    let tarball = p.tarball.expect("stored");
    assert_eq!(tarball.version, "1.0.0");
    let report = tarball.report.expect("inspected");
    assert_eq!(report.version, "1.0.0+build.5");
    assert_eq!(stored(&store).await, 1);

    let store = Store::memory();
    let rc = package("bmtest", "1.0.0-rc.1+build.5");
    let err = ingest(
        &store,
        chunked(&text(&npm_doc("bmtest", "1.0.0", &rc)), 65_536),
        &inspecting(),
    )
    .await
    .expect_err("a prerelease is another version");
    assert!(matches!(err, Error::PackageMismatch { .. }), "{err:?}");
    assert_eq!(stored(&store).await, 0);
}

/// The files a failed put may have left in an fs store's `tmp/`.
fn leftovers(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("store/tmp"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// An attachment whose base64 never ends (the audit streamed 2.1 GB of it) is cut off once its
/// decoded bytes pass `max_tarball`: kind `TooLarge`, having read about the limit of the body,
/// nothing stored and no temp file left. The stream gives up by itself after 64 MiB of base64,
/// so that without the limit the test fails (with another error) instead of filling the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_attachment_stops_at_max_tarball() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let limit: u64 = 1 << 20;
    let piece = Bytes::from("QUJD".repeat(16 * 1024)); // 64 KiB of base64, 48 KiB decoded
    let versions = npm_doc("p", "1.0.0", b"x")["versions"].clone();
    let head =
        format!(r#"{{"name":"p","versions":{versions},"_attachments":{{"p-1.0.0.tgz":{{"data":""#);
    let read = Arc::new(AtomicUsize::new(0));
    let counter = read.clone();
    let endless = futures::stream::iter(
        std::iter::once(Bytes::from(head)).chain(std::iter::repeat_n(piece.clone(), 1024)),
    )
    .map(move |c| {
        counter.fetch_add(c.len(), Ordering::Relaxed);
        Ok::<_, std::io::Error>(c)
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_fs(dir.path().join("store")).expect("store");
    let options = PublishOptions {
        max_tarball: limit,
        ..PublishOptions::default()
    };
    let err = ingest(&store, endless, &options)
        .await
        .expect_err("too large");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(
        matches!(&err, Error::TooLarge { limit: l, what } if *l == limit && what.contains("p-1.0.0.tgz")),
        "{err:?}"
    );
    let read = read.load(Ordering::Relaxed) as u64;
    assert!(
        read <= limit * 4 / 3 + 4 * piece.len() as u64,
        "read {read} body bytes for a limit of {limit} decoded"
    );
    assert_eq!(stored(&store).await, 0);
    assert!(
        leftovers(dir.path()).is_empty(),
        "left {:?}",
        leftovers(dir.path())
    );
}

/// A `length` given before `data` bounds the attachment: more bytes than it says stop the
/// publish there (the field named, kind `IntegrityMismatch`), not at the end of the attachment;
/// a `length` past `max_tarball` is refused before a byte is stored.
#[tokio::test]
async fn a_length_given_first_stops_a_longer_attachment_early() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let tgz = noise(4 << 20, 9);
    let doc = npm_doc("p", "1.0.0", &tgz);
    let body = |length: u64| {
        format!(
            r#"{{"name":"p","versions":{},"_attachments":{{"p-1.0.0.tgz":{{"length":{length},"data":"{}"}}}}}}"#,
            doc["versions"],
            B64.encode(&tgz)
        )
        .into_bytes()
    };
    let short = body(100_000);
    let read = Arc::new(AtomicUsize::new(0));
    let counter = read.clone();
    let stream = chunked(&short, 65_536).inspect(move |c| {
        if let Ok(c) = c {
            counter.fetch_add(c.len(), Ordering::Relaxed);
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_fs(dir.path().join("store")).expect("store");
    let err = ingest(&store, stream, &PublishOptions::default())
        .await
        .expect_err("longer than its length");
    assert_eq!(err.kind(), ErrorKind::IntegrityMismatch, "{err}");
    assert!(err.to_string().contains(".length"), "{err}");
    let read = read.load(Ordering::Relaxed);
    assert!(
        read < short.len() / 4,
        "read {read} of {} body bytes before refusing",
        short.len()
    );
    assert_eq!(stored(&store).await, 0);
    assert!(leftovers(dir.path()).is_empty());

    let options = PublishOptions {
        max_tarball: 1 << 20,
        ..PublishOptions::default()
    };
    let err = ingest(&store, chunked(&body(tgz.len() as u64), 65_536), &options)
        .await
        .expect_err("length past the limit");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert_eq!(stored(&store).await, 0);

    // The right length, first, passes.
    let p = ingest(
        &store,
        chunked(&body(tgz.len() as u64), 65_536),
        &PublishOptions::default(),
    )
    .await
    .expect("right length");
    assert!(p.tarball.is_some_and(|t| t.stored));
}

/// `<algorithm>-<base64>` of `data` for the algorithms npm's `integrity` may name beside sha512.
fn sri(algorithm: &str, data: &[u8]) -> String {
    use sha2::Digest;
    let digest = match algorithm {
        "sha256" => sha2::Sha256::digest(data).to_vec(),
        "sha384" => sha2::Sha384::digest(data).to_vec(),
        "md5" => md5::Md5::digest(data).to_vec(),
        _ => panic!("{algorithm}"),
    };
    format!("{algorithm}-{}", B64.encode(digest))
}

/// Every algorithm of `dist.integrity` must hold, not only those tarvault addresses blobs by: a
/// right sha512 beside a wrong sha256, sha384 or md5 is refused with nothing stored, whether
/// `versions` comes before the attachment (npm's order) or after it; right ones are accepted.
#[tokio::test]
async fn every_algorithm_of_the_integrity_is_checked() {
    let tgz = noise(200_000, 21);
    let other = noise(200_000, 22);
    for algorithm in ["sha256", "sha384", "md5"] {
        for attachment_first in [false, true] {
            let case = format!("{algorithm}, attachment first: {attachment_first}");
            let body = |integrity: String| {
                let mut doc = npm_doc("p", "1.0.0", &tgz);
                doc["versions"]["1.0.0"]["dist"]["integrity"] = json!(integrity);
                if !attachment_first {
                    return text(&doc);
                }
                format!(
                    r#"{{"_attachments":{},"name":"p","versions":{}}}"#,
                    doc["_attachments"], doc["versions"]
                )
                .into_bytes()
            };
            let wrong = format!("{} {}", sha512_sri(&tgz), sri(algorithm, &other));
            let store = Store::memory();
            let err = publish(&store, &body(wrong), 65_536)
                .await
                .expect_err(&case);
            assert_eq!(err.kind(), ErrorKind::IntegrityMismatch, "{case}: {err}");
            assert!(err.to_string().contains("dist.integrity"), "{case}: {err}");
            assert!(err.to_string().contains(algorithm), "{case}: {err}");
            assert_eq!(stored(&store).await, 0, "{case}: nothing stored");

            let right = format!("{} {}", sha512_sri(&tgz), sri(algorithm, &tgz));
            let p = publish(&store, &body(right), 65_536)
                .await
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert!(p.tarball.is_some_and(|t| t.stored), "{case}");
        }
    }
    // An algorithm tarvault does not know is ignored beside a known one (as npm's ssri does),
    // and alone it is refused: the tarball could not be verified.
    let mut doc = npm_doc("p", "1.0.0", &tgz);
    doc["versions"]["1.0.0"]["dist"]["integrity"] =
        json!(format!("{} sha3-AAAA", sha512_sri(&tgz)));
    let store = Store::memory();
    publish(&store, &text(&doc), 65_536)
        .await
        .expect("an unknown algorithm beside sha512");
    let mut doc = npm_doc("p", "1.0.0", &tgz);
    doc["versions"]["1.0.0"]["dist"] = json!({"integrity": "sha3-AAAA"});
    let store = Store::memory();
    let err = publish(&store, &text(&doc), 65_536)
        .await
        .expect_err("only an unknown algorithm");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(stored(&store).await, 0);
}

/// The document's text with its top-level members in npm's order (`versions` before
/// `_attachments`) or with the attachment first, every value as in `doc`.
fn ordered(doc: &Value, attachment_first: bool) -> String {
    let members = doc.as_object().expect("an object");
    let rest: Vec<String> = members
        .iter()
        .filter(|(k, _)| *k != "_attachments")
        .map(|(k, v)| format!("{}:{v}", json!(k)))
        .collect();
    let rest = rest.join(",");
    let attachments = format!(r#""_attachments":{}"#, doc["_attachments"]);
    if attachment_first {
        format!("{{{attachments},{rest}}}")
    } else {
        format!("{{{rest},{attachments}}}")
    }
}

/// A key given twice is refused wherever the publish reads it, naming its path, before anything
/// is stored: serde_json keeps the last of two, CouchDB the first, so the digest checked here
/// and the one a CouchDB or another reader of the same document sees could differ.
#[tokio::test]
async fn duplicate_keys_are_refused_naming_their_path() {
    let tgz = noise(20_000, 31);
    let other = noise(20_000, 32);
    let doc = npm_doc("p", "1.0.0", &tgz);
    let right_md5 = couch_md5(&tgz);
    let twice = |from: &str, to: String| (from.to_string(), to);
    let cases: Vec<(&str, (String, String))> = vec![
        (
            "name",
            twice(r#""name":"p""#, r#""name":"p","name":"q""#.into()),
        ),
        (
            "name",
            twice(r#""name":"p""#, r#""name":"p","n\u0061me":"p""#.into()),
        ),
        (
            "_id",
            twice(r#""_id":"p""#, r#""_id":"p","_id":"q""#.into()),
        ),
        (
            "versions",
            twice(r#""versions":{"#, r#""versions":{},"versions":{"#.into()),
        ),
        (
            "dist-tags",
            twice(
                r#""dist-tags":{"#,
                r#""dist-tags":{"latest":"9.0.0"},"dist-tags":{"#.into(),
            ),
        ),
        (
            r#"versions["1.0.0"]"#,
            twice(r#""1.0.0":{"#, r#""1.0.0":{},"1.0.0":{"#.into()),
        ),
        (
            r#"versions["1.0.0"].name"#,
            twice(
                r#""name":"p","version":"#,
                r#""name":"q","name":"p","version":"#.into(),
            ),
        ),
        (
            r#"versions["1.0.0"].version"#,
            twice(
                r#""version":"1.0.0""#,
                r#""version":"1.0.0","version":"2.0.0""#.into(),
            ),
        ),
        (
            r#"versions["1.0.0"].dist"#,
            twice(r#""dist":{"#, r#""dist":{},"dist":{"#.into()),
        ),
        (
            r#"versions["1.0.0"].dist.integrity"#,
            twice(
                r#""integrity":""#,
                format!(r#""integrity":"{}","integrity":""#, sha512_sri(&other)),
            ),
        ),
        (
            r#"versions["1.0.0"].dist.shasum"#,
            twice(
                r#""shasum":""#,
                format!(r#""shasum":"{}","shasum":""#, sha1_hex(&other)),
            ),
        ),
        (
            r#"versions["1.0.0"].dist.tarball"#,
            twice(
                r#""tarball":""#,
                r#""tarball":"http://x/p/-/p-9.tgz","tarball":""#.into(),
            ),
        ),
        (
            r#"_attachments["p-1.0.0.tgz"]"#,
            twice(
                r#""_attachments":{"#,
                format!(
                    r#""_attachments":{{"p-1.0.0.tgz":{{"data":"{}"}},"#,
                    B64.encode(&tgz)
                ),
            ),
        ),
        (
            r#"_attachments["p-1.0.0.tgz"].data"#,
            twice(r#""data":""#, r#""data":"QQ==","data":""#.into()),
        ),
        (
            r#"_attachments["p-1.0.0.tgz"].length"#,
            twice(r#""length":"#, r#""length":1,"length":"#.into()),
        ),
        (
            r#"_attachments["p-1.0.0.tgz"].content_type.a"#,
            twice(
                r#""content_type":"application/octet-stream""#,
                r#""content_type":{"a":1,"a":2}"#.into(),
            ),
        ),
        (
            r#"_attachments["p-1.0.0.tgz"]["x y"][0].a"#,
            twice(
                r#""content_type":"application/octet-stream""#,
                r#""x y":[{"a":1,"a":2}]"#.into(),
            ),
        ),
        (
            r#"_attachments["p-1.0.0.tgz"].digest"#,
            twice(
                r#""data":""#,
                format!(r#""digest":"{right_md5}","digest":"{right_md5}","data":""#),
            ),
        ),
    ];
    for attachment_first in [false, true] {
        let good = ordered(&doc, attachment_first);
        let store = Store::memory();
        publish(&store, good.as_bytes(), 65_536)
            .await
            .expect("the document without duplicates");
        for (path, (from, to)) in &cases {
            let body = good.replacen(from, to, 1);
            assert_ne!(body, good, "{path}: {from} is in the document");
            for chunk in [5usize, 65_536] {
                let case = format!("{path} (attachment first: {attachment_first}, {chunk})");
                let store = Store::memory();
                let err = publish(&store, body.as_bytes(), chunk)
                    .await
                    .expect_err(&case);
                assert_eq!(err.kind(), ErrorKind::InvalidInput, "{case}: {err}");
                let says = format!("bad document at {path}: given twice");
                assert!(err.to_string().starts_with(&says), "{case}: {err}");
                assert_eq!(stored(&store).await, 0, "{case}: nothing stored");
            }
        }
    }
}

/// CouchDB's `md5-<base64>` of `data`, as an attachment's `digest`.
fn couch_md5(data: &[u8]) -> String {
    use md5::Digest;
    format!("md5-{}", B64.encode(md5::Md5::digest(data)))
}

/// An attachment's `digest` is held to CouchDB's meaning: an `md5-` one is checked against the
/// bytes (a wrong one refused like a wrong `dist.integrity`), and any other, which CouchDB would
/// drop unchecked, is refused as malformed rather than ignored. Nothing is stored when refused.
#[tokio::test]
async fn an_attachment_digest_is_checked_or_refused_never_ignored() {
    let tgz = noise(20_000, 33);
    let other = noise(20_000, 34);
    let doc = npm_doc("p", "1.0.0", &tgz);
    let data = B64.encode(&tgz);
    let body = |attachment: String, attachment_first: bool| {
        let mut doc = doc.clone();
        doc["_attachments"] = json!({});
        let text = ordered(&doc, attachment_first);
        let with = format!(r#""_attachments":{{"p-1.0.0.tgz":{{{attachment}}}}}"#);
        text.replacen(r#""_attachments":{}"#, &with, 1)
    };
    let field = r#"_attachments["p-1.0.0.tgz"].digest"#;
    for attachment_first in [false, true] {
        let case = |what: &str| format!("{what}, attachment first: {attachment_first}");
        // A right md5 before `data`: checked, and stored.
        let store = Store::memory();
        let right = format!(r#""digest":"{}","data":"{data}""#, couch_md5(&tgz));
        publish(&store, body(right, attachment_first).as_bytes(), 4096)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case("right md5")));
        assert_eq!(stored(&store).await, 1);
        // A wrong md5 before `data`: a mismatch naming the digest. After `data`: the same with
        // the attachment first (every algorithm is computed then); in npm's order md5 was not
        // computed as `data` went by, and the digest is refused as one that cannot be checked.
        let wrong = couch_md5(&other);
        for (attachment, kind, says) in [
            (
                format!(r#""digest":"{wrong}","data":"{data}""#),
                ErrorKind::IntegrityMismatch,
                "integrity mismatch",
            ),
            if attachment_first {
                (
                    format!(r#""data":"{data}","digest":"{wrong}""#),
                    ErrorKind::IntegrityMismatch,
                    "integrity mismatch",
                )
            } else {
                (
                    format!(r#""data":"{data}","digest":"{wrong}""#),
                    ErrorKind::InvalidInput,
                    "comes after `data`",
                )
            },
        ] {
            let what = case(&attachment[..12]);
            let store = Store::memory();
            let err = publish(&store, body(attachment, attachment_first).as_bytes(), 4096)
                .await
                .expect_err(&what);
            assert_eq!(err.kind(), kind, "{what}: {err}");
            assert!(err.to_string().contains(field), "{what}: {err}");
            assert!(err.to_string().contains(says), "{what}: {err}");
            assert_eq!(stored(&store).await, 0, "{what}: nothing stored");
        }
        // A right md5 after `data` with the attachment first: checked, and stored.
        if attachment_first {
            let store = Store::memory();
            let right = format!(r#""data":"{data}","digest":"{}""#, couch_md5(&tgz));
            publish(&store, body(right, true).as_bytes(), 4096)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", case("right md5 after data")));
        }
        // Any other digest, before or after `data`: refused as malformed, naming the field.
        let sha1 = format!(
            "sha1-{}",
            B64.encode(hex::decode(sha1_hex(&tgz)).expect("hex"))
        );
        for (digest, says) in [
            (json!(sha1), "not an md5 digest"),
            (json!(sha512_sri(&tgz)), "not an md5 digest"),
            (
                json!(couch_md5(&tgz).replace("md5-", "MD5-")),
                "not an md5 digest",
            ),
            (
                json!(couch_md5(&tgz).replace("md5-", "")),
                "not an md5 digest",
            ),
            (json!("md5-!!!!"), "not base64"),
            (json!("md5-AAAA"), "not an md5"),
            (json!(12), "invalid type"),
        ] {
            for digest_first in [false, true] {
                let what = case(&format!("digest {digest}, before data: {digest_first}"));
                let attachment = if digest_first {
                    format!(r#""digest":{digest},"data":"{data}""#)
                } else {
                    format!(r#""data":"{data}","digest":{digest}"#)
                };
                let store = Store::memory();
                let err = publish(&store, body(attachment, attachment_first).as_bytes(), 4096)
                    .await
                    .expect_err(&what);
                assert_eq!(err.kind(), ErrorKind::InvalidInput, "{what}: {err}");
                assert!(err.to_string().contains(field), "{what}: {err}");
                assert!(err.to_string().contains(says), "{what}: {err}");
                assert_eq!(stored(&store).await, 0, "{what}: nothing stored");
            }
        }
    }
}

/// A package name is held to npm's rules that decide whether it can be served: `@scope/name`
/// with one `/`, no `/` unscoped, no leading `.` or `_`, no `..`, URL-safe. `a/b` was mapped
/// before and could not be served (the server reads it as a malformed scoped path).
#[tokio::test]
async fn package_names_are_held_to_npms_rules() {
    let tgz = noise(20_000, 35);
    for attachment_first in [false, true] {
        for bad in [
            "a/b",
            "@s/a/b",
            ".x",
            "_x",
            "@s/",
            "@s",
            "@/p",
            "a b",
            "caf\u{e9}",
        ] {
            let what = format!("{bad:?}, attachment first: {attachment_first}");
            let store = Store::memory();
            let body = ordered(&npm_doc(bad, "1.0.0", &tgz), attachment_first);
            let err = publish(&store, body.as_bytes(), 4096)
                .await
                .expect_err(&what);
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{what}: {err}");
            assert!(
                err.to_string().starts_with("bad document at name: "),
                "{what}: {err}"
            );
            assert_eq!(stored(&store).await, 0, "{what}: nothing stored");
        }
        for good in ["@s/p", "left-pad", "JSONStream", "a.b_c"] {
            let what = format!("{good:?}, attachment first: {attachment_first}");
            let store = Store::memory();
            let body = ordered(&npm_doc(good, "1.0.0", &tgz), attachment_first);
            let p = publish(&store, body.as_bytes(), 4096)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(p.name, good);
            assert!(p.tarball.is_some_and(|t| t.stored), "{what}");
        }
    }
    // With `name` first (npm's order) the name is refused before the attachment is read, also
    // when its tarball's name (`a..b-1.0.0.tgz`) would have been refused for itself.
    for bad in ["a..b", "@s/.."] {
        let store = Store::memory();
        let body = ordered(&npm_doc(bad, "1.0.0", &tgz), false);
        let err = publish(&store, body.as_bytes(), 4096).await.expect_err(bad);
        assert!(
            err.to_string().starts_with("bad document at name: "),
            "{bad}: {err}"
        );
    }
}
