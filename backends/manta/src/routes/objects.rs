//! Objects: PutObject (incl. `?metadata=true`), GetObject/HeadObject,
//! DeleteObject (muskie `lib/obj.js`) and PutSnapLink (mantav1 `lib/link.js`).

use base64::Engine as _;

use crate::conditional::{self, Cond, RangeReq};
use crate::error::ApiError;
use crate::http::{file_body, Ctx, Failure, Resp, RouteResult};
use crate::store::{MPath, Meta, ObjectMeta};
use crate::util;

use super::{ensure_parent, stored_headers};

const DEF_NUM_COPIES: u32 = 2;
const MIN_COPIES: u32 = 1;
const MAX_COPIES: u32 = 9;
/// Default cap on a streamed (chunked) upload: 5 GB.
const DEF_MAX_STREAMING: u64 = 5 * 1024 * 1024 * 1024;

const CORS_RES_HDRS: [&str; 5] = [
    "access-control-allow-headers",
    "access-control-allow-origin",
    "access-control-expose-headers",
    "access-control-max-age",
    "access-control-allow-methods",
];

/// muskie `addCustomHeaders`: stored headers, with the CORS ones filtered
/// against the request's `Origin`.
pub(crate) fn custom_headers(ctx: &Ctx, stored: &[(String, String)]) -> Vec<(String, String)> {
    let origin = ctx.header("origin");
    let mut out: Vec<(String, String)> = Vec::new();
    let mut strip_cors = false;
    for (k, v) in stored {
        let mut val = v.clone();
        let add = match origin.as_deref() {
            Some(origin) if CORS_RES_HDRS.contains(&k.as_str()) => match k.as_str() {
                "access-control-allow-origin" => {
                    if v.split(',').map(str::trim).any(|x| x == origin || x == "*") {
                        val = origin.to_string();
                        true
                    } else {
                        strip_cors = true;
                        false
                    }
                }
                "access-control-allow-methods" => {
                    if v.split(',')
                        .map(str::trim)
                        .any(|x| x == ctx.method.as_str())
                    {
                        true
                    } else {
                        strip_cors = true;
                        false
                    }
                }
                "access-control-expose-headers" => true,
                _ => false,
            },
            _ => true,
        };
        if add {
            out.push((k.clone(), val));
        }
    }
    if strip_cors {
        out.retain(|(k, _)| !CORS_RES_HDRS.contains(&k.as_str()));
    }
    out
}

/// The object's Etag/Last-Modified, as getMetadata sets them up front.
fn base_headers(o: &ObjectMeta) -> Resp {
    Resp::new(200)
        .header("etag", &o.etag)
        .header("last-modified", util::http_date(o.mtime))
}

fn conditional_check(ctx: &Ctx, etag: &str, last_modified: Option<&str>) -> Result<Cond, ApiError> {
    conditional::check(
        ctx.method.as_str(),
        ctx.header("if-match").as_deref(),
        ctx.header("if-none-match").as_deref(),
        ctx.header("if-modified-since").as_deref(),
        ctx.header("if-unmodified-since").as_deref(),
        etag,
        last_modified,
    )
}

fn not_modified(o: &ObjectMeta) -> RouteResult {
    let mut r = base_headers(o).empty();
    *r.status_mut() = hyper::StatusCode::NOT_MODIFIED;
    Ok(r)
}

/// GetObject / HeadObject.
pub fn get_object(ctx: &Ctx, o: &ObjectMeta) -> RouteResult {
    // negotiateContent
    if !conditional::accepts(ctx.header("accept").as_deref(), &o.content_type) {
        return Err(ApiError::not_acceptable(&ctx.path.display(), &o.content_type).into());
    }
    let lm = util::http_date(o.mtime);
    if conditional_check(ctx, &o.etag, Some(&lm))? == Cond::NotModified {
        return not_modified(o);
    }
    let range = ctx.header("range");
    if range.as_deref().is_some_and(|r| r.contains(',')) {
        return Err(ApiError::not_implemented("multi-range requests not supported").into());
    }
    let custom = custom_headers(ctx, &o.headers);
    let mut resp = base_headers(o).headers(&custom);
    if let Some(cd) = &o.content_disposition {
        resp = resp.header("content-disposition", cd);
    }
    if o.content_length == 0 || ctx.is_head() {
        return Ok(resp
            .header("durability-level", o.durability.to_string())
            .header("content-length", o.content_length.to_string())
            .header("content-md5", &o.content_md5)
            .header("content-type", &o.content_type)
            .empty());
    }
    let Some((meta, file)) = ctx.state.store.open_object(&ctx.path)? else {
        return Err(ApiError::resource_not_found(&ctx.path.display()).into());
    };
    let size = meta.content_length;
    match range.as_deref().map(|r| conditional::parse_range(r, size)) {
        Some(RangeReq::Unsatisfiable) => {
            Err(ApiError::range_not_satisfiable(range.as_deref().unwrap_or(""), size).into())
        }
        Some(RangeReq::Single(a, b)) => {
            let len = b - a + 1;
            Ok(Resp::new(206)
                .header("etag", &meta.etag)
                .header("last-modified", &lm)
                .headers(&custom)
                .header("content-type", &meta.content_type)
                .header("content-range", format!("bytes {a}-{b}/{size}"))
                .header("content-length", len.to_string())
                .header("durability-level", meta.durability.to_string())
                .body(file_body(file, a, len)))
        }
        Some(RangeReq::Ignore) => Ok(resp
            .header("content-type", &meta.content_type)
            .header("content-length", size.to_string())
            .header("durability-level", meta.durability.to_string())
            .body(file_body(file, 0, size))),
        None => Ok(resp
            .header("accept-ranges", "bytes")
            .header("content-type", &meta.content_type)
            .header("content-md5", &meta.content_md5)
            .header("content-length", size.to_string())
            .header("durability-level", meta.durability.to_string())
            .body(file_body(file, 0, size))),
    }
}

/// DeleteObject (conditional headers honoured).
pub fn delete_object(ctx: &Ctx, o: &ObjectMeta) -> RouteResult {
    let lm = util::http_date(o.mtime);
    conditional_check(ctx, &o.etag, Some(&lm))?;
    ctx.state.store.delete_object(&ctx.path)?;
    Ok(Resp::new(204)
        .header("etag", &o.etag)
        .header("last-modified", &lm)
        .empty())
}

/// `parseInt` of durability-level / x-durability-level, range-checked.
pub(crate) fn copies(ctx: &Ctx) -> Result<u32, ApiError> {
    let raw = ctx
        .header("durability-level")
        .filter(|v| !v.is_empty())
        .or_else(|| ctx.header("x-durability-level").filter(|v| !v.is_empty()));
    let Some(raw) = raw else {
        return Ok(DEF_NUM_COPIES);
    };
    let digits: String = raw
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    match digits.parse::<i64>() {
        Ok(c) if (MIN_COPIES as i64..=MAX_COPIES as i64).contains(&c) => Ok(c as u32),
        _ => Err(ApiError::invalid_durability(MIN_COPIES, MAX_COPIES)),
    }
}

/// How the request body is framed (parseArguments' size logic).
pub(crate) enum Size {
    /// No body to read (Content-Length 0 or absent): a zero-byte object.
    Zero,
    /// Content-Length given.
    Exact,
    /// Chunked, capped at this many bytes.
    Streaming(u64),
}

pub(crate) fn body_size(ctx: &Ctx) -> Result<Size, ApiError> {
    if ctx.is_chunked() {
        let max = match ctx.header("max-content-length") {
            Some(v) => {
                let n: i64 = v
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '-')
                    .collect::<String>()
                    .parse()
                    .unwrap_or(DEF_MAX_STREAMING as i64);
                if n < 0 {
                    return Err(ApiError::invalid_max_content_length(&v));
                }
                n as u64
            }
            None => DEF_MAX_STREAMING,
        };
        return Ok(Size::Streaming(max));
    }
    match ctx.content_length() {
        None | Some(0) => Ok(Size::Zero),
        Some(_) => Ok(Size::Exact),
    }
}

/// Verifies a client `Content-MD5` against what was received (mako's 469 /
/// 400 become ContentMD5Mismatch / BadRequest).
pub(crate) fn check_md5(ctx: &Ctx, computed: &str) -> Result<(), ApiError> {
    let Some(sent) = ctx.header("content-md5") else {
        return Ok(());
    };
    let valid = base64::engine::general_purpose::STANDARD
        .decode(sent.trim())
        .is_ok_and(|b| b.len() == 16);
    if !valid {
        return Err(ApiError::bad_request("Content-MD5 invalid"));
    }
    if sent.trim() != computed {
        return Err(ApiError::content_md5_mismatch(computed, sent.trim()));
    }
    Ok(())
}

/// Receives a body for object `path` into a temp file; returns
/// (temp path, size, base64 md5). For `Size::Zero` nothing is read (and no
/// `100 Continue` is sent).
pub(crate) async fn receive(
    ctx: &mut Ctx,
    path: &MPath,
    size: &Size,
) -> Result<(std::path::PathBuf, u64, String), Failure> {
    let tmp = ctx.state.store.temp_path(path);
    match size {
        Size::Zero => {
            tokio::fs::write(&tmp, b"").await?;
            Ok((tmp, 0, util::ZERO_BYTE_MD5.to_string()))
        }
        Size::Exact | Size::Streaming(_) => {
            let max = match size {
                Size::Streaming(m) => Some(*m),
                _ => None,
            };
            let (n, md5) = ctx.stream_body_to(&tmp, max).await?;
            let md5 = base64::engine::general_purpose::STANDARD.encode(md5);
            if let Err(e) = check_md5(ctx, &md5) {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e.into());
            }
            Ok((tmp, n, md5))
        }
    }
}

/// PutObject, in muskie's order: conditional, root check, arguments,
/// not-a-directory, parent, then `100 Continue` and the body.
pub async fn put_object(ctx: &mut Ctx, entry: Option<Meta>, parent: Option<Meta>) -> RouteResult {
    let path = ctx.path.clone();
    let (etag, lm) = match &entry {
        Some(Meta::Object(o)) => (o.etag.clone(), Some(util::http_date(o.mtime))),
        Some(Meta::Directory(d)) => (String::new(), Some(util::http_date(d.mtime))),
        None => (String::new(), None),
    };
    conditional_check(ctx, &etag, lm.as_deref())?;

    // ensureNotRoot
    if path.is_root() {
        if let Some(ct) = ctx.content_type() {
            if ct != "application/x-json-stream; type=directory" {
                return Err(ApiError::root_directory("PUT", &path.display()).into());
            }
        }
    }

    let metadata_update = ctx.query("metadata").is_some_and(|v| !v.is_empty());

    // parseArguments
    if let Some(Meta::Directory(_)) = &entry {
        for k in ["content-length", "content-md5", "durability-level"] {
            if ctx.header(k).is_some_and(|v| !v.is_empty()) {
                return Err(ApiError::invalid_update(k, " on a directory").into());
            }
        }
        if !metadata_update {
            return Err(ApiError::directory_operation(&path.display(), "PUT").into());
        }
        // mchattr on a directory: replace its headers.
        if let Some(Meta::Directory(mut d)) = entry {
            d.headers = stored_headers(ctx);
            d.mtime = util::now_ms();
            ctx.state.store.update_meta(&path, &Meta::Directory(d))?;
        }
        return Ok(Resp::new(204).empty());
    }
    let size = body_size(ctx)?;
    let copies = copies(ctx)?;
    if metadata_update {
        for k in ["content-length", "content-md5", "durability-level"] {
            if ctx.header(k).is_some_and(|v| !v.is_empty()) {
                return Err(ApiError::invalid_update(k, "").into());
            }
        }
        let Some(Meta::Object(mut o)) = entry else {
            return Err(ApiError::resource_not_found(&path.display()).into());
        };
        o.headers = stored_headers(ctx);
        if let Some(ct) = ctx.content_type() {
            o.content_type = ct;
        }
        o.mtime = util::now_ms();
        ctx.state
            .store
            .update_meta(&path, &Meta::Object(o.clone()))?;
        return Ok(Resp::new(204)
            .header("etag", &o.etag)
            .header("last-modified", util::http_date(o.mtime))
            .empty());
    }

    ensure_parent(&path, &parent)?;

    // Validation done: only now read the body (hyper sends 100 Continue).
    let (tmp, n, md5) = receive(ctx, &path, &size).await?;
    let object_id = util::new_uuid();
    let mut headers = stored_headers(ctx);
    if path.top() == Some("public")
        && !headers
            .iter()
            .any(|(k, _)| k == "access-control-allow-origin")
    {
        headers.push(("access-control-allow-origin".into(), "*".into()));
    }
    let meta = ObjectMeta {
        etag: object_id.clone(),
        object_id,
        content_length: n,
        content_md5: md5,
        content_type: ctx
            .content_type()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "application/octet-stream".to_string()),
        content_disposition: ctx.header("content-disposition"),
        durability: if n == 0 { 0 } else { copies },
        mtime: util::now_ms(),
        headers,
    };
    commit(ctx, &path, &tmp, &meta)?;
    let mut resp = Resp::new(204);
    if let Some(origin) = ctx.header("origin") {
        resp = resp.header("access-control-allow-origin", origin);
    }
    Ok(resp
        .header("etag", &meta.etag)
        .header("last-modified", util::http_date(meta.mtime))
        .header("computed-md5", &meta.content_md5)
        .empty())
}

/// Moves a received body into place, mapping races to muskie errors.
pub(crate) fn commit(
    ctx: &Ctx,
    path: &MPath,
    tmp: &std::path::Path,
    meta: &ObjectMeta,
) -> Result<(), Failure> {
    match ctx.state.store.commit_object(path, tmp, meta) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            match e.raw_os_error() {
                Some(21) => Err(ApiError::directory_operation(&path.display(), "PUT").into()),
                Some(2) | Some(20) => {
                    Err(ApiError::directory_does_not_exist(&path.display()).into())
                }
                _ => Err(e.into()),
            }
        }
    }
}

/// PutSnapLink (`content-type: application/json; type=link`, `Location:`).
pub fn put_link(ctx: &mut Ctx, entry: Option<Meta>, parent: Option<Meta>) -> RouteResult {
    if !ctx.state.snaplinks {
        return Err(ApiError::new(
            403,
            "SnaplinksDisabledError",
            "Manta v2 does not support SnapLinks.",
        )
        .into());
    }
    let path = ctx.path.clone();
    if path.is_root() {
        return Err(ApiError::root_directory("PUT", &path.display()).into());
    }
    if let Some(Meta::Directory(_)) = entry {
        return Err(ApiError::directory_operation(&path.display(), "PUT").into());
    }
    ensure_parent(&path, &parent)?;
    let Some(location) = ctx.header("location").filter(|l| !l.is_empty()) else {
        return Err(ApiError::location_required().into());
    };
    // url.parse(location).pathname, sanitized.
    let pathname = match location.find("://") {
        Some(i) => {
            let rest = &location[i + 3..];
            rest.find('/').map(|j| &rest[j..]).unwrap_or("/")
        }
        None => location.as_str(),
    };
    let pathname = pathname.split(['?', '#']).next().unwrap_or("");
    let comps: Vec<String> = pathname
        .split('/')
        .filter(|s| !s.is_empty())
        .map(util::percent_decode)
        .collect();
    let Some((acct, rest)) = comps.split_first() else {
        return Err(ApiError::invalid_link(&location).into());
    };
    if acct != &ctx.state.account.login {
        // resolveOwner: the source account does not exist.
        return Err(ApiError::source_not_found(&location).into());
    }
    if !matches!(
        rest.first().map(String::as_str),
        Some("stor" | "public" | "reports")
    ) {
        return Err(ApiError::invalid_link(&location).into());
    }
    let src = MPath {
        account: acct.clone(),
        parts: rest.to_vec(),
    };
    let src_meta = match ctx.state.store.lookup(&src)? {
        None => return Err(ApiError::source_not_found(&location).into()),
        Some(Meta::Directory(_)) => return Err(ApiError::link_not_object(&location).into()),
        Some(Meta::Object(o)) => o,
    };
    let lm = util::http_date(src_meta.mtime);
    conditional_check(ctx, &src_meta.etag, Some(&lm))?;
    let mut meta = src_meta.clone();
    meta.mtime = util::now_ms();
    match ctx.state.store.link_object(&src, &path, &meta) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(21) => {
            return Err(ApiError::directory_operation(&path.display(), "PUT").into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::source_not_found(&location).into())
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Resp::new(204)
        .header("etag", &src_meta.etag)
        .header("last-modified", lm)
        .empty())
}
