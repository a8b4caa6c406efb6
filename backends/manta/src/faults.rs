//! Fault injection: 503s (`ServiceUnavailable` / `ThrottledError`, as muskie
//! sends them when overloaded), slow responses and dropped connections.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::error::ApiError;
use crate::http::Body;

/// Fault switches (all off by default). Rates are fractions in `0.0..=1.0`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Fraction of requests answered 503 before anything else runs.
    pub fail_503_rate: f64,
    /// Delay added before each request is handled.
    pub slow_ms: u64,
    /// Fraction of requests whose connection is dropped: mid-body for
    /// uploads and for responses with a body, before answering otherwise.
    pub drop_rate: f64,
}

/// What happens to one request.
#[derive(Debug, Default)]
pub struct Decision {
    pub delay: Option<Duration>,
    pub fail: Option<ApiError>,
    pub drop: bool,
}

/// A tiny deterministic PRNG (xorshift64*), seedable for reproducible tests.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: Option<u64>) -> Self {
        let seed = seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9E37_79B9_7F4A_7C15)
        });
        Rng(seed | 1)
    }

    pub fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Faults {
    /// Rolls the dice for one request.
    pub fn decide(&self, rng: &mut Rng) -> Decision {
        let mut d = Decision::default();
        if self.slow_ms > 0 {
            d.delay = Some(Duration::from_millis(self.slow_ms));
        }
        if self.fail_503_rate > 0.0 && rng.next_f64() < self.fail_503_rate {
            d.fail = Some(if rng.next_f64() < 0.5 {
                ApiError::service_unavailable()
            } else {
                ApiError::throttled()
            });
            return d;
        }
        if self.drop_rate > 0.0 && rng.next_f64() < self.drop_rate {
            d.drop = true;
        }
        d
    }
}

/// A body that fails (so hyper aborts the connection) after `limit` bytes.
pub struct Truncated {
    inner: Body,
    remaining: u64,
}

impl Truncated {
    pub fn new(inner: Body, limit: u64) -> Self {
        Truncated {
            inner,
            remaining: limit,
        }
    }
}

impl HttpBody for Truncated {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "fault injection: connection dropped",
            ))));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    if data.len() as u64 > self.remaining {
                        data.truncate(self.remaining as usize);
                    }
                    self.remaining -= data.len() as u64;
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        let mut rng = Rng::new(Some(42));
        let all = Faults {
            fail_503_rate: 1.0,
            ..Faults::default()
        };
        assert!((0..50).all(|_| all.decide(&mut rng).fail.is_some()));
        let none = Faults::default();
        assert!((0..50).all(|_| {
            let d = none.decide(&mut rng);
            d.fail.is_none() && !d.drop && d.delay.is_none()
        }));
        let half = Faults {
            drop_rate: 0.5,
            ..Faults::default()
        };
        let drops = (0..1000).filter(|_| half.decide(&mut rng).drop).count();
        assert!((400..600).contains(&drops), "{drops}");
    }
}
