//! A server's mapping file read into the SQLite database beside it (`<mapping>.sqlite`): shared
//! with a real second `tarvault serve` process, kept up with a mapping that grows while serving,
//! cut back to where a mapping cut back ends (dropping only what was cut), rebuilt when damaged,
//! and still refusing a URL mapped to two blobs.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use tarvault::backend::fs::{FsBackend, FsOptions};
use tarvault::migrate::MapEntry;
use tarvault::server::Server;
use tarvault::{PutOptions, Store};

use common::{noise, sha1_hex, sha512_sri};

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    map: PathBuf,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let options = FsOptions {
            fsync: false,
            ..Default::default()
        };
        let backend = FsBackend::open(dir.path().join("store"), options)
            .unwrap_or_else(|e| panic!("open: {e}"));
        let map = dir.path().join("map.jsonl");
        std::fs::write(&map, "").unwrap_or_else(|e| panic!("{e}"));
        Fixture {
            dir,
            store: Store::new(backend),
            map,
        }
    }

    /// Puts blob `i` and returns its mapping line (package `pkg-<i>`, a newline at its end).
    async fn blob(&self, i: u64) -> String {
        let bytes = noise(1000 + i as usize, i);
        self.store
            .put_bytes(bytes.clone(), &PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("put: {e}"));
        line(&entry(i, &bytes))
    }

    fn append(&self, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.map)
            .unwrap_or_else(|e| panic!("{e}"));
        f.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The database beside the mapping.
    fn db(&self) -> PathBuf {
        PathBuf::from(format!("{}.sqlite", self.map.display()))
    }

    fn server(&self) -> Server {
        Server::with_mapping_file(self.store.clone(), &self.map)
            .unwrap_or_else(|e| panic!("server: {e}"))
    }
}

fn entry(i: u64, bytes: &[u8]) -> MapEntry {
    MapEntry {
        name: format!("pkg-{i}"),
        version: "1.0.0".into(),
        file: format!("pkg-{i}-1.0.0.tgz"),
        integrity: sha512_sri(bytes),
        shasum: sha1_hex(bytes),
        size: bytes.len() as u64,
    }
}

fn line(e: &MapEntry) -> String {
    format!(
        "{}\n",
        serde_json::to_string(e).unwrap_or_else(|e| panic!("{e}"))
    )
}

fn url(i: u64) -> String {
    format!("/pkg-{i}/-/pkg-{i}-1.0.0.tgz")
}

/// The status a server's router gives `path`.
async fn status(server: &Server, path: &str) -> u16 {
    common::router_get(server, path).await.status().as_u16()
}

/// A `tarvault serve --map` process and its base URL.
struct Cli {
    child: Child,
    base: String,
}

impl Cli {
    fn start(store: &Path, map: &Path) -> Cli {
        Cli::start_with(store, map, &[])
    }

    fn start_with(store: &Path, map: &Path, envs: &[(&str, &str)]) -> Cli {
        let (child, base) = common::serve_cli(store, map, envs);
        Cli { child, base }
    }

    async fn status(&self, path: &str) -> u16 {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("get {path}: {e}"))
            .status()
            .as_u16()
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mapping is read once into its database; a second process (the CLI) opens the same database,
/// and lines appended while both serve are found by each within a second, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_share_the_mapping_database_and_follow_a_growing_mapping() {
    let f = Fixture::new().await;
    let mut text = String::new();
    for i in 0..300 {
        text.push_str(&f.blob(i).await);
    }
    f.append(&text);
    let server = f.server();
    assert_eq!(server.mapped_urls(), 300);
    let db = f.db();
    assert!(db.exists(), "the database beside the mapping");
    assert_eq!(status(&server, &url(7)).await, 200);
    assert_eq!(status(&server, &url(299)).await, 200);
    assert_eq!(status(&server, &url(300)).await, 404);

    let cli = Cli::start(&f.dir.path().join("store"), &f.map);
    assert_eq!(cli.status(&url(0)).await, 200);
    assert_eq!(cli.status(&url(123)).await, 200);

    // A migration appends (the last line first in two pieces, as a writer may leave it).
    let mut more = String::new();
    for i in 300..320 {
        more.push_str(&f.blob(i).await);
    }
    let cut = more.len() - 40;
    f.append(&more[..cut]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        status(&server, &url(318)).await,
        200,
        "appended while serving"
    );
    assert_eq!(
        status(&server, &url(319)).await,
        404,
        "a line still being written"
    );
    f.append(&more[cut..]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status(&server, &url(319)).await, 200, "once whole");
    assert_eq!(cli.status(&url(319)).await, 200, "the other process too");
    assert_eq!(cli.status(&url(305)).await, 200);
    assert_eq!(server.mapped_urls(), 320);
    // A fresh server opens the database without reading the mapping again: its count is the
    // database's, and a URL the mapping never had is still unknown.
    let again = f.server();
    assert_eq!(again.mapped_urls(), 320);
    assert_eq!(status(&again, &url(320)).await, 404);
}

/// A mapping cut back (as a resumed migration cuts it to its checkpoint): the URLs of the lines cut
/// are no longer served, those kept still are; one replaced by other lines is read again.
#[tokio::test]
async fn a_mapping_cut_back_is_read_again() {
    let f = Fixture::new().await;
    let mut lines = Vec::new();
    for i in 0..50 {
        lines.push(f.blob(i).await);
    }
    f.append(&lines.concat());
    assert_eq!(f.server().mapped_urls(), 50);
    let kept: String = lines[..30].concat();
    std::fs::write(&f.map, &kept).unwrap_or_else(|e| panic!("{e}"));
    let server = f.server();
    assert_eq!(server.mapped_urls(), 30);
    assert_eq!(status(&server, &url(29)).await, 200);
    assert_eq!(status(&server, &url(30)).await, 404);
    // Replaced by other lines of the same length: read again too.
    let mut other = lines.clone();
    other.swap(0, 40);
    std::fs::write(&f.map, other[..30].concat()).unwrap_or_else(|e| panic!("{e}"));
    let server = f.server();
    assert_eq!(status(&server, &url(40)).await, 200);
    assert_eq!(status(&server, &url(0)).await, 404);
}

/// A damaged database is deleted and built again from the mapping.
#[tokio::test]
async fn a_damaged_mapping_database_is_built_again() {
    let f = Fixture::new().await;
    f.append(&(f.blob(1).await + &f.blob(2).await));
    drop(f.server());
    let db = f.db();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::write(&db, vec![0x5a; 8192]).unwrap_or_else(|e| panic!("{e}"));
    let server = f.server();
    assert_eq!(server.mapped_urls(), 2);
    assert_eq!(status(&server, &url(2)).await, 200);
}

/// One URL mapped to two different blobs is refused, whether the lines are there at start or
/// appended while serving (then logged, and the URL keeps its first blob).
#[tokio::test]
async fn a_url_mapped_to_two_blobs_is_refused() {
    let f = Fixture::new().await;
    let one = f.blob(1).await;
    let twin = entry(1, &noise(5000, 99));
    f.append(&(one.clone() + &line(&twin)));
    let err = Server::with_mapping_file(f.store.clone(), &f.map)
        .err()
        .unwrap_or_else(|| panic!("a conflicting mapping was accepted"));
    assert!(err.to_string().contains("two different blobs"), "{err}");

    std::fs::write(&f.map, &one).unwrap_or_else(|e| panic!("{e}"));
    let server = f.server();
    f.append(&line(&twin));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        status(&server, &url(5)).await,
        404,
        "a miss reads the new line"
    );
    assert_eq!(status(&server, &url(1)).await, 200, "the first blob stays");
}

/// A mapping whose last line runs on without end (here 4 MiB of `x` and no newline: a damaged
/// file, or one that is not a mapping) is refused with an error naming the byte where that line
/// starts, read no further than 64 KiB past it, instead of held whole in memory and read again
/// on every miss. A last line still being written (short, no newline yet) is waited for.
#[tokio::test]
async fn a_line_without_end_is_refused_not_read_whole() {
    let f = Fixture::new().await;
    let one = f.blob(1).await;
    f.append(&one);
    f.append(r#"{"name":"pkg-2","vers"#);
    let server = f.server();
    assert_eq!(
        status(&server, &url(1)).await,
        200,
        "a line being written waits"
    );
    f.append(&"x".repeat(4 << 20));
    let err = Server::with_mapping_file(f.store.clone(), &f.map)
        .err()
        .unwrap_or_else(|| panic!("a line without end was accepted"));
    let text = err.to_string();
    assert!(text.contains(&format!("at byte {}", one.len())), "{text}");
    assert!(text.contains("longer than 65536 bytes"), "{text}");
}

/// Where no database can be made beside the mapping (here its name is taken by a directory; a
/// read-only directory does the same for a user other than root), the user's servers on the host
/// keep one in the user's private temp directory (`$TMPDIR/tarvault-<uid>`), named after the
/// mapping, and share it: two real processes find the one file there. Where none can be made
/// there either, the mapping is served from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_whose_database_cannot_be_beside_it_is_kept_in_the_temp_directory() {
    let f = Fixture::new().await;
    f.append(&f.blob(3).await);
    let db = f.db();
    std::fs::create_dir(&db).unwrap_or_else(|e| panic!("{e}"));
    let tmp = f.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap_or_else(|e| panic!("{e}"));
    let tmpdir = tmp.display().to_string();
    let store = f.dir.path().join("store");
    let private = tmp.join(format!("tarvault-{}", unsafe { libc::geteuid() }));
    let databases = || -> Vec<PathBuf> { sqlite_files(&private) };

    let first = Cli::start_with(&store, &f.map, &[("TMPDIR", &tmpdir)]);
    assert_eq!(first.status(&url(3)).await, 200);
    assert_eq!(first.status(&url(4)).await, 404);
    let made = databases();
    assert_eq!(
        made.len(),
        1,
        "one database in the temp directory: {made:?}"
    );
    assert!(db.is_dir(), "left as it was");

    let second = Cli::start_with(&store, &f.map, &[("TMPDIR", &tmpdir)]);
    assert_eq!(second.status(&url(3)).await, 200);
    assert_eq!(
        databases(),
        made,
        "the second process shares the first's database"
    );
    // Both follow the mapping through it.
    f.append(&f.blob(4).await);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(first.status(&url(4)).await, 200);
    assert_eq!(second.status(&url(4)).await, 200);
    drop((first, second));

    // Its name taken there too: served from memory.
    let name = made[0].clone();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", name.display()));
    }
    std::fs::create_dir(&name).unwrap_or_else(|e| panic!("{e}"));
    let third = Cli::start_with(&store, &f.map, &[("TMPDIR", &tmpdir)]);
    assert_eq!(third.status(&url(3)).await, 200);
    assert_eq!(third.status(&url(4)).await, 200);
    assert_eq!(third.status(&url(5)).await, 404);
    assert!(name.is_dir() && db.is_dir(), "left as they were");
    assert!(
        sqlite_files(&tmp).is_empty(),
        "nothing in the temp directory itself"
    );
}

/// A `tarvault-<uid>` directory in the temp directory that others may write (any local user
/// could have made it first, and put a database there that maps a URL to another package's
/// blob) is not used: the server holds the mapping in memory and writes nothing into it, nor
/// into the temp directory itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temp_directory_others_can_write_is_not_trusted_with_the_mapping() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new().await;
    f.append(&f.blob(3).await);
    std::fs::create_dir(f.db()).unwrap_or_else(|e| panic!("{e}"));
    let tmp = f.dir.path().join("tmp");
    let planted = tmp.join(format!("tarvault-{}", unsafe { libc::geteuid() }));
    std::fs::create_dir_all(&planted).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777))
        .unwrap_or_else(|e| panic!("{e}"));
    let tmpdir = tmp.display().to_string();
    let store = f.dir.path().join("store");
    let server = Cli::start_with(&store, &f.map, &[("TMPDIR", &tmpdir)]);
    assert_eq!(server.status(&url(3)).await, 200);
    assert_eq!(server.status(&url(4)).await, 404);
    assert!(
        sqlite_files(&planted).is_empty(),
        "the open directory was used"
    );
    assert!(
        sqlite_files(&tmp).is_empty(),
        "the temp directory itself was used"
    );
}

/// The SQLite databases (`*.sqlite`) directly in `dir` (none if it does not exist), sorted.
fn sqlite_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).path())
        .filter(|p| p.extension().is_some_and(|x| x == "sqlite"))
        .collect();
    found.sort();
    found
}

/// `n` mapping lines, `pkg-<i>` for each `i` in `range`, each naming one of `blobs` (URLs, not
/// blobs, are what a mapping holds many of; a few blobs keep a large mapping cheap to make).
fn lines_of(range: std::ops::Range<u64>, blobs: &[Vec<u8>]) -> Vec<String> {
    range
        .map(|i| line(&entry(i, &blobs[i as usize % blobs.len()])))
        .collect()
}

/// A trigger-kept record of the rows the servers add to and delete from the shared database:
/// SQLite runs the triggers inside their transactions, so nothing they do escapes it.
fn watch_rows(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).unwrap_or_else(|e| panic!("{e}"));
    conn.busy_timeout(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    conn.execute_batch(
        "CREATE TABLE watched(what TEXT NOT NULL, name TEXT NOT NULL);
         CREATE TRIGGER names_gone AFTER DELETE ON names
             BEGIN INSERT INTO watched VALUES ('names gone', old.name); END;
         CREATE TRIGGER names_added AFTER INSERT ON names
             BEGIN INSERT INTO watched VALUES ('names added', new.name); END;
         CREATE TRIGGER versions_gone AFTER DELETE ON versions
             BEGIN INSERT INTO watched VALUES ('versions gone', old.name); END;
         CREATE TRIGGER versions_added AFTER INSERT ON versions
             BEGIN INSERT INTO watched VALUES ('versions added', new.name); END;",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    conn
}

/// The package numbers of the rows `what` (e.g. "names gone"), sorted.
fn watched(conn: &rusqlite::Connection, what: &str) -> Vec<u64> {
    let mut q = conn
        .prepare("SELECT name FROM watched WHERE what = ?1")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut found: Vec<u64> = q
        .query_map([what], |r| r.get::<_, String>(0))
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|n| {
            let n = n.unwrap_or_else(|e| panic!("{e}"));
            n.trim_start_matches("pkg-")
                .parse()
                .unwrap_or_else(|e| panic!("{n}: {e}"))
        })
        .collect();
    found.sort_unstable();
    found
}

/// A mapping of 60,000 lines (more than one reading batch), followed by two real server
/// processes, cut back by 5,000 lines (as a resumed migration cuts it to its checkpoint) and then
/// given 50 other lines: the server that reads it drops the rows of the lines cut and nothing
/// else, reads only the new lines, and the other server serves every kept URL throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_cut_back_drops_only_the_lines_cut() {
    let f = Fixture::new().await;
    let mut blobs = Vec::new();
    for i in 0..4 {
        let bytes = noise(1000 + i, i as u64);
        f.store
            .put_bytes(bytes.clone(), &PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("put: {e}"));
        blobs.push(bytes);
    }
    let lines = lines_of(0..60_000, &blobs);
    f.append(&lines.concat());
    let store = f.dir.path().join("store");
    let reader = Cli::start(&store, &f.map);
    let other = Cli::start(&store, &f.map);
    assert_eq!(reader.status(&url(0)).await, 200);
    assert_eq!(other.status(&url(59_999)).await, 200);
    let watch = watch_rows(&f.db());

    let kept: usize = lines[..55_000].iter().map(String::len).sum();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f.map)
        .and_then(|m| m.set_len(kept as u64))
        .unwrap_or_else(|e| panic!("{e}"));
    f.append(&lines_of(100_000..100_050, &blobs).concat());

    // The other server is asked for kept URLs (never a miss: it reads nothing itself) while the
    // first reads the change.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poll = {
        let (stop, base) = (stop.clone(), other.base.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
            let (mut asked, mut missed) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || asked < 200 {
                let i = (asked * 7919) % 55_000;
                let got = client
                    .get(format!("{base}{}", url(i)))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .status()
                    .as_u16();
                if got != 200 {
                    missed.push((i, got));
                }
                asked += 1;
            }
            missed
        })
    };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(reader.status(&url(100_000)).await, 200, "a line appended");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let missed = poll.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(missed.is_empty(), "kept URLs not served: {missed:?}");

    for i in [0, 54_999, 100_049] {
        assert_eq!(reader.status(&url(i)).await, 200, "{}", url(i));
        assert_eq!(other.status(&url(i)).await, 200, "{}", url(i));
    }
    for i in [55_000, 59_999] {
        assert_eq!(reader.status(&url(i)).await, 404, "cut: {}", url(i));
        assert_eq!(other.status(&url(i)).await, 404, "cut: {}", url(i));
    }
    let span = |what: &str| {
        let found = watched(&watch, what);
        (found.len(), found.first().copied(), found.last().copied())
    };
    let (cut, new) = (
        (5_000, Some(55_000), Some(59_999)),
        (50, Some(100_000), Some(100_049)),
    );
    // (rows, first package, last package): the old reading dropped and read all 60,000 again.
    assert_eq!(span("names gone"), cut, "URLs dropped");
    assert_eq!(span("versions gone"), cut, "versions dropped");
    assert_eq!(span("names added"), new, "URLs read");
    assert_eq!(span("versions added"), new, "versions read");
    assert_eq!(
        watched(&watch, "names gone"),
        (55_000..60_000).collect::<Vec<_>>()
    );
}

/// A line appended while a server runs that maps a URL it serves to another blob is logged when
/// the server reads it (the URL keeps its first blob): a restart refuses that mapping, and the
/// log is what says why beforehand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_appended_while_serving_is_logged() {
    use std::io::BufRead;
    let f = Fixture::new().await;
    let one = f.blob(1).await;
    f.append(&one);
    let log = f.dir.path().join("serve.log");
    let bin = option_env!("CARGO_BIN_EXE_tarvault")
        .unwrap_or_else(|| panic!("this test needs the tarvault binary (feature cli)"));
    let child = std::process::Command::new(bin)
        .arg("--store")
        .arg(f.dir.path().join("store"))
        .args(["serve", "--listen", "127.0.0.1:0", "--map"])
        .arg(&f.map)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}")))
        .spawn()
        .unwrap_or_else(|e| panic!("tarvault serve: {e}"));
    let mut cli = Cli {
        child,
        base: String::new(),
    };
    let stdout = cli.child.stdout.take().unwrap_or_else(|| panic!("stdout"));
    let mut first = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut first)
        .unwrap_or_else(|e| panic!("{e}"));
    cli.base = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("tarvault serve printed {first:?}"))
        .to_string();
    assert_eq!(cli.status(&url(1)).await, 200);

    f.append(&line(&entry(1, &noise(5000, 99))));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(cli.status(&url(5)).await, 404, "a miss reads the new line");
    assert_eq!(cli.status(&url(1)).await, 200, "the first blob stays");
    drop(cli);
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        text.contains("two different blobs for pkg-1/-/pkg-1-1.0.0.tgz"),
        "the conflict is not logged: {text:?}"
    );
}

/// A server that has read the mapping's first line, the second appended since, and another
/// connection holding the database's write lock (as a process reading the mapping in does), which
/// the caller ends with `COMMIT`.
async fn one_read_one_locked_out(f: &Fixture) -> (Server, rusqlite::Connection) {
    let one = f.blob(1).await;
    f.append(&one);
    let server = f.server();
    f.append(&f.blob(2).await);
    let other = rusqlite::Connection::open(f.db()).unwrap_or_else(|e| panic!("{e}"));
    other
        .execute_batch("BEGIN IMMEDIATE")
        .unwrap_or_else(|e| panic!("{e}"));
    (server, other)
}

/// A reading of appended lines that takes long (here: another process holds the database's write
/// lock, as a migration or a server reading a large mapping does) holds up no lookup of a URL
/// already read. Each miss a second apart starts a reading, which holds its connection while it
/// waits; when they held every connection lookups have, the next lookup blocked its runtime
/// thread (and so the server) until a reading ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reading_of_appended_lines_holds_up_no_lookup() {
    let f = Fixture::new().await;
    let (server, other) = one_read_one_locked_out(&f).await;
    // As many readings as the server has lookup connections (one per core, at most 8).
    let lanes = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    let mut misses = Vec::new();
    for _ in 0..lanes {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let s = server.clone();
        misses.push(tokio::spawn(async move { status(&s, &url(3)).await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = server.clone();
    let lookup = tokio::spawn(async move { status(&s, &url(1)).await });
    let answered = tokio::time::timeout(Duration::from_secs(3), lookup).await;
    other
        .execute_batch("COMMIT")
        .unwrap_or_else(|e| panic!("{e}"));
    let answered = answered.unwrap_or_else(|_| panic!("a lookup waited for the readings"));
    assert_eq!(answered.unwrap_or_else(|e| panic!("{e}")), 200);
    for m in misses {
        assert_eq!(m.await.unwrap_or_else(|e| panic!("{e}")), 404);
    }
    assert!(found_soon(&server, &url(2)).await, "the line is read");
}

/// A miss while another miss's reading is under way (here waiting for the write lock another
/// process holds) is answered from what is read, at once, rather than wait for that reading,
/// which may take minutes (a mapping read again from its start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_does_not_wait_for_another_miss_s_reading() {
    let f = Fixture::new().await;
    let (server, other) = one_read_one_locked_out(&f).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let s = server.clone();
    let first = tokio::spawn(async move { status(&s, &url(3)).await });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let s = server.clone();
    let second = tokio::spawn(async move { status(&s, &url(4)).await });
    let answered = tokio::time::timeout(Duration::from_secs(3), second).await;
    other
        .execute_batch("COMMIT")
        .unwrap_or_else(|e| panic!("{e}"));
    let answered = answered.unwrap_or_else(|_| panic!("a miss waited for another's reading"));
    assert_eq!(answered.unwrap_or_else(|e| panic!("{e}")), 404);
    assert_eq!(first.await.unwrap_or_else(|e| panic!("{e}")), 404);
    assert!(
        found_soon(&server, &url(2)).await,
        "the first reading read it"
    );
}

/// The miss that starts a reading of the appended lines waits for it only a moment: here the
/// reading waits for the write lock another process holds (as a migration's reading of a large
/// mapping would, for up to the busy timeout, two minutes), and the miss is answered from what is
/// read. The reading goes on, and once the lock is given back the line it reads is found without
/// another miss's reading. (The miss waited for the whole reading.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_waits_for_its_own_reading_only_a_moment() {
    let f = Fixture::new().await;
    let (server, other) = one_read_one_locked_out(&f).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let s = server.clone();
    let miss = tokio::spawn(async move { status(&s, &url(3)).await });
    let answered = tokio::time::timeout(Duration::from_secs(5), miss).await;
    // The lock is still held: the line is not read yet (and this miss, within the second, starts
    // no reading of its own).
    let before = status(&server, &url(2)).await;
    other
        .execute_batch("COMMIT")
        .unwrap_or_else(|e| panic!("{e}"));
    let answered = answered.unwrap_or_else(|_| panic!("the miss waited for its reading"));
    assert_eq!(answered.unwrap_or_else(|e| panic!("{e}")), 404);
    assert_eq!(before, 404, "the line was read under another's lock");
    // The reading started by the miss reads the line once the lock is free.
    assert!(
        found_soon(&server, &url(2)).await,
        "the reading did not go on after the miss was answered"
    );
}

/// `tarvault serve` told to stop while a mapping catch-up one of its misses started waits for the
/// write lock another process holds exits within seconds, the reading cut short as a crash would
/// cut it (its transaction is not committed). It waited for the reading: here the busy timeout,
/// two minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_without_waiting_for_a_reading_held_up_by_another_process() {
    let f = Fixture::new().await;
    f.append(&f.blob(1).await);
    let mut cli = Cli::start(&f.dir.path().join("store"), &f.map);
    assert_eq!(cli.status(&url(1)).await, 200);
    f.append(&f.blob(2).await);
    let other = rusqlite::Connection::open(f.db()).unwrap_or_else(|e| panic!("{e}"));
    other
        .execute_batch("BEGIN IMMEDIATE")
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The miss starts a reading, which waits for the lock; the miss is answered after a second.
    assert_eq!(cli.status(&url(3)).await, 404);
    let pid = cli.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(killed.success());
    let stopped = Instant::now();
    let exited = loop {
        match cli.child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            Some(status) => break Some(status),
            None if stopped.elapsed() > Duration::from_secs(30) => break None,
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    other
        .execute_batch("COMMIT")
        .unwrap_or_else(|e| panic!("{e}"));
    let exited = exited.unwrap_or_else(|| panic!("serve did not exit within 30 s of SIGTERM"));
    assert!(exited.success(), "{exited}");
    // The line it was reading is read by the next server.
    let server = f.server();
    assert_eq!(status(&server, &url(2)).await, 200);
}

/// Whether `path` is served within half a second: a reading that was waiting for the write lock
/// commits its lines shortly after the lock is given back, on its own thread (a poll's own
/// reading, if one is due, finds it under way and does not wait for it).
async fn found_soon(server: &Server, path: &str) -> bool {
    for _ in 0..10 {
        if status(server, path).await == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `read_mapping` (what a server holds in memory where no database can be made, and the
/// library's reader of a whole mapping) refuses a line longer than 64 KiB as the database's
/// reading does, naming it, instead of reading it whole into memory however long it runs.
#[tokio::test]
async fn read_mapping_refuses_a_line_without_end_at_64_kib() {
    let f = Fixture::new().await;
    f.append(&f.blob(1).await);
    f.append(&"x".repeat(4 << 20));
    let err = tarvault::mapping::read_mapping(&f.map)
        .err()
        .unwrap_or_else(|| panic!("a line without end was accepted"));
    let text = err.to_string();
    assert!(text.contains("line 2"), "{text}");
    assert!(text.contains("longer than 65536 bytes"), "{text}");
}
