//! What a walk of the store costs on a real server: `ls`, `gc` and a cache taking in its local
//! tier need each blob's size and time, which the listing carries; they must not send a `HEAD`
//! per blob (40M round trips at 40M blobs, where the listing is 40,000 pages).

use std::time::Duration;

use futures::TryStreamExt;
use tarvault::ops::gc::{gc, GcOptions};
use tarvault::Store;

use super::markers::{counted, put_some};
use super::Server;

/// `list_meta` and a dry-run `gc` read the listing alone; `list_info` (whose digests only a
/// `HEAD` brings) heads each blob.
pub async fn walks_list_without_a_head_per_blob(s: &Server) {
    let prefix = Server::fresh_prefix("walk");
    let blobs = put_some(s, &prefix, 40).await;
    let (backend, counts) = counted(s, &prefix);
    let store = Store::new(backend);

    let before = counts.gets();
    let mut want: Vec<_> = blobs
        .iter()
        .map(|(data, d)| {
            (
                tarvault::backend::BlobKey::new(d.sha512),
                data.len() as u64,
                true,
            )
        })
        .collect();
    want.sort();
    assert_eq!(crate::common::listed_meta(&store).await, want);
    assert_eq!(counts.gets(), before, "list_meta sent a HEAD or GET");

    // Keep half; the rest is garbage, but younger than the grace period.
    let keep: Vec<_> = blobs[..20].iter().map(|(_, d)| Ok(d.integrity())).collect();
    let report = gc(&store, keep, &GcOptions::default(), |_, _| {})
        .await
        .expect("gc");
    assert_eq!((report.listed, report.kept_recent), (40, 20));
    // Its live set is looked up by sha512 (no request); its walk is the listing.
    assert_eq!(counts.gets(), before, "gc sent a HEAD or GET per blob");
    let report = gc(
        &store,
        blobs.iter().map(|(_, d)| Ok(d.integrity())).take(20),
        &GcOptions {
            grace: Duration::ZERO,
            delete: false,
        },
        |_, _| {},
    )
    .await
    .expect("gc");
    assert_eq!(report.garbage, 20);

    let infos: Vec<_> = store.list_info().try_collect().await.expect("list_info");
    assert!(infos.iter().all(|i| i.digests.is_some()));
    assert_eq!(counts.gets(), before + 40, "list_info heads each blob once");
}

/// A copy into an S3 store lists it once instead of asking it about each blob: the blobs it
/// already has cost no request; the others are still asked for before they are read. With
/// `list_target` off, each blob is asked for.
pub async fn a_copy_lists_its_target_once(s: &Server) {
    #[cfg(feature = "memory")]
    {
        use tarvault::ops::copy::{copy, CopyOptions};
        // The same noise as the first 10 of the source's 30 goes into each target first.
        let source = Store::memory();
        crate::common::put_noise(&source, 30, (900, 1), 7_000).await;
        let mut gets = Vec::new();
        for list_target in [true, false] {
            let prefix = Server::fresh_prefix("copyto");
            let (backend, counts) = counted(s, &prefix);
            let target = Store::new(backend);
            crate::common::put_noise(&target, 10, (900, 1), 7_000).await;
            let (before, lists) = (counts.gets(), counts.lists());
            let options = CopyOptions {
                list_target,
                ..CopyOptions::default()
            };
            let report = copy(&source, &target, &options, |_| {})
                .await
                .expect("copy");
            assert_eq!((report.copied, report.skipped), (20, 10), "{report:?}");
            assert_eq!(counts.lists() - lists, u64::from(list_target));
            gets.push(counts.gets() - before);
            assert_eq!(crate::common::listed_meta(&target).await.len(), 30);
        }
        assert_eq!(
            gets[1] - gets[0],
            10,
            "HEADs with and without the listing: {gets:?}"
        );
    }
    #[cfg(not(feature = "memory"))]
    let _ = s;
}
