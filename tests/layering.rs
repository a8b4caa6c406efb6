//! The library's top-level modules import only downwards, in the order `src/lib.rs` documents.
//!
//! A cycle between modules (the store opening composite stores that open stores) or an import of
//! a layer above (a backend parsing with an `ops` helper) is easy to add and invisible in review,
//! and a plain import graph misses it when it goes through a re-export at the crate root. This
//! test reads every `src/**/*.rs` of the library, finds each `crate::<module>` and `super::`
//! path that reaches another top-level module (through `lib.rs`'s re-exports too), and fails
//! naming the file and line of each one the table below does not allow.
//!
//! Comments are skipped (doc links may point anywhere). `src/main.rs` and `src/cli/` are the
//! binary: it uses the library as `tarvault::…`, a client of every layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, from the bottom: a module may import the modules of lower layers only. Keep in step
/// with the list in `src/lib.rs`.
const LAYERS: &[&[&str]] = &[
    &["tarball", "units", "package_name"],
    &["error"],
    &["integrity", "task", "strict_json", "host_tmp"],
    &["backend"],
    &["store"],
    &["open", "mapping"],
    &["ops", "migrate", "server", "publish"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// `src/lib.rs`'s `pub use module::{A, B};` lines: which module a root name (`crate::Store`)
/// really belongs to.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let code = strip_comments(lib);
    for stmt in code.split(';') {
        let stmt = stmt.trim();
        let Some(rest) = stmt.strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = name.trim();
            let name = name.rsplit(" as ").next().unwrap_or(name).trim();
            if !name.is_empty() {
                map.insert(name.to_string(), module.trim().to_string());
            }
        }
    }
    map
}

/// The text with `//` comments blanked (strings are left alone: a `//` inside one is rare here
/// and at worst hides a use from the check, never invents one). Line breaks are kept so that
/// offsets still give line numbers.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match line.find("//") {
            Some(i) => {
                out.push_str(&line[..i]);
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`: `backend/compose/cached.rs` is
/// `[backend, compose, cached]`, `backend/mod.rs` is `[backend]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" {
            parts.push(stem.to_string());
        }
    }
    parts
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first segments of the paths a `use`/path starting at `rest` names: `Store` for
/// `Store::open`, `[Error, Result]` for `{Error, Result}`, `[a, b]` for `{a::x, b::{y, z}}`.
fn first_segments(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut depth = 0usize;
        let mut items = Vec::new();
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    items.push(&inner[start..i]);
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items
            .into_iter()
            .flat_map(|item| first_segments(item.trim()).into_iter().take(1))
            .collect()
    } else {
        let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if name.is_empty() {
            Vec::new()
        } else {
            vec![name]
        }
    }
}

/// Every top-level module the file's code names, with the line it is named on.
fn imports(
    code: &str,
    own: &[String],
    reexports: &BTreeMap<String, String>,
) -> Vec<(usize, String)> {
    let line_of = |offset: usize| code[..offset].matches('\n').count() + 1;
    let resolve = |name: &str| -> Option<String> {
        if layer_of(name).is_some() {
            Some(name.to_string())
        } else {
            reexports.get(name).cloned()
        }
    };
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].chars().next_back().is_some_and(is_ident) {
            continue; // `tarvault_crate::` or the like
        }
        for name in first_segments(&code[at + "crate::".len()..]) {
            if let Some(module) = resolve(&name) {
                found.push((line_of(at), module));
            }
        }
    }
    // `super::` climbs out of the top-level module only from a file that is one: resolve it
    // when the chain of `super`s reaches the crate root. (Inside an inline `mod tests` the same
    // text names the file's own module; those name no other top-level module and resolve to
    // nothing or to the file's own.)
    for (at, _) in code.match_indices("super::") {
        if code[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let mut rest = &code[at..];
        let mut ups = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            ups += 1;
            rest = r;
        }
        if ups < own.len() {
            continue;
        }
        for name in first_segments(rest) {
            if let Some(module) = resolve(&name) {
                found.push((line_of(at), module));
            }
        }
    }
    found
}

#[test]
fn top_level_modules_import_only_lower_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(root.join("lib.rs")).unwrap_or_else(|e| panic!("{e}"));
    let reexports = root_reexports(&lib);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut unknown = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&root).unwrap_or(file);
        let module = module_path(rel);
        let Some(top) = module.first() else {
            continue; // lib.rs and main.rs
        };
        if top == "cli" || top == "main" || top == "lib" {
            continue;
        }
        let Some(own_layer) = layer_of(top) else {
            unknown.insert(top.clone());
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{e}"));
        for (line, used) in imports(&strip_comments(&text), &module, &reexports) {
            if &used == top {
                continue;
            }
            let used_layer = layer_of(&used).unwrap_or(usize::MAX);
            if used_layer >= own_layer {
                violations.push(format!(
                    "src/{}:{line}: `{top}` (layer {own_layer}) uses `{used}` (layer {used_layer}), \
                     which is not below it",
                    rel.display()
                ));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "top-level modules missing from LAYERS in tests/layering.rs: {unknown:?}"
    );
    assert!(
        violations.is_empty(),
        "imports against the layer order (see src/lib.rs):\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_scanner_sees_root_reexports_and_super() {
    let reexports =
        root_reexports("pub use store::{Store,\n    PutOptions};\npub use error::Error;");
    assert_eq!(reexports.get("Store").map(String::as_str), Some("store"));
    assert_eq!(
        reexports.get("PutOptions").map(String::as_str),
        Some("store")
    );
    let code = "use crate::{Error, backend::{Backend, BlobKey}};\n// crate::ops in a comment\nuse super::super::store::x;\n";
    let code = strip_comments(code);
    let own = vec!["backend".to_string(), "compose".to_string()];
    let found = imports(&code, &own, &reexports);
    assert_eq!(
        found,
        vec![
            (1, "error".to_string()),
            (1, "backend".to_string()),
            (3, "store".to_string())
        ]
    );
}

/// Files that mix concerns grow: past this many lines a module is split by concern into a
/// directory (as `tarball/tar/` and `backend/compose/replicated/` were), so review stays local.
const MAX_LINES: usize = 650;

#[test]
fn no_source_file_outgrows_a_split() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let text =
                std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let lines = text.lines().count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these by concern (limit {MAX_LINES}):\n{}",
        long.join("\n")
    );
}
