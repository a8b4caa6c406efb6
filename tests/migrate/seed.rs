//! Seeding a test registry: the corpus as fullfat npm documents (versions grouped by package,
//! attachments uploaded as real CouchDB attachments), plus one document for every bad case the
//! migrator must count.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use tarvault::migrate::{Counts, MapEntry};

use crate::common::{corpus, corpus_bytes, noise, sha1_hex, sha512_sri};

/// A thin HTTP client for seeding.
#[derive(Clone)]
pub struct Couch {
    pub base: String,
    http: reqwest::Client,
}

impl Couch {
    pub fn new(base: &str) -> Couch {
        Couch {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(2))
                .build()
                .expect("http client"),
        }
    }

    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = reqwest::Url::parse(&self.base).expect("base url");
        {
            let mut p = url.path_segments_mut().expect("path");
            p.pop_if_empty();
            for s in segments {
                p.push(s);
            }
        }
        url
    }

    /// Creates a database (fails the test if it exists).
    pub async fn create_db(&self, db: &str) {
        let r = self.http.put(self.url(&[db])).send().await.expect("PUT db");
        assert!(r.status().is_success(), "create {db}: {}", r.status());
    }

    /// Stores a document; returns its rev. `_design/x` ids keep their slash, as CouchDB wants.
    pub async fn put_doc(&self, db: &str, id: &str, doc: &Value) -> String {
        let url = match id.strip_prefix("_design/") {
            Some(rest) => self.url(&[db, "_design", rest]),
            None => self.url(&[db, id]),
        };
        let r = self
            .http
            .put(url)
            .header("accept", "application/json")
            .json(doc)
            .send()
            .await
            .expect("PUT doc");
        let status = r.status();
        let body: Value = r.json().await.expect("PUT doc answer");
        assert!(status.is_success(), "put {id}: {status} {body}");
        body["rev"].as_str().expect("rev").to_string()
    }

    /// Stores documents at the revisions they name (`_bulk_docs` with `new_edits: false`, as
    /// replication writes them): two of one document at different revisions are in conflict.
    pub async fn put_revs(&self, db: &str, docs: &[Value]) {
        let r = self
            .http
            .post(self.url(&[db, "_bulk_docs"]))
            .header("accept", "application/json")
            .json(&json!({"new_edits": false, "docs": docs}))
            .send()
            .await
            .expect("POST _bulk_docs");
        assert!(r.status().is_success(), "_bulk_docs: {}", r.status());
    }

    pub async fn delete_doc(&self, db: &str, id: &str, rev: &str) {
        let mut url = self.url(&[db, id]);
        url.query_pairs_mut().append_pair("rev", rev);
        let r = self.http.delete(url).send().await.expect("DELETE doc");
        assert!(r.status().is_success(), "delete {id}: {}", r.status());
    }

    /// Creates a `_users` user who can read (pouchdb-server rejects unknown basic-auth users).
    pub async fn create_user(&self, name: &str, password: &str) {
        let id = format!("org.couchdb.user:{name}");
        let r = self
            .http
            .put(self.url(&["_users", &id]))
            .json(&json!({"name": name, "password": password, "roles": [], "type": "user"}))
            .send()
            .await
            .expect("PUT user");
        assert!(
            r.status().is_success() || r.status().as_u16() == 409,
            "create user: {}",
            r.status()
        );
    }
}

/// A database name no other test uses.
pub fn db_name(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}_{}_{}",
        std::process::id(),
        tag,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One version to publish.
#[derive(Clone)]
pub struct Ver {
    pub version: String,
    pub bytes: Bytes,
    /// The last segment of `dist.tarball`: what the mapping calls `file`.
    pub file: String,
    /// The attachment's key (usually `file`).
    pub attachment: String,
    pub tarball: String,
    pub shasum: Option<String>,
    pub integrity: Option<String>,
}

impl Ver {
    /// A version with honest digests and the usual names.
    pub fn honest(name: &str, version: &str, bytes: Bytes) -> Ver {
        let base = name.rsplit('/').next().unwrap_or(name);
        let file = format!("{base}-{version}.tgz");
        Ver {
            version: version.into(),
            shasum: Some(sha1_hex(&bytes)),
            integrity: Some(sha512_sri(&bytes)),
            tarball: format!("http://registry.example/{name}/-/{file}"),
            attachment: file.clone(),
            file,
            bytes,
        }
    }

    pub fn entry(&self, name: &str) -> MapEntry {
        MapEntry {
            name: name.into(),
            version: self.version.clone(),
            file: self.file.clone(),
            integrity: sha512_sri(&self.bytes),
            shasum: sha1_hex(&self.bytes),
            size: self.bytes.len() as u64,
        }
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A fullfat package document as the npm couchapp stores it (attachments inline, to upload).
pub fn fullfat(name: &str, versions: &[Ver], orphans: &[(&str, &[u8])]) -> Value {
    let mut vs = Map::new();
    let mut time = Map::new();
    let mut atts = Map::new();
    time.insert("created".into(), json!("2014-01-01T00:00:00.000Z"));
    time.insert("modified".into(), json!("2014-01-02T00:00:00.000Z"));
    for v in versions {
        let mut dist = Map::new();
        dist.insert("tarball".into(), json!(v.tarball));
        if let Some(s) = &v.shasum {
            dist.insert("shasum".into(), json!(s));
        }
        if let Some(i) = &v.integrity {
            dist.insert("integrity".into(), json!(i));
        }
        vs.insert(
            v.version.clone(),
            json!({"name": name, "version": v.version, "_id": format!("{name}@{}", v.version),
                   "description": "test package", "dist": dist}),
        );
        time.insert(v.version.clone(), json!("2014-01-01T12:00:00.000Z"));
        atts.insert(
            v.attachment.clone(),
            json!({"content_type": "application/octet-stream", "data": b64(&v.bytes)}),
        );
    }
    for (file, data) in orphans {
        atts.insert(
            (*file).into(),
            json!({"content_type": "application/octet-stream", "data": b64(data)}),
        );
    }
    let latest = versions.last().map(|v| v.version.clone());
    let mut doc = json!({
        "_id": name, "name": name, "versions": vs, "time": time,
        "maintainers": [{"name": "someone", "email": "someone@example.com"}],
        "readme": "# test", "users": {},
    });
    if let Some(l) = latest {
        doc["dist-tags"] = json!({"latest": l});
    }
    if !atts.is_empty() {
        doc["_attachments"] = Value::Object(atts);
    }
    doc
}

/// What a seeded registry should migrate to.
pub struct Seeded {
    pub db: String,
    pub expected_map: HashSet<MapEntry>,
    pub expected: Counts,
    /// Bytes that must not be stored under any address (their documents disagree with them).
    pub rejected: Vec<Vec<u8>>,
}

/// The corpus grouped into packages, in a stable order, with the variations of real registries:
/// `dist.integrity` on every other version only (older publishes have `shasum` alone), scoped
/// packages, `@types/*` stored under the later clients' `@scope/name-v.tgz` attachment key, and a
/// `%2f`-encoded scope in one `dist.tarball`.
pub fn corpus_packages() -> Vec<(String, Vec<Ver>)> {
    let mut groups: BTreeMap<String, Vec<Ver>> = BTreeMap::new();
    for (i, e) in corpus().iter().enumerate() {
        let bytes = corpus_bytes(e);
        let mut v = Ver::honest(&e.name, &e.version, bytes);
        v.shasum = Some(e.registry_shasum.clone());
        v.integrity = (i % 2 == 0).then(|| e.registry_integrity.clone());
        v.file = e
            .tarball_path
            .rsplit('/')
            .next()
            .expect("tarball path")
            .to_string();
        v.attachment = v.file.clone();
        v.tarball = format!("http://registry.example{}", e.tarball_path);
        if let Some(scope) = e.name.strip_prefix("@types/") {
            v.attachment = format!("@types/{scope}-{}.tgz", e.version);
            v.tarball = format!("http://registry.example/{}/-/{}", e.name, v.attachment);
        }
        if e.name == "@babel/parser" {
            v.tarball = v.tarball.replace("@babel/parser", "@babel%2fparser");
        }
        groups.entry(e.name.clone()).or_default().push(v);
    }
    groups.into_iter().collect()
}

/// Seeds `db` with the corpus (or its first `limit` packages) and every bad case.
pub async fn seed_registry(couch: &Couch, db: &str, limit: Option<usize>) -> Seeded {
    couch.create_db(db).await;
    let mut expected_map = HashSet::new();
    let mut expected = Counts::default();
    let mut rejected = Vec::new();
    let packages = corpus_packages();
    let packages = &packages[..limit.unwrap_or(packages.len()).min(packages.len())];
    for (name, versions) in packages {
        couch.put_doc(db, name, &fullfat(name, versions, &[])).await;
        expected.documents += 1;
        for v in versions {
            expected_map.insert(v.entry(name));
            expected.migrated += 1;
            expected.bytes += v.bytes.len() as u64;
        }
    }
    let good = |name: &str, version: &str, seed: u64| {
        Ver::honest(
            name,
            version,
            Bytes::from(noise(3000 + seed as usize * 7, seed)),
        )
    };
    fn add_good(map: &mut HashSet<MapEntry>, name: &str, v: &Ver, c: &mut Counts) {
        map.insert(v.entry(name));
        c.migrated += 1;
        c.bytes += v.bytes.len() as u64;
    }

    // The same bytes as another package's tarball: stored once, counted as already present.
    let (first_name, first_versions) = &packages[0];
    let mut copy = Ver::honest("dedupe-copy", "1.0.0", first_versions[0].bytes.clone());
    copy.integrity = None;
    couch
        .put_doc(
            db,
            "dedupe-copy",
            &fullfat("dedupe-copy", &[copy.clone()], &[]),
        )
        .await;
    assert_ne!(first_name, "dedupe-copy");
    expected.documents += 1;
    expected_map.insert(copy.entry("dedupe-copy"));
    expected.already_present += 1;
    expected.bytes += copy.bytes.len() as u64;

    // A right sha512 beside a wrong sha1: only checking *every* digest catches it.
    let mut bad = good("bad-shasum", "1.0.0", 1);
    bad.shasum = Some(sha1_hex(b"other bytes"));
    rejected.push(bad.bytes.to_vec());
    let ok = good("bad-shasum", "1.0.1", 2);
    couch
        .put_doc(
            db,
            "bad-shasum",
            &fullfat("bad-shasum", &[bad, ok.clone()], &[]),
        )
        .await;
    expected.documents += 1;
    expected.digest_mismatch += 1;
    add_good(&mut expected_map, "bad-shasum", &ok, &mut expected);

    // A wrong integrity beside a right shasum.
    let mut bad = good("bad-integrity", "2.0.0", 3);
    bad.integrity = Some(sha512_sri(b"other bytes"));
    rejected.push(bad.bytes.to_vec());
    couch
        .put_doc(db, "bad-integrity", &fullfat("bad-integrity", &[bad], &[]))
        .await;
    expected.documents += 1;
    expected.digest_mismatch += 1;

    // A version whose tarball was never attached.
    let ok = good("no-attachment", "1.0.1", 4);
    let mut doc = fullfat("no-attachment", std::slice::from_ref(&ok), &[]);
    let lost = good("no-attachment", "1.0.0", 5);
    doc["versions"]["1.0.0"] = json!({"name": "no-attachment", "version": "1.0.0",
        "dist": {"shasum": lost.shasum, "tarball": lost.tarball}});
    couch.put_doc(db, "no-attachment", &doc).await;
    expected.documents += 1;
    expected.attachment_missing += 1;
    add_good(&mut expected_map, "no-attachment", &ok, &mut expected);

    // An attachment no version refers to.
    let ok = good("has-orphan", "1.0.0", 6);
    let orphan = noise(1234, 7);
    couch
        .put_doc(
            db,
            "has-orphan",
            &fullfat(
                "has-orphan",
                std::slice::from_ref(&ok),
                &[("has-orphan-0.9.0.tgz", &orphan)],
            ),
        )
        .await;
    rejected.push(orphan);
    expected.documents += 1;
    expected.orphan += 1;
    add_good(&mut expected_map, "has-orphan", &ok, &mut expected);

    // Unpublished: only name, time (with `unpublished`) and users are left.
    couch
        .put_doc(
            db,
            "gone-pkg",
            &json!({"_id": "gone-pkg", "name": "gone-pkg", "users": {},
                "time": {"created": "2013-01-01T00:00:00.000Z", "modified": "2014-01-01T00:00:00.000Z",
                    "unpublished": {"name": "someone", "time": "2014-01-01T00:00:00.000Z",
                        "tags": {"latest": "1.0.0"}, "maintainers": [], "description": "x",
                        "versions": ["1.0.0"]}}}),
        )
        .await;
    expected.documents += 1;
    expected.unpublished += 1;

    // Deleted.
    let del = good("deleted-pkg", "1.0.0", 8);
    let rev = couch
        .put_doc(
            db,
            "deleted-pkg",
            &fullfat("deleted-pkg", std::slice::from_ref(&del), &[]),
        )
        .await;
    couch.delete_doc(db, "deleted-pkg", &rev).await;
    rejected.push(del.bytes.to_vec());
    expected.documents += 1;
    expected.deleted += 1;

    // Garbage: a document that is not package metadata, and a version that is not either.
    couch
        .put_doc(
            db,
            "garbage-doc",
            &json!({"versions": "garbage", "x": [1, 2, 3]}),
        )
        .await;
    expected.documents += 1;
    expected.unreadable += 1;
    let ok = good("garbage-version", "1.0.1", 9);
    let mut doc = fullfat("garbage-version", std::slice::from_ref(&ok), &[]);
    doc["versions"]["1.0.0"] = json!({"name": "garbage-version", "dist": {"tarball": 42}});
    couch.put_doc(db, "garbage-version", &doc).await;
    expected.documents += 1;
    expected.unreadable += 1;
    add_good(&mut expected_map, "garbage-version", &ok, &mut expected);

    // The registry couchapp, and a package created but never published.
    couch
        .put_doc(
            db,
            "_design/app",
            &json!({"language": "javascript", "views": {}}),
        )
        .await;
    expected.documents += 1;
    expected.design += 1;
    couch
        .put_doc(
            db,
            "empty-pkg",
            &json!({"name": "empty-pkg", "versions": {}}),
        )
        .await;
    expected.documents += 1;
    expected.empty += 1;

    Seeded {
        db: db.to_string(),
        expected_map,
        expected,
        rejected,
    }
}
