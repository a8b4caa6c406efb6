//! The upgrade from the segment log of an earlier version: the old log read through
//! fingerprints, and the marker index answering from it while it imports it.

use super::*;

/// What an earlier version's writer leaves: `n` records, in segments of `per` records.
async fn old_log(mem: &Mem, n: u32, per: usize) -> (Arc<AliasLog<Mem>>, Vec<Digests>) {
    let old = AliasLog::new(mem.clone());
    let all: Vec<Digests> = (0..n).map(digests).collect();
    for chunk in all.chunks(per) {
        ok(old.record(chunk).await);
    }
    (old, all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_of_segments_upgrades_without_a_lookup_failing() {
    let mem = Mem::default();
    let (_, all) = old_log(&mem, 400, 10).await;
    let segments = |mem: &Mem| mem.map().keys().filter(|k| k.starts_with("log/")).count();
    assert!(segments(&mem) > 0);
    // A new process looks everything up while its own import runs in the background.
    let idx = index(&mem, CacheConfig::default());
    for d in &all {
        assert_eq!(
            ok(idx.resolve(&sha1(d)).await),
            Some(BlobKey::new(d.sha512)),
            "during the upgrade"
        );
    }
    // Until the import has deleted the segments and ended (its last requests would count
    // against the lookups below).
    for _ in 0..200 {
        if segments(&mem) == 0 && !idx.importing.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        segments(&mem),
        0,
        "the import deletes the segments it imported"
    );
    let fresh = index(&mem, CacheConfig::default());
    for d in all.iter().step_by(7) {
        let before = mem.count();
        assert_eq!(
            ok(fresh.resolve(&sha1(d)).await),
            Some(BlobKey::new(d.sha512))
        );
        assert_eq!(mem.count() - before, 1, "after the upgrade, one GET");
    }
}

#[tokio::test]
async fn the_old_log_is_read_through_fingerprints_one_get_per_lookup() {
    read_through_fingerprints(usize::MAX).await;
}

/// The same, with every listing's fingerprints in a table on disk (as a log of many segments).
#[tokio::test]
async fn the_old_log_is_read_through_a_table_on_disk_one_get_per_lookup() {
    read_through_fingerprints(1).await;
}

/// The same, where the table's temp file cannot be made: the fingerprints are held in memory.
#[tokio::test]
async fn the_old_log_is_read_through_fingerprints_when_no_temp_file_can_be_made() {
    read_through(1, Some(std::path::Path::new("/nonexistent/tarvault-test"))).await;
}

async fn read_through_fingerprints(spill_from: usize) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    read_through(spill_from, Some(dir.path())).await;
}

/// Reads an old log of 8 segments through a reader that spills `spill_from` new segments or more
/// into a table on disk, in `spill_dir` if given (`held_bytes` tells which was used).
async fn read_through(spill_from: usize, spill_dir: Option<&std::path::Path>) {
    use crate::backend::alias::legacy::LegacyLog;
    let mem = Mem::default();
    let (old, all) = old_log(&mem, 2000, 250).await;
    let mut log = LegacyLog::spilling_from(mem.clone(), spill_from);
    if let Some(dir) = spill_dir {
        log = log.spilling_into(dir);
    }
    let in_memory = spill_from == usize::MAX || spill_dir.is_some_and(|d| !d.exists());
    let key = |d: &Digests| Some(BlobKey::new(d.sha512));
    let now = std::time::Instant::now;
    assert_eq!(ok(log.resolve(&sha1(&all[0]), now()).await), key(&all[0]));
    // Test digests share their first four bytes between sha1 and blake3: one entry each. In a
    // table the memory held is its fan-out (512 KiB) and names, whatever the number of records.
    let held = |records: usize| {
        if in_memory {
            assert_eq!(log.held_bytes(), 8 * records, "fingerprints, not records");
        } else {
            let held = log.held_bytes();
            assert!((512 << 10..530 << 10).contains(&held), "held {held}");
        }
    };
    held(all.len());
    for d in all.iter().step_by(37) {
        for hash in [sha1(d), d.hash(Algorithm::Blake3)] {
            let before = mem.count();
            assert_eq!(ok(log.resolve(&hash, now()).await), key(d));
            assert_eq!(mem.count() - before, 1, "one ranged GET of its line");
        }
    }
    // A miss whose fingerprint no segment holds costs nothing (the listing is fresh)...
    let (before, asked) = (mem.count(), now());
    assert_eq!(ok(log.resolve(&sha1(&digests(5000)), asked).await), None);
    assert_eq!(mem.count() - before, 0);
    assert!(
        !log.changed_since(asked),
        "nothing moved: no need to ask the marker again"
    );
    // ...and one that collides with a record's fingerprint, the one GET that disproves it.
    let mut twin = all[7].sha1;
    twin[19] ^= 1;
    let before = mem.count();
    let collide = Hash::new_unchecked(Algorithm::Sha1, &twin);
    assert_eq!(ok(log.resolve(&collide, now()).await), None);
    assert_eq!(mem.count() - before, 1);
    // A segment another process imported (and deleted) is forgotten when found gone.
    let gone = segment_names(&mem);
    let victim = ok(log.read_segment(&gone[0]).await).unwrap_or_default();
    ok(SegmentStore::delete(&mem, &gone[..1]).await);
    let asked = now();
    assert_eq!(ok(log.resolve(&sha1(&victim[0]), asked).await), None);
    held(all.len() - victim.len());
    assert!(log.changed_since(asked), "its marker is asked again");
    // A segment an older process writes later is found once a listing is due again.
    let late: Vec<Digests> = (3000..3010).map(digests).collect();
    ok(old.record(&late).await);
    // So is a line longer than a ranged read takes (a torn line glued to a record): the segment
    // is then read whole.
    let glued = digests(4000);
    let body = format!("{}{}", "x".repeat(400), line(&glued));
    ok(SegmentStore::put(&mem, "zz-glued", Bytes::from(body)).await);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(ok(log.resolve(&sha1(&late[3]), now()).await), key(&late[3]));
    let before = mem.count();
    assert_eq!(ok(log.resolve(&sha1(&glued), now()).await), key(&glued));
    assert_eq!(mem.count() - before, 2, "a ranged GET, then the segment");
}

/// While a store upgrades, the first lookup's one listing finds the log and reads it, a lookup
/// costs the marker and a ranged GET, and a miss only its marker (and, at most once a second, a
/// listing and the marker again).
#[tokio::test]
async fn during_an_upgrade_the_log_is_listed_once_and_a_miss_is_one_request() {
    let mem = Mem::default();
    let (_, all) = old_log(&mem, 1000, 100).await;
    let idx = index(&mem, CacheConfig::default());
    // As if this process's import were already running (it would add its own requests).
    idx.importing.store(true, Ordering::SeqCst);
    let key = |d: &Digests| Some(BlobKey::new(d.sha512));
    let before = mem.count();
    assert_eq!(ok(idx.resolve(&sha1(&all[0])).await), key(&all[0]));
    assert_eq!(
        mem.count() - before,
        13,
        "the marker, one LIST, the 10 segments, one ranged GET"
    );
    for d in all.iter().skip(1).step_by(50) {
        let before = mem.count();
        assert_eq!(ok(idx.resolve(&sha1(d)).await), key(d));
        assert_eq!(mem.count() - before, 2, "the marker's 404 and a ranged GET");
    }
    let mut listed_at = std::time::Instant::now();
    for i in 5000..5020 {
        let before = mem.count();
        let fresh = listed_at.elapsed() < std::time::Duration::from_millis(900);
        assert_eq!(ok(idx.resolve(&sha1(&digests(i))).await), None);
        if fresh {
            assert_eq!(mem.count() - before, 1, "a miss: its marker only");
        }
        if i == 5010 {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            let before = mem.count();
            assert_eq!(ok(idx.resolve(&sha1(&digests(9000))).await), None);
            assert_eq!(
                mem.count() - before,
                3,
                "the marker, the listing due, the marker again"
            );
            listed_at = std::time::Instant::now();
        }
    }
}

/// Processes that find the old log import it at once (each starts its own import). They share the
/// work: each takes the segments in an order of its own and skips those another has imported and
/// deleted, so four importers cost about what one does, not four times as much.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_importing_at_once_share_the_work() {
    // 40 segments: fewer than the old writer merges (`MERGE_AT`), so the log stays as written.
    let solo = Mem::default();
    old_log(&solo, 4000, 100).await;
    let before = solo.count();
    let alone = ok(index(&solo, CacheConfig::default()).import().await);
    let one = solo.count() - before;
    assert_eq!(alone, 4000);

    let mem = Mem::default();
    let (_, all) = old_log(&mem, 4000, 100).await;
    let before = mem.count();
    let importers: Vec<_> = (0..4)
        .map(|_| {
            let idx = index(&mem, CacheConfig::default());
            tokio::spawn(async move { idx.import().await })
        })
        .collect();
    let mut imported = 0;
    for importer in importers {
        imported += ok(importer.await.unwrap_or_else(|e| panic!("{e}")));
    }
    let four = mem.count() - before;
    assert!(imported >= 4000, "every record imported ({imported})");
    assert!(
        four * 10 < one * 13,
        "four importers made {four} requests, one alone {one}; records imported {imported}"
    );
    let fresh = index(&mem, CacheConfig::default());
    for d in all.iter().step_by(13) {
        assert_eq!(
            ok(fresh.resolve(&sha1(d)).await),
            Some(BlobKey::new(d.sha512))
        );
    }
}

/// Two processes of one host reading the same old log: the first fingerprints it into a table it
/// publishes beside it; the second takes every segment from that table and reads none of them.
/// Once the log is gone, the next listing deletes the table.
#[tokio::test]
async fn a_second_reader_takes_the_log_from_the_table_the_first_published() {
    use crate::backend::alias::legacy::LegacyLog;
    let mem = Mem::default();
    let (_, all) = old_log(&mem, 2000, 100).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let reader = || LegacyLog::spilling_from(mem.clone(), 4).spilling_into(dir.path());
    let tables = || {
        std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tbl"))
            .count()
    };
    let key = |d: &Digests| Some(BlobKey::new(d.sha512));
    let now = std::time::Instant::now;
    let first = reader();
    let before = mem.count();
    assert_eq!(ok(first.resolve(&sha1(&all[0]), now()).await), key(&all[0]));
    assert_eq!(
        mem.count() - before,
        22,
        "a LIST, the 20 segments, a ranged GET"
    );
    assert_eq!(tables(), 1, "published");

    let second = reader();
    let before = mem.count();
    assert_eq!(
        ok(second.resolve(&sha1(&all[1]), now()).await),
        key(&all[1])
    );
    assert_eq!(
        mem.count() - before,
        2,
        "a LIST and a ranged GET: no segment read"
    );
    assert!((512 << 10..530 << 10).contains(&second.held_bytes()));
    for d in all.iter().step_by(41) {
        for log in [&first, &second] {
            let before = mem.count();
            assert_eq!(
                ok(log.resolve(&d.hash(Algorithm::Blake3), now()).await),
                key(d)
            );
            assert_eq!(mem.count() - before, 1);
        }
    }

    // The import has taken every segment: a process that lists the log deletes the table.
    let segments = segment_names(&mem);
    ok(SegmentStore::delete(&mem, &segments).await);
    assert!(!ok(reader().refresh().await));
    assert_eq!(tables(), 0, "deleted once the log is gone");
    assert_eq!(ok(first.resolve(&sha1(&all[2]), now()).await), None);
}

/// The names of the old log's segments in `mem`.
fn segment_names(mem: &Mem) -> Vec<String> {
    mem.map()
        .keys()
        .filter_map(|k| Some(k.strip_prefix("log/")?.to_string()))
        .collect()
}
