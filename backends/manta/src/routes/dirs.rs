//! Directories: PutDirectory, ListDirectory (muskie `lib/dir.js` and
//! `common.readdir`), DeleteDirectory and the fixed `/:login` listing.

use hyper::Method;
use serde::Serialize;

use crate::error::ApiError;
use crate::http::{full, Ctx, Resp, RouteResult};
use crate::store::{DirMeta, Meta, TOP_DIRS};
use crate::util;

use super::{custom_headers, ensure_parent, stored_headers};

/// The exact content type node-manta and multi-fs compare against.
pub const DIR_CONTENT_TYPE: &str = "application/x-json-stream; type=directory";

/// One line of a listing, fields in muskie's order (undefined ones omitted).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_disposition: Option<&'a str>,
    #[serde(rename = "contentMD5", skip_serializing_if = "Option::is_none")]
    content_md5: Option<&'a str>,
    mtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    durability: Option<u32>,
}

fn entry_line(name: &str, meta: &Meta) -> String {
    let e = match meta {
        Meta::Directory(d) => Entry {
            name,
            etag: None,
            size: None,
            kind: "directory",
            content_type: None,
            content_disposition: None,
            content_md5: None,
            mtime: util::iso_time(d.mtime),
            durability: None,
        },
        Meta::Object(o) => Entry {
            name,
            etag: Some(&o.etag),
            size: Some(o.content_length),
            kind: "object",
            content_type: Some(&o.content_type),
            content_disposition: o.content_disposition.as_deref(),
            content_md5: Some(&o.content_md5),
            mtime: util::iso_time(o.mtime),
            durability: Some(o.durability),
        },
    };
    let mut s = serde_json::to_string(&e).unwrap_or_default();
    s.push('\n');
    s
}

/// JavaScript `parseInt(s, 10)`.
fn parse_int(s: &str) -> Option<i64> {
    let t = s.trim_start();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let d: String = digits.chars().take_while(|c| c.is_ascii_digit()).collect();
    let v: i64 = d.parse().ok()?;
    Some(if neg { -v } else { v })
}

/// `GET /:login` and `HEAD /:login`: the fixed list of top directories.
pub fn root(ctx: &Ctx) -> RouteResult {
    if ctx.method != Method::GET && ctx.method != Method::HEAD {
        return Err(ApiError::root_directory(ctx.method.as_str(), &ctx.path.display()).into());
    }
    let marker = ctx.query("marker").filter(|m| !m.is_empty());
    let names: Vec<&str> = TOP_DIRS
        .iter()
        .copied()
        .filter(|n| marker.is_none_or(|m| *n > m))
        .collect();
    let mut body = String::new();
    for n in &names {
        body.push_str(&format!(
            "{{\"name\":\"{n}\",\"type\":\"directory\",\"mtime\":\"2013-05-22T17:39:43.714Z\"}}\n"
        ));
    }
    Ok(Resp::new(200)
        .header("content-type", DIR_CONTENT_TYPE)
        .header("result-set-size", names.len().to_string())
        .body(full(body)))
}

/// GET/HEAD of a directory: the listing (HEAD gets the headers only).
pub fn get_directory(ctx: &Ctx, dir: &DirMeta) -> RouteResult {
    let store = &ctx.state.store;
    let names = store.list_names(&ctx.path)?;
    let resp = Resp::new(200)
        .header("last-modified", util::http_date(dir.mtime))
        .headers(&custom_headers(ctx, &dir.headers))
        .header("content-type", DIR_CONTENT_TYPE)
        .header("result-set-size", names.len().to_string());
    if ctx.is_head() {
        return Ok(resp.empty());
    }

    // common.readdir
    let limit_raw = ctx
        .query("limit")
        .filter(|l| !l.is_empty())
        .unwrap_or("256");
    let limit = match parse_int(limit_raw) {
        Some(l) if (1..=1024).contains(&l) => l as usize,
        Some(l) => return Err(ApiError::invalid_limit(&l.to_string()).into()),
        None => return Err(ApiError::invalid_limit("NaN").into()),
    };
    let mut forbidden = Vec::new();
    if ctx.query("sort") == Some("none") {
        forbidden.push("sort=none");
    }
    if ctx.query("skip_owner_check").is_some_and(|v| v == "true") {
        forbidden.push("skip_owner_check=true");
    }
    if !forbidden.is_empty() {
        return Err(ApiError::query_forbidden(&forbidden).into());
    }
    let has_dir = ctx.query("dir").is_some() || ctx.query("directory").is_some();
    let has_obj = ctx.query("obj").is_some() || ctx.query("object").is_some();
    let only: Option<&str> = match (has_dir, has_obj) {
        (true, false) => Some("directory"),
        (false, true) => Some("object"),
        _ => None,
    };
    let reverse = ctx.query("sort_order") == Some("reverse");
    let by_mtime = ctx.query("sort") == Some("mtime");
    let marker = ctx.query("marker").filter(|m| !m.is_empty());
    let marker_ms = match (by_mtime, marker) {
        (true, Some(m)) => Some(
            util::parse_iso_time(m)
                .or_else(|| util::parse_http_date(m))
                .ok_or_else(|| ApiError::invalid_parameter("marker", m))?,
        ),
        _ => None,
    };

    let kind_ok = |m: &Meta| {
        let kind = if matches!(m, Meta::Directory(_)) {
            "directory"
        } else {
            "object"
        };
        only.is_none_or(|o| o == kind)
    };
    let mut lines = String::new();
    if by_mtime {
        // Newest first unless reversed; the marker (a date) is inclusive.
        let mut entries: Vec<(String, Meta)> = Vec::with_capacity(names.len());
        for n in names {
            if let Some(m) = store.lookup(&ctx.path.child(&n))? {
                if kind_ok(&m) {
                    entries.push((n, m));
                }
            }
        }
        entries.sort_by(|a, b| a.1.mtime().cmp(&b.1.mtime()).then_with(|| a.0.cmp(&b.0)));
        if !reverse {
            entries.reverse();
        }
        entries
            .iter()
            .filter(|(_, m)| match marker_ms {
                Some(ms) if reverse => m.mtime() >= ms,
                Some(ms) => m.mtime() <= ms,
                None => true,
            })
            .take(limit)
            .for_each(|(n, m)| lines.push_str(&entry_line(n, m)));
    } else {
        // By name, ascending unless reversed; `name >= marker` (or `<=`).
        let mut names = names;
        if reverse {
            names.reverse();
        }
        let mut count = 0;
        for n in names.iter().filter(|n| match marker {
            Some(mk) if reverse => n.as_str() <= mk,
            Some(mk) => n.as_str() >= mk,
            None => true,
        }) {
            if count == limit {
                break;
            }
            if let Some(m) = store.lookup(&ctx.path.child(n))? {
                if kind_ok(&m) {
                    lines.push_str(&entry_line(n, &m));
                    count += 1;
                }
            }
        }
    }
    Ok(resp.body(full(lines)))
}

/// PutDirectory: parent must exist and be a directory; idempotent.
pub fn put_directory(ctx: &Ctx, entry: Option<Meta>, parent: Option<Meta>) -> RouteResult {
    ensure_parent(&ctx.path, &parent)?;
    let mut resp = Resp::new(204);
    if let Some(m) = &entry {
        resp = resp.header("last-modified", util::http_date(m.mtime()));
        if let Some(e) = m.etag() {
            resp = resp.header("etag", e);
        }
    }
    if !ctx.path.is_root() {
        if let Some(Meta::Directory(d)) = &entry {
            if d.upload.is_some() {
                // Upload directories are managed by the MPU routes.
                return Ok(resp.empty());
            }
        }
        ctx.state
            .store
            .put_directory(&ctx.path, stored_headers(ctx))?;
    }
    if let Some(origin) = ctx.header("origin") {
        resp = resp.header("access-control-allow-origin", origin);
    }
    if entry.is_none() {
        if let Some(m) = ctx.state.store.lookup(&ctx.path)? {
            resp = resp.header("last-modified", util::http_date(m.mtime()));
        }
    }
    Ok(resp.empty())
}

/// DeleteDirectory: not on roots, only when empty.
pub fn delete_directory(ctx: &Ctx, dir: &DirMeta) -> RouteResult {
    if ctx.path.is_root() {
        return Err(ApiError::root_directory("DELETE", &ctx.path.display()).into());
    }
    if !ctx.state.store.delete_directory(&ctx.path)? {
        return Err(ApiError::directory_not_empty(&ctx.path.display()).into());
    }
    Ok(Resp::new(204)
        .header("last-modified", util::http_date(dir.mtime))
        .empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectMeta;

    #[test]
    fn entry_format() {
        let d = Meta::Directory(DirMeta {
            mtime: 1_795_426_176_199,
            ..DirMeta::default()
        });
        assert_eq!(
            entry_line("y", &d),
            "{\"name\":\"y\",\"type\":\"directory\",\"mtime\":\"2026-11-23T09:29:36.199Z\"}\n"
        );
        let o = Meta::Object(ObjectMeta {
            etag: "e".into(),
            object_id: "e".into(),
            content_length: 12,
            content_md5: "m".into(),
            content_type: "text/plain".into(),
            content_disposition: None,
            durability: 2,
            mtime: 0,
            headers: vec![],
        });
        assert_eq!(
            entry_line("h", &o),
            "{\"name\":\"h\",\"etag\":\"e\",\"size\":12,\"type\":\"object\",\"contentType\":\"text/plain\",\"contentMD5\":\"m\",\"mtime\":\"1970-01-01T00:00:00.000Z\",\"durability\":2}\n"
        );
        assert_eq!(parse_int(" 12abc"), Some(12));
        assert_eq!(parse_int("x"), None);
    }
}
