//! The `tarvault` command line: outputs and exit statuses as documented.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{corpus, corpus_dir, sha1_hex, sha512_sri};

const BIN: &str = env!("CARGO_BIN_EXE_tarvault");

fn tv(store: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("TARVAULT_STORE")
        .output()
        .expect("run tarvault")
}

fn tv_stdin(store: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .arg("--store")
        .arg(store)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    child.wait_with_output().expect("wait")
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// `put --json` has a line for every file, in the order given: a file that could not be stored
/// (here, one that is not there; there, a mismatch) gets one naming its error, beside stderr's.
#[test]
fn put_json_has_a_line_for_every_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, b"first").expect("write");
    std::fs::write(&b, b"second").expect("write");
    let missing = dir.path().join("missing");
    let files = [&a, &missing, &b].map(|p| p.display().to_string());
    let mut args = vec!["put", "--json"];
    args.extend(files.iter().map(String::as_str));
    let out = tv(&store, &args);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, file) in lines.iter().zip(&files) {
        assert_eq!(line["file"], file.as_str());
    }
    assert_eq!(lines[0]["integrity"], sha512_sri(b"first").as_str());
    assert_eq!(lines[2]["integrity"], sha512_sri(b"second").as_str());
    assert_eq!(lines[1]["error"], "I/O error", "{:?}", lines[1]);
    assert!(lines[1].get("integrity").is_none());
    let reason = lines[1]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("missing"), "{reason}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(reason));
    // One file, refused for a mismatch: its line says so too.
    let out = tv(
        &store,
        &[
            "put",
            "--json",
            "--expect",
            &sha512_sri(b"other"),
            &files[0],
        ],
    );
    assert_eq!(out.status.code(), Some(4));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["error"], "integrity mismatch", "{:?}", lines[0]);
}

#[test]
fn put_json_then_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let entries: Vec<_> = corpus().into_iter().take(5).collect();
    let files: Vec<String> = entries
        .iter()
        .map(|e| corpus_dir().join(&e.file).display().to_string())
        .collect();
    let mut args = vec!["put", "--json"];
    args.extend(files.iter().map(String::as_str));
    let out = tv(&store, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 5);
    for (line, e) in lines.iter().zip(&entries) {
        assert_eq!(line["integrity"], e.registry_integrity.as_str());
        assert_eq!(line["shasum"], e.registry_shasum.as_str());
        assert_eq!(line["size"], e.size);
        assert_eq!(line["stored"], true);
        assert_eq!(line["blake3"].as_str().map(str::len), Some(64));
        assert!(line["file"].as_str().expect("file").ends_with(&e.file));
    }
    // Again: nothing new stored.
    let again = json_lines(&tv(&store, &args));
    assert!(again.iter().all(|l| l["stored"] == false));

    let e = &entries[0];
    let bytes = std::fs::read(corpus_dir().join(&e.file)).expect("read");
    for address in [e.registry_integrity.as_str(), e.registry_shasum.as_str()] {
        let got = tv(&store, &["get", address]);
        assert!(got.status.success());
        assert_eq!(got.stdout, bytes);
        assert_eq!(tv(&store, &["has", address]).status.code(), Some(0));
    }
    let out_file = dir.path().join("out.tgz");
    let got = tv(
        &store,
        &[
            "get",
            &e.registry_shasum,
            "-o",
            out_file.to_str().expect("utf8"),
        ],
    );
    assert!(got.status.success());
    assert_eq!(std::fs::read(&out_file).expect("written"), bytes);

    let stat = json_lines(&tv(&store, &["stat", "--json", &e.registry_shasum]));
    assert_eq!(stat[0]["integrity"], e.registry_integrity.as_str());
    assert_eq!(stat[0]["shasum"], e.registry_shasum.as_str());
    assert_eq!(stat[0]["size"], e.size);

    let ls = json_lines(&tv(&store, &["ls", "--json"]));
    assert_eq!(ls.len(), 5);

    let rm = tv(&store, &["rm", &e.registry_integrity]);
    assert_eq!(rm.status.code(), Some(0));
    assert_eq!(
        tv(&store, &["has", &e.registry_integrity]).status.code(),
        Some(3)
    );
    assert_eq!(
        tv(&store, &["rm", &e.registry_integrity]).status.code(),
        Some(3)
    );

    let fsck = json_lines(&tv(&store, &["fsck", "--json"]));
    assert_eq!(fsck[0]["checked"], 4);
    for what in ["report", "skip"] {
        let out = tv(&store, &["fsck", "--dangling-aliases", what]);
        assert!(out.status.success(), "fsck --dangling-aliases {what}");
    }
    assert!(!tv(&store, &["fsck", "--dangling-aliases", "maybe"])
        .status
        .success());
    assert_eq!(fsck[0]["ok"], 4);
}

#[test]
fn stdin_and_expect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let data = common::noise(300_000, 1);
    let ok = tv_stdin(
        &store,
        &["put", "--json", "--expect", &sha512_sri(&data), "-"],
        &data,
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(json_lines(&ok)[0]["file"], "-");

    let other = common::noise(10, 2);
    let bad = tv_stdin(&store, &["put", "--expect", &sha1_hex(&other), "-"], &data);
    assert_eq!(bad.status.code(), Some(4));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("expected sha1-") && err.contains("found sha1-"),
        "{err}"
    );
    assert!(
        err.contains("integrity mismatch for standard input:"),
        "the input is named in words, not as `-`: {err}"
    );
}

/// Standard input can be read once: `put - -` is a usage error (exit 2) and stores nothing, not
/// the input and then an empty blob.
#[test]
fn stdin_given_twice_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let other = dir.path().join("other");
    std::fs::write(&other, b"other").expect("write");
    let other = other.to_string_lossy().into_owned();
    for args in [vec!["put", "-", "-"], vec!["put", "-", &other, "-"]] {
        let mut child = Command::new(BIN)
            .arg("--store")
            .arg(&store)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // It may have exited before reading: a closed pipe here is expected.
        let _ = child.stdin.take().expect("stdin").write_all(b"abc");
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("`-`"), "{err}");
        assert!(out.stdout.is_empty());
    }
    let ls = tv(&store, &["ls"]);
    assert!(
        ls.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&ls.stdout)
    );
}

#[test]
fn exit_statuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An empty directory: a store with nothing in it (a path with nothing there is exit 2).
    let store = dir.path().to_path_buf();
    // Usage.
    assert_eq!(tv(&store, &["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        tv(&store, &["get", "sha512-notbase64!"]).status.code(),
        Some(2)
    );
    assert_eq!(tv(&store, &["get", "sha3-abc"]).status.code(), Some(2));
    // Not found.
    let missing = sha512_sri(b"missing");
    let out = tv(&store, &["get", &missing]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&missing));
    // Missing input file: 1.
    assert_eq!(
        tv(&store, &["put", "/nonexistent/file"]).status.code(),
        Some(1)
    );
    // Bad store scheme: usage/config.
    let out = Command::new(BIN)
        .args(["--store", "gopher://x", "ls"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    // It names the schemes there are.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gopher://") && err.contains("s3://"), "{err}");
}

#[test]
fn corrupt_blob_get_writes_no_file_and_exits_4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let data = common::noise(2_500_000, 3);
    let input = dir.path().join("in.bin");
    std::fs::write(&input, &data).expect("write");
    assert!(tv(&store, &["put", input.to_str().expect("utf8")])
        .status
        .success());
    let blob = walk_one(&store.join("sha512"));
    let mut bad = std::fs::read(&blob).expect("read");
    bad[2_000_000] ^= 1;
    let mut perms = std::fs::metadata(&blob).expect("meta").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).expect("chmod");
    std::fs::write(&blob, bad).expect("corrupt");

    let out_file = dir.path().join("out.bin");
    let out = tv(
        &store,
        &[
            "get",
            &sha1_hex(&data),
            "-o",
            out_file.to_str().expect("utf8"),
        ],
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(
        !out_file.exists(),
        "no file appears for bytes that did not verify"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".tarvault-get-")
        })
        .collect();
    assert!(leftovers.is_empty(), "temp output removed");
    let stdout = tv(&store, &["get", &sha512_sri(&data)]);
    assert_eq!(stdout.status.code(), Some(4));
    assert!(
        stdout.stdout.len() < data.len(),
        "the last chunk is withheld"
    );

    let fsck = tv(&store, &["fsck", "--quarantine"]);
    assert_eq!(fsck.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&fsck.stdout).contains("quarantined"));
    assert_eq!(tv(&store, &["fsck"]).status.code(), Some(0));
    assert_eq!(
        tv(&store, &["has", &sha512_sri(&data)]).status.code(),
        Some(3)
    );
}

fn walk_one(dir: &Path) -> std::path::PathBuf {
    let first = std::fs::read_dir(dir)
        .expect("read")
        .flatten()
        .next()
        .unwrap_or_else(|| panic!("no blob under {}", dir.display()))
        .path();
    if first.is_dir() {
        walk_one(&first)
    } else {
        first
    }
}

#[test]
fn inspect_and_put_tarball() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let e = corpus()
        .into_iter()
        .find(|e| e.name.starts_with('@'))
        .expect("a scoped package in the corpus");
    let file = corpus_dir().join(&e.file);
    let file = file.to_str().expect("utf8");
    let out = tv(&store, &["inspect", "--json", file]);
    assert_eq!(out.status.code(), Some(0));
    let v = &json_lines(&out)[0];
    assert_eq!(v["verdict"], "accepted");
    assert_eq!(v["name"], e.name.as_str());
    assert_eq!(v["version"], e.version.as_str());
    assert_eq!(v["entry_count"], e.entry_count);
    assert_eq!(v["unpacked_size"], e.unpacked_size);

    let put = json_lines(&tv(&store, &["put", "--tarball", "--json", file]));
    assert_eq!(put[0]["package"]["name"], e.name.as_str());
    assert_eq!(put[0]["integrity"], e.registry_integrity.as_str());

    // A hostile tarball: rejected with exit 5, by inspect and by put --tarball, and not stored.
    let evil = common::tarbuild::package_with(|t| {
        t.file("package/../../etc/passwd", b"root");
    });
    let evil_path = dir.path().join("evil.tgz");
    std::fs::write(&evil_path, &evil).expect("write");
    let evil_path = evil_path.to_str().expect("utf8");
    let out = tv(&store, &["inspect", "--json", evil_path]);
    assert_eq!(out.status.code(), Some(5));
    let v = &json_lines(&out)[0];
    assert_eq!(v["verdict"], "rejected");
    assert_eq!(v["kind"], "path_traversal");
    let out = tv(&store, &["put", "--tarball", evil_path]);
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("evil.tgz") && err.contains(".."), "{err}");
    assert_eq!(json_lines(&tv(&store, &["ls", "--json"])).len(), 1);
}

#[test]
fn store_specs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("odd?name");
    let url = format!("file://{}?fsync=false", dir.path().join("url").display());
    let per_file = format!(
        "file://{}?fsync=true&batch_flush=per-file&direct_writes=false&read_budget=1MiB",
        dir.path().join("per-file").display()
    );
    let data = common::noise(1000, 9);
    let input = dir.path().join("in.bin");
    std::fs::write(&input, &data).expect("write");
    let second = dir.path().join("second.bin");
    std::fs::write(&second, common::noise(2000, 10)).expect("write");
    for spec in [
        plain.to_str().expect("utf8"),
        url.as_str(),
        per_file.as_str(),
    ] {
        let out = Command::new(BIN)
            .args(["--store", spec, "put"])
            .arg(&input)
            .arg(&second)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{spec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(plain.join("sha512").is_dir(), "a path with '?' is a path");
    assert!(dir.path().join("url/sha512").is_dir());
    assert_eq!(
        json_lines(&tv(Path::new(&per_file), &["ls", "--json"])).len(),
        2
    );
    for bad in [
        "file:///tmp/x?fsync=maybe",
        "file:///tmp/x?batch_flush=sometimes",
        "file:///tmp/x?direct_writes=often",
        "file:///tmp/x?read_budget=lots",
    ] {
        let bad = Command::new(BIN)
            .args(["--store", bad, "ls"])
            .output()
            .expect("run");
        assert_eq!(bad.status.code(), Some(2));
    }
    // TARVAULT_STORE is honoured when --store is absent.
    let out = Command::new(BIN)
        .args(["has", &sha512_sri(&data)])
        .env("TARVAULT_STORE", &plain)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
}

/// `get -o` into a directory that is not there names the file asked for and the error, not the
/// temp file it would have written first.
#[test]
fn get_into_a_missing_directory_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, bytes) = store_with_corpus_file(dir.path());
    let out_file = dir.path().join("missing").join("out.tgz");
    let out = tv(
        &store,
        &[
            "get",
            &sha512_sri(&bytes),
            "-o",
            &out_file.to_string_lossy(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("create {}: ", out_file.display())),
        "{err}"
    );
    assert!(!err.contains(".tarvault-get-"), "{err}");
}

/// A `TARVAULT_STORE` set to nothing is refused saying so (not an "empty store location" that
/// names neither it nor `--store`), by the commands that would open it, and no others.
#[test]
fn an_empty_tarvault_store_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .current_dir(dir.path())
            .args(args)
            .env("TARVAULT_STORE", "")
            .output()
            .expect("run tarvault")
    };
    let (_, file) = corpus_file(0);
    for args in [&["ls"][..], &["put", &file], &["copy", "--to", "b"]] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("TARVAULT_STORE"), "{args:?}: {err}");
    }
    assert!(run(&["--store", "a", "put", &file]).status.success());
    let out = run(&["copy", "--from", "a", "--to", "b"]);
    assert!(out.status.success(), "{out:?}");
}

/// A store named `~/…` that no shell expanded (an environment file, a quoted `--store`) is
/// refused rather than made as a directory named `~` in the current one.
#[test]
fn a_store_under_an_unexpanded_tilde_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, file) = corpus_file(0);
    let run = |store: &str, args: &[&str]| {
        Command::new(BIN)
            .current_dir(dir.path())
            .args(args)
            .env("TARVAULT_STORE", store)
            .output()
            .expect("run tarvault")
    };
    // A source store for `copy`, so that its --to is what is refused.
    assert!(run("./source", &["put", &file]).status.success());
    let couch = "http://127.0.0.1:9/registry";
    for (store, args, named_by) in [
        ("~/store", &["put", &file][..], "TARVAULT_STORE"),
        ("~", &["ls"][..], "TARVAULT_STORE"),
        ("x", &["--store", "~/store", "put", &file][..], "--store"),
        // Bash leaves `--to=~/x` unexpanded, as it does a quoted "~/x".
        ("./source", &["copy", "--to=~/copy"][..], "copy --to"),
        (
            "x",
            &["copy", "--from", "~/store", "--to", "y"][..],
            "copy --from",
        ),
        (
            "x",
            &["migrate", "couch", "--from", couch, "--to=~/m"][..],
            "migrate --to",
        ),
    ] {
        let out = run(store, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{store} {args:?}: {err}");
        assert!(err.contains("no shell expanded"), "{store} {args:?}: {err}");
        assert!(err.contains(named_by), "{store} {args:?}: {err}");
    }
    assert!(
        !dir.path().join("~").exists(),
        "a directory named ~ was made"
    );
    // A directory named `~` can still be a store, named as such.
    assert!(run("./~", &["put", &file]).status.success());
    assert!(dir.path().join("~").is_dir());
}

/// `get -o` to something that is not a regular file (a FIFO here; `/dev/null` alike) writes
/// through it and never renames a file over it (as root, that replaced `/dev/null`).
#[test]
fn get_to_a_fifo_writes_through_it() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, b"fifo test").expect("write");
    let store = dir.path().join("store");
    let put = tv(&store, &["put", &input.to_string_lossy()]);
    assert!(put.status.success());
    let integrity = sha512_sri(b"fifo test");
    let fifo = dir.path().join("pipe");
    let c_path = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).expect("read the fifo"))
    };
    let out = tv(&store, &["get", &integrity, "-o", &fifo.to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(reader.join().expect("reader"), b"fifo test");
    let kind = std::fs::symlink_metadata(&fifo).expect("stat").file_type();
    assert!(kind.is_fifo(), "still a FIFO, not a file renamed over it");
}

/// A reader that stops early (`tarvault put … | head -1`, `tarvault ls | head`) ends the command
/// as a closed pipe ends `cat`: status 141, no panic, and the store stays consistent.
/// A batch `put` prints the results that are ready together, and still one line per file in the
/// order given, with a file that cannot be read reported on stderr and in its line (the others
/// stored, exit 1).
#[test]
fn a_batch_put_prints_every_file_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let mut names = Vec::new();
    for i in 0..300 {
        let p = dir.path().join(format!("f{i}"));
        if i != 150 {
            std::fs::write(&p, format!("blob {i}\n")).expect("write");
        }
        names.push(p.display().to_string());
    }
    let mut args = vec!["put", "--json"];
    args.extend(names.iter().map(String::as_str));
    let out = tv(&store, &args);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&names[150]), "{stderr}");
    let lines = json_lines(&out);
    let printed: Vec<&str> = lines
        .iter()
        .map(|l| l["file"].as_str().expect("file"))
        .collect();
    let want: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(printed, want);
    for (i, line) in lines.iter().enumerate() {
        if i == 150 {
            assert_eq!(line["error"], "I/O error", "{line:?}");
        } else {
            assert_eq!(line["shasum"], sha1_hex(format!("blob {i}\n").as_bytes()));
        }
    }
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let files = dir.path().join("in");
    std::fs::create_dir(&files).expect("mkdir");
    let mut names = Vec::new();
    for i in 0..3000 {
        let p = files.join(format!("f{i}"));
        std::fs::write(&p, format!("blob {i}\n")).expect("write");
        names.push(p);
    }
    let stops_after_one_line = |args: Vec<std::ffi::OsString>| {
        let mut child = Command::new(BIN)
            .arg("--store")
            .arg(&store)
            .args(args)
            .env_remove("TARVAULT_STORE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("first line");
        // The reader is dropped here: every later write meets a closed pipe.
        let out = child.wait_with_output().expect("wait");
        (first, out)
    };
    let mut put = vec!["put".into()];
    put.extend(names.iter().map(|p| p.clone().into_os_string()));
    let (first, out) = stops_after_one_line(put);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(first.starts_with("sha512-"), "{first}");
    assert_eq!(out.status.code(), Some(141), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // `ls` writes through its own buffer, text and JSON alike: the same quiet 141 (with every
    // blob stored, its output is far more than a pipe holds).
    let mut put_all = Command::new(BIN);
    put_all.arg("--store").arg(&store).arg("put").args(&names);
    assert!(put_all.output().expect("put").status.success());
    for ls in [vec!["ls".into()], vec!["ls".into(), "--json".into()]] {
        let (first, out) = stops_after_one_line(ls);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(first.contains("sha512-"), "{first}");
        assert_eq!(out.status.code(), Some(141), "stderr: {stderr}");
        assert!(stderr.is_empty(), "{stderr}");
    }
    // Whatever the put committed before it stopped is whole.
    let fsck = tv(&store, &["fsck"]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

/// `tarvault get X | head -c 100` on a blob larger than a pipe holds: the closed pipe ends `get`
/// quietly with 141, not with an error about its input.
#[test]
fn get_into_a_closed_pipe_ends_quietly() {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let data = common::noise(8_000_000, 7);
    let input = dir.path().join("big");
    std::fs::write(&input, &data).expect("write");
    assert!(tv(&store, &["put", &input.to_string_lossy()])
        .status
        .success());
    let mut child = Command::new(BIN)
        .arg("--store")
        .arg(&store)
        .args(["get", &sha512_sri(&data)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut head = [0u8; 100];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut head)
        .expect("read");
    assert_eq!(&head[..], &data[..100]);
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "stderr: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// `get -o FILE` leaves the mode a plain create or overwrite would: a new file gets 0666 less the
/// umask (not the private 0600 of a temp file), and a file it replaces keeps its mode.
#[test]
fn get_to_a_file_gives_it_an_ordinary_mode() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let input = dir.path().join("in");
    std::fs::write(&input, b"mode test").expect("write");
    assert!(tv(&store, &["put", &input.to_string_lossy()])
        .status
        .success());
    let integrity = sha512_sri(b"mode test");
    // What this process's umask makes of a plain create.
    let reference = dir.path().join("reference");
    std::fs::File::create(&reference).expect("create");
    let fresh = dir.path().join("fresh.tgz");
    let out = tv(&store, &["get", &integrity, "-o", &fresh.to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&fresh), mode(&reference));
    for kept in [0o644, 0o640, 0o600] {
        let existing = dir.path().join(format!("existing-{kept:o}.tgz"));
        std::fs::write(&existing, b"old").expect("write");
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(kept)).expect("chmod");
        let out = tv(
            &store,
            &["get", &integrity, "-o", &existing.to_string_lossy()],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(&existing).expect("read"), b"mode test");
        assert_eq!(mode(&existing), kept, "{kept:o}");
    }
}

/// `get -o LINK` writes through a symbolic link, as `>` or `cp` would: the file it names gets the
/// bytes (made if the link dangles, through a chain of links, relative ones from their own
/// directory), and the link stays a link. The rename into place had replaced the link itself.
#[test]
fn get_to_a_symlink_writes_the_file_it_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let input = dir.path().join("in");
    std::fs::write(&input, b"through the link").expect("write");
    assert!(tv(&store, &["put", &input.to_string_lossy()])
        .status
        .success());
    let integrity = sha512_sri(b"through the link");
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    let existing = sub.join("existing.tgz");
    std::fs::write(&existing, b"old").expect("write");
    let dangling = sub.join("new.tgz");
    // link-a -> sub/existing.tgz; link-b -> link-c -> sub/new.tgz (which is not there yet).
    std::os::unix::fs::symlink("sub/existing.tgz", dir.path().join("link-a")).expect("symlink");
    std::os::unix::fs::symlink("new.tgz", sub.join("link-c")).expect("symlink");
    std::os::unix::fs::symlink("sub/link-c", dir.path().join("link-b")).expect("symlink");
    for (link, file) in [("link-a", &existing), ("link-b", &dangling)] {
        let link = dir.path().join(link);
        let out = tv(&store, &["get", &integrity, "-o", &link.to_string_lossy()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta = std::fs::symlink_metadata(&link).expect("lstat");
        assert!(
            meta.file_type().is_symlink(),
            "{} was replaced",
            link.display()
        );
        assert_eq!(std::fs::read(file).expect("read"), b"through the link");
    }
}

/// `file:` store specs are URLs: the path is percent-decoded, the host is empty or `localhost`,
/// `file:/dir` is the short form of `file:///dir`; a spec that names no local absolute directory
/// is a usage error (exit 2) that creates nothing, where it used to make a store of `./localhost`,
/// `./file:` or the working directory itself.
#[test]
fn file_store_urls_are_read_as_urls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in");
    std::fs::write(&input, b"url test").expect("write");
    let base = dir.path().display();
    let run = |spec: &str| {
        Command::new(BIN)
            .current_dir(cwd.path())
            .args(["--store", spec, "put"])
            .arg(&input)
            .env_remove("TARVAULT_STORE")
            .output()
            .expect("run")
    };
    for (spec, dir_name) in [
        (format!("file://{base}/my%20store?fsync=false"), "my store"),
        (format!("file://localhost{base}/hosted"), "hosted"),
        (format!("file:{base}/short?fsync=false"), "short"),
    ] {
        let out = run(&spec);
        assert!(
            out.status.success(),
            "{spec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(dir.path().join(dir_name).join("sha512").is_dir(), "{spec}");
    }
    assert!(!dir.path().join("my%20store").exists());
    for spec in [
        "file://",
        "file:",
        "file://localhost",
        "file://elsewhere/srv/store",
        "file:relative",
        "file:///srv/%zz",
    ] {
        let out = run(spec);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{spec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let made: Vec<_> = std::fs::read_dir(cwd.path())
        .expect("read_dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        made.is_empty(),
        "created in the working directory: {made:?}"
    );
}

/// Two corpus tarballs whose index rows have their sha1s swapped (a wrong entry, which `fsck`
/// counts as possible): `get`, `has` and `stat` by either shasum exit 4 (corrupt) and `get` writes
/// nothing, where they had served the other tarball with success (the default `Fast` checks took
/// the row's own digests as witness); by sha512 both are served. `fsck` corrects the entries, and
/// the shasums then find their own tarballs.
#[cfg(feature = "fs")]
#[test]
fn a_wrong_sha1_entry_is_refused_until_fsck_corrects_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let entries: Vec<_> = corpus().into_iter().take(2).collect();
    let files: Vec<String> = entries
        .iter()
        .map(|e| corpus_dir().join(&e.file).display().to_string())
        .collect();
    assert!(tv(&store, &["put", &files[0], &files[1]]).status.success());
    let sha1 = |e: &common::CorpusEntry| hex::decode(&e.shasum).expect("hex");
    let db = rusqlite::Connection::open(store.join("index").join("blobs.sqlite")).expect("index");
    let swapped = db
        .execute(
            "UPDATE blobs SET sha1 = CASE WHEN sha1 = ?1 THEN ?2 ELSE ?1 END WHERE sha1 IN (?1, ?2)",
            rusqlite::params![sha1(&entries[0]), sha1(&entries[1])],
        )
        .expect("swap");
    assert_eq!(swapped, 2);
    drop(db);
    let out_file = dir.path().join("out.tgz");
    let out_arg = out_file.to_str().expect("utf8");
    for e in &entries {
        for cmd in [
            vec!["get", e.shasum.as_str(), "-o", out_arg],
            vec!["has", e.shasum.as_str()],
            vec!["stat", e.shasum.as_str()],
        ] {
            let out = tv(&store, &cmd);
            assert_eq!(out.status.code(), Some(4), "{cmd:?}: {out:?}");
        }
        assert!(!out_file.exists(), "no file for bytes that did not verify");
        assert!(tv(&store, &["has", &e.integrity]).status.success());
    }
    assert!(tv(&store, &["fsck"]).status.success());
    for (e, file) in entries.iter().zip(&files) {
        let out = tv(&store, &["get", &e.shasum, "-o", out_arg]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            std::fs::read(&out_file).expect("got"),
            std::fs::read(file).expect("corpus")
        );
    }
}

/// An input that opens but cannot be read (a directory) is named in the error, alone and in a
/// batch, as one that cannot be opened is: not a bare "Is a directory".
#[test]
fn an_unreadable_input_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let input = dir.path().join("not-a-file.tgz");
    std::fs::create_dir(&input).expect("mkdir");
    let name = input.to_string_lossy().into_owned();
    let (_, other) = corpus_file(0);
    for args in [vec!["put", &name], vec!["put", &other, &name]] {
        let out = tv(&store, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(&name), "{args:?}: {err}");
    }
}

/// `get -o -` is standard output, as `-` is standard input for `put` (and as curl's `-o -`), not
/// a file named `-` in the working directory.
#[test]
fn get_dash_o_dash_is_stdout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, bytes) = store_with_corpus_file(dir.path());
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .arg("--store")
        .arg(&store)
        .args(["get", &sha512_sri(&bytes), "-o", "-"])
        .env_remove("TARVAULT_STORE")
        .output()
        .expect("run tarvault");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == bytes, "stdout is not the blob");
    assert!(!dir.path().join("-").exists(), "wrote a file named `-`");
}

/// A digest that is not canonical base64 (here its `==` padding left off) is quoted whole in the
/// reason, or marked as cut: not a 40-character prefix that reads like the whole digest.
#[test]
fn a_malformed_digest_is_not_quoted_cut_short_unmarked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let sri = sha512_sri(b"x");
    let unpadded = sri.trim_end_matches('=');
    let digest = unpadded.trim_start_matches("sha512-");
    let out = tv(&store, &["get", unpadded]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        !err.contains(&format!("{:?}", &digest[..40])),
        "a prefix quoted as if whole: {err}"
    );
}

/// A blob file cut short keeps its record, but `stat --json` and `ls --json` take the file's size
/// and leave the digests out (a record of another size is no record of this file), as the README
/// says; `get` and `fsck` find it corrupt (exit 4).
#[test]
fn a_blob_file_cut_short_is_stated_at_its_size_without_digests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, bytes) = store_with_corpus_file(dir.path());
    let blob = walk_one(&store.join("sha512"));
    let mut perms = std::fs::metadata(&blob).expect("meta").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).expect("chmod");
    std::fs::write(&blob, &bytes[..1000]).expect("cut short");
    let address = sha512_sri(&bytes);
    let stat = tv(&store, &["stat", "--json", &address]);
    assert_eq!(stat.status.code(), Some(0));
    let ls = tv(&store, &["ls", "--json"]);
    for line in [json_lines(&stat), json_lines(&ls)] {
        assert_eq!(line.len(), 1);
        assert_eq!(line[0]["integrity"], address.as_str());
        assert_eq!(line[0]["size"], 1000);
        assert!(line[0].get("shasum").is_none() && line[0].get("blake3").is_none());
    }
    assert_eq!(tv(&store, &["get", &address]).status.code(), Some(4));
    assert_eq!(tv(&store, &["fsck"]).status.code(), Some(4));
}

/// A `--store` that names a regular file is a configuration error (exit 2) saying so, not an
/// I/O failure to "create directory …: File exists" (exit 1); the file is left as it was.
#[test]
fn a_store_path_that_is_a_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("store.tgz");
    std::fs::write(&file, b"not a store").expect("write");
    let out = tv(&file, &["ls"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&*file.to_string_lossy()), "{err}");
    assert!(err.contains("not a directory"), "{err}");
    assert_eq!(std::fs::read(&file).expect("read"), b"not a store");
}

/// Commands that only read do not make a store where there is none: a mistyped `--store` is a
/// configuration error (exit 2) naming it, not a new, empty store answering "not found" (exit
/// 3), and a directory of other files gets no store directories added to it. An empty directory
/// may become a store, and `put` still creates one.
#[test]
fn commands_that_only_read_do_not_create_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("no-such-store");
    let shasum = "0".repeat(40);
    for args in [
        &["has", &shasum][..],
        &["get", &shasum],
        &["stat", &shasum],
        &["rm", &shasum],
        &["ls"],
        &["fsck"],
        &["gc", "--keep", "/dev/null"],
    ] {
        let out = tv(&typo, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("no store at"), "{args:?}: {err}");
        assert!(err.contains(&*typo.to_string_lossy()), "{args:?}: {err}");
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
    let url = format!("file://{}?fsync=false", typo.display());
    let out = Command::new(BIN)
        .args(["--store", &url, "ls"])
        .env_remove("TARVAULT_STORE")
        .output()
        .expect("run tarvault");
    assert_eq!(out.status.code(), Some(2));
    assert!(!typo.exists());

    // A directory of other files is not a store, and stays as it was.
    let project = dir.path().join("project");
    std::fs::create_dir(&project).expect("mkdir");
    std::fs::write(project.join("package.json"), b"{}").expect("write");
    let out = tv(&project, &["ls"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not a tarvault store"), "{err}");
    let names: Vec<_> = std::fs::read_dir(&project)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["package.json"]);

    // An empty directory is fine (an empty store), and put creates a store anywhere.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let out = tv(&empty, &["has", &shasum]);
    assert_eq!(out.status.code(), Some(3));
    let (_, file) = corpus_file(0);
    assert_eq!(tv(&typo, &["put", &file]).status.code(), Some(0));
    let out = tv(&typo, &["has", &sha512_sri(&corpus_file(0).0)]);
    assert_eq!(out.status.code(), Some(0));
}

/// A blob that is not there is named as it was typed: a 40-hex shasum as those 40 hex digits,
/// not as the `sha1-<base64>` it parses to.
#[test]
fn not_found_names_the_address_as_typed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shasum = "0123456789abcdef0123456789abcdef01234567";
    for cmd in ["get", "has", "stat", "rm"] {
        let out = tv(dir.path(), &[cmd, shasum]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{cmd}: {err}");
        assert!(err.contains(shasum), "{cmd}: {err}");
    }
}

/// A digest given in hex after its algorithm (`blake3-` and the hex `stat` prints, `sha1-` and a
/// shasum) is refused, saying it is hex and naming the integrity string meant, which works.
#[test]
fn a_hex_digest_in_an_integrity_names_the_base64_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, bytes) = store_with_corpus_file(dir.path());
    let stat = json_lines(&tv(&store, &["stat", "--json", &sha512_sri(&bytes)]));
    let blake3 = stat[0]["blake3"].as_str().expect("blake3").to_string();
    for hex in [
        format!("blake3-{blake3}"),
        format!("sha1-{}", sha1_hex(&bytes)),
    ] {
        let out = tv(&store, &["get", &hex]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("is hex"), "{err}");
        let meant = err.trim_end().rsplit(' ').next().unwrap_or_default();
        let out = tv(&store, &["get", meant]);
        assert_eq!(out.status.code(), Some(0), "{hex} -> {meant}: {err}");
        assert_eq!(out.stdout, bytes);
    }
}

/// A store at `dir/store` holding the first corpus tarball, and that tarball's bytes.
fn store_with_corpus_file(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let store = dir.join("store");
    let (bytes, file) = corpus_file(0);
    assert!(tv(&store, &["put", &file]).status.success());
    (store, bytes)
}

/// The bytes and path of the `n`th corpus tarball.
fn corpus_file(n: usize) -> (Vec<u8>, String) {
    let path = corpus_dir().join(&corpus()[n].file);
    let bytes = std::fs::read(&path).expect("read corpus tarball");
    (bytes, path.to_string_lossy().into_owned())
}

/// An error's cause is printed once: the message names what failed (`read FILE`, the
/// configuration file) and then its cause, not the cause twice.
#[test]
fn an_error_states_its_cause_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let input = dir.path().join("a-directory.tgz");
    std::fs::create_dir(&input).expect("mkdir");
    let cause = std::fs::read(&input)
        .expect_err("read a directory")
        .to_string();
    let out = tv(&store, &["put", input.to_str().expect("utf8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches(&cause).count(), 1, "{cause:?} once in {err}");
    assert_eq!(err.matches("a-directory.tgz").count(), 1, "{err}");

    let config = dir.path().join("store.toml");
    std::fs::write(&config, "type = [unclosed\n").expect("write");
    let cause = toml::from_str::<serde_json::Value>("type = [unclosed\n")
        .expect_err("bad toml")
        .to_string();
    let first = cause.lines().next().expect("a line");
    let spec = format!("config:{}", config.display());
    let out = tv(Path::new(&spec), &["ls"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.matches(first).count(), 1, "{first:?} once in {err}");
    assert_eq!(err.matches("store.toml").count(), 1, "{err}");
}

/// A password in an `http://` store URL (sent as basic auth) appears in no error and no log line,
/// whether the URL is refused or the server cannot be reached.
#[cfg(feature = "http")]
#[test]
fn credentials_in_a_store_url_are_never_printed() {
    let address = sha512_sri(b"anything");
    for spec in [
        "http://user:s3cretpw@127.0.0.1:1",
        "http://user:s3cretpw@127.0.0.1:1/prefix/",
        "http://user:s3cretpw@127.0.0.1:1/?x=y",
    ] {
        for command in [
            &["get", address.as_str()][..],
            &["stat", &address],
            &["ls"],
            &["repair"],
        ] {
            let out = Command::new(BIN)
                .args(["--store", spec])
                .args(command)
                .env("TARVAULT_LOG", "debug")
                .output()
                .expect("run");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{spec} {command:?}");
            assert!(!stderr.contains("s3cretpw"), "{spec} {command:?}: {stderr}");
            if command != ["repair"] {
                assert!(
                    stderr.contains("127.0.0.1:1"),
                    "{spec} {command:?}: {stderr}"
                );
            }
        }
    }
}
