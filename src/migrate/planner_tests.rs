//! The planner's unit tests: one document in, the plan out.

use super::*;
use crate::migrate::changes::Seq;
use serde_json::json;

fn row(id: &str, doc: Value) -> ChangeRow {
    ChangeRow {
        seq: Seq(json!(1)),
        id: id.into(),
        deleted: false,
        doc: Some(Ok(doc)),
    }
}

const MD5: &str = "md5-bG4AEU4AwoFfwK6uPaGvIw==";
const SHA1: &str = "7535345b2f0b1f8b5d6e8cd4d8e6e4bbd3ae4f1c";

#[test]
fn tarball_names_follow_the_url_basename() {
    let c = |n: &str, t: &str| attachment_candidates(n, t);
    assert_eq!(
        c(
            "left-pad",
            "http://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz"
        ),
        Some((
            "left-pad-1.3.0.tgz".into(),
            vec!["left-pad-1.3.0.tgz".into()]
        ))
    );
    assert_eq!(
        c(
            "@babel/core",
            "https://r.example/@babel/core/-/core-7.23.6.tgz"
        ),
        Some((
            "core-7.23.6.tgz".into(),
            vec!["core-7.23.6.tgz".into(), "@babel/core-7.23.6.tgz".into()]
        ))
    );
    // Later npm clients: the attachment is `@scope/name-v.tgz`, the URL has it after `/-/`.
    assert_eq!(
        c("@sc/pk", "http://r/@sc%2fpk/-/@sc/pk-1.0.0.tgz"),
        Some((
            "pk-1.0.0.tgz".into(),
            vec!["pk-1.0.0.tgz".into(), "@sc/pk-1.0.0.tgz".into()]
        ))
    );
    // A tarball renamed by its publisher is still found by its URL, not by name-version.
    assert_eq!(
        c("x", "/x/-/weird-name.tgz?token=1"),
        Some(("weird-name.tgz".into(), vec!["weird-name.tgz".into()]))
    );
    assert_eq!(c("x", "http://r/x/-/"), None);
}

#[test]
fn plans_versions_orphans_and_missing() {
    let doc = json!({
        "_id": "is-number", "_rev": "3-x", "name": "is-number",
        "versions": {
            "7.0.0": {"dist": {"shasum": SHA1, "tarball": "http://r/is-number/-/is-number-7.0.0.tgz",
                "integrity": "sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQGinBN9yTQT3bFlCBy/aVx2HrNcqQGsdot8ghrjyrvMCoEA=="}},
            "8.0.0": {"dist": {"shasum": SHA1, "tarball": "http://r/is-number/-/is-number-8.0.0.tgz"}},
            "9.0.0": {"dist": {"tarball": 7}},
            "10.0.0": {"dist": {"shasum": "zz", "tarball": "http://r/is-number/-/is-number-7.0.0.tgz"}},
            // Refused, but its attachment is referenced: not an orphan as well.
            "11.0.0": {"dist": {"shasum": "zz", "tarball": "http://r/is-number/-/is-number-11.0.0.tgz"}}
        },
        "_attachments": {
            "is-number-7.0.0.tgz": {"content_type": "application/octet-stream", "digest": MD5, "length": 3730, "stub": true, "revpos": 1},
            "is-number-6.0.0.tgz": {"digest": MD5, "length": 1, "stub": true},
            "is-number-11.0.0.tgz": {"digest": MD5, "length": 1, "stub": true}
        }
    });
    let p = plan(&row("is-number", doc));
    assert_eq!(p.jobs.len(), 1);
    let j = &p.jobs[0];
    assert_eq!(j.version, "7.0.0");
    assert_eq!(
        j.size,
        Some((r#"_attachments["is-number-7.0.0.tgz"].length"#.into(), 3730))
    );
    assert_eq!(j.rev.as_deref(), Some("3-x"));
    // One check per field, strongest first, none merged into another.
    let fields: Vec<(&str, Vec<Algorithm>)> = j
        .checks
        .iter()
        .map(|(f, i)| (f.as_str(), i.algorithms()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("dist.integrity", vec![Algorithm::Sha512]),
            ("dist.shasum", vec![Algorithm::Sha1]),
            (
                r#"_attachments["is-number-7.0.0.tgz"].digest"#,
                vec![Algorithm::Md5]
            ),
        ]
    );
    let all = j.all_hashes().map(|i| i.algorithms());
    assert_eq!(
        all,
        Some(vec![Algorithm::Sha512, Algorithm::Sha1, Algorithm::Md5])
    );
    let mut decided: Vec<(String, OutcomeKind)> = p
        .decided
        .iter()
        .map(|(k, pr)| {
            let pr = pr.clone().unwrap_or_else(|| panic!("problem"));
            (pr.version.or(pr.file).unwrap_or_default(), *k)
        })
        .collect();
    decided.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        decided,
        vec![
            ("10.0.0".into(), OutcomeKind::Unreadable), // bad shasum
            ("11.0.0".into(), OutcomeKind::Unreadable),
            ("9.0.0".into(), OutcomeKind::Unreadable), // tarball not a string
        ]
    );
    // Without its attachment: a failure, unless fetched from its dist.tarball.
    let missing: Vec<_> = p.fallbacks.into_iter().map(|f| f.resolve(false)).collect();
    assert!(
        matches!(&missing[..], [Err(pr)]
            if pr.kind == OutcomeKind::AttachmentMissing
                && pr.version.as_deref() == Some("8.0.0")
                && pr.file.as_deref() == Some("is-number-8.0.0.tgz")),
        "{missing:?}"
    );
    let orphans: Vec<_> = p.orphans.into_iter().map(|o| o.listed()).collect();
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert_eq!(
        (orphans[0].kind, orphans[0].file.as_deref()),
        (OutcomeKind::Orphan, Some("is-number-6.0.0.tgz"))
    );
}

/// What cannot be asked for or checked is unreadable, not a failure of the run: a document
/// or attachment named `.` or `..` (a request would reach its parent: the database, the
/// document) and an attachment length that is not a byte count (it was ignored).
#[test]
fn unaddressable_names_and_bad_lengths_are_unreadable() {
    let version = |tarball: &str, length: Value| {
        json!({"versions": {"1.0.0": {"dist": {"shasum": SHA1, "tarball": tarball}}},
            "_attachments": {"..": {"digest": MD5, "length": length, "stub": true},
                "a-1.0.0.tgz": {"digest": MD5, "length": length, "stub": true}}})
    };
    let kinds = |p: DocPlan| -> Vec<(OutcomeKind, String)> {
        p.decided
            .into_iter()
            .filter(|(k, _)| *k != OutcomeKind::Orphan)
            .map(|(k, pr)| (k, pr.map(|pr| pr.detail).unwrap_or_default()))
            .collect()
    };
    let unreadable = |why: &str| vec![(OutcomeKind::Unreadable, why.to_string())];
    for id in [".", ".."] {
        let p = plan(&row(id, version("http://r/a/-/a-1.0.0.tgz", json!(1))));
        assert!(p.jobs.is_empty(), "{id}");
        let why = "a document id of `.` or `..` cannot be asked for: HTTP removes it from the path";
        assert_eq!(kinds(p), unreadable(why), "{id}");
    }
    let p = plan(&row("a", version("a/-/..", json!(1))));
    assert!(p.jobs.is_empty());
    let why = "attachment \"..\" cannot be asked for: HTTP removes it from the path";
    assert_eq!(kinds(p), unreadable(why));
    for length in [json!(-5), json!("3619"), json!(1.5)] {
        let p = plan(&row(
            "a",
            version("http://r/a/-/a-1.0.0.tgz", length.clone()),
        ));
        assert!(p.jobs.is_empty(), "{length}");
        let why = format!("attachment length {length} is not a byte count");
        assert_eq!(kinds(p), unreadable(&why), "{length}");
    }
    let p = plan(&row("a", version("http://r/a/-/a-1.0.0.tgz", Value::Null)));
    assert_eq!(p.jobs.len(), 1, "no length: nothing to check it against");
}

/// CouchDB writes only `md5-` digests: another one, or a malformed md5, is not skipped (the
/// version would be moved on fewer checks than its document claims) but unreadable. An id
/// that no tarball URL can carry (`a/b`) is unreadable too: mapped, it could not be served.
#[test]
fn unknown_digests_and_unservable_ids_are_unreadable() {
    let doc = |digest: &str| {
        json!({"versions": {"1.0.0": {"dist": {"shasum": SHA1, "tarball": "http://r/a/-/a-1.0.0.tgz"}}},
            "_attachments": {"a-1.0.0.tgz": {"digest": digest, "length": 1, "stub": true}}})
    };
    for (digest, says) in [
        ("sha-bG4AEU4AwoFfwK6uPaGvIw==", "not an md5 digest"),
        ("md5-bG4AEU4AwoFfwK6uPaGvIw", "not base64"),
        ("md5-AAAA", "not an md5"),
    ] {
        let p = plan(&row("a", doc(digest)));
        assert!(p.jobs.is_empty(), "{digest}");
        let (kind, problem) = p
            .decided
            .first()
            .cloned()
            .unwrap_or_else(|| panic!("{digest}"));
        assert_eq!(kind, OutcomeKind::Unreadable, "{digest}");
        let detail = problem.map(|p| p.detail).unwrap_or_default();
        assert!(detail.contains(says), "{digest}: {detail}");
    }
    assert_eq!(plan(&row("a", doc(MD5))).jobs.len(), 1);
    for id in ["a/b", "@s/a/b", "@s"] {
        let p = plan(&row(id, doc(MD5)));
        assert!(p.jobs.is_empty(), "{id}");
        assert_eq!(
            p.decided.first().map(|d| d.0),
            Some(OutcomeKind::Unreadable),
            "{id}"
        );
    }
}

#[test]
fn gzip_stored_attachments_skip_md5_but_keep_length() {
    let doc = json!({"versions": {"1.0.0": {"dist": {"shasum": SHA1, "tarball": "http://r/a/-/a-1.0.0.tgz"}}},
        "_attachments": {"a-1.0.0.tgz": {"digest": MD5, "length": 10, "encoding": "gzip", "encoded_length": 7, "stub": true}}});
    let p = plan(&row("a", doc));
    assert_eq!(p.jobs.len(), 1);
    let fields: Vec<&str> = p.jobs[0].checks.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["dist.shasum"]);
    assert_eq!(p.jobs[0].size.as_ref().map(|s| s.1), Some(10));
}

#[test]
fn document_level_outcomes() {
    let kind = |r: ChangeRow| plan(&r).decided.first().map(|(k, _)| *k);
    let mut deleted = row("gone", Value::Null);
    deleted.deleted = true;
    deleted.doc = None;
    assert_eq!(kind(deleted), Some(OutcomeKind::Deleted));
    assert_eq!(
        kind(row("_design/app", json!({}))),
        Some(OutcomeKind::Design)
    );
    assert_eq!(
        kind(row(
            "u",
            json!({"name": "u", "time": {"unpublished": {"time": "2014-01-01"}}})
        )),
        Some(OutcomeKind::Unpublished)
    );
    assert_eq!(
        kind(row("e", json!({"name": "e"}))),
        Some(OutcomeKind::Empty)
    );
    assert_eq!(
        kind(row("g", json!({"versions": "garbage"}))),
        Some(OutcomeKind::Unreadable)
    );
    assert_eq!(kind(row("g", json!([1, 2]))), Some(OutcomeKind::Unreadable));
    let mut no_body = row("n", Value::Null);
    no_body.doc = None;
    assert_eq!(kind(no_body), Some(OutcomeKind::Unreadable));
}
