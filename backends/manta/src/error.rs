//! Manta's REST errors, as muskie (`lib/errors.js`) and restify send them:
//! `{"code":"<restCode>","message":"..."}` with the exact codes and statuses.

use hyper::StatusCode;

/// An error answered to the client as muskie would.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra response headers (`Content-Range`, `Retry-After`, ...).
    pub headers: Vec<(&'static str, String)>,
}

fn dirname(p: &str) -> String {
    match p.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => p[..i].to_string(),
        None => ".".to_string(),
    }
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    // --- authentication (restify + muskie lib/auth.js) ---

    pub fn invalid_header(msg: impl Into<String>) -> Self {
        Self::new(400, "InvalidHeader", msg)
    }
    pub fn request_expired(date: &str) -> Self {
        Self::new(
            400,
            "RequestExpired",
            format!("Date header {date} is too old"),
        )
    }
    pub fn auth_scheme(scheme: &str) -> Self {
        Self::new(
            403,
            "AuthorizationSchemeNotAllowed",
            format!("{scheme} is not allowed (use 'signature')"),
        )
    }
    pub fn invalid_algorithm(alg: &str) -> Self {
        Self::new(
            401,
            "InvalidAlgorithm",
            format!(
                "{alg} is not a supported signing algorithm. Supported algorithms are \
                 RSA-SHA1, RSA-SHA256, RSA-SHA384, RSA-SHA512, DSA-SHA1, DSA-SHA256, \
                 ECDSA-SHA256, ECDSA-SHA384, ECDSA-SHA512"
            ),
        )
    }
    pub fn invalid_key_id() -> Self {
        Self::new(
            403,
            "InvalidKeyId",
            "the KeyId token you provided is invalid",
        )
    }
    pub fn account_does_not_exist(account: &str) -> Self {
        Self::new(
            403,
            "AccountDoesNotExist",
            format!("{account} does not exist"),
        )
    }
    pub fn user_does_not_exist(account: &str, user: &str) -> Self {
        Self::new(
            403,
            "UserDoesNotExist",
            format!("{account}/{user} does not exist"),
        )
    }
    pub fn key_does_not_exist(account: &str, key: &str) -> Self {
        Self::new(
            403,
            "KeyDoesNotExist",
            format!("/{account}/keys/{key} does not exist"),
        )
    }
    pub fn invalid_signature() -> Self {
        Self::new(
            403,
            "InvalidSignature",
            "The signature we calculated does not match the one you sent",
        )
    }
    pub fn authorization_failed(login: &str, path: &str) -> Self {
        Self::new(
            403,
            "AuthorizationFailed",
            format!("{login} is not allowed to access {path}"),
        )
    }
    pub fn presigned(msg: impl Into<String>) -> Self {
        Self::new(403, "InvalidQueryStringAuthentication", msg)
    }

    // --- storage (muskie lib/errors.js) ---

    pub fn resource_not_found(path: &str) -> Self {
        Self::new(404, "ResourceNotFound", format!("{path} was not found"))
    }
    pub fn no_route(path: &str) -> Self {
        Self::new(404, "ResourceNotFound", format!("{path} does not exist"))
    }
    pub fn directory_does_not_exist(path: &str) -> Self {
        Self::new(
            404,
            "DirectoryDoesNotExist",
            format!("{} does not exist", dirname(path)),
        )
    }
    pub fn parent_not_directory(path: &str) -> Self {
        Self::new(
            400,
            "ParentNotDirectory",
            format!("{} is not a directory", dirname(path)),
        )
    }
    pub fn directory_not_empty(path: &str) -> Self {
        Self::new(400, "DirectoryNotEmpty", format!("{path} is not empty"))
    }
    pub fn directory_operation(path: &str, method: &str) -> Self {
        Self::new(
            400,
            "OperationNotAllowedOnDirectory",
            format!("{path} is a directory: {method} is not allowed"),
        )
    }
    pub fn root_directory(method: &str, path: &str) -> Self {
        Self::new(
            400,
            "OperationNotAllowedOnRootDirectory",
            format!("{method} is not allowed on {path}"),
        )
    }
    pub fn content_md5_mismatch(expected: &str, actual: &str) -> Self {
        Self::new(
            400,
            "ContentMD5Mismatch",
            format!("Content-MD5 expected {expected}, but was {actual}"),
        )
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }
    pub fn content_length_required() -> Self {
        Self::new(411, "ContentLengthRequired", "Content-Length must be >= 0")
    }
    pub fn invalid_max_content_length(len: &str) -> Self {
        Self::new(
            400,
            "InvalidMaxContentLength",
            format!("{len} is an invalid max-content-length value"),
        )
    }
    pub fn max_size_exceeded(max: u64) -> Self {
        Self::new(
            413,
            "MaxContentLengthExceeded",
            format!("request has exceeded {max} bytes"),
        )
    }
    pub fn invalid_durability(min: u32, max: u32) -> Self {
        Self::new(
            400,
            "InvalidDurabilityLevel",
            format!("durability-level must be between {min} and {max}"),
        )
    }
    pub fn invalid_update(key: &str, extra: &str) -> Self {
        Self::new(
            400,
            "InvalidUpdate",
            format!("overwrite of \"{key}\" forbidden{extra}"),
        )
    }
    pub fn invalid_limit(l: &str) -> Self {
        Self::new(
            400,
            "InvalidArgumentError",
            format!("limit={l} is invalid: must be between [1, 1024]"),
        )
    }
    pub fn invalid_parameter(k: &str, v: &str) -> Self {
        Self::new(
            400,
            "InvalidParameter",
            format!("\"{v}\" is invalid for \"{k}\""),
        )
    }
    pub fn query_forbidden(params: &[&str]) -> Self {
        Self::new(
            403,
            "QueryParameterForbidden",
            format!(
                "Use of these query parameters is restricted to operators: {}",
                params.join(", ")
            ),
        )
    }
    pub fn invalid_path(path: &str) -> Self {
        Self::new(400, "InvalidResource", format!("\"{path}\" is invalid"))
    }
    pub fn precondition_failed(msg: impl Into<String>) -> Self {
        Self::new(412, "PreconditionFailed", msg)
    }
    pub fn range_not_satisfiable(range: &str, size: u64) -> Self {
        Self::new(
            416,
            "RequestedRangeNotSatisfiable",
            format!("{range} is an invalid range"),
        )
        .with_header("content-range", format!("bytes */{size}"))
    }
    pub fn not_implemented(msg: impl Into<String>) -> Self {
        Self::new(501, "NotImplemented", msg)
    }
    pub fn not_acceptable(path: &str, ty: &str) -> Self {
        Self::new(406, "NotAcceptable", format!("{path} accepts {ty}"))
    }
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(405, "MethodNotAllowed", format!("{method} is not allowed"))
    }
    pub fn upload_timeout() -> Self {
        Self::new(408, "UploadTimeout", "request took too long to send data")
            .with_header("connection", "close")
    }
    pub fn upload_abandoned() -> Self {
        Self::new(
            499,
            "UploadAbandoned",
            "request was aborted prematurely by the client",
        )
    }
    pub fn bad_digest() -> Self {
        Self::new(400, "BadDigest", "Content-MD5 did not match")
    }
    pub fn invalid_content(msg: impl Into<String>) -> Self {
        Self::new(400, "InvalidContent", msg)
    }

    // --- SnapLinks (mantav1 lib/link.js) ---

    pub fn location_required() -> Self {
        Self::new(
            400,
            "LocationRequired",
            "An HTTP Location header must be specified",
        )
    }
    pub fn source_not_found(location: &str) -> Self {
        Self::new(
            404,
            "SourceObjectNotFound",
            format!("{location} was not found"),
        )
    }
    pub fn link_not_object(location: &str) -> Self {
        Self::new(400, "LinkNotObject", format!("{location} is not an object"))
    }
    pub fn invalid_link(location: &str) -> Self {
        Self::new(400, "InvalidLink", format!("{location} is an invalid link"))
    }

    // --- multipart uploads (lib/uploads) ---

    pub fn mpu_create(msg: &str) -> Self {
        Self::new(
            409,
            "MultipartUploadInvalidArgument",
            format!("cannot create upload: {msg}"),
        )
    }
    pub fn mpu_invalid_argument(id: &str, msg: &str) -> Self {
        Self::new(
            409,
            "MultipartUploadInvalidArgument",
            format!("upload {id}: {msg}"),
        )
    }
    pub fn mpu_state(id: &str, msg: &str) -> Self {
        Self::new(
            409,
            "InvalidMultipartUploadState",
            format!("upload {id}: {msg}"),
        )
    }

    // --- availability ---

    pub fn service_unavailable() -> Self {
        Self::new(
            503,
            "ServiceUnavailable",
            "manta is unable to serve this request",
        )
    }
    pub fn throttled() -> Self {
        Self::new(503, "ThrottledError", "manta throttled this request")
    }
    pub fn internal() -> Self {
        Self::new(500, "InternalError", "an unexpected error occurred")
    }

    /// The JSON body muskie's `formatJSON` writes.
    pub fn body(&self) -> String {
        serde_json::json!({ "code": self.code, "message": self.message }).to_string()
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        tracing::warn!(error = %e, "internal I/O error");
        if e.raw_os_error() == Some(36) {
            // ENAMETOOLONG: a name longer than the local filesystem allows.
            return ApiError::new(400, "InvalidResource", "name too long for this test server");
        }
        ApiError::internal()
    }
}

/// Shorthand result type for route handlers.
pub type ApiResult<T> = Result<T, ApiError>;
