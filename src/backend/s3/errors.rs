//! object_store errors turned into tarvault's typed [`Error`](crate::Error).

use crate::Error;

/// What an object_store error means for us.
pub(crate) fn backend_error(describe: &str, op: &str, e: object_store::Error) -> Error {
    let message = match &e {
        object_store::Error::PermissionDenied { .. } => {
            format!("{op}: access denied (check the credentials and the bucket policy)")
        }
        object_store::Error::Unauthenticated { .. } => {
            format!("{op}: not authenticated (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
        }
        object_store::Error::NotFound { .. } if is_missing_bucket(&e) => {
            format!("{op}: the bucket does not exist")
        }
        other => format!("{op}: {other}"),
    };
    Error::Backend {
        backend: describe.to_string(),
        message,
        source: Some(Box::new(e)),
    }
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
