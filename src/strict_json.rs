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

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// Why a key given twice is refused (serde_json keeps the last of two, CouchDB the first).
pub(crate) const TWICE: &str = "given twice: JSON readers disagree on which one counts";

/// Bytes of a document's limit per unit of the parse's budget. A [`Value`] is 32 bytes before
/// what it holds, and the smallest values take two or three bytes of text (`0,`, `{"a":0},`), so
/// a document of nothing else parsed into 24 times its text, and one of small objects (each a
/// B-tree node of about 640 bytes) into 80 times: 192 MiB and more for the 8 MiB a publish
/// document may have. A scalar, a string or a key costs one unit, an array [`ARRAY_UNITS`] and
/// an object [`OBJECT_UNITS`] (their first allocations); one unit per 16 bytes keeps the parsed
/// form to about three times the limit, and real documents (strings, mostly: a readme, a
/// package.json) far below it.
pub(crate) const BYTES_PER_UNIT: usize = 16;
/// An array's units: its first allocation holds four values.
const ARRAY_UNITS: usize = 4;
/// An object's units: the first node of its B-tree holds eleven members, about 640 bytes.
const OBJECT_UNITS: usize = 20;

/// Parses `text`, the value found at `root` (`None`: the whole document; `Some("versions")`:
/// that member), refusing any object with a key twice: [`Error::Document`] naming its path, such
/// as `versions["1.0.0"].dist.integrity`. Other errors name `at`. With `limit`, the document's
/// limit in bytes, at most one unit of values per [`BYTES_PER_UNIT`] of it is built; more is
/// [`Error::TooLarge`], found before they are all built.
pub(crate) fn parse(
    text: &[u8],
    root: Option<&str>,
    at: &str,
    limit: Option<usize>,
) -> Result<Value> {
    let duplicate = RefCell::new(None);
    let units = limit.map_or(usize::MAX, |l| l / BYTES_PER_UNIT);
    let left = Cell::new(units);
    let root = root.map(|key| Path {
        parent: None,
        segment: Segment::Key(key),
    });
    let seed = Seed {
        path: root.as_ref(),
        duplicate: &duplicate,
        left: &left,
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (parsed, duplicate.into_inner()) {
        (_, Some(path)) => Err(Error::document(path, TWICE)),
        (Ok(value), None) => Ok(value),
        (Err(_), None) if left.get() == 0 && limit.is_some() => Err(Error::TooLarge {
            what: format!(
                "{at} as parsed (more than {units} units of JSON values, one per \
                 {BYTES_PER_UNIT} bytes of the limit: a value 1, an array {ARRAY_UNITS}, an \
                 object {OBJECT_UNITS})"
            ),
            limit: limit.unwrap_or_default() as u64,
        }),
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
    let left = Cell::new(usize::MAX);
    let seed = Seed {
        path: None,
        duplicate: &duplicate,
        left: &left,
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
    /// How many more units of values may be built (see [`BYTES_PER_UNIT`]).
    left: &'a Cell<usize>,
}

impl Seed<'_> {
    fn child<'b>(&'b self, path: &'b Path<'b>) -> Seed<'b> {
        Seed {
            path: Some(path),
            duplicate: self.duplicate,
            left: self.left,
        }
    }

    /// Counts one value built, or fails once the budget is spent (which `parse` reports).
    fn spend<E: serde::de::Error>(&self) -> Result<(), E> {
        self.spend_units(1)
    }

    /// Counts `n` units, or fails once the budget is spent.
    fn spend_units<E: serde::de::Error>(&self, n: usize) -> Result<(), E> {
        match self.left.get().checked_sub(n) {
            Some(n) => {
                self.left.set(n);
                Ok(())
            }
            None => {
                self.left.set(0);
                Err(E::custom("too many values"))
            }
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

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::from(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.spend_units(ARRAY_UNITS)?;
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
        self.spend_units(OBJECT_UNITS)?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // A member's key is held as a value is.
            self.spend()?;
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
        match parse(text.as_bytes(), root, "body", None) {
            Err(Error::Document { at, .. }) => at,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn a_repeated_key_is_refused_naming_its_path() {
        let v = parse(br#"{"a": [1, {"b": null}], "c": -1.5}"#, None, "body", None);
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
