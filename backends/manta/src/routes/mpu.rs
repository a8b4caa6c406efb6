//! Multipart uploads (muskie `lib/uploads/*`): create, the `/:login/uploads/
//! <id>` redirect, part upload, state, commit and abort.

use std::io::{Read as _, Write as _};

use base64::Engine as _;
use hyper::Method;
use md5::{Digest, Md5};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::http::{Ctx, Failure, Resp, RouteResult};
use crate::store::{DirMeta, MPath, Meta, ObjectMeta, UploadRecord};
use crate::util;

use super::objects::{body_size, commit, receive};
use super::{ensure_parent, storage};

/// Characters of the id used for the prefix directory (`DEF_PREFIX_LEN`).
const PREFIX_LEN: usize = 3;
const MAX_PART_NUM: u32 = 799;
const MAX_NUM_PARTS: usize = 800;
/// Every part but the last must be at least 5 MiB.
const MIN_PART_SIZE: u64 = 5_242_880;

fn is_upload_id(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| {
            g.len() == n
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// `^([0-9]|[1-9][0-9]{0,3})$` and within 0..=799.
fn part_num(s: &str) -> Option<u32> {
    let ok = !s.is_empty()
        && s.len() <= 4
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if !ok {
        return None;
    }
    s.parse().ok().filter(|n| *n <= MAX_PART_NUM)
}

fn bare_405() -> RouteResult {
    Ok(Resp::new(405).header("content-length", "0").empty())
}

fn upload_dir(account: &str, id: &str) -> MPath {
    MPath::new(account, &["uploads", &id[..PREFIX_LEN], id])
}

/// Dispatch below `/:login/uploads`.
pub async fn route(ctx: &mut Ctx) -> RouteResult {
    let rest: Vec<String> = ctx.path.parts[1..].to_vec();
    let method = ctx.method.clone();
    match rest.as_slice() {
        [] => {
            if method == Method::POST {
                create(ctx).await
            } else {
                storage(ctx).await
            }
        }
        [id, tail @ ..] if is_upload_id(id) && tail.len() <= 1 => redirect(ctx, id, tail.first()),
        [_prefix] => match method {
            Method::GET | Method::HEAD => storage(ctx).await,
            _ => bare_405(),
        },
        [prefix, id, tail @ ..] => {
            if !is_upload_id(id) || prefix.as_str() != &id[..PREFIX_LEN] || tail.len() > 1 {
                return Err(ApiError::no_route(&ctx.path.display()).into());
            }
            let (dir, record) = load(ctx, id)?;
            match (tail.first().map(String::as_str), method) {
                (None, Method::GET | Method::HEAD) => storage(ctx).await,
                (None, _) => bare_405(),
                (Some("state"), Method::GET | Method::HEAD) => state(ctx, &record),
                (Some("commit"), Method::POST) => commit_upload(ctx, &dir, record).await,
                (Some("abort"), Method::POST) => abort(ctx, &dir, record),
                (Some("state" | "commit" | "abort"), _) => bare_405(),
                (Some(pn), Method::PUT) => upload_part(ctx, &record, pn).await,
                (Some(_), Method::GET | Method::HEAD) => storage(ctx).await,
                (Some(_), _) => bare_405(),
            }
        }
    }
}

fn load(ctx: &Ctx, id: &str) -> Result<(MPath, UploadRecord), Failure> {
    let dir = upload_dir(&ctx.state.account.login, id);
    match ctx.state.store.lookup(&dir)? {
        Some(Meta::Directory(DirMeta {
            upload: Some(u), ..
        })) => Ok((dir, u)),
        _ => Err(ApiError::no_route(&ctx.path.display()).into()),
    }
}

fn parts_directory(account: &str, id: &str) -> String {
    format!("/{account}/uploads/{}/{id}", &id[..PREFIX_LEN])
}

/// `GET|HEAD|PUT|POST /:login/uploads/<id>[/<part>]` → 301 to the real path.
fn redirect(ctx: &Ctx, id: &str, part: Option<&String>) -> RouteResult {
    if ctx.method == Method::DELETE
        || !matches!(
            ctx.method,
            Method::GET | Method::HEAD | Method::PUT | Method::POST
        )
    {
        return bare_405();
    }
    if let Some(pn) = part {
        let ok = !pn.is_empty() && pn.len() <= 4 && pn.bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return Err(ApiError::resource_not_found(&format!("part num {pn}")).into());
        }
    }
    let (_, record) = load(ctx, id)?;
    let mut loc = parts_directory(&ctx.state.account.login, &record.id);
    if let Some(pn) = part {
        loc.push('/');
        loc.push_str(pn);
    }
    Ok(Resp::new(301).header("location", loc).empty())
}

fn json_number(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// `POST /:login/uploads` with `{"objectPath": ..., "headers": {...}}`.
async fn create(ctx: &mut Ctx) -> RouteResult {
    let body = ctx.read_small_body(100_000).await?;
    let v: Value = if body.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid_content(format!("Invalid JSON: {e}")))?
    };
    let object_path = match v.get("objectPath").and_then(Value::as_str) {
        Some(p) if !p.is_empty() => p.to_string(),
        // MultipartUploadInvalidArgumentError called with one argument.
        _ => {
            return Err(ApiError::new(
                409,
                "MultipartUploadInvalidArgument",
                "upload a valid \"objectPath\" is required: undefined",
            )
            .into())
        }
    };
    parse_manta_path(ctx, &object_path)?;
    let mut headers = Map::new();
    if let Some(Value::Object(h)) = v.get("headers") {
        for (k, val) in h {
            headers.insert(k.to_lowercase(), val.clone());
        }
    }
    if [
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
    ]
    .iter()
    .any(|k| headers.contains_key(*k))
    {
        return Err(ApiError::mpu_create(
            "conditional headers are not supported for multipart upload objects",
        )
        .into());
    }
    if let Some(cl) = headers.get("content-length") {
        match json_number(cl) {
            Some(n) if n < 0.0 => {
                return Err(ApiError::mpu_create("\"content-length\" must be >= 0").into())
            }
            Some(_) => {}
            None => return Err(ApiError::mpu_create("\"content-length\" must be a number").into()),
        }
    }
    let copies = headers
        .get("durability-level")
        .or_else(|| headers.get("x-durability-level"))
        .map(|c| json_number(c).unwrap_or(-1.0))
        .unwrap_or(2.0);
    if !(1.0..=9.0).contains(&copies) || copies.fract() != 0.0 {
        return Err(ApiError::invalid_durability(1, 9).into());
    }
    let id = util::new_uuid();
    let account = ctx.state.account.login.clone();
    let prefix = MPath::new(&account, &["uploads", &id[..PREFIX_LEN]]);
    if ctx.state.store.lookup(&prefix)?.is_none() {
        ctx.state.store.put_directory(&prefix, Vec::new())?;
    }
    let now = util::now_ms();
    let record = UploadRecord {
        id: id.clone(),
        state: "created".into(),
        finalizing_type: None,
        object_path,
        headers,
        num_copies: copies as u32,
        creation_time_ms: now,
        object_id: util::new_uuid(),
        parts_md5: None,
    };
    ctx.state.store.create_directory_with(
        &upload_dir(&account, &id),
        DirMeta {
            mtime: now,
            headers: Vec::new(),
            upload: Some(record),
        },
    )?;
    let body = format!(
        "{{\"id\":\"{id}\",\"partsDirectory\":\"{}\"}}",
        parts_directory(&account, &id)
    );
    Ok(Resp::new(201).json(body))
}

/// A Manta path of this account (`libmanta.normalizeMantaPath`).
fn parse_manta_path(ctx: &Ctx, p: &str) -> Result<MPath, ApiError> {
    let comps: Vec<String> = p
        .split('/')
        .filter(|s| !s.is_empty())
        .map(util::percent_decode)
        .collect();
    match comps.split_first() {
        Some((acct, rest)) if acct == &ctx.state.account.login && !rest.is_empty() => Ok(MPath {
            account: acct.clone(),
            parts: rest.to_vec(),
        }),
        Some((acct, _)) if acct != &ctx.state.account.login => {
            Err(ApiError::account_does_not_exist(acct))
        }
        _ => Err(ApiError::invalid_path(p)),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StateResp<'a> {
    id: &'a str,
    state: &'a str,
    parts_directory: String,
    target_object: &'a str,
    headers: &'a Map<String, Value>,
    num_copies: u32,
    creation_time_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a str>,
    #[serde(rename = "partsMD5Summary", skip_serializing_if = "Option::is_none")]
    parts_md5_summary: Option<&'a str>,
}

fn state(ctx: &Ctx, r: &UploadRecord) -> RouteResult {
    let (state, result) = match (r.state.as_str(), r.finalizing_type.as_deref()) {
        ("finalizing", Some("commit")) => ("done", Some("committed")),
        ("finalizing", Some("abort")) => ("done", Some("aborted")),
        (s, _) => (s, None),
    };
    let body = StateResp {
        id: &r.id,
        state,
        parts_directory: parts_directory(&ctx.state.account.login, &r.id),
        target_object: &r.object_path,
        headers: &r.headers,
        num_copies: r.num_copies,
        creation_time_ms: r.creation_time_ms,
        result,
        parts_md5_summary: if result == Some("committed") {
            r.parts_md5.as_deref()
        } else {
            None
        },
    };
    Ok(Resp::new(200).json(serde_json::to_string(&body).unwrap_or_default()))
}

fn save_record(ctx: &Ctx, dir: &MPath, record: &UploadRecord) -> Result<(), Failure> {
    let mtime = match ctx.state.store.lookup(dir)? {
        Some(m) => m.mtime(),
        None => util::now_ms(),
    };
    ctx.state.store.create_directory_with(
        dir,
        DirMeta {
            mtime,
            headers: Vec::new(),
            upload: Some(record.clone()),
        },
    )?;
    Ok(())
}

/// `PUT <partsDirectory>/<n>`.
async fn upload_part(ctx: &mut Ctx, record: &UploadRecord, pn: &str) -> RouteResult {
    let Some(n) = part_num(pn) else {
        return Err(ApiError::mpu_invalid_argument(
            &record.id,
            &format!("invalid part number: {pn}"),
        )
        .into());
    };
    if record.state != "created" {
        return Err(ApiError::mpu_state(
            &record.id,
            "cannot upload part for upload in state finalizing",
        )
        .into());
    }
    if ctx.header("durability-level").is_some() {
        return Err(ApiError::invalid_update("durability-level", "").into());
    }
    let size = if record
        .headers
        .get("content-length")
        .and_then(Value::as_f64)
        .is_some_and(|c| c == 0.0)
    {
        super::objects::Size::Zero
    } else {
        body_size(ctx)?
    };
    let path = ctx
        .path
        .parent()
        .map(|p| p.child(&n.to_string()))
        .unwrap_or_else(|| ctx.path.clone());
    let (tmp, len, md5) = receive(ctx, &path, &size).await?;
    let id = util::new_uuid();
    let meta = ObjectMeta {
        etag: id.clone(),
        object_id: id,
        content_length: len,
        content_md5: md5,
        content_type: ctx
            .content_type()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "application/octet-stream".into()),
        content_disposition: None,
        durability: if len == 0 { 0 } else { record.num_copies },
        mtime: util::now_ms(),
        headers: Vec::new(),
    };
    commit(ctx, &path, &tmp, &meta)?;
    Ok(Resp::new(204)
        .header("etag", &meta.etag)
        .header("last-modified", util::http_date(meta.mtime))
        .header("computed-md5", &meta.content_md5)
        .empty())
}

fn parts_md5(parts: &[String]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// `POST <partsDirectory>/commit` with `{"parts": [etag0, etag1, ...]}`.
async fn commit_upload(ctx: &mut Ctx, dir: &MPath, mut record: UploadRecord) -> RouteResult {
    let id = record.id.clone();
    let target = parse_manta_path(ctx, &record.object_path)?;
    let state = ctx.state.clone();
    let store = &state.store;

    // getMetadata + storageContext + ensureNotDirectory + ensureParent + ensureNotRoot
    let entry = store.lookup(&target)?;
    let parent = match target.parent() {
        Some(p) if p.is_root() => Some(Meta::Directory(DirMeta::default())),
        Some(p) => store.lookup(&p)?,
        None => None,
    };
    if entry.is_none() && parent.is_none() {
        return Err(ApiError::directory_does_not_exist(&target.display()).into());
    }
    if let Some(Meta::Directory(_)) = entry {
        return Err(ApiError::directory_operation(&target.display(), "POST").into());
    }
    ensure_parent(&target, &parent)?;
    if target.is_root() {
        return Err(ApiError::root_directory("POST", &record.object_path).into());
    }

    let body = ctx.read_small_body(500_000).await?;
    let v: Value = if body.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid_content(format!("Invalid JSON: {e}")))?
    };
    let parts: Vec<String> = v
        .get("parts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| p.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    let computed = parts_md5(&parts);

    // validateUploadState
    let mut recommit = false;
    if record.state == "finalizing" {
        match record.finalizing_type.as_deref() {
            Some("abort") => return Err(ApiError::mpu_state(&id, "already aborted").into()),
            _ => {
                if record.parts_md5.as_deref() != Some(computed.as_str()) {
                    return Err(ApiError::mpu_state(&id, "already has a commit in progress").into());
                }
                recommit = true;
            }
        }
    }

    // validateParts
    if parts.len() > MAX_NUM_PARTS {
        return Err(ApiError::mpu_invalid_argument(
            &id,
            &format!(
                "too many parts provided ({} provided; max is {MAX_NUM_PARTS})",
                parts.len()
            ),
        )
        .into());
    }
    let mut sum: u64 = 0;
    for (i, etag) in parts.iter().enumerate() {
        if etag.is_empty() {
            return Err(ApiError::mpu_invalid_argument(
                &id,
                &format!("[part {i}] no etag provided"),
            )
            .into());
        }
        let part = match store.lookup(&dir.child(&i.to_string()))? {
            Some(Meta::Object(o)) => o,
            _ => {
                return Err(ApiError::mpu_invalid_argument(
                    &id,
                    &format!("[part {i}] part does not exist"),
                )
                .into())
            }
        };
        if &part.etag != etag {
            return Err(ApiError::mpu_invalid_argument(
                &id,
                &format!("[part {i}] invalid etag \"{etag}\""),
            )
            .into());
        }
        if i + 1 != parts.len() && part.content_length < MIN_PART_SIZE {
            return Err(ApiError::mpu_invalid_argument(
                &id,
                &format!(
                    "[part {i}] part is too small (size {})",
                    part.content_length
                ),
            )
            .into());
        }
        sum += part.content_length;
    }
    if let Some(expected) = record.headers.get("content-length").and_then(Value::as_f64) {
        if expected as u64 != sum {
            return Err(ApiError::mpu_invalid_argument(
                &id,
                &format!("expected content-length {expected}, but object was {sum}"),
            )
            .into());
        }
    }

    // finalizingState
    record.state = "finalizing".into();
    record.finalizing_type = Some("commit".into());
    record.parts_md5 = Some(computed);
    save_record(ctx, dir, &record)?;

    if recommit {
        if let Some(Meta::Object(o)) = ctx.state.store.lookup(&target)? {
            if o.object_id == record.object_id {
                return Ok(committed(&record, &o));
            }
        }
    }

    // finalizeUpload: concatenate the parts (mako-finalize).
    let tmp = ctx.state.store.temp_path(&target);
    let sources: Vec<std::path::PathBuf> = (0..parts.len())
        .map(|i| ctx.state.store.disk(&dir.child(&i.to_string())))
        .collect();
    let tmp2 = tmp.clone();
    let md5 = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp2)?);
        let mut h = Md5::new();
        let mut buf = vec![0u8; 256 * 1024];
        for s in sources {
            let mut f = std::fs::File::open(s)?;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                out.write_all(&buf[..n])?;
            }
        }
        out.flush()?;
        Ok(base64::engine::general_purpose::STANDARD.encode(h.finalize()))
    })
    .await
    .map_err(|_| ApiError::internal())??;
    if let Some(want) = record.headers.get("content-md5").and_then(Value::as_str) {
        let bad = if sum == 0 {
            want != util::ZERO_BYTE_MD5
        } else {
            want != md5
        };
        if bad {
            let _ = std::fs::remove_file(&tmp);
            let msg = if sum == 0 {
                format!(
                    "expected content-md5 \"{}\", but object has md5 \"{want}\"",
                    util::ZERO_BYTE_MD5
                )
            } else {
                format!("expected content-md5 \"{want}\", but object has md5 \"{md5}\"")
            };
            return Err(ApiError::mpu_invalid_argument(&id, &msg).into());
        }
    }

    // commit: the object record.
    let str_header = |k: &str| {
        record.headers.get(k).map(|v| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        })
    };
    let mut headers = Vec::new();
    for (k, v) in &record.headers {
        let keep = k.starts_with("m-")
            || k.starts_with("access-control-")
            || k == "cache-control"
            || k == "surrogate-key";
        if keep {
            headers.push((
                k.clone(),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            ));
        }
    }
    let meta = ObjectMeta {
        etag: record.object_id.clone(),
        object_id: record.object_id.clone(),
        content_length: sum,
        content_md5: md5,
        content_type: str_header("content-type")
            .unwrap_or_else(|| "application/octet-stream".into()),
        content_disposition: str_header("content-disposition"),
        durability: if sum == 0 { 0 } else { record.num_copies },
        mtime: util::now_ms(),
        headers,
    };
    commit(ctx, &target, &tmp, &meta)?;
    Ok(committed(&record, &meta))
}

fn committed(record: &UploadRecord, meta: &ObjectMeta) -> hyper::Response<crate::http::Body> {
    Resp::new(201)
        .header("location", &record.object_path)
        .header("etag", &meta.etag)
        .header("last-modified", util::http_date(meta.mtime))
        .header("computed-md5", &meta.content_md5)
        .header("content-length", "0")
        .empty()
}

/// `POST <partsDirectory>/abort`.
fn abort(ctx: &Ctx, dir: &MPath, mut record: UploadRecord) -> RouteResult {
    match (record.state.as_str(), record.finalizing_type.as_deref()) {
        ("created", _) => {
            record.state = "finalizing".into();
            record.finalizing_type = Some("abort".into());
            save_record(ctx, dir, &record)?;
        }
        (_, Some("abort")) => {}
        _ => return Err(ApiError::mpu_state(&record.id, "already committed").into()),
    }
    Ok(Resp::new(204).header("content-length", "0").empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_parts() {
        assert!(is_upload_id("f6d526d6-2192-415e-bd73-c9952e5b480e"));
        assert!(!is_upload_id("f6d"));
        assert!(!is_upload_id("F6D526D6-2192-415E-BD73-C9952E5B480E"));
        assert_eq!(part_num("0"), Some(0));
        assert_eq!(part_num("799"), Some(799));
        assert_eq!(part_num("800"), None);
        assert_eq!(part_num("01"), None);
        assert_eq!(part_num("x"), None);
    }
}
