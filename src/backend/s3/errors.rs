//! object_store errors turned into tarvault's typed [`Error`].

use crate::Error;

/// What an object_store error means for us.
pub(crate) fn backend_error(describe: &str, op: &str, e: object_store::Error) -> Error {
    let message = meaning(op, &e);
    Error::Backend {
        backend: describe.to_string(),
        message,
        source: Some(Box::new(e)),
    }
}

/// `op`, and what to do about `e` where that is known: a missing bucket, refused credentials.
/// Two refusals are not about the key pair, and the keys are not what to check: a request
/// whose time is off from the server's by more than it allows (a host clock astray), and a
/// session token that expired or is not one.
pub(crate) fn meaning(op: &str, e: &object_store::Error) -> String {
    let text = e.to_string();
    if is_missing_bucket(e) {
        format!("{op}: the bucket does not exist")
    } else if text.contains("RequestTimeTooSkewed") {
        format!("{op}: the server refused the request's time (check this host's clock)")
    } else if ["ExpiredToken", "InvalidToken", "TokenRefreshRequired"]
        .iter()
        .any(|code| text.contains(code))
    {
        format!("{op}: the session token was refused (renew AWS_SESSION_TOKEN, or unset it)")
    } else if is_denied(e) {
        format!("{op}: access denied (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy)")
    } else {
        op.to_string()
    }
}

/// Wrong or unknown credentials, or no permission. object_store reports some of these (on LIST)
/// as generic errors, so the S3 error codes are looked for in the text too.
pub(crate) fn is_denied(e: &object_store::Error) -> bool {
    if matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) {
        return true;
    }
    let text = e.to_string();
    [
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "AccessDenied",
        "ExpiredToken",
        "InvalidToken",
        "403 Forbidden",
    ]
    .iter()
    .any(|code| text.contains(code))
}

/// A transport failure (connection reset or refused mid-request) that object_store does not
/// retry itself because the request was not idempotent (a create-only PUT).
pub(crate) fn is_transport(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Generic { .. }) && {
        let text = e.to_string();
        text.contains("HTTP error") || text.contains("error sending request")
    }
}

/// Whether the request of a failed [`is_transport`] attempt may have reached the server: true
/// unless the connection could not even be made.
pub(crate) fn may_have_landed(e: &object_store::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(http) = err.downcast_ref::<object_store::client::HttpError>() {
            return http.kind() != object_store::client::HttpErrorKind::Connect;
        }
        cur = err.source();
    }
    true
}

/// Whether object_store itself sent the request more than once before it failed with `e`: it
/// retries a PUT whose connection closed before the answer ("request not sent", though it may
/// have been) and 5xx answers, so a create-only PUT's 412 can answer its own earlier attempt.
/// object_store says so only in the message of its retry error ("…, after N retries, …"), so
/// the text is read, as [`is_denied`] does; should that change, a retried create reads as "not
/// retried", which only makes a put that stored a blob report it as already present.
pub(crate) fn retried_inside(e: &object_store::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.to_string().contains(" retries, max_retries: ") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A 404 that is about the bucket, not the object: it must not read as "blob not stored".
pub(crate) fn is_missing_bucket(e: &object_store::Error) -> bool {
    e.to_string().contains("NoSuchBucket")
}

/// `Ok(None)` for an object that is simply not there; an error for everything else.
pub(crate) fn absent_ok<T>(
    describe: &str,
    op: &str,
    r: Result<T, object_store::Error>,
) -> crate::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e @ object_store::Error::NotFound { .. }) if !is_missing_bucket(&e) => Ok(None),
        Err(e) => Err(backend_error(describe, op, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: &str, code: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: format!(
                "Error performing GET http://127.0.0.1:9000/b?list-type=2 in 2ms - Server \
                 returned non-2xx status code: {status}: <Error><Code>{code}</Code></Error>"
            )
            .into(),
        }
    }

    /// A refusal says what to fix: the keys, the clock, or the session token.
    #[test]
    fn refusals_name_what_to_check() {
        let keys = meaning("open", &answered("403 Forbidden", "SignatureDoesNotMatch"));
        assert!(keys.contains("AWS_SECRET_ACCESS_KEY"), "{keys}");
        let clock = meaning("open", &answered("403 Forbidden", "RequestTimeTooSkewed"));
        assert!(clock.contains("clock"), "{clock}");
        assert!(!clock.contains("AWS_SECRET_ACCESS_KEY"), "{clock}");
        let token = meaning("put", &answered("400 Bad Request", "ExpiredToken"));
        assert!(token.contains("AWS_SESSION_TOKEN"), "{token}");
        let bucket = meaning("open", &answered("404 Not Found", "NoSuchBucket"));
        assert!(bucket.contains("bucket does not exist"), "{bucket}");
        assert_eq!(
            meaning(
                "get",
                &answered("500 Internal Server Error", "InternalError")
            ),
            "get"
        );
    }
}
