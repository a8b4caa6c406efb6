//! Two `tarvault migrate couch` processes at once on the same state and mapping (the defaults are
//! file names in the working directory, so two runs started in one directory share them).

use std::time::{Duration, Instant};

use serde_json::Value;
use tarvault::migrate::State;

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

    first.stop();
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

/// Two migrations sharing a state file, each with its own mapping and problems file: the second
/// must be refused as well. Both would checkpoint into the one state file, each recording its own
/// files' lengths, so whichever saved last leaves a state that vouches for the other's mapping
/// (cut back, or refused as shorter than recorded, by the next run). The state file is replaced by
/// rename at every checkpoint, so its lock is on `<state>.lock` beside it.
#[test]
fn a_second_migration_sharing_only_the_state_file_is_refused() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let Some(couch) = couch() else {
        return;
    };
    let mut first = Following::start(&rt, &couch, "sharedstate", 2);
    let state = first.dir.path().join("state.json");
    // The first run's checkpoint of what it mapped (within a second of the mapping's lines), so
    // that nothing but the second run could change the state file from here.
    let deadline = Instant::now() + Duration::from_secs(30);
    while State::load(&state).ok().flatten().map(|s| s.map_len)
        != std::fs::metadata(first.map()).ok().map(|m| m.len())
    {
        assert!(
            Instant::now() < deadline,
            "the first run never checkpointed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = std::fs::read(&state).expect("state file");
    let other = tempfile::tempdir().expect("tempdir");
    let (map, problems) = (other.path().join("map.jsonl"), other.path().join("p.jsonl"));
    let mut args = first.args.clone();
    let at = args.iter().position(|a| a == "--map").expect("--map") + 1;
    args[at] = map.display().to_string();
    args.extend(["--problems".to_string(), problems.display().to_string()]);

    let second = run(&args, &[]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("another migration") && stderr.contains(&*state.display().to_string()),
        "the refusal names the state file: {stderr}"
    );
    assert_eq!(
        std::fs::read(&state).expect("state file"),
        before,
        "state file touched"
    );
    assert!(
        !map.exists() && !problems.exists(),
        "the second run wrote files"
    );

    first.stop();
}
