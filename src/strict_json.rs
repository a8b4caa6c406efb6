//! JSON parsed into a [`Value`] with every duplicated object key refused, naming its path.
//!
//! serde_json keeps the last of two equal keys, CouchDB (Erlang proplists read with
//! `couch_util:get_value`) the first, and other readers either; a document with `dist.integrity`
//! twice would then be checked against one digest here and served to clients with the other.
//! No JSON writer npm uses produces duplicates (`JSON.stringify` cannot), so a document that has
//! them is refused rather than read one way.
//!
//! Shared by the clients that read registry documents: `publish` parses a publish document with
//! [`parse`], `migrate` reads each document of a `_changes` page with `read`.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// Why a key given twice is refused (serde_json keeps the last of two, CouchDB the first).
pub(crate) const TWICE: &str = "given twice: JSON readers disagree on which one counts";

/// Parses `text`, the value found at `root` (`None`: the whole document; `Some("versions")`:
/// that member), refusing any object with a key twice: [`Error::Document`] naming its path, such
/// as `versions["1.0.0"].dist.integrity`. Other errors name `at`.
pub(crate) fn parse(text: &[u8], root: Option<&str>, at: &str) -> Result<Value> {
    let duplicate = RefCell::new(None);
    let root = root.map(|key| Path {
        parent: None,
        segment: Segment::Key(key),
    });
    let seed = Seed {
        path: root.as_ref(),
        duplicate: &duplicate,
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (parsed, duplicate.into_inner()) {
        (_, Some(path)) => Err(Error::document(path, TWICE)),
        (Ok(value), None) => Ok(value),
        (Err(e), None) => Err(Error::document(at, e.to_string())),
    }
}

/// Reads one value from `d` as [`parse`] does, for a document inside a larger answer that serde
/// reads (a `_changes` row's `doc`): `Ok(Err(path))` when a key repeats, the path from the
/// value's root (`versions["1.0.0"].dist.shasum`; with it, [`TWICE`] says why). The value is read
/// to its end either way, so that the answer around it goes on: one bad document refuses itself,
/// not the page of documents it came in. `Err` is the answer's own (bad JSON).
#[cfg(feature = "migrate")]
pub(crate) fn read<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<std::result::Result<Value, String>, D::Error> {
    let duplicate = RefCell::new(None);
    let seed = Seed {
        path: None,
        duplicate: &duplicate,
    };
    let value = seed.deserialize(d)?;
    Ok(duplicate.into_inner().map_or(Ok(value), Err))
}

/// A step of the path to a value: a member's key or an array index.
#[derive(Clone, Copy)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// The path to a value, a list from the value up to the root (built only if a key repeats).
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    segment: Segment<'a>,
}

impl fmt::Display for Path<'_> {
    /// `versions["1.0.0"].dist.integrity`: a key that is a plain identifier after a `.`, any
    /// other in brackets and quotes, like the other errors that name a field of a document.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            write!(f, "{parent}")?;
        }
        let plain = |k: &str| {
            k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        match self.segment {
            Segment::Key(k) if self.parent.is_none() && plain(k) => write!(f, "{k}"),
            Segment::Key(k) if plain(k) => write!(f, ".{k}"),
            Segment::Key(k) => write!(f, "[{k:?}]"),
            Segment::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Builds a [`Value`] like serde_json's own, checking each object's keys on the way.
#[derive(Clone, Copy)]
struct Seed<'a> {
    path: Option<&'a Path<'a>>,
    /// Set to the path of the first duplicated key (serde_json's errors carry a line and column,
    /// not a path). The text is read on past it, to the end of the value: see `read`.
    duplicate: &'a RefCell<Option<String>>,
}

impl Seed<'_> {
    fn child<'b>(&'b self, path: &'b Path<'b>) -> Seed<'b> {
        Seed {
            path: Some(path),
            duplicate: self.duplicate,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let path = Path {
                parent: self.path,
                segment: Segment::Index(out.len()),
            };
            match seq.next_element_seed(self.child(&path))? {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // One lookup per key (`entry`), not a check and then an insert: a packument has
            // hundreds of versions, and a migration reads every document of a registry.
            match out.entry(key) {
                Entry::Vacant(slot) => {
                    let path = Path {
                        parent: self.path,
                        segment: Segment::Key(slot.key()),
                    };
                    let value = map.next_value_seed(self.child(&path))?;
                    slot.insert(value);
                }
                Entry::Occupied(first) => {
                    let path = Path {
                        parent: self.path,
                        segment: Segment::Key(first.key()),
                    };
                    self.duplicate
                        .borrow_mut()
                        .get_or_insert_with(|| path.to_string());
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_at(text: &str, root: Option<&str>) -> String {
        match parse(text.as_bytes(), root, "body") {
            Err(Error::Document { at, .. }) => at,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn a_repeated_key_is_refused_naming_its_path() {
        let v = parse(br#"{"a": [1, {"b": null}], "c": -1.5}"#, None, "body");
        assert_eq!(
            v.ok(),
            Some(serde_json::json!({"a": [1, {"b": null}], "c": -1.5}))
        );
        assert_eq!(refused_at(r#"{"name": "a", "name": "b"}"#, None), "name");
        assert_eq!(
            refused_at(
                r#"{"1.0.0": {"dist": {"integrity": "x", "integrity": "y"}}}"#,
                Some("versions")
            ),
            r#"versions["1.0.0"].dist.integrity"#
        );
        // Equal once decoded: `\u006e` is `n`.
        assert_eq!(
            refused_at(r#"{"x": [{"n": 1, "\u006e": 2}]}"#, None),
            "x[0].n"
        );
        assert_eq!(refused_at("{\"a\": 1} x", None), "body");
    }
}
