//! `tarvault migrate couch` against a real CouchDB-compatible server (pouchdb-server, see
//! `tests/migrate/server.rs`), seeded from the corpus as fullfat documents plus every bad case;
//! and, in `tests/migrate/scripted.rs`, `tests/migrate/problems.rs`, `tests/migrate/twice.rs` and
//! `tests/migrate/sized.rs`, against a fake CouchDB scripted per test (`fake.rs`).
#![cfg(feature = "migrate")]

#[path = "migrate/bounded.rs"]
mod bounded;
mod common;
#[path = "migrate/concurrent.rs"]
mod concurrent;
#[path = "migrate/fake.rs"]
mod fake;
#[path = "migrate/problems.rs"]
mod problems;
#[path = "migrate/scripted.rs"]
mod scripted;
#[path = "migrate/seed.rs"]
mod seed;
#[path = "migrate/server.rs"]
mod server;
#[path = "migrate/sized.rs"]
mod sized;
#[path = "migrate/twice.rs"]
mod twice;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use serde_json::Value;
use tarvault::migrate::{
    read_problems, CouchSource, Counts, MapEntry, MigrateOptions, Migration, OutcomeKind, Problem,
    State, Summary,
};
use tarvault::{Integrity, Store};

use common::{noise, sha1_hex, sha512_sri};
use seed::{db_name, fullfat, seed_registry, Couch, Ver};

/// The test server's client; `None` (the test returns) when there is none, see
/// [`server::couch_url`].
fn couch() -> Option<Couch> {
    server::couch_url().map(|url| Couch::new(&url))
}

fn store_spec(dir: &Path) -> String {
    format!("file://{}?fsync=false", dir.display())
}

async fn migrate_lib(
    couch: &Couch,
    db: &str,
    store: &Store,
    dir: &Path,
    concurrency: usize,
) -> Summary {
    migrate_with(couch, db, store, dir, |opts| {
        opts.concurrency = concurrency;
        opts.batch = 7; // several _changes pages
    })
    .await
}

/// A migration of `db` into `store` through the library, its state and mapping in `dir`, with
/// the options `set` changes.
async fn migrate_with(
    couch: &Couch,
    db: &str,
    store: &Store,
    dir: &Path,
    set: impl FnOnce(&mut MigrateOptions),
) -> Summary {
    let source = CouchSource::parse(&format!("{}/{db}", couch.base)).expect("source");
    let mut opts = MigrateOptions::new(dir.join("state.json"), dir.join("map.jsonl"));
    set(&mut opts);
    Migration::new(source, store.clone(), opts)
        .expect("migration")
        .run()
        .await
        .expect("run")
}

/// The mapping's lines, checked to parse, with no version twice.
fn read_map(path: &Path) -> (Vec<String>, Vec<MapEntry>) {
    let text = std::fs::read_to_string(path).expect("mapping");
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let entries: Vec<MapEntry> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("mapping line {l:?}: {e}")))
        .collect();
    let keys: HashSet<(String, String)> = entries
        .iter()
        .map(|e| (e.name.clone(), e.version.clone()))
        .collect();
    assert_eq!(keys.len(), entries.len(), "a version is mapped twice");
    (lines, entries)
}

/// The problems file's problems, every line checked to parse.
fn read_problems_file(path: &Path) -> Vec<Problem> {
    read_problems(path)
        .expect("problems file")
        .collect::<Result<_, _>>()
        .expect("every line a problem")
}

async fn blob_keys(store: &Store) -> BTreeSet<String> {
    store
        .list()
        .map_ok(|k| k.to_string())
        .try_collect()
        .await
        .expect("list")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrates_every_version_and_counts_every_outcome() {
    let Some(couch) = couch() else {
        return;
    };
    let db = db_name("all");
    let seeded = seed_registry(&couch, &db, None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&store_spec(&dir.path().join("store")))
        .await
        .expect("store");

    let summary = migrate_lib(&couch, &db, &store, dir.path(), 4).await;
    assert_eq!(summary.report.counts, seeded.expected, "cumulative report");
    assert_eq!(summary.run, seeded.expected, "this run");
    assert!(summary.caught_up && !summary.interrupted);
    assert!(!summary.report.is_success(), "mismatches make it fail");
    // Every problem is in the problems file (beside the state file), in the report's order.
    let problems_file = dir.path().join("state.json.problems.jsonl");
    let problems = read_problems_file(&problems_file);
    assert_eq!(summary.report.problems_total, problems.len() as u64);
    assert_eq!(
        summary.report.problems, problems,
        "all kept: fewer than the limit"
    );
    assert_eq!(
        summary.report.problems_total,
        seeded.expected.failures()
            + seeded.expected.orphan
            + seeded.expected.unpublished
            + seeded.expected.deleted
            + seeded.expected.empty
            + seeded.expected.design
    );

    // The mapping: exactly the good versions, once each, with the file names old URLs end in.
    let (_, entries) = read_map(&dir.path().join("map.jsonl"));
    let got: HashSet<MapEntry> = entries.iter().cloned().collect();
    assert_eq!(got, seeded.expected_map);
    let scoped: Vec<&MapEntry> = entries
        .iter()
        .filter(|e| e.name == "@types/node" || e.name == "@babel/parser")
        .collect();
    assert_eq!(scoped.len(), 2, "scoped packages migrated: {scoped:?}");
    assert!(scoped.iter().all(|e| !e.file.contains('/')));

    // Every mapped blob is stored and reads back verified, with the mapped digests.
    for e in &entries {
        let addr = Integrity::parse(&e.integrity).expect("integrity");
        let bytes = store
            .get(&addr)
            .await
            .expect("mapped blob stored")
            .bytes()
            .await
            .expect("verified read");
        assert_eq!(bytes.len() as u64, e.size);
        assert_eq!(sha1_hex(&bytes), e.shasum);
    }
    let distinct: BTreeSet<&str> = entries.iter().map(|e| e.integrity.as_str()).collect();
    assert_eq!(
        blob_keys(&store).await.len(),
        distinct.len(),
        "no extra blobs"
    );
    // Bytes their documents disagree with (or that no version owns) are stored under no address.
    for bad in &seeded.rejected {
        for addr in [sha512_sri(bad), sha1_hex(bad)] {
            let addr = Integrity::parse_address(&addr).expect("address");
            assert!(!store.contains(&addr).await.expect("contains"), "{addr}");
        }
    }

    // Mismatches are listed with both digests, in the algorithm that disagreed.
    let find = |kind: OutcomeKind, id: &str| {
        problems
            .iter()
            .find(|p| p.kind == kind && p.id == id)
            .unwrap_or_else(|| panic!("no {kind:?} for {id}: {problems:#?}"))
    };
    let p = find(OutcomeKind::DigestMismatch, "bad-shasum");
    assert_eq!(p.version.as_deref(), Some("1.0.0"));
    let (e, a) = (
        p.expected.clone().unwrap_or_default(),
        p.actual.clone().unwrap_or_default(),
    );
    assert!(
        e.starts_with("sha1-") && a.starts_with("sha1-") && e != a,
        "{p:?}"
    );
    let p = find(OutcomeKind::DigestMismatch, "bad-integrity");
    let (e, a) = (
        p.expected.clone().unwrap_or_default(),
        p.actual.clone().unwrap_or_default(),
    );
    assert!(
        e.starts_with("sha512-") && a.starts_with("sha512-") && e != a,
        "{p:?}"
    );
    let p = find(OutcomeKind::AttachmentMissing, "no-attachment");
    assert_eq!(p.version.as_deref(), Some("1.0.0"));
    assert_eq!(p.file.as_deref(), Some("no-attachment-1.0.0.tgz"));
    let p = find(OutcomeKind::Orphan, "has-orphan");
    assert_eq!(p.file.as_deref(), Some("has-orphan-0.9.0.tgz"));
    find(OutcomeKind::Unpublished, "gone-pkg");
    find(OutcomeKind::Deleted, "deleted-pkg");
    find(OutcomeKind::Unreadable, "garbage-doc");
    assert_eq!(
        find(OutcomeKind::Unreadable, "garbage-version")
            .version
            .as_deref(),
        Some("1.0.0")
    );
    find(OutcomeKind::Design, "_design/app");
    find(OutcomeKind::Empty, "empty-pkg");

    // Again with the same state: nothing new, the same report, the same mapping.
    let again = migrate_lib(&couch, &db, &store, dir.path(), 4).await;
    assert_eq!(again.run, Counts::default());
    assert_eq!(again.report, summary.report);
    assert_eq!(read_problems_file(&problems_file), problems);
    let (_, entries_again) = read_map(&dir.path().join("map.jsonl"));
    assert_eq!(entries_again, entries);

    // A new migration into the same store: every tarball is already there, same mapping.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let fresh = migrate_lib(&couch, &db, &store, dir2.path(), 2).await;
    let mut want = seeded.expected;
    want.already_present += want.migrated;
    want.migrated = 0;
    assert_eq!(fresh.report.counts, want);
    let (_, entries2) = read_map(&dir2.path().join("map.jsonl"));
    assert_eq!(
        entries2.into_iter().collect::<HashSet<_>>(),
        seeded.expected_map
    );
}

/// A document in conflict (two replicas each took a publish: 1.0.0 on one, 2.0.0 on the
/// other, and both 0.9.0; a third replica has 1.0.0 too): the feed sends the winning revision,
/// and the losing ones must not vanish without a word, nor their bytes with CouchDB. The winner
/// is mapped; each losing revision is listed, and each tarball only they hold is stored, once,
/// verified, but not mapped (no packument served leads to it); one whose bytes disagree with its
/// revision's own shasum is listed, not stored. None of it is a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_losing_conflicting_revision_is_listed_and_its_own_tarballs_stored() {
    let Some(couch) = couch() else {
        return;
    };
    let db = db_name("conflict");
    couch.create_db(&db).await;
    let both = Ver::honest("split", "0.9.0", noise(3000, 40).into());
    let lost = Ver::honest("split", "1.0.0", noise(3000, 41).into());
    let kept = Ver::honest("split", "2.0.0", noise(3000, 42).into());
    let mut forged = Ver::honest("split", "1.1.0", noise(3000, 43).into());
    forged.shasum = Some(sha1_hex(b"other bytes"));
    forged.integrity = None;
    let (lost_rev, also_lost_rev, kept_rev) = (
        "1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "1-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "1-ffffffffffffffffffffffffffffffff",
    );
    let mut loser = fullfat("split", &[both.clone(), lost.clone(), forged.clone()], &[]);
    loser["_rev"] = Value::from(lost_rev);
    let mut also_loser = fullfat("split", &[both.clone(), lost.clone()], &[]);
    also_loser["_rev"] = Value::from(also_lost_rev);
    let mut winner = fullfat("split", &[both.clone(), kept.clone()], &[]);
    winner["_rev"] = Value::from(kept_rev);
    couch.put_revs(&db, &[loser, also_loser, winner]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&store_spec(&dir.path().join("store")))
        .await
        .expect("store");

    let summary = migrate_lib(&couch, &db, &store, dir.path(), 2).await;
    let (_, entries) = read_map(&dir.path().join("map.jsonl"));
    let entries: BTreeSet<_> = entries.into_iter().map(|e| e.version).collect();
    assert_eq!(
        entries,
        BTreeSet::from(["0.9.0".to_string(), "2.0.0".to_string()]),
        "the winning revision is mapped, and only it"
    );
    let c = summary.report.counts;
    assert_eq!(
        (c.documents, c.migrated, c.losing_revision, c.losing_tarball),
        (1, 2, 2, 2),
        "{c:?}"
    );
    assert!(summary.report.is_success(), "not a failure: {c:?}");
    let lost_sri: Integrity = sha512_sri(&lost.bytes).parse().expect("sri");
    assert_eq!(
        store
            .get(&lost_sri)
            .await
            .expect("the losers' own tarball")
            .bytes()
            .await
            .expect("read"),
        lost.bytes,
        "stored although not mapped"
    );
    let forged_sri: Integrity = sha512_sri(&forged.bytes).parse().expect("sri");
    assert!(
        !store.contains(&forged_sri).await.expect("exists"),
        "bytes its shasum disagrees with"
    );
    assert_eq!(
        store
            .list()
            .try_collect::<Vec<_>>()
            .await
            .expect("list")
            .len(),
        3
    );

    let problems = read_problems_file(&dir.path().join("state.json.problems.jsonl"));
    let lines = |kind: OutcomeKind| -> Vec<&Problem> {
        problems.iter().filter(|p| p.kind == kind).collect()
    };
    let revisions = lines(OutcomeKind::LosingRevision);
    assert_eq!(revisions.len(), 2, "{problems:#?}");
    for rev in [lost_rev, also_lost_rev] {
        assert!(
            revisions.iter().any(|p| p.detail.contains(rev)),
            "{rev}: {problems:#?}"
        );
    }
    let tarballs = lines(OutcomeKind::LosingTarball);
    let versions: BTreeSet<_> = tarballs
        .iter()
        .filter_map(|p| p.version.as_deref())
        .collect();
    assert_eq!(
        versions,
        BTreeSet::from(["1.0.0", "1.1.0"]),
        "{problems:#?}"
    );
    let stored = tarballs
        .iter()
        .find(|p| p.version.as_deref() == Some("1.0.0"));
    assert!(
        stored.is_some_and(|p| p.detail.contains(&lost_sri.to_string())),
        "{stored:?}"
    );
    let refused = tarballs
        .iter()
        .find(|p| p.version.as_deref() == Some("1.1.0"));
    assert!(
        refused.is_some_and(|p| p.detail.contains(lost_rev) && p.detail.contains("not stored")),
        "{refused:?}"
    );
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert_eq!(
        stored.and_then(|p| p.integrity.clone()),
        Some(lost_sri.to_string())
    );

    // The mapping and the problem lines naming an integrity, as they are, are the keep file
    // that keeps every byte the migration stored.
    let keep = dir.path().join("keep.jsonl");
    let mut text = std::fs::read_to_string(dir.path().join("map.jsonl")).expect("map");
    let problems_text =
        std::fs::read_to_string(dir.path().join("state.json.problems.jsonl")).expect("problems");
    for l in problems_text
        .lines()
        .filter(|l| l.contains("\"integrity\""))
    {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&keep, text).expect("keep file");
    let options = tarvault::ops::gc::GcOptions {
        grace: Duration::ZERO,
        delete: true,
    };
    let keep = tarvault::ops::gc::keep_file(&keep).expect("keep");
    let report = tarvault::ops::gc::gc(&store, keep, &options, |_, _| {})
        .await
        .expect("gc");
    assert_eq!(
        (report.live_addresses, report.garbage),
        (3, 0),
        "{report:?}"
    );

    // Read again (`--since 0`): listed and counted once.
    let source = CouchSource::parse(&format!("{}/{db}", couch.base)).expect("source");
    let mut opts = MigrateOptions::new(dir.path().join("state.json"), dir.path().join("map.jsonl"));
    opts.since = Some(tarvault::migrate::Seq::from_arg("0"));
    let again = Migration::new(source, store.clone(), opts)
        .expect("migration")
        .run()
        .await
        .expect("run");
    assert_eq!(again.report.counts, c, "nothing counted twice");
    let problems = read_problems_file(&dir.path().join("state.json.problems.jsonl"));
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

/// A losing revision's orphan attachments are the winner's orphans' kind of bytes: listed, and
/// with `keep_orphans` stored, so that retiring CouchDB drops none of them; one the winner holds
/// as well has one line, not two. (They were neither listed nor stored.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_losing_revision_s_orphans_are_listed_and_kept() {
    let Some(couch) = couch() else {
        return;
    };
    let db = db_name("lostorphan");
    couch.create_db(&db).await;
    let v = Ver::honest("twig", "1.0.0", noise(2000, 60).into());
    let (shared, only) = (noise(2100, 61), noise(2200, 62));
    let lost_rev = "1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut loser = fullfat(
        "twig",
        std::slice::from_ref(&v),
        &[("twig-0.1.0.tgz", &shared), ("twig-0.2.0.tgz", &only)],
    );
    loser["_rev"] = Value::from(lost_rev);
    let mut winner = fullfat(
        "twig",
        std::slice::from_ref(&v),
        &[("twig-0.1.0.tgz", &shared)],
    );
    winner["_rev"] = Value::from("1-ffffffffffffffffffffffffffffffff");
    couch.put_revs(&db, &[loser, winner]).await;
    let only_sri: Integrity = sha512_sri(&only).parse().expect("sri");
    for keep in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&store_spec(&dir.path().join("store")))
            .await
            .expect("store");
        let summary =
            migrate_with(&couch, &db, &store, dir.path(), |o| o.keep_orphans = keep).await;
        let c = summary.report.counts;
        assert_eq!(
            (c.migrated, c.losing_revision, c.orphan, c.losing_tarball),
            (1, 1, 2, 0),
            "keep {keep}: {c:?}"
        );
        let problems = read_problems_file(&dir.path().join("state.json.problems.jsonl"));
        let orphans: Vec<&Problem> = problems
            .iter()
            .filter(|p| p.kind == OutcomeKind::Orphan)
            .collect();
        let files: BTreeSet<_> = orphans.iter().filter_map(|p| p.file.as_deref()).collect();
        assert_eq!(
            files,
            BTreeSet::from(["twig-0.1.0.tgz", "twig-0.2.0.tgz"]),
            "{problems:#?}"
        );
        let Some(lost) = orphans
            .iter()
            .find(|p| p.file.as_deref() == Some("twig-0.2.0.tgz"))
        else {
            panic!("no line for the losing revision's orphan: {problems:#?}");
        };
        assert!(lost.detail.contains(lost_rev), "{lost:?}");
        assert_eq!(
            lost.integrity.as_deref(),
            keep.then(|| only_sri.to_string()).as_deref(),
            "{lost:?}"
        );
        assert_eq!(
            store.contains(&only_sri).await.expect("contains"),
            keep,
            "the losing revision's own orphan"
        );
    }
}

/// `--keep-orphans`: an attachment no version names is stored too, verified against the md5
/// CouchDB keeps of it, and not mapped; its line names the integrity it is stored under. Without
/// the flag it is listed and left where it is.
#[test]
fn keep_orphans_stores_an_orphan_attachment_unmapped() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let Some(couch) = couch() else {
        return;
    };
    let db = db_name("orphans");
    rt.block_on(couch.create_db(&db));
    let v = Ver::honest("lone", "1.0.0", noise(2000, 50).into());
    let orphan = noise(2500, 51);
    let doc = fullfat(
        "lone",
        std::slice::from_ref(&v),
        &[("lone-0.9.0.tgz", &orphan)],
    );
    rt.block_on(couch.put_doc(&db, "lone", &doc));
    let from = format!("{}/{db}", couch.base);
    let orphan_sri = sha512_sri(&orphan);
    for keep in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag: &[&str] = if keep { &["--keep-orphans"] } else { &[] };
        let out = run(&migrate_args(&from, dir.path()), flag);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let counts = &json_summary(&out)["report"]["counts"];
        assert_eq!(
            (counts["migrated"].as_u64(), counts["orphan"].as_u64()),
            (Some(1), Some(1))
        );
        let (_, entries) = read_map(&dir.path().join("map.jsonl"));
        assert_eq!(entries, [v.entry("lone")], "only the version is mapped");
        let problems = read_problems_file(&dir.path().join("state.json.problems.jsonl"));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        let p = &problems[0];
        assert_eq!(
            (p.kind, p.file.as_deref()),
            (OutcomeKind::Orphan, Some("lone-0.9.0.tgz"))
        );
        let store = rt
            .block_on(Store::open(&store_spec(&dir.path().join("store"))))
            .expect("store");
        let address: Integrity = orphan_sri.parse().expect("sri");
        let stored = rt.block_on(store.contains(&address)).expect("contains");
        assert_eq!(stored, keep, "{p:?}");
        assert_eq!(
            p.integrity.as_deref(),
            keep.then_some(orphan_sri.as_str()),
            "{p:?}"
        );
    }
}

fn tarvault(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tarvault"));
    c.args(args)
        .env_remove("TARVAULT_STORE")
        .env_remove("COUCH_USER")
        .env_remove("COUCH_PASSWORD")
        .env_remove("TARVAULT_LOG")
        .stdin(Stdio::null());
    c
}

/// `tarvault migrate couch` arguments for a run into `dir`.
fn migrate_args(from: &str, dir: &Path) -> Vec<String> {
    [
        "migrate",
        "couch",
        "--from",
        from,
        "--to",
        &store_spec(&dir.join("store")),
        "--state",
        &dir.join("state.json").display().to_string(),
        "--map",
        &dir.join("map.jsonl").display().to_string(),
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run(args: &[String], extra: &[&str]) -> Output {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    tarvault(&all).output().expect("run tarvault")
}

fn json_summary(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "summary is not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn killed_at_any_moment_a_rerun_ends_like_an_uninterrupted_run() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let Some(couch) = couch() else {
        return;
    };
    let db = db_name("kill");
    let seeded = rt.block_on(seed_registry(&couch, &db, None));
    let from = format!("{}/{db}", couch.base);
    // Small steps, so that kills land between checkpoints, inside puts and inside state writes.
    let extra = [
        "--concurrency",
        "3",
        "--batch",
        "5",
        "--checkpoint-docs",
        "1",
    ];

    let clean = tempfile::tempdir().expect("tempdir");
    let clean_args = migrate_args(&from, clean.path());
    let t0 = Instant::now();
    let out = run(&clean_args, &extra);
    let took = t0.elapsed();
    assert_eq!(out.status.code(), Some(6), "failures present: exit 6");
    let clean_summary = json_summary(&out);
    assert_eq!(clean_summary["ok"], Value::Bool(false));
    let clean_counts: Counts =
        serde_json::from_value(clean_summary["report"]["counts"].clone()).expect("counts");
    assert_eq!(clean_counts, seeded.expected);

    let killed = tempfile::tempdir().expect("tempdir");
    let args = migrate_args(&from, killed.path());
    let mut kills = 0;
    for round in 0..12 {
        // Early, middle and late moments of each (shorter and shorter) resumed run.
        let frac = [0.05, 0.2, 0.1, 0.35, 0.15, 0.5][round % 6];
        let mut child = tarvault(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(took.mul_f64(frac));
        if child.try_wait().expect("try_wait").is_some() {
            break; // finished before the kill: the migration is complete
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        kills += 1;
        // After any kill: the state is readable and vouches only for whole, unique lines.
        let map = std::fs::read(killed.path().join("map.jsonl")).unwrap_or_default();
        let Some(state) = State::load(&killed.path().join("state.json")).expect("state readable")
        else {
            // Killed before the first run got as far as its first state (starting up, asking
            // the server): then it has written no mapping either, and a re-run starts afresh.
            assert!(map.is_empty(), "a mapping without a state file");
            continue;
        };
        assert!(map.len() as u64 >= state.map_len, "state ahead of mapping");
        let kept = std::str::from_utf8(&map[..state.map_len as usize]).expect("utf8");
        let keys: Vec<(String, String)> = kept
            .lines()
            .map(|l| {
                let e: MapEntry = serde_json::from_str(l).expect("whole line");
                (e.name, e.version)
            })
            .collect();
        assert_eq!(
            keys.iter().collect::<HashSet<_>>().len(),
            keys.len(),
            "duplicate before the checkpoint"
        );
        // And for whole problem lines, as many as it counts.
        let problems =
            std::fs::read(killed.path().join("state.json.problems.jsonl")).unwrap_or_default();
        assert!(
            problems.len() as u64 >= state.problems_len,
            "state ahead of problems file"
        );
        let kept = std::str::from_utf8(&problems[..state.problems_len as usize]).expect("utf8");
        for l in kept.lines() {
            serde_json::from_str::<Problem>(l).expect("whole line");
        }
        assert_eq!(kept.lines().count() as u64, state.problems_total);
    }
    assert!(
        kills >= 3,
        "only {kills} kills landed mid-run; the test proves nothing"
    );
    let out = run(&args, &extra);
    assert_eq!(out.status.code(), Some(6));
    let resumed_summary = json_summary(&out);

    // Same mapping (as a set of lines, none twice), same blobs, same report.
    let (clean_lines, _) = read_map(&clean.path().join("map.jsonl"));
    let (resumed_lines, _) = read_map(&killed.path().join("map.jsonl"));
    let clean_set: HashSet<&String> = clean_lines.iter().collect();
    let resumed_set: HashSet<&String> = resumed_lines.iter().collect();
    assert_eq!(resumed_lines.len(), resumed_set.len(), "duplicate lines");
    assert_eq!(resumed_set, clean_set);
    let blobs = |dir: &Path| {
        rt.block_on(async {
            let store = Store::open(&store_spec(&dir.join("store")))
                .await
                .expect("store");
            blob_keys(&store).await
        })
    };
    assert_eq!(blobs(killed.path()), blobs(clean.path()));
    let mut resumed: Counts =
        serde_json::from_value(resumed_summary["report"]["counts"].clone()).expect("counts");
    // The one thing a kill may move: a tarball stored just before a kill is "already present"
    // to the run that redoes its document. Everything else is exact.
    let stored = |c: &Counts| c.migrated + c.already_present;
    assert_eq!(stored(&resumed), stored(&clean_counts));
    assert!(resumed.already_present >= clean_counts.already_present);
    resumed.migrated = clean_counts.migrated;
    resumed.already_present = clean_counts.already_present;
    assert_eq!(resumed, clean_counts);
    assert_eq!(
        resumed_summary["report"]["problems"],
        clean_summary["report"]["problems"]
    );
    // The problems file: each problem once, in feed order, as in the uninterrupted run.
    let problems_file = |dir: &Path| dir.join("state.json.problems.jsonl");
    assert_eq!(
        clean_summary["problems_file"].as_str(),
        problems_file(clean.path()).to_str()
    );
    let clean_problems = read_problems_file(&problems_file(clean.path()));
    assert!(!clean_problems.is_empty());
    assert_eq!(
        clean_summary["report"]["problems_total"],
        Value::from(clean_problems.len())
    );
    assert_eq!(
        read_problems_file(&problems_file(killed.path())),
        clean_problems
    );
    assert_eq!(
        resumed_summary["report"]["problems_total"],
        clean_summary["report"]["problems_total"]
    );
}

/// `tarvault migrate couch --follow` from a new registry of the corpus's first `packages`
/// packages into a new directory, once it has mapped all of their versions (how many: `want`).
struct Following {
    db: String,
    dir: tempfile::TempDir,
    args: Vec<String>,
    /// Taken by [`Following::stop`]; killed on drop otherwise (a failed assertion must not leave
    /// a following migration behind).
    child: Option<std::process::Child>,
    want: usize,
}

impl Drop for Following {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Following {
    fn start(rt: &tokio::runtime::Runtime, couch: &Couch, tag: &str, packages: usize) -> Self {
        let db = db_name(tag);
        let corpus = seed::corpus_packages();
        rt.block_on(async {
            couch.create_db(&db).await;
            for (name, versions) in &corpus[..packages] {
                couch
                    .put_doc(&db, name, &seed::fullfat(name, versions, &[]))
                    .await;
            }
        });
        let want: usize = corpus[..packages].iter().map(|(_, v)| v.len()).sum();
        let dir = tempfile::tempdir().expect("tempdir");
        let args = migrate_args(&format!("{}/{db}", couch.base), dir.path());
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.push("--follow");
        let child = tarvault(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let following = Following {
            db,
            dir,
            args,
            child: Some(child),
            want,
        };
        assert_eq!(following.wait_for(want), want);
        following
    }

    fn map(&self) -> std::path::PathBuf {
        self.dir.path().join("map.jsonl")
    }

    /// Waits (a minute at most) until the mapping has `n` lines; returns how many it has.
    fn wait_for(&self, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let lines = std::fs::read_to_string(self.map())
                .map(|t| t.lines().count())
                .unwrap_or(0);
            if lines >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "mapping stuck at {lines}/{n} lines"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and its output once it has exited, which must be with status 0 (a followed
    /// feed stopped by a signal is not an interruption).
    fn stop(&mut self) -> Output {
        let child = self.child.take().expect("still running");
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0);
        let out = child.wait_with_output().expect("wait");
        assert_eq!(
            out.status.code(),
            Some(0),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

#[test]
fn follows_the_feed_until_sigterm() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let Some(couch) = couch() else {
        return;
    };
    let mut following = Following::start(&rt, &couch, "follow", 3);
    let (db, want, map) = (following.db.clone(), following.want, following.map());
    // A publish while it follows.
    let late = Ver::honest("late-pkg", "1.0.0", common::noise(4096, 99).into());
    rt.block_on(couch.put_doc(
        &db,
        "late-pkg",
        &seed::fullfat("late-pkg", std::slice::from_ref(&late), &[]),
    ));
    assert_eq!(following.wait_for(want + 1), want + 1);
    let out = following.stop();
    let summary = json_summary(&out);
    assert_eq!(summary["interrupted"], Value::Bool(true));
    assert_eq!(summary["report"]["counts"]["documents"], Value::from(4));
    assert_eq!(
        summary["report"]["counts"]["migrated"],
        Value::from(want as u64 + 1)
    );
    let (_, entries) = read_map(&map);
    assert!(entries.contains(&late.entry("late-pkg")));
}

#[test]
fn credentials_are_used_and_never_printed() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let Some(couch) = couch() else {
        return;
    };
    let db = db_name("auth");
    let packages = seed::corpus_packages();
    rt.block_on(async {
        couch.create_user("migrator", "s3cret-Pw").await;
        couch.create_db(&db).await;
        let (name, versions) = &packages[1];
        couch
            .put_doc(&db, name, &seed::fullfat(name, versions, &[]))
            .await;
    });
    let base = couch.base.clone();
    let (scheme, host) = base.split_once("://").expect("url");
    let leaks = |out: &Output, secret: &str| {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(secret), "secret printed: {all}");
        all
    };

    // In the URL, with debug logging on.
    let dir = tempfile::tempdir().expect("tempdir");
    let from = format!("{scheme}://migrator:s3cret-Pw@{host}/{db}");
    let args = migrate_args(&from, dir.path());
    let out = tarvault(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("TARVAULT_LOG", "debug")
        .output()
        .expect("run");
    let text = leaks(&out, "s3cret-Pw");
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(json_summary(&out)["source"]
        .as_str()
        .is_some_and(|s| s.contains("***@")));
    assert_eq!(
        read_map(&dir.path().join("map.jsonl")).1.len(),
        packages[1].1.len()
    );

    // From the environment.
    let dir = tempfile::tempdir().expect("tempdir");
    let args = migrate_args(&format!("{base}/{db}"), dir.path());
    let out = tarvault(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("COUCH_USER", "migrator")
        .env("COUCH_PASSWORD", "s3cret-Pw")
        .output()
        .expect("run");
    let text = leaks(&out, "s3cret-Pw");
    assert_eq!(out.status.code(), Some(0), "{text}");

    // A wrong password: refused by the server, reported, not printed.
    let dir = tempfile::tempdir().expect("tempdir");
    let from = format!("{scheme}://migrator:Wr0ng-Pass@{host}/{db}");
    let out = run(&migrate_args(&from, dir.path()), &[]);
    let text = leaks(&out, "Wr0ng-Pass");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("401"), "{text}");

    // A state file resumes only its own source.
    let other = db_name("other");
    rt.block_on(couch.create_db(&other));
    let dir2 = tempfile::tempdir().expect("tempdir");
    let ok = run(&migrate_args(&format!("{base}/{other}"), dir2.path()), &[]);
    assert_eq!(ok.status.code(), Some(0));
    let out = run(&migrate_args(&format!("{base}/{db}"), dir2.path()), &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to a migration from"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_rejects_hostile_tarballs_and_impostors() {
    let Some(couch) = couch() else {
        return;
    };
    let db = db_name("inspect");
    couch.create_db(&db).await;
    let packages = seed::corpus_packages();
    let mut want = HashSet::new();
    let mut left_pad = None;
    for (name, versions) in packages
        .iter()
        .filter(|(n, _)| n == "left-pad" || n == "is-number" || n == "@babel/core")
    {
        couch
            .put_doc(&db, name, &seed::fullfat(name, versions, &[]))
            .await;
        for v in versions {
            want.insert(v.entry(name));
        }
        if name == "left-pad" {
            left_pad = Some(versions[0].bytes.clone());
        }
    }
    // Honest digests, but the tarball inside is left-pad's.
    let impostor = Ver::honest("impostor", "1.0.0", left_pad.expect("left-pad in corpus"));
    // Honest digests over bytes that are no tarball at all.
    let junk = Ver::honest("junk", "1.0.0", common::noise(5000, 42).into());
    for (name, v) in [("impostor", &impostor), ("junk", &junk)] {
        couch
            .put_doc(
                &db,
                name,
                &seed::fullfat(name, std::slice::from_ref(v), &[]),
            )
            .await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&store_spec(&dir.path().join("store")))
        .await
        .expect("store");
    let source = CouchSource::parse(&format!("{}/{db}", couch.base)).expect("source");
    let mut opts = MigrateOptions::new(dir.path().join("state.json"), dir.path().join("map.jsonl"));
    opts.inspect = Some(tarvault::tarball::Policy::default());
    let summary = Migration::new(source, store.clone(), opts)
        .expect("migration")
        .run()
        .await
        .expect("run");
    let c = summary.report.counts;
    assert_eq!(c.migrated as usize, want.len(), "{:#?}", summary.report);
    assert_eq!((c.package_mismatch, c.rejected), (1, 1), "{c:?}");
    assert_eq!(c.failures(), 2);
    let p = summary
        .report
        .problems
        .iter()
        .find(|p| p.kind == OutcomeKind::PackageMismatch)
        .expect("mismatch listed");
    assert_eq!(p.expected.as_deref(), Some("impostor@1.0.0"));
    assert!(
        p.actual
            .as_deref()
            .is_some_and(|a| a.starts_with("left-pad@")),
        "{p:?}"
    );
    let (_, entries) = read_map(&dir.path().join("map.jsonl"));
    assert_eq!(entries.into_iter().collect::<HashSet<_>>(), want);
    let junk_addr = Integrity::parse(&sha512_sri(&junk.bytes)).expect("sri");
    assert!(!store.contains(&junk_addr).await.expect("contains"));
}
