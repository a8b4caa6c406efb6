//! Tests of [`FsCacheLedger`](super::FsCacheLedger).

use super::*;

fn key(n: u8) -> BlobKey {
    BlobKey::new([n; 64])
}

/// A fill recorded (one that began now, after any delete).
fn insert(l: &FsCacheLedger, key: &BlobKey, size: u64) {
    let began = micros(SystemTime::now());
    assert!(l.insert_fill(key, size, began).expect("insert"));
}

fn ledger(dir: &tempfile::TempDir) -> FsCacheLedger {
    FsCacheLedger::open(dir.path().join("cache.sqlite")).expect("open")
}

#[test]
fn totals_follow_inserts_uses_and_removals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = ledger(&dir);
    insert(&l, &key(1), 100);
    insert(&l, &key(2), 50);
    insert(&l, &key(1), 120); // again, resized
    assert_eq!(l.totals().expect("totals"), (170, 2));
    // A use of an unknown blob records it; a use of a known one leaves its size.
    l.touch(&[(key(3), 7), (key(2), 999)]).expect("touch");
    assert_eq!(l.totals().expect("totals"), (177, 3));
    l.remove(&key(1)).expect("remove");
    l.remove(&key(9)).expect("remove unknown");
    assert_eq!(l.totals().expect("totals"), (57, 2));
    assert!(l.contains(&key(2)).expect("contains"));
    assert!(!l.contains(&key(1)).expect("contains"));
}

#[test]
fn eviction_takes_the_least_recently_used_and_spares_keep() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = ledger(&dir);
    l.adopt(&[
        (
            key(1),
            10,
            Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(5)),
        ),
        (
            key(2),
            10,
            Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1)),
        ),
    ])
    .expect("adopt");
    for n in 3..=600u16 {
        let k = BlobKey::new([(n % 251) as u8 + 3; 64]);
        insert(&l, &k, 10);
    }
    // key 2 is the oldest, then key 1; then the fills in order. Spare key 2.
    let (bytes, blobs) = l.totals().expect("totals");
    assert_eq!((bytes, blobs), (10 * (2 + 251), 2 + 251));
    l.touch(&[(key(1), 10)])
        .expect("touch key 1: now the newest");
    let victims = l.evict_to(bytes - 25, Some(&key(2))).expect("evict");
    assert_eq!(victims.len(), 3, "{victims:?}");
    assert!(!victims.contains(&key(2)) && !victims.contains(&key(1)));
    assert_eq!(l.totals().expect("totals"), (bytes - 30, blobs - 3));
    // Down to nothing but keep: the scan pages through every entry.
    let all = l.evict_to(0, Some(&key(2))).expect("evict all");
    assert_eq!(all.len() as u64, blobs - 4);
    assert_eq!(l.totals().expect("totals"), (10, 1));
}

/// Blob `i` of a test tier, with a sha512-like key (its row id a random place in the table).
fn hashed(i: u64) -> BlobKey {
    use sha2::Digest;
    BlobKey::new(sha2::Sha512::digest(i.to_le_bytes()).into())
}

/// Records `n` blobs of 10 bytes, blob `i` last used at second `i`.
fn aged(l: &FsCacheLedger, n: u64) -> Vec<BlobKey> {
    let keys: Vec<BlobKey> = (0..n).map(hashed).collect();
    let found: Vec<_> = (0..n)
        .map(|i| {
            let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(i + 1);
            (keys[i as usize], 10, Some(at))
        })
        .collect();
    l.adopt(&found).expect("adopt");
    keys
}

#[test]
fn in_a_tier_no_larger_than_a_sample_eviction_takes_exactly_the_oldest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = ledger(&dir);
    let keys = aged(&l, SAMPLE as u64);
    let victims = l.evict_to(10 * 7, Some(&keys[3])).expect("evict");
    let mut expected: Vec<BlobKey> = keys[..SAMPLE as usize - 6]
        .iter()
        .filter(|k| **k != keys[3])
        .copied()
        .collect();
    let mut got = victims.clone();
    expected.sort_by_key(|k| *k.as_bytes());
    got.sort_by_key(|k| *k.as_bytes());
    assert_eq!(got, expected, "the 25 oldest but the one kept");
    assert_eq!(l.totals().expect("totals"), (70, 7));
}

#[test]
fn in_a_large_tier_victims_come_from_the_oldest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = ledger(&dir);
    let n = 4000u64;
    let keys = aged(&l, n);
    let age: std::collections::HashMap<BlobKey, u64> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, i as u64))
        .collect();
    let victims = l.evict_to(10 * (n - 200), None).expect("evict");
    assert_eq!(victims.len(), 200);
    let ranks: Vec<u64> = victims.iter().map(|k| age[k]).collect();
    let mean = ranks.iter().sum::<u64>() as f64 / ranks.len() as f64;
    // The oldest of 32 random rows is at rank n/33 on average (~121 here); the newest half
    // is never the oldest of a sample but once in 2^32.
    assert!(mean < n as f64 / 10.0, "mean rank {mean} of {n}");
    assert!(ranks.iter().all(|r| *r < n / 2), "{ranks:?}");
    assert_eq!(l.totals().expect("totals"), (10 * (n - 200), n - 200));
}

#[test]
fn a_ledger_of_schema_2_loses_its_index_of_uses_and_keeps_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cache.sqlite");
    {
        let l = ledger(&dir);
        insert(&l, &key(1), 10);
        insert(&l, &key(2), 5);
        l.set_adopted().expect("adopted");
    }
    {
        let c = Connection::open(&path).expect("open");
        c.execute_batch("CREATE INDEX held_used ON held(used); PRAGMA user_version = 2;")
            .expect("make it a schema 2 file");
    }
    let l = ledger(&dir);
    assert_eq!(l.totals().expect("totals"), (15, 2));
    assert!(l.adopted().expect("adopted"));
    let c = Connection::open(&path).expect("open");
    let indexes: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'held_used'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!((indexes, version), (0, SCHEMA_VERSION));
}

#[test]
fn adoption_keeps_existing_records_and_is_remembered_by_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = ledger(&dir);
    assert!(!l.adopted().expect("adopted"));
    insert(&l, &key(1), 10);
    l.adopt(&[(key(1), 99, None), (key(2), 5, None)])
        .expect("adopt");
    l.set_adopted().expect("set");
    assert_eq!(l.totals().expect("totals"), (15, 2));
    drop(l);
    let again = ledger(&dir);
    assert!(again.adopted().expect("adopted"));
    assert_eq!(again.totals().expect("totals"), (15, 2));
}

#[test]
fn a_damaged_file_is_set_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cache.sqlite");
    std::fs::write(&path, vec![0x5a; 8192]).expect("write junk");
    let l = FsCacheLedger::open(&path).expect("open over junk");
    insert(&l, &key(1), 3);
    assert_eq!(l.totals().expect("totals"), (3, 1));
    let aside = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("damaged"))
        .count();
    assert_eq!(aside, 1);
}

#[test]
fn a_file_marked_damaged_is_set_aside_at_the_next_opening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = ledger(&dir);
    insert(&l, &key(1), 3);
    drop(l);
    std::fs::write(damage_marker(&dir.path().join("cache.sqlite")), b"").expect("mark");
    let l = ledger(&dir);
    assert_eq!(l.totals().expect("totals"), (0, 0), "a new ledger");
    assert!(
        !l.adopted().expect("adopted"),
        "the tier is to be taken in again"
    );
    assert!(!damage_marker(&dir.path().join("cache.sqlite")).exists());
}

#[test]
fn blobs_sharing_a_row_id_do_not_take_each_others_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = ledger(&dir);
    let a = key(1);
    let mut b = [1u8; 64];
    b[63] = 2;
    let b = BlobKey::new(b);
    insert(&l, &a, 10);
    insert(&l, &b, 20); // kept by the caller, not recorded
    l.touch(&[(b, 20)]).expect("touch b");
    assert_eq!(l.totals().expect("totals"), (10, 1));
    assert!(l.contains(&a).expect("a") && !l.contains(&b).expect("b"));
    l.remove(&b).expect("remove b");
    assert!(l.contains(&a).expect("a stays"));
}

#[test]
fn a_fill_that_began_before_a_delete_is_not_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = ledger(&dir);
    let before = micros(SystemTime::now());
    insert(&l, &key(1), 10);
    l.deleted(&key(1)).expect("delete");
    assert_eq!(
        l.totals().expect("totals"),
        (0, 0),
        "a delete forgets the record"
    );
    assert!(
        !l.insert_fill(&key(1), 10, before).expect("fill"),
        "began before"
    );
    assert!(!l.contains(&key(1)).expect("contains"));
    let after = micros(SystemTime::now()) + 1;
    assert!(
        l.insert_fill(&key(1), 10, after).expect("fill"),
        "began after"
    );
    assert!(
        l.insert_fill(&key(2), 5, before).expect("fill"),
        "another blob"
    );
    assert_eq!(l.totals().expect("totals"), (15, 2));
}
