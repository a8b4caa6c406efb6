//! Which blob a request path names. Parsing is done by hand rather than by the router so that the
//! difference between "malformed" (400) and "unknown" (404) is decided in one place, and so that
//! npm's two spellings of a scoped tarball URL (`/@scope/name/-/…` and `/@scope%2Fname/-/…`) are
//! one route.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use crate::backend::BlobKey;
use crate::{Algorithm, Hash};

/// The route a request matched, as used in metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Sha512,
    Sha1,
    Blake3,
    Tarball,
    Health,
    Metrics,
    Other,
}

impl Route {
    pub(crate) const ALL: [Route; 7] = [
        Route::Sha512,
        Route::Sha1,
        Route::Blake3,
        Route::Tarball,
        Route::Health,
        Route::Metrics,
        Route::Other,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Route::Sha512 => "sha512",
            Route::Sha1 => "sha1",
            Route::Blake3 => "blake3",
            Route::Tarball => "tarball",
            Route::Health => "health",
            Route::Metrics => "metrics",
            Route::Other => "other",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// What a path names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    /// `/sha512/<128 hex>`.
    Sha512(BlobKey),
    /// `/sha1/<40 hex>` (npm's `shasum`) or `/blake3/<64 hex>`: a blob by an alias the store's
    /// index resolves.
    Alias(Hash),
    /// `/<name>/-/<file>` or `/@scope/<name>/-/<file>` (the scope's slash possibly `%2F`).
    Tarball {
        name: Cow<'a, str>,
        file: Cow<'a, str>,
    },
}

/// Why a path names nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// Not a route of this server (404).
    Unknown,
    /// A route, but its address is malformed (400), with the reason.
    Malformed(Route, &'static str),
}

impl Target<'_> {
    pub(crate) fn route(&self) -> Route {
        match self {
            Target::Sha512(_) => Route::Sha512,
            Target::Alias(hash) if hash.algorithm() == Algorithm::Blake3 => Route::Blake3,
            Target::Alias(_) => Route::Sha1,
            Target::Tarball { .. } => Route::Tarball,
        }
    }
}

/// Parses a request path (still percent-encoded, without the query).
///
/// A digest route is one segment after its prefix: `sha1`, `sha512` and `blake3` are also npm
/// package names, whose tarball URLs (`/sha1/-/sha1-1.0.0.tgz`) must reach the tarball route. Its segment
/// is percent-decoded, as a tarball URL's are: `%61` and `a` are the same character in a URL
/// (RFC 3986 §6.2.2.2), so `/sha1/%61b…` names the blob `/sha1/ab…` does.
pub(crate) fn parse(path: &str) -> Result<Target<'_>, Miss> {
    let digest = |prefix: &str| path.strip_prefix(prefix).filter(|rest| !rest.contains('/'));
    if let Some(hex) = digest("/sha512/") {
        let mut key = [0u8; 64];
        return match hex::decode_to_slice(unescape(hex), &mut key) {
            Ok(()) => Ok(Target::Sha512(BlobKey::new(key))),
            Err(_) => Err(Miss::Malformed(
                Route::Sha512,
                "a sha512 address is 128 hex digits",
            )),
        };
    }
    let aliases = [
        (
            "/sha1/",
            Route::Sha1,
            Algorithm::Sha1,
            "a sha1 address is 40 hex digits",
        ),
        (
            "/blake3/",
            Route::Blake3,
            Algorithm::Blake3,
            "a blake3 address is 64 hex digits",
        ),
    ];
    for (prefix, route, algorithm, why) in aliases {
        if let Some(hex) = digest(prefix) {
            let hash = hex::decode(unescape(hex)).map(|d| Hash::new(algorithm, &d));
            return match hash {
                Ok(Ok(hash)) => Ok(Target::Alias(hash)),
                _ => Err(Miss::Malformed(route, why)),
            };
        }
    }
    let rest = path.strip_prefix('/').ok_or(Miss::Unknown)?;
    let Some((package, file)) = rest.rsplit_once("/-/") else {
        return Err(Miss::Unknown);
    };
    let package = decode(package)?;
    let mut file = decode(file)?;
    // Later npm clients published a scoped tarball's URL with the scope again after `/-/`
    // (`/@s%2fa/-/@s/a-1.0.0.tgz`), and lockfiles and cached packuments keep it; the mapping
    // names the file alone.
    if let Some((scope, _)) = package.split_once('/').filter(|_| package.starts_with('@')) {
        if let Some(rest) = file.strip_prefix(scope).and_then(|r| r.strip_prefix('/')) {
            file = Cow::Owned(rest.to_string());
        }
    }
    if file.is_empty() || file.contains('/') || package.is_empty() {
        return Err(Miss::Unknown);
    }
    // The rule a publish and a migration hold names to, so that whatever they map is served.
    if crate::package_name::addressable(&package).is_err() {
        return Err(Miss::Malformed(
            Route::Tarball,
            "a package name is `name` or `@scope/name`",
        ));
    }
    Ok(Target::Tarball {
        name: package,
        file,
    })
}

/// A digest segment's bytes with its percent-encoding undone (borrowed when it has none). They are
/// only ever read as hex digits, so no check of what they decode to is needed: a `%2F`, a byte
/// that is not UTF-8, or a `%` without two hex digits after it (left as it is) is just not a hex
/// digit, and the address stays malformed (400) as it was encoded.
fn unescape(segment: &str) -> Cow<'_, [u8]> {
    percent_decode_str(segment).into()
}

fn decode(text: &str) -> Result<Cow<'_, str>, Miss> {
    if !text.contains('%') {
        return Ok(Cow::Borrowed(text));
    }
    percent_decode_str(text)
        .decode_utf8()
        .map_err(|_| Miss::Malformed(Route::Tarball, "percent-encoding is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball<'a>(name: &'a str, file: &'a str) -> Target<'a> {
        Target::Tarball {
            name: Cow::Borrowed(name),
            file: Cow::Borrowed(file),
        }
    }

    #[test]
    fn paths() {
        let hex = "ab".repeat(64);
        assert_eq!(
            parse(&format!("/sha512/{hex}")),
            Ok(Target::Sha512(BlobKey::new([0xab; 64])))
        );
        let alias = |algorithm, len: usize| {
            Ok(Target::Alias(
                Hash::new(algorithm, &vec![0x0f; len]).expect("hash"),
            ))
        };
        assert_eq!(
            parse(&format!("/sha1/{}", "0f".repeat(20))),
            alias(Algorithm::Sha1, 20)
        );
        assert_eq!(
            parse(&format!("/blake3/{}", "0f".repeat(32))),
            alias(Algorithm::Blake3, 32)
        );
        assert_eq!(
            parse(&format!("/blake3/{}", "0f".repeat(20))),
            Err(Miss::Malformed(
                Route::Blake3,
                "a blake3 address is 64 hex digits"
            ))
        );
        assert_eq!(
            parse("/blake3/-/blake3-1.0.0.tgz"),
            Ok(tarball("blake3", "blake3-1.0.0.tgz"))
        );
        assert!(matches!(parse("/sha512/abc"), Err(Miss::Malformed(..))));
        assert!(matches!(
            parse(&format!("/sha1/{}", "zz".repeat(20))),
            Err(Miss::Malformed(..))
        ));
        assert_eq!(parse("/a/-/a-1.0.0.tgz"), Ok(tarball("a", "a-1.0.0.tgz")));
        assert_eq!(parse("/@s/a/-/a-1.tgz"), Ok(tarball("@s/a", "a-1.tgz")));
        assert_eq!(parse("/@s%2Fa/-/a-1.tgz"), Ok(tarball("@s/a", "a-1.tgz")));
        assert_eq!(parse("/@s%2fa/-/a-1.tgz"), Ok(tarball("@s/a", "a-1.tgz")));
        // The scope again after `/-/`, as later npm clients wrote it; not another scope.
        assert_eq!(
            parse("/@s%2fa/-/@s/a-1.tgz"),
            Ok(tarball("@s/a", "a-1.tgz"))
        );
        assert_eq!(parse("/@s/a/-/@s/a-1.tgz"), Ok(tarball("@s/a", "a-1.tgz")));
        assert_eq!(
            parse("/@s/a/-/@s%2fa-1.tgz"),
            Ok(tarball("@s/a", "a-1.tgz"))
        );
        assert_eq!(parse("/@s/a/-/@t/a-1.tgz"), Err(Miss::Unknown));
        assert_eq!(parse("/a/-/@s/a-1.tgz"), Err(Miss::Unknown));
        assert_eq!(
            parse("/sha1/-/sha1-1.0.0.tgz"),
            Ok(tarball("sha1", "sha1-1.0.0.tgz"))
        );
        assert_eq!(
            parse("/sha512/-/sha512-1.0.0.tgz"),
            Ok(tarball("sha512", "sha512-1.0.0.tgz"))
        );
        assert_eq!(
            parse("/@sha1/x/-/x-1.tgz"),
            Ok(tarball("@sha1/x", "x-1.tgz"))
        );
        assert_eq!(parse("/sha1/x/y"), Err(Miss::Unknown));
        assert!(matches!(
            parse("/sha1/"),
            Err(Miss::Malformed(Route::Sha1, _))
        ));
        assert_eq!(parse("/"), Err(Miss::Unknown));
        assert_eq!(parse("/a"), Err(Miss::Unknown));
        assert_eq!(parse("/a/-/"), Err(Miss::Unknown));
        assert_eq!(parse("/a/-/x/y.tgz"), Err(Miss::Unknown));
        assert!(matches!(parse("/a/b/-/a.tgz"), Err(Miss::Malformed(..))));
        assert!(matches!(parse("/@s/-/a.tgz"), Err(Miss::Malformed(..))));
        assert!(matches!(parse("/a/-/%ff.tgz"), Err(Miss::Malformed(..))));
    }

    /// Percent-encoded hex digits are the digits (RFC 3986 §6.2.2.2), in either case and for any
    /// number of them; what does not decode to hex digits stays malformed (400).
    #[test]
    fn percent_encoded_digits_name_the_same_blob() {
        let hex = "ab".repeat(64);
        let every = |hex: &str| -> String { hex.bytes().map(|b| format!("%{b:02X}")).collect() };
        for path in [
            format!("/sha512/%61%62{}", &hex[2..]),
            format!("/sha512/%61%42{}", &hex[2..]),
            format!("/sha512/{}", every(&hex)),
            format!("/sha512/{}", every(&hex).to_lowercase()),
        ] {
            assert_eq!(
                parse(&path),
                Ok(Target::Sha512(BlobKey::new([0xab; 64]))),
                "{path}"
            );
        }
        let sha1 = "0f".repeat(20);
        for path in [
            format!("/sha1/%30f{}", &sha1[2..]),
            format!("/sha1/{}", every(&sha1)),
        ] {
            let sha1 = Hash::new(Algorithm::Sha1, &[0x0f; 20]).expect("hash");
            assert_eq!(parse(&path), Ok(Target::Alias(sha1)), "{path}");
        }
        for bad in [
            format!("/sha1/%7A%7A{}", &sha1[2..]),
            format!("/sha1/0f%2F{}", &sha1[3..]),
            format!("/sha1/%ff%fe{}", &sha1[2..]),
            format!("/sha1/%0{}", &sha1[2..]),
            format!("/sha1/%30{sha1}"),
            "/sha1/%".to_string(),
        ] {
            assert!(
                matches!(parse(&bad), Err(Miss::Malformed(Route::Sha1, _))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse(&format!("/sha512/%2F{}", &hex[1..])),
            Err(Miss::Malformed(Route::Sha512, _))
        ));
    }
}
