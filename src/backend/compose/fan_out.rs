//! One scan's findings handed to several backends' [`Backend::rebuild_aliases`] at once, so that a
//! wrapper's rebuild streams like its members' do instead of collecting the whole store first.

use futures::channel::mpsc;
use futures::stream::{BoxStream, StreamExt};
use futures::SinkExt;

use crate::backend::{AliasRebuild, Backend, RebuildOptions};
use crate::integrity::Digests;
use crate::Result;

/// Records buffered per member ahead of its rebuild.
const BUFFER: usize = 256;

/// Which of the scan's records a member gets.
pub(super) type Filter = Box<dyn Fn(&Digests) -> bool + Send + Sync>;

/// Runs every member's rebuild over the records of `found` its filter keeps, all at once, and
/// returns their results in order. A member that fails stops receiving; the others go on.
pub(super) async fn rebuild_each(
    found: BoxStream<'_, Digests>,
    members: Vec<(&dyn Backend, Filter)>,
    options: &RebuildOptions,
) -> Vec<Result<AliasRebuild>> {
    let mut feeds = Vec::with_capacity(members.len());
    let mut rebuilds = Vec::with_capacity(members.len());
    for (backend, keep) in members {
        let (tx, rx) = mpsc::channel::<Digests>(BUFFER);
        feeds.push((tx, keep));
        rebuilds.push(backend.rebuild_aliases(rx.boxed(), options));
    }
    let feed = async move {
        let mut found = found;
        while let Some(d) = found.next().await {
            for (tx, keep) in feeds.iter_mut() {
                if keep(&d) {
                    // A closed channel is a member whose rebuild ended (failed): its own result
                    // says why.
                    let _ = tx.send(d).await;
                }
            }
        }
        // Dropping the senders ends every member's stream.
    };
    let ((), results) = futures::join!(feed, futures::future::join_all(rebuilds));
    results
}
