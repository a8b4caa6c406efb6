//! npm package names as they appear in tarball URLs (`/<name>/-/<file>`, scoped
//! `/@scope/name/-/<file>`): one rule for what is taken in (a publish, a migration) and what is
//! served, so that a name accepted on the way in can always be asked for on the way out.

/// Why `name` cannot be the package of a tarball URL, if it cannot. The server finds the package
/// by the path before `/-/`, so a scoped name must be `@scope/name` with exactly one `/` and both
/// parts non-empty, and an unscoped name has no `/` (`a/b` would be read as a malformed scoped
/// path). Neither part may be `.` or `..`: URL parsers resolve those segments away, so a request
/// for the package would reach another path.
pub(crate) fn addressable(name: &str) -> Result<(), &'static str> {
    let parts: &[&str] = match name.strip_prefix('@') {
        Some(scoped) => match scoped.split_once('/') {
            Some((scope, rest)) if !scope.is_empty() && !rest.is_empty() && !rest.contains('/') => {
                &[scope, rest]
            }
            _ => return Err("a scoped name is `@scope/name`, with exactly one `/`"),
        },
        None if name.is_empty() => return Err("is empty"),
        None if name.contains('/') => {
            return Err("an unscoped name has no `/` (a scoped one is `@scope/name`)")
        }
        None => &[name],
    };
    if parts.iter().any(|p| matches!(*p, "." | "..")) {
        return Err("`.` and `..` are removed from URLs by every client");
    }
    Ok(())
}

/// Why npm would not take `name` for a new package, for the rules of validate-npm-package-name
/// that decide whether it can be stored and served: [`addressable`]; 1 to 214 characters; no
/// leading `.` or `_` (`_` names are CouchDB's own documents, `_design/…`); no `..`, which the
/// tarball's attachment name (`<name>-<version>.tgz`) may not contain either; and URL-safe, each
/// part left as is by JavaScript's `encodeURIComponent` (ASCII letters, digits and `-._~!'()*`),
/// so that the URL npm builds from it and the one the server parses name the same package.
/// Capitals are not refused: npm refuses them only for new names, and old packages have them.
pub(crate) fn publishable(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 214 {
        return Err("must be 1 to 214 characters");
    }
    addressable(name)?;
    if name.starts_with(['.', '_']) {
        return Err("may not start with `.` or `_`");
    }
    if name.contains("..") {
        return Err("may not contain `..`");
    }
    let body = name.strip_prefix('@').unwrap_or(name);
    let url_safe = |c: char| c.is_ascii_alphanumeric() || "-._~!'()*/".contains(c);
    if !body.chars().all(url_safe) {
        return Err("must be URL-safe: ASCII letters, digits and `-._~!'()*`, and `@scope/`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_can_be_served_and_published() {
        for good in [
            "left-pad",
            "@s/p",
            "JSONStream",
            "a.b_c~d",
            "@types/node",
            "x",
        ] {
            assert_eq!(addressable(good), Ok(()), "{good}");
            assert_eq!(publishable(good), Ok(()), "{good}");
        }
        // Addressable (an old CouchDB document can be served under them), but npm refuses them.
        for old in [".x", "_x", "a..b", "a b", "caf\u{e9}", "a@b"] {
            assert_eq!(addressable(old), Ok(()), "{old}");
            assert!(publishable(old).is_err(), "{old}");
        }
        for bad in [
            "", "a/b", "/a", "a/", "@s/a/b", "@s/", "@/a", "@s", "@", ".", "..", "@s/..", "@./a",
        ] {
            assert!(addressable(bad).is_err(), "{bad:?}");
            assert!(publishable(bad).is_err(), "{bad:?}");
        }
        assert!(publishable(&"a".repeat(215)).is_err());
    }
}
