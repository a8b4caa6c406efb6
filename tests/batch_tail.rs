//! A batch's last blobs are not held back waiting for inputs that are not coming.
//!
//! In a test binary of its own: the queue that hashes small blobs' sha512 eight at a time is one
//! per process, and blobs another test has in flight would rightly make these wait for them.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use sha2::Digest;
use tarvault::backend::memory::MemoryBackend;
use tarvault::{PutOptions, Store};

/// The runtime's clock is paused: it moves only when every task waits on a timer, and then jumps
/// to the next one. A batch that never needs a timer therefore finishes at the instant it began,
/// however slow the machine; one whose last blob waits for company (up to 1 ms) does not.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_last_blobs_of_a_batch_are_hashed_without_waiting_for_more() {
    let store = Store::new(MemoryBackend::new());
    for n in [1usize, 2, 3, 7, 9, 17] {
        let blobs: Vec<Bytes> = (0..n)
            .map(|i| Bytes::from(vec![(n + i) as u8; 20 * 1024 + n * 32 + i]))
            .collect();
        let inputs = blobs
            .iter()
            .map(|b| {
                let stream = futures::stream::iter([Ok::<_, std::io::Error>(b.clone())]).boxed();
                (stream, PutOptions::default())
            })
            .collect();
        let began = tokio::time::Instant::now();
        let results = store.put_batch(inputs).await;
        let waited = began.elapsed();
        assert_eq!(results.len(), n);
        for (blob, result) in blobs.iter().zip(results) {
            let out = result.expect("put");
            assert_eq!(out.digests.sha512[..], sha2::Sha512::digest(blob)[..]);
            assert!(out.stored);
        }
        assert_eq!(
            waited,
            Duration::ZERO,
            "a batch of {n} small blobs waited on a timer once its inputs had ended"
        );
    }
}
