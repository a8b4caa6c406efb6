//! Tar format features npm tarballs use, and how they are counted.

mod common;

use common::tarbuild::*;
use tarvault::tarball::{inspect_reader, Policy, Report};

fn inspect(bytes: &[u8]) -> Report {
    inspect_reader(bytes, Policy::default()).unwrap()
}

#[test]
fn counts_files_directories_and_links_like_npm() {
    let bytes = package_with(|t| {
        t.dir("package/lib/")
            .file("package/lib/a.js", &[1; 700])
            .symlink("package/lib/b.js", "a.js")
            .hardlink("package/lib/c.js", "package/lib/a.js")
            .pax(&[("comment", "pax headers are not entries")], false)
            .file("package/lib/a.js", b"dup");
    });
    let r = inspect(&bytes);
    let manifest = r#"{"name":"demo","version":"1.0.0"}"#.len() as u64;
    assert_eq!(
        (r.name.as_str(), r.version.as_str(), r.root.as_str()),
        ("demo", "1.0.0", "package")
    );
    // package/, package.json, lib/, a.js, b.js, c.js, a.js again.
    assert_eq!(r.entry_count, 7);
    assert_eq!(r.unpacked_size, manifest + 700 + 3);
}

#[test]
fn long_names_prefix_and_base256() {
    let long = format!("package/{}/file.js", "d".repeat(150));
    let mut prefixed = header("file.js", b'0', 2, "");
    prefixed[345..345 + 11].copy_from_slice(b"package/lib");
    set_checksum(&mut prefixed);
    let mut big = header("package/b256.js", b'0', 0, "");
    big[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00]);
    set_checksum(&mut big);
    let bytes = package_with(|t| {
        t.gnu_long(b'L', &long)
            .file("package/truncated-name", b"abc")
            .pax(&[("path", "package/pax-path.js"), ("size", "4")], false)
            .raw(header("package/ignored-name", b'0', 99, ""), b"wxyz")
            .raw(prefixed, b"ok")
            .raw(big, &[5u8; 256])
            .entry("package/olddir/", 0, b"", "");
    });
    let r = inspect(&bytes);
    assert_eq!(r.entry_count, 2 + 5);
    let manifest = r#"{"name":"demo","version":"1.0.0"}"#.len() as u64;
    assert_eq!(r.unpacked_size, manifest + 3 + 4 + 2 + 256);
}

#[test]
fn other_top_level_folders_and_trailing_garbage() {
    let mut tar = Tar::new();
    tar.dir("node-foo/").file(
        "node-foo/package.json",
        br#"{"name":"foo","version":"0.0.1"}"#,
    );
    tar.file("other/x.js", b"x");
    let mut raw = tar.finish();
    raw.extend_from_slice(b"garbage after the end marker");
    let mut bytes = gzip(&raw);
    bytes.extend_from_slice(b"\0\0\0 trailing bytes after the gzip member");
    let r = inspect(&bytes);
    assert_eq!(
        (r.name.as_str(), r.root.as_str(), r.entry_count),
        ("foo", "node-foo", 3)
    );
    assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
}

#[test]
fn concatenated_gzip_members_are_one_stream() {
    let tar = Tar::new().package_json("multi", "2.0.0").finish();
    let (a, b) = tar.split_at(700);
    let mut bytes = gzip(a);
    bytes.extend(gzip(b));
    let r = inspect(&bytes);
    assert_eq!((r.name.as_str(), r.entry_count), ("multi", 1));
}

#[test]
fn report_serializes() {
    let r = inspect(&package_with(|_| {}));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["name"], "demo");
    assert_eq!(json["entry_count"], 2);
}
