//! Running a stream's jobs several at a time, finishing in any order, yielding in input order.
//!
//! Why not `StreamExt::buffered`: it counts a finished job that waits behind an unfinished
//! earlier one as one of its `n`, so one large blob at the head of a batch leaves the rest of the
//! window finished and idle while it is hashed alone on one core (head-of-line blocking; the
//! corpus, 1.6 KB to 5.8 MB a tarball, ran on 1.3 of 2 cores). Here `parallel` bounds the jobs
//! *running*, and a separate `window` bounds how far past the oldest unfinished job inputs are
//! taken, so finished results waiting for their turn stay few whatever the mix of sizes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::{FusedStream, FuturesUnordered};
use futures::{FutureExt, Stream, StreamExt};

/// A job's output with its place in the input.
type Numbered<T> = BoxFuture<'static, (u64, T)>;

/// See the module doc. An input is taken from `inputs` (and its job started) only when fewer
/// than `parallel` jobs run and fewer than `window` inputs are taken and not yet yielded.
pub(crate) struct InOrder<I, F, T> {
    inputs: futures::stream::Fuse<I>,
    start: F,
    running: FuturesUnordered<Numbered<T>>,
    /// Outputs of the inputs taken and not yet yielded, from the oldest: `None` while running.
    waiting: VecDeque<Option<T>>,
    /// Number of the oldest input not yet yielded.
    first: u64,
    parallel: usize,
    window: usize,
}

impl<I, F, T> InOrder<I, F, T>
where
    I: Stream,
    F: FnMut(I::Item) -> BoxFuture<'static, T>,
    T: Send + 'static,
{
    pub(crate) fn new(inputs: I, parallel: usize, window: usize, start: F) -> Self {
        InOrder {
            inputs: inputs.fuse(),
            start,
            running: FuturesUnordered::new(),
            waiting: VecDeque::new(),
            first: 0,
            parallel: parallel.max(1),
            window: window.max(parallel).max(1),
        }
    }
}

impl<I, F, T> Stream for InOrder<I, F, T>
where
    I: Stream + Unpin,
    F: FnMut(I::Item) -> BoxFuture<'static, T> + Unpin,
    T: Send + Unpin + 'static,
{
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        loop {
            // Start jobs while there is room; an input that is not ready leaves its waker here.
            while this.running.len() < this.parallel && this.waiting.len() < this.window {
                match this.inputs.poll_next_unpin(cx) {
                    Poll::Ready(Some(input)) => {
                        let number = this.first + this.waiting.len() as u64;
                        let job = (this.start)(input);
                        this.running.push(job.map(move |out| (number, out)).boxed());
                        this.waiting.push_back(None);
                    }
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
            if matches!(this.waiting.front(), Some(Some(_))) {
                this.first += 1;
                return Poll::Ready(this.waiting.pop_front().flatten());
            }
            match this.running.poll_next_unpin(cx) {
                Poll::Ready(Some((number, out))) => {
                    let at = usize::try_from(number - this.first).unwrap_or(usize::MAX);
                    if let Some(place) = this.waiting.get_mut(at) {
                        *place = Some(out);
                    }
                }
                // Nothing runs: either the inputs have ended (and, nothing running, every taken
                // one has been yielded), or the next input is not ready and will wake us.
                Poll::Ready(None) => {
                    return if this.inputs.is_terminated() && this.waiting.is_empty() {
                        Poll::Ready(None)
                    } else {
                        Poll::Pending
                    };
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InOrder;
    use futures::{FutureExt, StreamExt};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Jobs of very different lengths come out in input order, never more than `parallel` run at
    /// once, and a long job at the head does not stop the others from running: while it runs,
    /// the jobs behind it (up to the window) all start and finish.
    #[tokio::test(start_paused = true)]
    async fn outputs_in_order_while_a_long_head_job_runs() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let head_done_after = Arc::new(AtomicUsize::new(usize::MAX));
        let inputs = futures::stream::iter(0..100u64);
        let (r, m, f, h) = (
            running.clone(),
            most.clone(),
            finished.clone(),
            head_done_after.clone(),
        );
        let out: Vec<u64> = InOrder::new(inputs, 4, 32, move |i: u64| {
            let (r, m, f, h) = (r.clone(), m.clone(), f.clone(), h.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                // Input 0 takes as long as all the others together.
                let ms = if i == 0 { 1000 } else { 10 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                let done_before = f.fetch_add(1, Ordering::SeqCst);
                if i == 0 {
                    h.store(done_before, Ordering::SeqCst);
                }
                i
            }
            .boxed()
        })
        .collect()
        .await;
        assert_eq!(out, (0..100).collect::<Vec<_>>());
        assert!(most.load(Ordering::SeqCst) <= 4);
        assert_eq!(most.load(Ordering::SeqCst), 4);
        // With `buffered(4)`, nothing after the first four would have run before input 0 was
        // done; here the window (32) fills behind it.
        assert_eq!(head_done_after.load(Ordering::SeqCst), 31);
    }

    /// Inputs that come slowly are each started as they come, and the stream ends after the last.
    #[tokio::test(start_paused = true)]
    async fn slow_inputs_and_the_end() {
        let inputs = futures::stream::iter(0..10u64).then(|i| async move {
            tokio::time::sleep(Duration::from_millis(7)).await;
            i
        });
        let out: Vec<u64> = InOrder::new(Box::pin(inputs), 3, 3, |i: u64| {
            async move {
                tokio::time::sleep(Duration::from_millis(20 - 2 * i)).await;
                i * 10
            }
            .boxed()
        })
        .collect()
        .await;
        assert_eq!(out, (0..10).map(|i| i * 10).collect::<Vec<_>>());
        let none: Vec<u64> = InOrder::new(futures::stream::iter(Vec::<u64>::new()), 3, 3, |i| {
            async move { i }.boxed()
        })
        .collect()
        .await;
        assert!(none.is_empty());
    }
}
