//! The on-disk namespace.
//!
//! Layout under `--root`: `<root>/<account>/<top>/<name>/...` mirrors the
//! Manta tree: Manta directories are directories, objects are plain files.
//! Each directory holds a hidden `.meta/` folder with one JSON sidecar per
//! entry (`.meta/<name>.json`: etag, object id, MD5, content type, `m-*`
//! headers, ...). Names starting with `.` or `%` are stored with a `%`
//! prefix so that user names can never collide with `.meta` or temp files.
//! SnapLinks are hard links, so a link keeps the bytes it was made from.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::util;

/// A Manta path: `/<account>/<parts...>` (parts already percent-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MPath {
    pub account: String,
    pub parts: Vec<String>,
}

impl MPath {
    pub fn new(account: &str, parts: &[&str]) -> Self {
        MPath {
            account: account.to_string(),
            parts: parts.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The path as muskie prints it in messages (`/u/stor/a`).
    pub fn display(&self) -> String {
        let mut s = format!("/{}", self.account);
        for p in &self.parts {
            s.push('/');
            s.push_str(p);
        }
        s
    }

    /// `/:login`, `/:login/stor`, `/:login/public`, ... (muskie ROOT_REGEXPS).
    pub fn is_root(&self) -> bool {
        self.parts.len() <= 1
    }

    pub fn parent(&self) -> Option<MPath> {
        if self.parts.is_empty() {
            return None;
        }
        let mut p = self.clone();
        p.parts.pop();
        Some(p)
    }

    pub fn child(&self, name: &str) -> MPath {
        let mut p = self.clone();
        p.parts.push(name.to_string());
        p
    }

    pub fn name(&self) -> &str {
        self.parts
            .last()
            .map(String::as_str)
            .unwrap_or(&self.account)
    }

    pub fn top(&self) -> Option<&str> {
        self.parts.first().map(String::as_str)
    }
}

/// Metadata of an object (what muskie keeps in Moray).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub etag: String,
    pub object_id: String,
    pub content_length: u64,
    #[serde(rename = "contentMD5")]
    pub content_md5: String,
    pub content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    /// Number of "sharks" (copies): `Durability-Level`, 0 for empty objects.
    pub durability: u32,
    /// Milliseconds since the epoch.
    pub mtime: u64,
    /// Stored response headers: `m-*`, `cache-control`, CORS, ... in the
    /// order they were received.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// A multipart upload's record, kept on its upload directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UploadRecord {
    pub id: String,
    /// "created" or "finalizing".
    pub state: String,
    /// "commit" or "abort" once finalizing.
    #[serde(default)]
    pub finalizing_type: Option<String>,
    pub object_path: String,
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub num_copies: u32,
    pub creation_time_ms: u64,
    pub object_id: String,
    #[serde(default)]
    pub parts_md5: Option<String>,
}

/// Metadata of a directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DirMeta {
    pub mtime: u64,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadRecord>,
}

/// What a name resolves to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Meta {
    Object(ObjectMeta),
    Directory(DirMeta),
}

impl Meta {
    pub fn mtime(&self) -> u64 {
        match self {
            Meta::Object(o) => o.mtime,
            Meta::Directory(d) => d.mtime,
        }
    }

    pub fn etag(&self) -> Option<&str> {
        match self {
            Meta::Object(o) => Some(&o.etag),
            Meta::Directory(_) => None,
        }
    }
}

const META_DIR: &str = ".meta";

/// Disk name of a Manta name.
fn esc(name: &str) -> String {
    if name.starts_with('.') || name.starts_with('%') {
        format!("%{name}")
    } else {
        name.to_string()
    }
}

/// Manta name of a disk name (`None` for our own hidden files).
fn unesc(disk: &str) -> Option<String> {
    if disk.starts_with('.') {
        None
    } else if let Some(rest) = disk.strip_prefix('%') {
        Some(rest.to_string())
    } else {
        Some(disk.to_string())
    }
}

fn file_mtime_ms(md: &fs::Metadata) -> u64 {
    md.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn write_atomic(dir: &Path, final_path: &Path, data: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}", util::new_uuid()));
    fs::write(&tmp, data)?;
    fs::rename(&tmp, final_path)
}

/// The namespace on disk, with a lock that makes each metadata change atomic
/// with respect to lookups.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    lock: RwLock<()>,
}

/// The top-level directories of an account (muskie's storage paths with MPU
/// enabled), in listing order.
pub const TOP_DIRS: [&str; 4] = ["public", "reports", "stor", "uploads"];

impl Store {
    /// Opens (creating if needed) the tree for `account` under `root`.
    pub fn open(root: &Path, account: &str) -> io::Result<Store> {
        for top in TOP_DIRS {
            fs::create_dir_all(root.join(esc(account)).join(top))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            lock: RwLock::new(()),
        })
    }

    fn read_guard(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.lock.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_guard(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.lock.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the bytes (or the directory) of `p` live.
    pub fn disk(&self, p: &MPath) -> PathBuf {
        let mut d = self.root.join(esc(&p.account));
        for part in &p.parts {
            d.push(esc(part));
        }
        d
    }

    fn sidecar(&self, p: &MPath) -> Option<(PathBuf, PathBuf)> {
        if p.is_root() {
            return None;
        }
        let parent = self.disk(&p.parent()?);
        let dir = parent.join(META_DIR);
        let file = dir.join(format!("{}.json", esc(p.name())));
        Some((dir, file))
    }

    fn lookup_locked(&self, p: &MPath) -> io::Result<Option<Meta>> {
        let disk = self.disk(p);
        let md = match fs::metadata(&disk) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(20) => return Ok(None), // ENOTDIR
            Err(e) => return Err(e),
        };
        let side = match self.sidecar(p) {
            Some((_, file)) => match fs::read(&file) {
                Ok(b) => serde_json::from_slice::<Meta>(&b).ok(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        Ok(match (md.is_dir(), side) {
            (true, Some(Meta::Directory(d))) => Some(Meta::Directory(d)),
            (true, _) => Some(Meta::Directory(DirMeta {
                mtime: file_mtime_ms(&md),
                ..DirMeta::default()
            })),
            (false, Some(Meta::Object(o))) => Some(Meta::Object(o)),
            (false, _) => None,
        })
    }

    /// Resolves `p`.
    pub fn lookup(&self, p: &MPath) -> io::Result<Option<Meta>> {
        let _g = self.read_guard();
        self.lookup_locked(p)
    }

    /// Resolves an object and opens its bytes in one consistent step.
    pub fn open_object(&self, p: &MPath) -> io::Result<Option<(ObjectMeta, fs::File)>> {
        let _g = self.read_guard();
        match self.lookup_locked(p)? {
            Some(Meta::Object(o)) => Ok(Some((o, fs::File::open(self.disk(p))?))),
            _ => Ok(None),
        }
    }

    /// Sorted (byte order) entry names of a directory.
    pub fn list_names(&self, dir: &MPath) -> io::Result<Vec<String>> {
        let _g = self.read_guard();
        self.list_locked(dir)
    }

    fn list_locked(&self, dir: &MPath) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for ent in fs::read_dir(self.disk(dir))? {
            let ent = ent?;
            if let Some(n) = ent.file_name().to_str().and_then(unesc) {
                names.push(n);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Creates (or updates the headers of) a directory. An object at that
    /// path is replaced, as muskie does.
    pub fn put_directory(&self, p: &MPath, headers: Vec<(String, String)>) -> io::Result<()> {
        let _g = self.write_guard();
        let disk = self.disk(p);
        match self.lookup_locked(p)? {
            Some(Meta::Directory(d)) => {
                if d.headers == headers {
                    return Ok(());
                }
            }
            Some(Meta::Object(_)) => {
                fs::remove_file(&disk)?;
                fs::create_dir(&disk)?;
            }
            None => fs::create_dir(&disk)?,
        }
        if let Some((dir, file)) = self.sidecar(p) {
            let meta = Meta::Directory(DirMeta {
                mtime: util::now_ms(),
                headers,
                upload: None,
            });
            write_atomic(&dir, &file, &serde_json::to_vec(&meta)?)?;
        }
        Ok(())
    }

    /// Writes a directory's metadata (used for upload records).
    pub fn create_directory_with(&self, p: &MPath, meta: DirMeta) -> io::Result<()> {
        let _g = self.write_guard();
        let disk = self.disk(p);
        if !disk.is_dir() {
            fs::create_dir(&disk)?;
        }
        if let Some((dir, file)) = self.sidecar(p) {
            write_atomic(&dir, &file, &serde_json::to_vec(&Meta::Directory(meta))?)?;
        }
        Ok(())
    }

    /// A temp file next to where `p` will live (same filesystem).
    pub fn temp_path(&self, p: &MPath) -> PathBuf {
        let parent = p
            .parent()
            .map(|d| self.disk(&d))
            .unwrap_or_else(|| self.root.clone());
        parent.join(format!(".tmp-{}", util::new_uuid()))
    }

    /// Moves a fully written temp file into place as object `p`. Fails with
    /// `NotFound` if the parent vanished and `IsADirectory` (EISDIR) if `p`
    /// became a directory meanwhile.
    pub fn commit_object(&self, p: &MPath, tmp: &Path, meta: &ObjectMeta) -> io::Result<()> {
        let _g = self.write_guard();
        let disk = self.disk(p);
        if disk.is_dir() {
            let _ = fs::remove_file(tmp);
            return Err(io::Error::from_raw_os_error(21));
        }
        fs::rename(tmp, &disk)?;
        self.write_object_meta_locked(p, meta)
    }

    fn write_object_meta_locked(&self, p: &MPath, meta: &ObjectMeta) -> io::Result<()> {
        let (dir, file) = self
            .sidecar(p)
            .ok_or_else(|| io::Error::other("no sidecar for a root path"))?;
        write_atomic(
            &dir,
            &file,
            &serde_json::to_vec(&Meta::Object(meta.clone()))?,
        )
    }

    /// Replaces the metadata of an existing entry (PUT ?metadata=true).
    pub fn update_meta(&self, p: &MPath, meta: &Meta) -> io::Result<()> {
        let _g = self.write_guard();
        let (dir, file) = self
            .sidecar(p)
            .ok_or_else(|| io::Error::other("no sidecar for a root path"))?;
        write_atomic(&dir, &file, &serde_json::to_vec(meta)?)
    }

    /// A SnapLink: `dst` shares `src`'s bytes (hard link) and metadata.
    pub fn link_object(&self, src: &MPath, dst: &MPath, meta: &ObjectMeta) -> io::Result<()> {
        let _g = self.write_guard();
        let tmp = self.temp_path(dst);
        fs::hard_link(self.disk(src), &tmp)?;
        let disk = self.disk(dst);
        if disk.is_dir() {
            let _ = fs::remove_file(&tmp);
            return Err(io::Error::from_raw_os_error(21));
        }
        fs::rename(&tmp, &disk)?;
        self.write_object_meta_locked(dst, meta)
    }

    /// Removes object `p`.
    pub fn delete_object(&self, p: &MPath) -> io::Result<()> {
        let _g = self.write_guard();
        fs::remove_file(self.disk(p))?;
        if let Some((_, file)) = self.sidecar(p) {
            let _ = fs::remove_file(file);
        }
        Ok(())
    }

    /// Removes directory `p` if it has no entries; `Ok(false)` if not empty.
    pub fn delete_directory(&self, p: &MPath) -> io::Result<bool> {
        let _g = self.write_guard();
        if !self.list_locked(p)?.is_empty() {
            return Ok(false);
        }
        fs::remove_dir_all(self.disk(p))?;
        if let Some((_, file)) = self.sidecar(p) {
            let _ = fs::remove_file(file);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips() {
        for n in ["a", ".meta", "%x", ".tmp-1", "..x", "plain.json"] {
            let e = esc(n);
            assert!(!e.starts_with('.'));
            assert_eq!(unesc(&e).as_deref(), Some(n));
        }
        assert_eq!(unesc(".meta"), None);
    }

    #[test]
    fn store_roundtrip() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let s = Store::open(dir.path(), "u")?;
        let d = MPath::new("u", &["stor", ".hidden"]);
        s.put_directory(&d, vec![("m-a".into(), "1".into())])?;
        let o = d.child("obj");
        let tmp = s.temp_path(&o);
        fs::write(&tmp, b"hi")?;
        let meta = ObjectMeta {
            etag: "e".into(),
            object_id: "e".into(),
            content_length: 2,
            content_md5: util::md5_b64(b"hi"),
            content_type: "text/plain".into(),
            content_disposition: None,
            durability: 2,
            mtime: 1,
            headers: vec![],
        };
        s.commit_object(&o, &tmp, &meta)?;
        assert_eq!(s.list_names(&d)?, vec!["obj".to_string()]);
        assert_eq!(
            s.list_names(&MPath::new("u", &["stor"]))?,
            vec![".hidden".to_string()]
        );
        assert!(matches!(s.lookup(&o)?, Some(Meta::Object(m)) if m == meta));
        assert!(!s.delete_directory(&d)?);
        s.delete_object(&o)?;
        assert!(s.delete_directory(&d)?);
        assert_eq!(s.lookup(&d)?, None);
        Ok(())
    }
}
