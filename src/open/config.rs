//! Composite stores from configuration, so that `--store` (and [`Store::open`](crate::Store::open))
//! can name a replicated or cached store.
//!
//! A store is described by a *member*: either a string, which is any store spec
//! [`Store::open`](crate::Store::open) accepts (a path, `file://…`, `memory:`, `s3://…`, `manta://…`, another `config:…`, or `@name`
//! for another store of the same file), or a table with one key saying which wrapper it is:
//!
//! ```toml
//! default = "edge"
//!
//! [stores.main.replicated]
//! replicas = ["/srv/tarvault-a", "/srv/tarvault-b", "s3://tarballs/npm"]
//! write_quorum = 2          # default: a majority
//! read_timeout = "2s"       # per replica, before trying the next (default: none)
//! read_repair = true        # default
//!
//! [stores.edge.cached]
//! local = "/var/cache/tarvault"   # relative paths are relative to this file
//! remote = "@main"
//! capacity = "20GiB"
//! ```
//!
//! The same in JSON is `{"default": "edge", "stores": {"main": {"replicated": {...}}, ...}}`. A
//! file may also describe one store at its top level (`[replicated]` …, without `stores`).
//!
//! Specs that select configuration: `config:PATH[#NAME]`, a `PATH.toml` or `PATH.json` file
//! (again with an optional `#NAME`), or inline JSON starting with `{`.
//!
//! Members are opened by the [`open`](super) module that opens any spec, so every scheme it learns
//! (remote backends behind their features) composes here without changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::Missing;
use crate::backend::compose::{Cached, CachedOptions, Replicated, ReplicatedOptions};
use crate::backend::Backend;
use crate::units::{parse_duration, parse_size};
use crate::{Error, Result};

/// Nesting deeper than this is taken to be a cycle (`@a` naming `@b` naming `@a`).
const MAX_DEPTH: usize = 16;

/// How deep a member sits, and what its filesystem stores do when nothing is at their path.
#[derive(Debug, Clone, Copy)]
struct Nest {
    depth: usize,
    missing: Missing,
}

impl Nest {
    fn deeper(self) -> Nest {
        Nest {
            depth: self.depth + 1,
            ..self
        }
    }
}

/// A store opened from configuration, with its wrapper type kept (for `repair`, cache stats).
#[derive(Debug, Clone)]
pub enum Opened {
    /// A replicated store.
    Replicated(Replicated),
    /// A cached store.
    Cached(Cached),
    /// Any other backend (a plain spec).
    Plain(Arc<dyn Backend>),
}

impl Opened {
    /// The backend, whatever it is.
    pub fn backend(&self) -> Arc<dyn Backend> {
        match self {
            Opened::Replicated(r) => Arc::new(r.clone()),
            Opened::Cached(c) => Arc::new(c.clone()),
            Opened::Plain(b) => b.clone(),
        }
    }
}

/// Where a configuration came from: its text, format and directory (for relative paths).
struct Source {
    root: Value,
    dir: PathBuf,
    name: Option<String>,
}

/// Whether `spec` selects configuration (see the module docs).
pub fn is_config_spec(spec: &str) -> bool {
    let spec = spec.trim();
    if spec.starts_with('{') || spec.starts_with("config:") {
        return true;
    }
    // A missing `x.toml` is a configuration that cannot be read (an error), not a new empty
    // filesystem store created under that name.
    let path = spec.split('#').next().unwrap_or(spec);
    (path.ends_with(".toml") || path.ends_with(".json"))
        && !path.contains("://")
        && !Path::new(path).is_dir()
}

/// Opens the composite store a configuration spec names, keeping its wrapper type (for
/// `repair` and cache statistics); [`open_backend`](super::open_backend) forgets it.
pub async fn open_typed(spec: &str) -> Result<Opened> {
    open_as(spec, Missing::Create).await
}

/// [`open_typed`], with what the filesystem stores among its members do when nothing is at
/// their path: with [`Missing::Refuse`] (a command that only reads), every member must be
/// there but a cache's local tier, which a read fills as it always does.
pub(super) async fn open_as(spec: &str, missing: Missing) -> Result<Opened> {
    open_depth(spec, Nest { depth: 0, missing }).await
}

fn open_depth(spec: &str, at: Nest) -> BoxFuture<'_, Result<Opened>> {
    Box::pin(async move {
        let source = load(spec)?;
        let member = select(&source)?;
        build(member, &source, at).await
    })
}

fn load(spec: &str) -> Result<Source> {
    let spec = spec.trim();
    if spec.starts_with('{') {
        let root = serde_json::from_str(spec)
            .map_err(|e| Error::config("inline store configuration", e))?;
        return Ok(Source {
            root,
            dir: std::env::current_dir().unwrap_or_default(),
            name: None,
        });
    }
    let rest = spec.strip_prefix("config:").unwrap_or(spec);
    let (path, name) = match rest.split_once('#') {
        Some((p, n)) => (p, Some(n.to_string())),
        None => (rest, None),
    };
    let path = Path::new(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(format!("store configuration {}", path.display()), e))?;
    let root = parse_text(&text, path)?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(Source { root, dir, name })
}

/// TOML, unless the file says JSON by its name or its first character.
fn parse_text(text: &str, path: &Path) -> Result<Value> {
    let json = path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    let what = || format!("store configuration {}", path.display());
    if json {
        serde_json::from_str::<Value>(text).map_err(|e| Error::config(what(), e))
    } else {
        toml::from_str::<Value>(text).map_err(|e| Error::config(what(), e))
    }
}

/// The member a source names: `#NAME`, else `default`, else the only store, else the top level.
fn select(source: &Source) -> Result<&Value> {
    let stores = source.root.get("stores").and_then(Value::as_object);
    match (stores, &source.name) {
        (Some(stores), Some(name)) => named(stores, name),
        (Some(stores), None) => {
            if let Some(d) = source.root.get("default").and_then(Value::as_str) {
                return named(stores, d);
            }
            if stores.len() == 1 {
                if let Some(only) = stores.values().next() {
                    return Ok(only);
                }
            }
            Err(Error::Config(
                "the configuration has several stores: say which with #NAME or `default`".into(),
            ))
        }
        (None, Some(name)) => Err(Error::Config(format!(
            "store {name:?}: the configuration has no [stores]"
        ))),
        (None, None) => Ok(&source.root),
    }
}

fn named<'a>(stores: &'a Map<String, Value>, name: &str) -> Result<&'a Value> {
    stores
        .get(name)
        .ok_or_else(|| Error::Config(format!("no store named {name:?} in the configuration")))
}

fn build<'a>(member: &'a Value, source: &'a Source, at: Nest) -> BoxFuture<'a, Result<Opened>> {
    Box::pin(async move {
        if at.depth > MAX_DEPTH {
            return Err(Error::Config(
                "store configuration nests too deep (a cycle of @names?)".into(),
            ));
        }
        match member {
            Value::String(spec) => open_string(spec, source, at).await,
            Value::Object(table) => {
                let mut kinds = table
                    .iter()
                    .filter(|(k, _)| *k != "stores" && *k != "default");
                let (Some((kind, body)), None) = (kinds.next(), kinds.next()) else {
                    return Err(Error::Config(
                        "a store table needs exactly one of `replicated` or `cached`".into(),
                    ));
                };
                match kind.as_str() {
                    "replicated" => build_replicated(body, source, at).await,
                    "cached" => build_cached(body, source, at).await,
                    other => Err(Error::Config(format!(
                        "unknown store kind {other:?} (expected `replicated` or `cached`)"
                    ))),
                }
            }
            other => Err(Error::Config(format!(
                "a store is a spec string or a table, not {other}"
            ))),
        }
    })
}

async fn open_string(spec: &str, source: &Source, at: Nest) -> Result<Opened> {
    if let Some(name) = spec.strip_prefix('@') {
        let stores = source
            .root
            .get("stores")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::Config(format!("{spec}: the configuration has no [stores]")))?;
        return build(named(stores, name)?, source, at.deeper()).await;
    }
    let resolved = relative_to(spec, &source.dir);
    if is_config_spec(&resolved) {
        return open_depth(&resolved, at.deeper()).await;
    }
    Ok(Opened::Plain(
        super::open_plain(&resolved, at.missing).await?,
    ))
}

/// A relative filesystem path (or `config:` path) is taken relative to the configuration file.
/// A URL is not a path, in its short form `file:/dir` too, and neither is `memory:…`.
fn relative_to(spec: &str, dir: &Path) -> String {
    let (prefix, rest) = match spec.strip_prefix("config:") {
        Some(r) => ("config:", r),
        None => ("", spec),
    };
    let is_path =
        super::scheme_of(rest).is_none() && !rest.starts_with("memory:") && !rest.starts_with('{');
    if is_path && Path::new(rest).is_relative() {
        format!("{prefix}{}", dir.join(rest).display())
    } else {
        spec.to_string()
    }
}

fn table<'a>(body: &'a Value, kind: &str) -> Result<&'a Map<String, Value>> {
    body.as_object()
        .ok_or_else(|| Error::Config(format!("`{kind}` must be a table")))
}

fn check_keys(t: &Map<String, Value>, kind: &str, allowed: &[&str]) -> Result<()> {
    for k in t.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(Error::Config(format!(
                "unknown `{kind}` setting {k:?} (expected one of {})",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

async fn build_replicated(body: &Value, source: &Source, at: Nest) -> Result<Opened> {
    let t = table(body, "replicated")?;
    check_keys(
        t,
        "replicated",
        &["replicas", "write_quorum", "read_timeout", "read_repair"],
    )?;
    let members = t
        .get("replicas")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Config("`replicated` needs a `replicas` list".into()))?;
    let mut replicas = Vec::with_capacity(members.len());
    for m in members {
        replicas.push(build(m, source, at.deeper()).await?.backend());
    }
    let write_quorum = match t.get("write_quorum") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|q| usize::try_from(q).ok())
                .ok_or_else(|| Error::Config("`write_quorum` must be a number".into()))?,
        ),
    };
    let read_timeout = match t.get("read_timeout") {
        None => None,
        Some(Value::String(s)) => {
            Some(parse_duration(s).map_err(|e| Error::config("`read_timeout`", e))?)
        }
        Some(Value::Number(n)) => match n.as_f64().map(std::time::Duration::try_from_secs_f64) {
            Some(Ok(d)) => Some(d),
            _ => {
                return Err(Error::Config(format!(
                    "`read_timeout` {n} is not a number of seconds a timeout can be"
                )))
            }
        },
        Some(_) => return Err(Error::Config("`read_timeout` must be like \"2s\"".into())),
    };
    let read_repair = match t.get("read_repair") {
        None => true,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| Error::Config("`read_repair` must be true or false".into()))?,
    };
    Ok(Opened::Replicated(Replicated::new(
        replicas,
        ReplicatedOptions {
            write_quorum,
            read_timeout,
            read_repair,
        },
    )?))
}

async fn build_cached(body: &Value, source: &Source, at: Nest) -> Result<Opened> {
    let t = table(body, "cached")?;
    check_keys(t, "cached", &["local", "remote", "capacity"])?;
    let get = |k: &str| {
        t.get(k)
            .ok_or_else(|| Error::Config(format!("`cached` needs `{k}`")))
    };
    // The tier is made where there is none, as any read through a cache may fill it; the
    // remote is the store of record.
    let tier = Nest {
        missing: Missing::Create,
        ..at.deeper()
    };
    // The remote first: a remote refused leaves no new tier behind.
    let remote = build(get("remote")?, source, at.deeper()).await?.backend();
    let local = build(get("local")?, source, tier).await?.backend();
    let capacity = match t.get("capacity") {
        None => CachedOptions::default().capacity,
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| Error::Config("`capacity` must be a size".into()))?,
        Some(Value::String(s)) => parse_size(s).map_err(|e| Error::config("`capacity`", e))?,
        Some(_) => {
            return Err(Error::Config(
                "`capacity` must be a size like \"10GiB\"".into(),
            ))
        }
    };
    Ok(Opened::Cached(
        Cached::new(local, remote, CachedOptions { capacity }).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_specs_are_configuration() {
        assert!(is_config_spec("config:stores.toml"));
        assert!(is_config_spec("stores.toml#main"));
        assert!(is_config_spec("/etc/tarvault/stores.json"));
        assert!(is_config_spec(r#"{"replicated": {"replicas": ["a"]}}"#));
        assert!(!is_config_spec("/var/lib/tarvault"));
        assert!(!is_config_spec("memory:"));
        assert!(!is_config_spec("s3://bucket/prefix.json"));
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let d = Path::new("/etc/tarvault");
        assert_eq!(relative_to("cache", d), "/etc/tarvault/cache");
        assert_eq!(relative_to("/abs", d), "/abs");
        assert_eq!(relative_to("memory:", d), "memory:");
        assert_eq!(relative_to("s3://b/p", d), "s3://b/p");
        // RFC 8089's short form is a URL, not a relative path starting `file:`.
        assert_eq!(
            relative_to("file:/srv/s?fsync=false", d),
            "file:/srv/s?fsync=false"
        );
        // An error when opened, as on the command line: not a directory made beside the file.
        assert_eq!(relative_to("memory:x", d), "memory:x");
        assert_eq!(
            relative_to("config:x.toml", d),
            "config:/etc/tarvault/x.toml"
        );
    }
}
