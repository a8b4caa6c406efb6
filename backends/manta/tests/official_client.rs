//! The proof: the official node-manta CLI (npm `manta@5.4.2`, installed in
//! `node/` by `npm ci --ignore-scripts`) against the in-process server.
//!
//! The CLI finds its key the way it does for real users: `$HOME/.ssh/id_*`
//! (made here with `ssh-keygen`), no ssh-agent (`SSH_AUTH_SOCK` unset), and
//! `MANTA_URL` / `MANTA_USER` / `MANTA_KEY_ID` (the MD5 fingerprint).

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{md5_b64, pseudo_random, Body, Client, Scratch, USER};
use manta_test_server::sign::Signer;
use manta_test_server::ServerHandle;

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node/node_modules/manta/bin")
}

/// Whether node-manta is installed; when it is not, the test fails under CI and elsewhere prints
/// `skipped: …` and returns.
fn node_manta() -> bool {
    let dir = bin_dir();
    if dir.join("mput").is_file() {
        return true;
    }
    common::skip_or_fail(&format!(
        "node-manta is not installed at {} (run `npm ci --ignore-scripts` in backends/manta/node, \
         as `bash .ci/run` does)",
        dir.display()
    ));
    false
}

/// Runs node-manta commands as one user with one key.
struct Cli {
    bin: PathBuf,
    home: PathBuf,
    url: String,
    user: String,
    key_id: String,
    cwd: PathBuf,
}

impl Cli {
    fn new(server: &ServerHandle, scratch: &Scratch, key: &Path) -> Cli {
        let signer = Signer::from_file(key, USER).expect("signer");
        Cli {
            bin: bin_dir(),
            home: scratch.home(),
            url: server.url(),
            user: USER.to_string(),
            key_id: signer.fingerprint().to_string(),
            cwd: scratch.dir.path().to_path_buf(),
        }
    }

    fn command(&self, cmd: &str, args: &[&str]) -> Command {
        let mut c = Command::new("node");
        c.arg(self.bin.join(cmd))
            .args(args)
            .current_dir(&self.cwd)
            .env("HOME", &self.home)
            .env("MANTA_URL", &self.url)
            .env("MANTA_USER", &self.user)
            .env("MANTA_KEY_ID", &self.key_id)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("MANTA_SUBUSER")
            .env_remove("MANTA_ROLE")
            .env_remove("MANTA_NO_AUTH")
            .env_remove("MANTA_TLS_INSECURE");
        c
    }

    fn run_with_stdin(&self, cmd: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = self.command(cmd, args);
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().expect("`node` must be on PATH");
        if let Some(data) = stdin {
            let mut si = child.stdin.take().expect("stdin");
            si.write_all(data).expect("write stdin");
        }
        child.wait_with_output().expect("wait")
    }

    fn run(&self, cmd: &str, args: &[&str]) -> Output {
        self.run_with_stdin(cmd, args, None)
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, cmd: &str, args: &[&str]) -> String {
        let out = self.run(cmd, args);
        assert!(
            out.status.success(),
            "{cmd} {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and asserts failure; returns stderr.
    fn fails(&self, cmd: &str, args: &[&str]) -> String {
        let out = self.run(cmd, args);
        assert!(
            !out.status.success(),
            "{cmd} {args:?} unexpectedly succeeded"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn cli_objects_directories_links() {
    if !node_manta() {
        return;
    }
    let rt = runtime();
    let scratch = Scratch::new();
    let key = scratch.rsa();
    let server = rt.block_on(common::start(&scratch.root(), &[&key]));
    let cli = Cli::new(&server, &scratch, &key);
    let client = Client::new(&server, &key);

    cli.ok("mmkdir", &["-p", "~~/stor/a/b/c"]);
    let head = rt.block_on(client.req("HEAD", "/testuser/stor/a/b/c", &[], Body::Empty));
    assert_eq!(
        head.header("content-type"),
        Some("application/x-json-stream; type=directory")
    );

    // Small file with metadata, MD5 and durability.
    let small = pseudo_random(1000, 11);
    let small_path = scratch.dir.path().join("small.bin");
    std::fs::write(&small_path, &small).expect("write");
    cli.ok(
        "mput",
        &[
            "-f",
            "small.bin",
            "-m",
            "-c",
            "3",
            "-H",
            "m-foo: bar",
            "~~/stor/a/b/c/small.bin",
        ],
    );
    let info = cli
        .ok("minfo", &["~~/stor/a/b/c/small.bin"])
        .to_ascii_lowercase();
    assert!(info.starts_with("http/1.1 200 ok"), "{info}");
    assert!(info.contains("m-foo: bar"), "{info}");
    assert!(info.contains("durability-level: 3"), "{info}");
    assert!(
        info.contains(&format!("content-md5: {}", md5_b64(&small)).to_ascii_lowercase()),
        "{info}"
    );
    let out = scratch.dir.path().join("small.out");
    cli.ok(
        "mget",
        &["-o", out.to_str().unwrap_or(""), "~~/stor/a/b/c/small.bin"],
    );
    assert_eq!(std::fs::read(&out).expect("read"), small);

    // ~20 MiB, streamed; mget verifies Content-Length and Content-MD5 itself.
    let big = pseudo_random(20 * 1024 * 1024 + 123, 12);
    std::fs::write(scratch.dir.path().join("big.bin"), &big).expect("write");
    cli.ok("mput", &["-f", "big.bin", "~~/stor/a/big.bin"]);
    let big_out = scratch.dir.path().join("big.out");
    cli.ok(
        "mget",
        &["-o", big_out.to_str().unwrap_or(""), "~~/stor/a/big.bin"],
    );
    let got = std::fs::read(&big_out).expect("read");
    assert!(got == big, "20 MiB round trip differs");
    assert_eq!(md5_b64(&got), md5_b64(&big));
    let h = rt.block_on(client.req("HEAD", "/testuser/stor/a/big.bin", &[], Body::Empty));
    assert_eq!(h.header("content-md5"), Some(md5_b64(&big).as_str()));

    // mput -p from stdin: 404 DirectoryDoesNotExist, mkdirp, retry; the
    // retried PUT must carry the bytes (100 Continue only after validation).
    let out = cli.run_with_stdin(
        "mput",
        &["-p", "~~/stor/x/y/hello.txt"],
        Some(b"hello manta\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cli.ok("mget", &["~~/stor/x/y/hello.txt"]), "hello manta\n");

    // Putting into a directory uses the file's basename.
    std::fs::write(scratch.dir.path().join("hello.txt"), b"in dir\n").expect("write");
    cli.ok("mput", &["-f", "hello.txt", "~~/stor/a/b/c"]);
    assert_eq!(cli.ok("mget", &["~~/stor/a/b/c/hello.txt"]), "in dir\n");

    // Listings.
    assert_eq!(cli.ok("mls", &["~~/stor/a/b/c"]), "hello.txt\nsmall.bin\n");
    let long = cli.ok("mls", &["-l", "~~/stor/a/b/c"]);
    assert!(
        long.lines().count() == 2 && long.contains(" 1000 ") && long.contains("small.bin"),
        "{long}"
    );
    assert_eq!(cli.ok("mls", &["~~/stor/a"]), "b/\nbig.bin\n");
    assert_eq!(
        cli.ok("mls", &["~~"]),
        "public/\nreports/\nstor/\nuploads/\n"
    );
    let json = cli.ok("mls", &["-j", "~~/stor/a/b/c"]);
    let first: serde_json::Value =
        serde_json::from_str(json.lines().next().unwrap_or("")).expect("json");
    assert_eq!(first["name"], "hello.txt");
    assert_eq!(first["type"], "object");
    let one = cli.ok("mls", &["-l", "~~/stor/a/b/c/small.bin"]);
    assert!(one.contains("small.bin") && one.contains(" 1000 "), "{one}");

    // SnapLinks.
    cli.ok("mln", &["~~/stor/a/b/c/small.bin", "~~/stor/a/link.bin"]);
    let link_out = scratch.dir.path().join("link.out");
    cli.ok(
        "mget",
        &["-o", link_out.to_str().unwrap_or(""), "~~/stor/a/link.bin"],
    );
    assert_eq!(std::fs::read(&link_out).expect("read"), small);
    let info = cli
        .ok("minfo", &["~~/stor/a/link.bin"])
        .to_ascii_lowercase();
    assert!(info.contains("m-foo: bar"), "{info}");

    // Removal.
    cli.ok("mrm", &["~~/stor/a/link.bin"]);
    let err = cli.fails("mget", &["~~/stor/a/link.bin"]);
    assert!(
        err.contains("ResourceNotFoundError: /testuser/stor/a/link.bin was not found"),
        "{err}"
    );
    let err = cli.fails("mrm", &["~~/stor/nonexistent"]);
    assert!(err.contains("ResourceNotFoundError"), "{err}");
    let err = cli.fails("mrmdir", &["~~/stor/a/b/c"]);
    assert!(
        err.contains("DirectoryNotEmptyError: /testuser/stor/a/b/c is not empty"),
        "{err}"
    );
    cli.ok("mrm", &["-r", "~~/stor/x"]);
    assert!(cli
        .fails("mls", &["~~/stor/x"])
        .contains("ResourceNotFoundError"));
    cli.ok(
        "mrm",
        &["~~/stor/a/b/c/hello.txt", "~~/stor/a/b/c/small.bin"],
    );
    cli.ok("mrmdir", &["~~/stor/a/b/c"]);
    assert_eq!(cli.ok("mls", &["~~/stor/a/b"]), "");
    drop(server);
}

#[test]
fn cli_missing_parent_and_wrong_key() {
    if !node_manta() {
        return;
    }
    let rt = runtime();
    let scratch = Scratch::new();
    let key = scratch.rsa();
    let server = rt.block_on(common::start(&scratch.root(), &[&key]));
    let cli = Cli::new(&server, &scratch, &key);
    let client = Client::new(&server, &key);

    std::fs::write(scratch.dir.path().join("f.txt"), b"data\n").expect("write");
    let err = cli.fails("mput", &["-f", "f.txt", "~~/stor/nodir/f.txt"]);
    assert!(
        err.contains("DirectoryDoesNotExistError: /testuser/stor/nodir does not exist"),
        "{err}"
    );
    let err = cli.fails("mmkdir", &["~~/stor/p/q"]);
    assert!(err.contains("DirectoryDoesNotExistError"), "{err}");
    let err = cli.fails("mget", &["~~/stor/nope.txt"]);
    assert!(
        err.contains("ResourceNotFoundError: /testuser/stor/nope.txt was not found"),
        "{err}"
    );
    let l = rt.block_on(client.get("/testuser/stor"));
    assert_eq!(l.text(), "", "nothing was created");

    // A key the account does not have: swap HOME's key for a new one.
    let other = Scratch::new();
    let other_key = other.rsa();
    std::fs::write(other.dir.path().join("f.txt"), b"data\n").expect("write");
    let stranger = Cli::new(&server, &other, &other_key);
    let err = stranger.fails("mls", &["~~/stor"]);
    assert!(err.contains("KeyDoesNotExistError"), "{err}");
    // mput starts with a HEAD, whose error has no body: restify's client
    // can only name it after the status.
    let err = stranger.fails("mput", &["-f", "f.txt", "~~/stor/f.txt"]);
    assert!(
        err.contains("ForbiddenError") || err.contains("KeyDoesNotExistError"),
        "{err}"
    );
    // Another account name.
    let mut wrong_user = Cli::new(&server, &scratch, &key);
    wrong_user.user = "nobody".into();
    let err = wrong_user.fails("mls", &["~~/stor"]);
    assert!(err.contains("AccountDoesNotExistError"), "{err}");
    drop(server);
}

#[test]
fn cli_multipart_upload() {
    if !node_manta() {
        return;
    }
    let rt = runtime();
    let scratch = Scratch::new();
    let key = scratch.rsa();
    let server = rt.block_on(common::start(&scratch.root(), &[&key]));
    let cli = Cli::new(&server, &scratch, &key);

    let p0 = pseudo_random(6_000_000, 21);
    let p1 = pseudo_random(1000, 22);
    std::fs::write(scratch.dir.path().join("part0.bin"), &p0).expect("write");
    std::fs::write(scratch.dir.path().join("part1.bin"), &p1).expect("write");

    let id = cli
        .ok("mmpu", &["create", "~~/stor/mpu.bin"])
        .trim()
        .to_string();
    assert_eq!(id.len(), 36, "{id}");
    let e0 = cli
        .ok("mmpu", &["upload", "-f", "part0.bin", &id, "0"])
        .trim()
        .to_string();
    let e1 = cli
        .ok("mmpu", &["upload", "-f", "part1.bin", &id, "1"])
        .trim()
        .to_string();
    let state: serde_json::Value =
        serde_json::from_str(&cli.ok("mmpu", &["get", &id])).expect("state json");
    assert_eq!(state["state"], "created");
    assert_eq!(state["targetObject"], "/testuser/stor/mpu.bin");
    let parts = cli.ok("mmpu", &["parts", &id]);
    assert_eq!(parts.lines().count(), 2, "{parts}");
    assert!(parts
        .lines()
        .all(|l| l.starts_with(&format!("/testuser/uploads/{}/{id}/", &id[..3]))));
    let listed = cli.ok("mmpu", &["list"]);
    assert!(listed.contains(&id), "{listed}");
    cli.ok("mmpu", &["commit", &id, &e0, &e1]);
    let out = scratch.dir.path().join("mpu.out");
    cli.ok(
        "mget",
        &["-o", out.to_str().unwrap_or(""), "~~/stor/mpu.bin"],
    );
    let whole = [p0, p1].concat();
    assert!(
        std::fs::read(&out).expect("read") == whole,
        "committed object differs"
    );
    let state: serde_json::Value =
        serde_json::from_str(&cli.ok("mmpu", &["get", &id])).expect("state json");
    assert_eq!(
        (state["state"].as_str(), state["result"].as_str()),
        (Some("done"), Some("committed"))
    );

    let id2 = cli
        .ok("mmpu", &["create", "~~/stor/mpu2.bin"])
        .trim()
        .to_string();
    cli.ok("mmpu", &["abort", &id2]);
    let err = cli.fails("mmpu", &["commit", &id2]);
    assert!(err.contains("already aborted"), "{err}");
    assert!(cli
        .fails("mget", &["~~/stor/mpu2.bin"])
        .contains("ResourceNotFoundError"));
    drop(server);
}

#[test]
fn cli_ecdsa_key() {
    if !node_manta() {
        return;
    }
    let rt = runtime();
    let scratch = Scratch::new();
    let key = scratch.ecdsa();
    let server = rt.block_on(common::start(&scratch.root(), &[&key]));
    let cli = Cli::new(&server, &scratch, &key);
    cli.ok("mmkdir", &["-p", "~~/stor/ec/dir"]);
    let out = cli.run_with_stdin("mput", &["~~/stor/ec/dir/x.txt"], Some(b"ecdsa signed\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cli.ok("mget", &["~~/stor/ec/dir/x.txt"]), "ecdsa signed\n");
    assert_eq!(cli.ok("mls", &["~~/stor/ec/dir"]), "x.txt\n");
    // An empty file: Content-Length 0, so no body and no 100 Continue.
    std::fs::write(scratch.dir.path().join("empty"), b"").expect("write");
    cli.ok("mput", &["-f", "empty", "~~/stor/ec/empty"]);
    let info = cli.ok("minfo", &["~~/stor/ec/empty"]).to_ascii_lowercase();
    assert!(
        info.contains("durability-level: 0")
            && info.contains("content-md5: 1b2m2y8asgtpgamy7phcfg=="),
        "{info}"
    );
    assert_eq!(cli.ok("mget", &["~~/stor/ec/empty"]), "");
    drop(server);
}

#[test]
fn cli_listing_pages_past_1024() {
    if !node_manta() {
        return;
    }
    let rt = runtime();
    let scratch = Scratch::new();
    let key = scratch.rsa();
    let server = rt.block_on(common::start(&scratch.root(), &[&key]));
    let cli = Cli::new(&server, &scratch, &key);
    let client = Client::new(&server, &key);
    rt.block_on(async {
        client.mkdir("/testuser/stor/many").await;
        for i in 0..1030 {
            let r = client
                .req(
                    "PUT",
                    &format!("/testuser/stor/many/f{i:05}"),
                    &[],
                    Body::Empty,
                )
                .await;
            assert_eq!(r.status, 204);
        }
    });
    let out = cli.ok("mls", &["~~/stor/many"]);
    let names: Vec<&str> = out.lines().collect();
    assert_eq!(names.len(), 1030);
    let expected: Vec<String> = (0..1030).map(|i| format!("f{i:05}")).collect();
    assert_eq!(
        names, expected,
        "all entries, sorted, no duplicates across pages"
    );
    let json = cli.ok("mls", &["-j", "~~/stor/many"]);
    assert_eq!(json.lines().count(), 1030);
    drop(server);
}

#[test]
fn cli_msign_url() {
    if !node_manta() {
        return;
    }
    let rt = runtime();
    let scratch = Scratch::new();
    let key = scratch.rsa();
    let server = rt.block_on(common::start(&scratch.root(), &[&key]));
    let cli = Cli::new(&server, &scratch, &key);
    let client = Client::new(&server, &key);
    rt.block_on(client.put("/testuser/stor/signed.txt", b"via msign"));
    let url = cli.ok("msign", &["~~/stor/signed.txt"]).trim().to_string();
    let path = url
        .strip_prefix(&server.url())
        .unwrap_or_else(|| panic!("msign URL {url} is not under {}", server.url()))
        .to_string();
    let anon = Client {
        addr: server.addr(),
        signer: None,
    };
    let r = rt.block_on(anon.get(&path));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(&r.body[..], b"via msign");
    drop(server);
}
