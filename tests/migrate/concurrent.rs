//! Two `tarvault migrate couch` processes at once on the same state and mapping (the defaults are
//! file names in the working directory, so two runs started in one directory share them).

use serde_json::Value;

use crate::{couch, json_summary, read_map, run, Following};

/// While one migration runs (here: following the feed), a second one on the same state and
/// mapping must be refused before it touches them. Without that, both cut the mapping back to the
/// checkpoint they read and append to it, each at its own offset: the mapping got a version twice
/// and a torn line, and every later run refused it (status 2) until it was repaired by hand.
#[test]
fn a_second_migration_on_the_same_state_is_refused_while_the_first_runs() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let Some(couch) = couch() else {
        return;
    };
    let mut first = Following::start(&rt, &couch, "twoatonce", 4);
    let (args, want, map) = (first.args.clone(), first.want, first.map());
    // (The state file is the first run's to write meanwhile: it checkpoints after the mapping.)
    let before = std::fs::read(&map).expect("mapping");

    let second = run(&args, &[]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("another migration"),
        "the refusal says why: {stderr}"
    );
    assert_eq!(
        std::fs::read(&map).expect("mapping"),
        before,
        "mapping touched"
    );

    let out = first.stop();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, entries) = read_map(&map);
    assert_eq!(entries.len(), want);

    // Once the first has stopped, the second may run: it finds everything done.
    let again = run(&args, &[]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(json_summary(&again)["run"]["migrated"], Value::from(0));
    assert_eq!(read_map(&map).1.len(), want);
}
