//! Reading a blob's body: a GET whose connection drops, or goes silent, mid-way is resumed where
//! it stopped.

use futures::stream::{self, BoxStream, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;

use super::MantaClient;
use crate::backend::ByteStream;
use crate::{Error, Result};

/// The body of a GET as a stream that, when the connection drops mid-way or no data arrives
/// for the response timeout, asks again for the rest (`Range` from where it stopped,
/// `If-Match` the same etag, as node-manta's mget does), within the attempt budget. The store
/// still verifies every byte.
pub(super) fn stream_of(
    client: &MantaClient,
    backend: String,
    resp: reqwest::Response,
    path: String,
    start: u64,
) -> ByteStream {
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"').to_string());
    let len = resp.content_length();
    let state = Resume {
        client: client.clone(),
        backend,
        path,
        etag,
        body: Some(resp.bytes_stream().boxed()),
        pos: start,
        end: len.map(|n| start + n),
        left: client.config().max_attempts.saturating_sub(1),
        done: false,
    };
    stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            let Some(body) = st.body.as_mut() else {
                match st.reopen().await {
                    Ok(()) => continue,
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            };
            // The response timeout covers the head only (`MantaClient::send`): each chunk of
            // the body gets the same allowance, so a server that stalls mid-body (the socket
            // left open) costs bounded time and is resumed like a dropped connection.
            let idle = st.client.config().response_timeout;
            let failure = match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(Ok(chunk))) => {
                    st.pos += chunk.len() as u64;
                    return Some((Ok(chunk), st));
                }
                Ok(None) if st.end.is_none_or(|end| st.pos >= end) => return None,
                Ok(None) => format!("connection closed at byte {}", st.pos),
                Ok(Some(Err(e))) => crate::ErrorReport::new(&e).to_string(),
                Err(_) => format!("no data for {idle:?} at byte {}", st.pos),
            };
            if st.end.is_some_and(|end| st.pos >= end) {
                // Every byte arrived; the store's verification judges them.
                return None;
            }
            if st.left == 0 || st.end.is_none() {
                st.done = true;
                let err = Error::backend(
                    st.backend.clone(),
                    format!("reading {}: {failure}", st.path),
                );
                return Some((Err(err), st));
            }
            tracing::debug!(
                path = st.path,
                pos = st.pos,
                failure,
                "GET cut off; resuming"
            );
            st.left -= 1;
            st.body = None;
        }
    })
    .boxed()
}

/// State of a resumable GET body (see [`stream_of`]).
struct Resume {
    client: MantaClient,
    backend: String,
    path: String,
    etag: Option<String>,
    body: Option<BoxStream<'static, reqwest::Result<bytes::Bytes>>>,
    pos: u64,
    end: Option<u64>,
    left: u32,
    done: bool,
}

impl Resume {
    async fn reopen(&mut self) -> Result<()> {
        let end = self.end.unwrap_or(self.pos);
        let mut headers = HeaderMap::new();
        let range = format!("bytes={}-{}", self.pos, end.saturating_sub(1));
        headers.insert(
            "range",
            HeaderValue::from_str(&range).map_err(|e| Error::InvalidInput(e.to_string()))?,
        );
        if let Some(etag) = &self.etag {
            if let Ok(v) = HeaderValue::from_str(etag) {
                headers.insert("if-match", v);
            }
        }
        let resp = self.client.get(&self.path, headers).await?;
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(self
                .client
                .api_error(&reqwest::Method::GET, &self.path, resp)
                .await);
        }
        self.body = Some(resp.bytes_stream().boxed());
        Ok(())
    }
}
