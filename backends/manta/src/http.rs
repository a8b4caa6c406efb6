//! Request context, body helpers and response builders shared by the routes.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt as _, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Response, StatusCode};
use md5::{Digest, Md5};
use tokio::io::AsyncWriteExt as _;

use crate::error::ApiError;
use crate::server::State;
use crate::store::MPath;

/// Response body type of every route.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// How a request ends when it does not end with a response.
#[derive(Debug)]
pub enum Failure {
    /// Answer with a muskie error.
    Api(ApiError),
    /// Fault injection: close the connection without answering.
    Drop,
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Api(e.into())
    }
}

pub type RouteResult = Result<Response<Body>, Failure>;

/// Muskie's `MUSKIE_DATA_TIMEOUT`: no upload data for this long gives 408.
pub const DATA_TIMEOUT: Duration = Duration::from_secs(45);

/// Everything a route needs to know about the request.
pub struct Ctx {
    pub state: Arc<State>,
    pub method: Method,
    pub path: MPath,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Option<Incoming>,
    /// Fault injection asked to cut this request's body short.
    pub drop_body: bool,
}

impl Ctx {
    /// Node's `req.headers[name]`.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut vals = self.headers.get_all(name).iter().peekable();
        vals.peek()?;
        Some(
            vals.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_head(&self) -> bool {
        self.method == Method::HEAD
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"))
    }

    /// Content-Length if the request sent one.
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
    }

    /// The content type as muskie's router sees it.
    pub fn content_type(&self) -> Option<String> {
        self.header("content-type")
    }

    /// Streams the request body into `dest` (polling the body is what makes
    /// hyper send `100 Continue`, so call this only once validation passed).
    /// Returns (bytes, md5).
    pub async fn stream_body_to(
        &mut self,
        dest: &Path,
        max: Option<u64>,
    ) -> Result<(u64, [u8; 16]), Failure> {
        let mut file = tokio::fs::File::create(dest).await?;
        let res = self.copy_body(&mut file, max).await;
        match res {
            Ok(r) => {
                file.flush().await?;
                Ok(r)
            }
            Err(e) => {
                drop(file);
                let _ = tokio::fs::remove_file(dest).await;
                Err(e)
            }
        }
    }

    async fn copy_body(
        &mut self,
        file: &mut tokio::fs::File,
        max: Option<u64>,
    ) -> Result<(u64, [u8; 16]), Failure> {
        let mut md5 = Md5::new();
        let mut total: u64 = 0;
        let Some(mut body) = self.body.take() else {
            return Ok((0, md5.finalize().into()));
        };
        loop {
            let frame = match tokio::time::timeout(DATA_TIMEOUT, body.frame()).await {
                Err(_) => return Err(ApiError::upload_timeout().into()),
                Ok(None) => break,
                Ok(Some(Err(_))) => return Err(ApiError::upload_abandoned().into()),
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total += data.len() as u64;
            if let Some(max) = max {
                if total > max {
                    return Err(ApiError::max_size_exceeded(max).into());
                }
            }
            md5.update(&data);
            file.write_all(&data).await?;
            if self.drop_body {
                return Err(Failure::Drop);
            }
        }
        Ok((total, md5.finalize().into()))
    }

    /// Reads a small request body (JSON) into memory, checking an optional
    /// `Content-MD5` as restify's body reader does.
    pub async fn read_small_body(&mut self, max: usize) -> Result<Bytes, Failure> {
        let Some(body) = self.body.take() else {
            return Ok(Bytes::new());
        };
        let limited = http_body_util::Limited::new(body, max);
        let bytes = match limited.collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => {
                return Err(ApiError::new(
                    413,
                    "RequestEntityTooLarge",
                    format!("Request body size exceeds {max}"),
                )
                .into())
            }
        };
        if self.drop_body {
            return Err(Failure::Drop);
        }
        if let Some(want) = self.header("content-md5") {
            if crate::util::md5_b64(&bytes) != want.trim() {
                return Err(ApiError::bad_digest().into());
            }
        }
        Ok(bytes)
    }
}

/// A response builder that never fails on header values.
pub struct Resp {
    status: StatusCode,
    headers: HeaderMap,
}

impl Resp {
    pub fn new(status: u16) -> Self {
        Resp {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            headers: HeaderMap::new(),
        }
    }

    pub fn header(mut self, name: &str, value: impl AsRef<str>) -> Self {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.as_ref()),
        ) {
            self.headers.append(n, v);
        }
        self
    }

    pub fn headers(mut self, hs: &[(String, String)]) -> Self {
        for (k, v) in hs {
            self = self.header(k, v);
        }
        self
    }

    pub fn body(self, body: Body) -> Response<Body> {
        let mut r = Response::new(body);
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers;
        r
    }

    pub fn empty(self) -> Response<Body> {
        self.body(empty())
    }

    pub fn bytes(self, b: impl Into<Bytes>) -> Response<Body> {
        self.body(full(b))
    }

    /// A JSON body as restify's formatJSON sends it (with Content-MD5).
    pub fn json(self, text: String) -> Response<Body> {
        let md5 = crate::util::md5_b64(text.as_bytes());
        self.header("content-type", "application/json")
            .header("content-length", text.len().to_string())
            .header("content-md5", md5)
            .bytes(text)
    }
}

pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Streams `len` bytes of a file from `offset`.
pub fn file_body(file: std::fs::File, offset: u64, len: u64) -> Body {
    use std::io::Seek as _;
    use tokio::io::AsyncReadExt as _;
    let mut file = file;
    if offset > 0 {
        if let Err(e) = file.seek(io::SeekFrom::Start(offset)) {
            let s = futures_util::stream::once(async move { Err::<Frame<Bytes>, io::Error>(e) });
            return StreamBody::new(s).boxed_unsync();
        }
    }
    let reader = tokio::fs::File::from_std(file).take(len);
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024).map_ok(Frame::data);
    StreamBody::new(stream).boxed_unsync()
}

/// The error response muskie sends (HEAD gets the headers only).
pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = Resp::new(e.status.as_u16());
    for (k, v) in &e.headers {
        r = r.header(k, v);
    }
    r.json(e.body())
}
