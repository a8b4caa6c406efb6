//! The problems file, on the fake CouchDB of `fake.rs`: every problem in it once, in feed order,
//! however many there are and however the runs were cut short, while the state file and the
//! report stay the same size.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tarvault::migrate::{read_problems, OutcomeKind, Problem, Seq, State, KEPT_PROBLEMS};

use crate::fake::{changes_page, migrate_once, migration, serve, Handler, Resp};

/// Row `seq` of a feed of problems only: a deleted document, or every third one a document with
/// no versions (package `p<seq>` either way).
fn problem_row(seq: i64) -> Value {
    let id = format!("p{seq}");
    if seq % 3 == 0 {
        json!({"seq": seq, "id": id, "changes": [{"rev": "1-a"}],
            "doc": {"_id": id, "_rev": "1-a", "name": id}})
    } else {
        json!({"seq": seq, "id": id, "deleted": true, "changes": [{"rev": "2-b"}]})
    }
}

/// The ids `p<from>`..`p<to>`, in feed order.
fn ids(from: i64, to: i64) -> Vec<String> {
    (from..=to).map(|s| format!("p{s}")).collect()
}

/// A registry whose feed the test extends between runs.
fn registry(rows: Arc<Mutex<Vec<Value>>>) -> Handler {
    Arc::new(move |req| {
        let rows = rows.lock().expect("rows").clone();
        match req.segs.as_slice() {
            [_db] => Resp::json(200, json!({"db_name": "registry", "doc_count": rows.len()})),
            [_db, c] if c == "_changes" => changes_page(&rows, req),
            _ => Resp::not_found(),
        }
    })
}

fn publish(rows: &Mutex<Vec<Value>>, from: i64, to: i64) {
    rows.lock()
        .expect("rows")
        .extend((from..=to).map(problem_row));
}

/// A registry serving problem rows 1..=`n`: its rows (to publish more) and its URL.
async fn serve_problems(n: i64) -> (Arc<Mutex<Vec<Value>>>, String) {
    let rows = Arc::new(Mutex::new(Vec::new()));
    publish(&rows, 1, n);
    let url = serve(registry(rows.clone())).await;
    (rows, url)
}

/// The default problems file of a migration in `dir` (`fake::migration` puts its state there).
fn problems_path(dir: &Path) -> PathBuf {
    dir.join("state.json.problems.jsonl")
}

fn problems_in(path: &Path) -> Vec<Problem> {
    read_problems(path)
        .expect("open problems file")
        .collect::<Result<_, _>>()
        .expect("every line a problem")
}

fn file_ids(dir: &Path) -> Vec<String> {
    problems_in(&problems_path(dir))
        .into_iter()
        .map(|p| p.id)
        .collect()
}

fn state_size(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("state.json"))
        .expect("state file")
        .len()
}

/// Many more problems than the report keeps: all of them in the file, in feed order; the report
/// holds the first ones and the total; the state file is as small as with a handful.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_problem_is_in_the_file_in_feed_order_and_the_state_stays_small() {
    let few = 12;
    let many = KEPT_PROBLEMS as i64 * 2 + 345;
    let mut sizes = Vec::new();
    for n in [few, many] {
        let (_, url) = serve_problems(n).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let s = migrate_once(&url, dir.path()).await;
        assert!(s.caught_up);
        let c = s.report.counts;
        assert_eq!(
            (c.documents, c.deleted + c.empty),
            (n as u64, n as u64),
            "{c:?}"
        );
        assert_eq!(c.empty, n as u64 / 3);
        assert_eq!(s.report.problems_total, n as u64);
        let all = problems_in(&problems_path(dir.path()));
        assert_eq!(
            all.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
            ids(1, n),
            "feed order"
        );
        assert_eq!(all[2].kind, OutcomeKind::Empty);
        assert_eq!(all[3].kind, OutcomeKind::Deleted);
        let kept = (n as usize).min(KEPT_PROBLEMS);
        assert_eq!(s.report.problems, all[..kept], "the report keeps the first");
        let state = State::load(&dir.path().join("state.json"))
            .expect("state")
            .expect("a state file");
        assert_eq!(state.problems_total, n as u64);
        let len = std::fs::metadata(problems_path(dir.path())).map(|m| m.len());
        assert_eq!(len.ok(), Some(state.problems_len));
        sizes.push(state_size(dir.path()));
    }
    // Only the digits of the counts (and of the test server's port) may differ.
    assert!(sizes[1] <= sizes[0] + 64, "state file grew: {sizes:?}");
}

/// Lines written after the last checkpoint by a run that was then killed (the last one cut
/// short) are cut off by the next run, which writes its documents' problems again: each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_writes_each_problem_once() {
    let (rows, url) = serve_problems(30).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let first = migrate_once(&url, dir.path()).await;
    assert_eq!(first.report.problems_total, 30);
    // What a run over 31..40 killed before its checkpoint leaves: their lines, unvouched for.
    let path = problems_path(dir.path());
    let mut text = std::fs::read_to_string(&path).expect("problems file");
    for id in ids(31, 40) {
        let p = Problem::doc(OutcomeKind::Deleted, &id, "document deleted");
        text.push_str(&serde_json::to_string(&p).expect("json"));
        text.push('\n');
    }
    text.push_str(r#"{"kind":"deleted","id":"p4"#);
    std::fs::write(&path, text).expect("write");

    publish(&rows, 31, 40);
    let second = migrate_once(&url, dir.path()).await;
    assert_eq!(second.run.documents, 10);
    assert_eq!(second.report.problems_total, 40);
    assert_eq!(
        file_ids(dir.path()),
        ids(1, 40),
        "each problem once, in order"
    );
    let all = problems_in(&path);
    assert_eq!(second.report.problems, all);
    // The second run's own lines, not the ones left behind: p33 has no versions.
    assert_eq!(all[32].kind, OutcomeKind::Empty);
}

/// `since: 0` over a finished migration reads every document again (a re-check: a version that
/// failed and now verifies would be migrated), but the problems file gets no line twice and the
/// report counts nothing twice: it is what it was, plus what was published meanwhile. The run's
/// own counts say what it read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_zero_over_a_finished_migration_records_no_problem_twice() {
    let (rows, url) = serve_problems(30).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let first = migrate_once(&url, dir.path()).await;
    assert_eq!(first.report.problems_total, 30);
    let state_path = dir.path().join("state.json");
    let first_state = std::fs::read(&state_path).expect("state");
    let from_zero = |dir: &Path| {
        let url = url.clone();
        let dir = dir.to_path_buf();
        async move {
            migration(&url, &dir, |o| o.since = Some(Seq(json!(0))))
                .await
                .run()
                .await
                .expect("migration run")
        }
    };

    let again = from_zero(dir.path()).await;
    assert_eq!(again.run.documents, 30, "every document read again");
    assert_eq!(again.report, first.report, "nothing counted twice");
    assert_eq!(file_ids(dir.path()), ids(1, 30), "no problem written twice");

    // Read again with documents published since: theirs are new, the others still once each.
    publish(&rows, 31, 35);
    let third = from_zero(dir.path()).await;
    assert_eq!(third.run.documents, 35);
    let c = third.report.counts;
    assert_eq!((c.documents, c.deleted + c.empty), (35, 35), "{c:?}");
    assert_eq!(third.report.problems_total, 35);
    assert_eq!(file_ids(dir.path()), ids(1, 35));
    let state = State::load(&state_path)
        .expect("state")
        .expect("a state file");
    assert_eq!((state.problems_total, state.counts), (35, c));

    // The first run's state put back (as a backup restored): the problems file is cut back to
    // its 30 lines, its database forgets the 5 after them, and they are written again, once.
    std::fs::write(&state_path, &first_state).expect("write state");
    let fourth = from_zero(dir.path()).await;
    assert_eq!(fourth.run.documents, 35);
    assert_eq!(fourth.report, third.report);
    assert_eq!(file_ids(dir.path()), ids(1, 35));
}

/// A state file from before the problems file (its report holding every problem) resumes: its
/// problems move into the problems file once, ahead of the new run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_state_file_with_inline_problems_resumes() {
    let (rows, url) = serve_problems(10).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let first = migrate_once(&url, dir.path()).await;
    // The same state as the old format wrote it.
    let state_path = dir.path().join("state.json");
    let new: Value =
        serde_json::from_slice(&std::fs::read(&state_path).expect("state")).expect("json");
    let path = problems_path(dir.path());
    let old = json!({
        "format": 1,
        "source": new["source"],
        "since": new["since"],
        "map_len": new["map_len"],
        "report": {"counts": new["counts"], "problems": problems_in(&path)},
        "caught_up": new["caught_up"],
    });
    std::fs::write(&state_path, serde_json::to_vec_pretty(&old).expect("json")).expect("write");
    std::fs::remove_file(&path).expect("remove problems file");

    publish(&rows, 11, 14);
    let second = migrate_once(&url, dir.path()).await;
    assert_eq!(second.run.documents, 4, "resumed at the old checkpoint");
    assert_eq!(second.report.counts.documents, 14);
    assert_eq!(second.report.problems_total, 14);
    assert_eq!(file_ids(dir.path()), ids(1, 14));
    assert_eq!(second.report.problems[..10], first.report.problems[..]);
    let saved: Value =
        serde_json::from_slice(&std::fs::read(&state_path).expect("state")).expect("json");
    assert_eq!(saved["format"], json!(2));
    assert!(saved.get("report").is_none(), "{saved}");

    // Moved once: a further run adds nothing.
    let third = migrate_once(&url, dir.path()).await;
    assert_eq!(third.run.documents, 0);
    assert_eq!(file_ids(dir.path()), ids(1, 14));
    assert_eq!(third.report, second.report);
}

/// `tarvault migrate couch` prints the first problems, says how many there were and names the
/// file with all of them; `--json` carries the same, bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_shows_the_first_problems_and_names_the_file() {
    let n = KEPT_PROBLEMS as i64 + 7;
    let (_, url) = serve_problems(n).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_path_buf();
    let file = d.join("elsewhere.jsonl");
    let path = |name: &str| d.join(name).display().to_string();
    let mut args: Vec<String> = ["migrate", "couch", "--from", &url, "--to"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(format!("file://{}?fsync=false", path("store")));
    for (flag, name) in [("--state", "s.json"), ("--map", "m.jsonl")] {
        args.extend([flag.to_string(), path(name)]);
    }
    let run = move |extra: Vec<String>| {
        let mut all = args.clone();
        all.extend(extra);
        let out = crate::tarvault(&all.iter().map(String::as_str).collect::<Vec<_>>())
            .output()
            .expect("run tarvault");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run.clone();
    let text = tokio::task::spawn_blocking(move || first(vec![]))
        .await
        .expect("join");
    let beside = format!("{}.problems.jsonl", path("s.json"));
    assert!(
        text.contains(&format!(
            "problems: {n}, all in {beside}; the first {KEPT_PROBLEMS} of them:"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "not migrated, not failures ({KEPT_PROBLEMS} of {n}):"
        )),
        "{text}"
    );
    let listed = text
        .lines()
        .filter(|l| l.starts_with("  deleted p") || l.starts_with("  empty p"))
        .count();
    assert_eq!(listed, KEPT_PROBLEMS);
    assert_eq!(problems_in(Path::new(&beside)).len() as i64, n);

    // --json, into a problems file named with --problems (a new migration: a new state).
    std::fs::remove_file(d.join("s.json")).expect("remove state");
    std::fs::remove_file(d.join("m.jsonl")).expect("remove mapping");
    let extra = vec![
        "--json".to_string(),
        "--problems".to_string(),
        file.display().to_string(),
    ];
    let text = tokio::task::spawn_blocking(move || run(extra))
        .await
        .expect("join");
    let summary: Value = serde_json::from_str(text.trim()).expect("json summary");
    assert_eq!(summary["problems_file"].as_str(), file.to_str());
    assert_eq!(summary["report"]["problems_total"], json!(n));
    let kept = summary["report"]["problems"].as_array().map(Vec::len);
    assert_eq!(kept, Some(KEPT_PROBLEMS));
    assert_eq!(problems_in(&file).len() as i64, n);
}
