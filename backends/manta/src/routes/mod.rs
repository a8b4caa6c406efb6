//! Routing, following muskie's `lib/server.js` handler chain: sanitize the
//! path, authenticate, load the owner, then dispatch on the path and (for
//! PUT) on the content type.

mod dirs;
mod mpu;
mod objects;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request};

use crate::auth::{self, Caller, RequestView};
use crate::error::ApiError;
use crate::http::{Ctx, Failure, RouteResult};
use crate::server::State;
use crate::store::{MPath, Meta};
use crate::util;

pub(crate) use objects::custom_headers;

const DIR_TYPE: &str = "application/json; type=directory";
const LINK_TYPE: &str = "application/json; type=link";

/// restify's `sanitizePath`: collapse `//`, drop a trailing `/`.
fn sanitize(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut last_slash = false;
    for c in path.chars() {
        if c == '/' {
            if !last_slash {
                out.push(c);
            }
            last_slash = true;
        } else {
            out.push(c);
            last_slash = false;
        }
    }
    while out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    out
}

/// Compares content types the way the router does (case and spaces around
/// `;` ignored).
fn same_type(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.split(';')
            .map(|p| p.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(";")
    };
    norm(a) == norm(b)
}

pub async fn dispatch(state: Arc<State>, req: Request<Incoming>, drop_body: bool) -> RouteResult {
    let (parts, body) = req.into_parts();
    let url = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let raw_path = parts.uri.path().to_string();
    let mut ctx = Ctx {
        state,
        method: parts.method,
        path: MPath::new("", &[]),
        query: util::parse_query(parts.uri.query().unwrap_or("")),
        headers: parts.headers,
        body: Some(body),
        drop_body,
    };
    let result = route(&mut ctx, &url, &raw_path).await;
    if let Err(Failure::Api(_)) = &result {
        drain_unread_body(&mut ctx).await;
    }
    result
}

/// Like node's http server, read and discard an unread request body before
/// answering an error, so the client can read the answer instead of hitting
/// a reset connection. Never for `Expect: 100-continue` requests: their
/// bodies are not sent until we say so (muskie answers errors first).
async fn drain_unread_body(ctx: &mut Ctx) {
    use http_body_util::BodyExt as _;
    const MAX_DRAIN: u64 = 256 * 1024 * 1024;
    let expects = ctx
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
    if expects || ctx.drop_body {
        return;
    }
    let Some(mut body) = ctx.body.take() else {
        return;
    };
    let mut total = 0u64;
    while let Ok(Some(Ok(frame))) =
        tokio::time::timeout(std::time::Duration::from_secs(5), body.frame()).await
    {
        if let Ok(d) = frame.into_data() {
            total += d.len() as u64;
            if total > MAX_DRAIN {
                break;
            }
        }
    }
}

async fn route(ctx: &mut Ctx, url: &str, raw_path: &str) -> RouteResult {
    let clean = sanitize(raw_path);
    let comps: Vec<String> = clean
        .split('/')
        .skip(1)
        .filter(|s| !s.is_empty())
        .map(util::percent_decode)
        .collect();

    let caller = {
        let view = RequestView {
            method: ctx.method.as_str(),
            url,
            headers: &ctx.headers,
            query: &ctx.query,
        };
        auth::authenticate(&ctx.state.account, &view, raw_path)?
    };

    let Some((account, rest)) = comps.split_first() else {
        return Err(ApiError::no_route(&clean).into());
    };
    if comps
        .iter()
        .any(|c| c == "." || c == ".." || c.contains('/'))
    {
        return Err(ApiError::invalid_path(&clean).into());
    }
    ctx.path = MPath {
        account: account.clone(),
        parts: rest.to_vec(),
    };

    // loadOwner
    if ctx.path.account != ctx.state.account.login {
        return Err(ApiError::account_does_not_exist(&ctx.path.account).into());
    }
    let read_only = matches!(ctx.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if caller == Caller::Anonymous && !(read_only && ctx.path.top() == Some("public")) {
        return Err(ApiError::authorization_failed("anonymous", &ctx.path.display()).into());
    }

    match ctx.path.top() {
        None => dirs::root(ctx),
        Some("stor" | "public" | "reports") => storage(ctx).await,
        Some("uploads") => mpu::route(ctx).await,
        Some(_) => Err(ApiError::no_route(&ctx.path.display()).into()),
    }
}

/// GET/HEAD/PUT/DELETE on `/:login/{stor,public,reports}/...` (and on MPU
/// paths that behave as storage).
pub(crate) async fn storage(ctx: &mut Ctx) -> RouteResult {
    let path = ctx.path.clone();
    let entry = ctx.state.store.lookup(&path)?;
    match ctx.method {
        Method::GET | Method::HEAD => match entry {
            None => Err(ApiError::resource_not_found(&path.display()).into()),
            Some(Meta::Directory(d)) => dirs::get_directory(ctx, &d),
            Some(Meta::Object(o)) => objects::get_object(ctx, &o),
        },
        Method::DELETE => match entry {
            None => Err(ApiError::resource_not_found(&path.display()).into()),
            Some(Meta::Directory(d)) => dirs::delete_directory(ctx, &d),
            Some(Meta::Object(o)) => objects::delete_object(ctx, &o),
        },
        Method::PUT => {
            if path.top() == Some("reports") {
                // isRestrictedWrite: operators only.
                return Err(ApiError::authorization_failed(
                    &ctx.state.account.login,
                    &path.display(),
                )
                .into());
            }
            // getMetadata + storageContext: a new entry needs its parent.
            let parent = match path.parent() {
                Some(p) if !path.is_root() => {
                    if p.is_root() {
                        Some(Meta::Directory(Default::default()))
                    } else {
                        ctx.state.store.lookup(&p)?
                    }
                }
                _ => Some(Meta::Directory(Default::default())),
            };
            if entry.is_none() && parent.is_none() {
                return Err(ApiError::directory_does_not_exist(&path.display()).into());
            }
            let ct = ctx.content_type().unwrap_or_default();
            if same_type(&ct, DIR_TYPE) {
                dirs::put_directory(ctx, entry, parent)
            } else if same_type(&ct, LINK_TYPE) {
                objects::put_link(ctx, entry, parent)
            } else {
                objects::put_object(ctx, entry, parent).await
            }
        }
        ref m => Err(ApiError::method_not_allowed(m.as_str()).into()),
    }
}

/// muskie `ensureParent`: roots and children of roots always have a parent.
pub(crate) fn ensure_parent(path: &MPath, parent: &Option<Meta>) -> Result<(), Failure> {
    if path.is_root() || path.parent().is_some_and(|p| p.is_root()) {
        return Ok(());
    }
    match parent {
        None => Err(ApiError::directory_does_not_exist(&path.display()).into()),
        Some(Meta::Object(_)) => Err(ApiError::parent_not_directory(&path.display()).into()),
        Some(Meta::Directory(_)) => Ok(()),
    }
}

/// The headers `createMetadata` stores: CORS, Cache-Control, Surrogate-Key
/// and `m-*` (the `m-*` ones up to 4 KB in total).
pub(crate) fn stored_headers(ctx: &Ctx) -> Vec<(String, String)> {
    const CORS: [&str; 5] = [
        "access-control-allow-headers",
        "access-control-allow-origin",
        "access-control-expose-headers",
        "access-control-max-age",
        "access-control-allow-methods",
    ];
    let mut out = Vec::new();
    for k in CORS {
        if let Some(v) = ctx.header(k).filter(|v| !v.is_empty()) {
            out.push((k.to_string(), v));
        }
    }
    for k in ["cache-control", "surrogate-key"] {
        if let Some(v) = ctx.header(k).filter(|v| !v.is_empty()) {
            out.push((k.to_string(), v));
        }
    }
    let mut size = 0usize;
    let mut seen: Vec<&str> = Vec::new();
    for name in ctx.headers.keys() {
        let n = name.as_str();
        let is_m = n.strip_prefix("m-").is_some_and(|rest| {
            rest.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        if !is_m || seen.contains(&n) {
            continue;
        }
        seen.push(n);
        if let Some(v) = ctx.header(n) {
            size += v.len();
            if size < 4096 {
                out.push((n.to_string(), v));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes() {
        assert_eq!(sanitize("/a//stor///x/"), "/a/stor/x");
        assert_eq!(sanitize("/"), "/");
        assert!(same_type("application/json;type=directory", DIR_TYPE));
        assert!(!same_type("application/json", DIR_TYPE));
    }
}
