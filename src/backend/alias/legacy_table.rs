//! The fingerprints of a large old log ([`super::legacy`]) kept in a temp file, so that a
//! process answering lookups during an upgrade holds the same memory whatever the log's size.
//!
//! Held in memory, the fingerprints cost 16 bytes per blob (640 MB at 40M blobs, in every process
//! until the import has deleted the last segment), and a lookup binary-searched every segment's
//! array (about 4,900 at 40M). Here they are one table on local disk, laid out as git's pack
//! `.idx` is: entries of 12 bytes (fingerprint, segment number, line offset) sorted by
//! fingerprint, and in memory only a fan-out of 65,537 positions (where the entries of each 16-bit
//! prefix begin: 512 KiB) and the segments' names. A lookup reads the entries of its prefix with
//! one positioned read (about 30 entries at 1M blobs, 1,200 at 40M), from the page cache once
//! the file is warm.
//!
//! The table is built in two passes over local files, in flat memory: the entries are appended to
//! a run file as the segments are read, counted by prefix; then scattered into their first byte's
//! part of the table (256 buffers of 8 KiB) and each part (1/256 of the table: 4 MB at 40M blobs)
//! sorted in memory. The run file is an unnamed temp file (`tempfile::tempfile`), gone when closed
//! or when the process dies. The table is built in a named temp file, then [`Table::save`]d (its
//! fan-out and segment names written after its entries) and published under a name for the host's
//! other processes, which [`Table::open`] it instead of reading the log
//! ([`super::legacy_shared`]).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::backend::positioned::{read_exact_at, write_all_at};

/// Bytes of one entry: fingerprint, segment number and line offset, little-endian `u32`s.
const ENTRY: usize = 12;
/// Fan-out buckets: entries grouped by the top 16 bits of their fingerprint.
const FAN: usize = 1 << 16;
/// Bytes buffered per first byte while the run is scattered into the table.
const SCATTER_BUF: usize = 8 << 10;
/// The last bytes of a table [`save`](Table::save)d for other processes.
const MAGIC: &[u8; 8] = b"tvfpidx1";

/// One segment the table holds entries of.
struct Seg {
    name: String,
    size: u64,
    /// False once the segment is known gone (imported).
    live: bool,
}

/// Entries being collected, segment by segment.
pub(crate) struct Builder {
    run: BufWriter<File>,
    counts: Vec<u64>,
    segs: Vec<Seg>,
    entries: u64,
}

impl Builder {
    /// A builder whose run file goes into `dir` (`None`: the system's temp dir).
    pub(crate) fn new(dir: Option<&Path>) -> io::Result<Builder> {
        Ok(Builder {
            run: BufWriter::with_capacity(256 << 10, temp_file(dir)?),
            counts: vec![0; FAN],
            segs: Vec::new(),
            entries: 0,
        })
    }

    /// Adds one segment's entries (fingerprint, offset of the record's line).
    pub(crate) fn add(
        &mut self,
        name: String,
        size: u64,
        entries: &[(u32, u32)],
    ) -> io::Result<()> {
        let seg =
            u32::try_from(self.segs.len()).map_err(|_| io::Error::other("too many segments"))?;
        for &(fp, at) in entries {
            self.run.write_all(&encode(fp, seg, at))?;
            self.counts[(fp >> 16) as usize] += 1;
        }
        self.entries += entries.len() as u64;
        self.segs.push(Seg {
            name,
            size,
            live: true,
        });
        Ok(())
    }

    /// Sorts the entries into the table, in an unnamed temp file (blocking: local I/O and a sort,
    /// in flat memory).
    #[cfg(test)]
    pub(crate) fn finish(self) -> io::Result<Table> {
        self.finish_into(temp_file(None)?)
    }

    /// Sorts the entries into the table, in `file` (empty; blocking: local I/O and a sort, in flat
    /// memory).
    pub(crate) fn finish_into(self, file: File) -> io::Result<Table> {
        let mut run = self.run.into_inner().map_err(|e| e.into_error())?;
        let mut starts = Vec::with_capacity(FAN + 1);
        let mut at = 0;
        for c in &self.counts {
            starts.push(at);
            at += c;
        }
        starts.push(at);
        file.set_len(at * ENTRY as u64)?;
        // Scatter: each entry to the part of the table its first byte owns.
        let part = |b: usize| (starts[b << 8], starts[(b + 1) << 8]);
        let mut cursor: Vec<u64> = (0..256).map(|b| part(b).0).collect();
        let mut bufs: Vec<Vec<u8>> = (0..256).map(|_| Vec::with_capacity(SCATTER_BUF)).collect();
        run.rewind()?;
        let mut reader = BufReader::with_capacity(1 << 20, run);
        let mut e = [0u8; ENTRY];
        for _ in 0..self.entries {
            reader.read_exact(&mut e)?;
            let b = usize::from(e[3]);
            bufs[b].extend_from_slice(&e);
            if bufs[b].len() >= SCATTER_BUF {
                write_all_at(&file, &bufs[b], cursor[b] * ENTRY as u64)?;
                cursor[b] += (bufs[b].len() / ENTRY) as u64;
                bufs[b].clear();
            }
        }
        drop(reader);
        for (b, buf) in bufs.iter().enumerate() {
            write_all_at(&file, buf, cursor[b] * ENTRY as u64)?;
        }
        drop(bufs);
        // Sort each part in memory.
        for b in 0..256 {
            let (from, to) = part(b);
            let mut bytes = vec![0u8; ((to - from) as usize) * ENTRY];
            read_exact_at(&file, &mut bytes, from * ENTRY as u64)?;
            let mut entries: Vec<(u32, u32, u32)> = bytes.chunks_exact(ENTRY).map(decode).collect();
            entries.sort_unstable();
            for (dst, (fp, seg, at)) in bytes.chunks_exact_mut(ENTRY).zip(entries) {
                dst.copy_from_slice(&encode(fp, seg, at));
            }
            write_all_at(&file, &bytes, from * ENTRY as u64)?;
        }
        Ok(Table::new(file, starts, self.segs, None))
    }
}

/// The sorted table of a set of segments (see the [module documentation](self)).
pub(crate) struct Table {
    file: File,
    /// Where each 16-bit prefix's entries begin (in entries), and the end.
    starts: Box<[u64]>,
    segs: Vec<Seg>,
    ids: HashMap<String, u32>,
    live: usize,
    /// Where the table is published for the host's other processes (`None`: unnamed).
    path: Option<PathBuf>,
}

impl Table {
    /// The table in `file`, of fan-out `starts` and segments `segs`, every one live.
    fn new(file: File, starts: Vec<u64>, segs: Vec<Seg>, path: Option<PathBuf>) -> Table {
        let ids = segs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i as u32))
            .collect();
        Table {
            file,
            starts: starts.into_boxed_slice(),
            live: segs.len(),
            segs,
            ids,
            path,
        }
    }

    /// Whether this table holds `name` and it is not known gone.
    pub(crate) fn holds(&self, name: &str) -> bool {
        self.ids
            .get(name)
            .is_some_and(|&i| self.segs[i as usize].live)
    }

    /// Segments not known gone.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Marks `name` gone; returns whether it was held.
    pub(crate) fn forget(&mut self, name: &str) -> bool {
        let Some(&i) = self.ids.get(name) else {
            return false;
        };
        let seg = &mut self.segs[i as usize];
        let was = std::mem::replace(&mut seg.live, false);
        self.live -= usize::from(was);
        was
    }

    /// Marks gone every held segment `keep` refuses; returns whether any was.
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) -> bool {
        let mut any = false;
        for seg in self.segs.iter_mut().filter(|s| s.live && !keep(&s.name)) {
            seg.live = false;
            self.live -= 1;
            any = true;
        }
        any
    }

    /// Bytes held in memory for this table (its fan-out and its segments' names).
    pub(crate) fn bytes(&self) -> usize {
        let names: usize = self.segs.iter().map(|s| s.name.len() * 2 + 64).sum();
        self.starts.len() * std::mem::size_of::<u64>() + names
    }

    /// The segments not known gone whose entries have fingerprint `fp`: (name, line offset,
    /// segment size). One positioned read of the prefix's entries.
    pub(crate) fn candidates(&self, fp: u32) -> io::Result<Vec<(String, u32, u64)>> {
        let p = (fp >> 16) as usize;
        let (from, to) = (self.starts[p], self.starts[p + 1]);
        let mut bytes = vec![0u8; ((to - from) as usize) * ENTRY];
        read_exact_at(&self.file, &mut bytes, from * ENTRY as u64)?;
        Ok(bytes
            .chunks_exact(ENTRY)
            .map(decode)
            .filter(|(f, _, _)| *f == fp)
            .filter_map(|(_, seg, at)| {
                let s = self.segs.get(seg as usize)?;
                s.live.then(|| (s.name.clone(), at, s.size))
            })
            .collect())
    }
}

impl Table {
    /// Writes what the table holds in memory (its fan-out and segments) after its entries, and
    /// makes the file durable, so that another process can [`open`](Self::open) it once it is
    /// published as `path`. Blocking.
    pub(crate) fn save(&mut self, path: PathBuf) -> io::Result<()> {
        let at = self.starts[FAN] * ENTRY as u64;
        let mut meta = Vec::with_capacity((FAN + 1) * 8 + self.segs.len() * 48 + 16);
        for s in self.starts.iter() {
            meta.extend_from_slice(&s.to_le_bytes());
        }
        let n =
            u32::try_from(self.segs.len()).map_err(|_| io::Error::other("too many segments"))?;
        meta.extend_from_slice(&n.to_le_bytes());
        for s in &self.segs {
            let len = u16::try_from(s.name.len()).map_err(|_| io::Error::other("long name"))?;
            meta.extend_from_slice(&s.size.to_le_bytes());
            meta.extend_from_slice(&len.to_le_bytes());
            meta.extend_from_slice(s.name.as_bytes());
        }
        meta.extend_from_slice(&at.to_le_bytes());
        meta.extend_from_slice(MAGIC);
        write_all_at(&self.file, &meta, at)?;
        // Published under a name, a table must never be found half-written after a power loss:
        // its lookups would miss aliases the log holds.
        self.file.sync_data()?;
        self.path = Some(path);
        Ok(())
    }

    /// A table another process [`save`](Self::save)d at `path`, every segment live. A file that
    /// is not such a table is `InvalidData`. Blocking.
    pub(crate) fn open(path: &Path) -> io::Result<Table> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len < 16 {
            return Err(invalid("too short"));
        }
        let mut footer = [0u8; 16];
        read_exact_at(&file, &mut footer, len - 16)?;
        let mut f = Reader(&footer);
        let at = f.word(8)?;
        if f.take(8)? != MAGIC {
            return Err(invalid("not a fingerprint table"));
        }
        let meta_len = (len - 16)
            .checked_sub(at)
            .ok_or_else(|| invalid("footer"))?;
        let mut meta = vec![0u8; usize::try_from(meta_len).map_err(|_| invalid("footer"))?];
        read_exact_at(&file, &mut meta, at)?;
        let mut rest = Reader(&meta);
        let mut starts = Vec::with_capacity(FAN + 1);
        for _ in 0..=FAN {
            starts.push(rest.word(8)?);
        }
        let sorted = starts.windows(2).all(|w| w[0] <= w[1]);
        if !sorted || starts[0] != 0 || starts[FAN] * ENTRY as u64 != at {
            return Err(invalid("fan-out"));
        }
        let mut segs = Vec::new();
        for _ in 0..rest.word(4)? {
            let size = rest.word(8)?;
            let len = rest.word(2)? as usize;
            let name = String::from_utf8(rest.take(len)?.to_vec()).map_err(|_| invalid("name"))?;
            segs.push(Seg {
                name,
                size,
                live: true,
            });
        }
        Ok(Table::new(file, starts, segs, Some(path.to_path_buf())))
    }

    /// Where the table is published, if it is.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether the table holds any of `names`' segments (gone or not).
    pub(crate) fn covers_any(&self, names: &HashSet<&str>) -> bool {
        self.segs.iter().any(|s| names.contains(s.name.as_str()))
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A saved table's meta data, read from its start.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(invalid("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    /// A little-endian unsigned integer of `n` bytes (at most 8).
    fn word(&mut self, n: usize) -> io::Result<u64> {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(self.take(n)?);
        Ok(u64::from_le_bytes(b))
    }
}

/// An unnamed temp file (gone once closed, or when the process dies).
fn temp_file(dir: Option<&Path>) -> io::Result<File> {
    match dir {
        Some(dir) => tempfile::tempfile_in(dir),
        None => tempfile::tempfile(),
    }
}

fn encode(fp: u32, seg: u32, at: u32) -> [u8; ENTRY] {
    let mut e = [0u8; ENTRY];
    e[..4].copy_from_slice(&fp.to_le_bytes());
    e[4..8].copy_from_slice(&seg.to_le_bytes());
    e[8..].copy_from_slice(&at.to_le_bytes());
    e
}

fn decode(e: &[u8]) -> (u32, u32, u32) {
    let word = |i: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&e[i..i + 4]);
        u32::from_le_bytes(w)
    };
    (word(0), word(4), word(8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Random segments of random entries, with fingerprints at the edges of the fan-out and many
    /// repeats: every fingerprint's candidates from the table are exactly those of a scan.
    #[test]
    fn candidates_are_those_of_a_scan() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = Builder::new(None).expect("temp file");
        let mut all: Vec<(u32, String, u32, u64)> = Vec::new();
        let edges = [0, 1, 0xFFFF, 0x1_0000, 0xFF_FFFF, 0xFFFF_FFFF, 0x8000_0000];
        for s in 0..40u32 {
            let name = format!("seg-{s}");
            let size = 1000 + u64::from(s);
            let mut entries: Vec<(u32, u32)> = (0..rng.gen_range(0..3000))
                .map(|i| {
                    let fp = match rng.gen_range(0..10) {
                        0 => edges[rng.gen_range(0..edges.len())],
                        1 => rng.gen_range(0..64) << 16 | 0xABCD,
                        _ => rng.gen(),
                    };
                    (fp, i * 100)
                })
                .collect();
            entries.sort_unstable();
            entries.dedup();
            all.extend(entries.iter().map(|&(fp, at)| (fp, name.clone(), at, size)));
            b.add(name, size, &entries).expect("add");
        }
        let mut t = b.finish().expect("finish");
        assert_eq!(t.live(), 40);
        // Saved for other processes and opened again: the same table.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.tbl");
        let copy = tempfile::NamedTempFile::new_in(dir.path()).expect("temp file");
        let mut saved = {
            let mut b = Builder::new(None).expect("temp file");
            for s in 0..40u32 {
                let name = format!("seg-{s}");
                let mut entries: Vec<(u32, u32)> = all
                    .iter()
                    .filter(|e| e.1 == name)
                    .map(|e| (e.0, e.2))
                    .collect();
                entries.sort_unstable();
                b.add(name, 1000 + u64::from(s), &entries).expect("add");
            }
            b.finish_into(copy.as_file().try_clone().expect("clone"))
                .expect("finish")
        };
        saved.save(path.clone()).expect("save");
        copy.persist(&path).expect("persist");
        let mut t2 = Table::open(&path).expect("open");
        assert_eq!((t2.live(), t2.path()), (40, Some(path.as_path())));
        let len = std::fs::metadata(&path).expect("stat").len();
        for bad in [len - 1, len - 20, 10] {
            let cut = dir.path().join("cut.tbl");
            std::fs::copy(&path, &cut).expect("copy");
            std::fs::File::options()
                .write(true)
                .open(&cut)
                .and_then(|f| f.set_len(bad))
                .expect("cut");
            let e = Table::open(&cut).err().expect("a cut table does not open");
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "cut to {bad}: {e}");
        }
        // Forget some segments: their entries are no longer candidates.
        for s in [3, 17, 39] {
            assert!(t.forget(&format!("seg-{s}")));
            assert!(!t.forget(&format!("seg-{s}")), "once");
            assert!(t2.forget(&format!("seg-{s}")));
        }
        assert!(t.retain(|n| n != "seg-5"));
        assert!(t2.retain(|n| n != "seg-5"));
        assert!(!t.holds("seg-5") && t.holds("seg-6") && !t.holds("seg-x"));
        assert_eq!(t.live(), 36);
        let gone = ["seg-3", "seg-17", "seg-39", "seg-5"];
        let mut asked: Vec<u32> = all.iter().map(|e| e.0).collect();
        asked.extend(edges);
        asked.extend((0..2000).map(|_| rng.gen::<u32>()));
        for fp in asked {
            let mut want: Vec<(String, u32, u64)> = all
                .iter()
                .filter(|e| e.0 == fp && !gone.contains(&e.1.as_str()))
                .map(|e| (e.1.clone(), e.2, e.3))
                .collect();
            let mut got = t.candidates(fp).expect("read");
            let mut opened = t2.candidates(fp).expect("read");
            want.sort();
            got.sort();
            opened.sort();
            assert_eq!(got, want, "fingerprint {fp:#x}");
            assert_eq!(opened, want, "fingerprint {fp:#x}, opened");
        }
    }

    #[test]
    fn an_empty_table_has_no_candidates() {
        let t = Builder::new(None)
            .expect("temp file")
            .finish()
            .expect("finish");
        assert_eq!(t.candidates(0).expect("read"), Vec::new());
        assert_eq!(t.candidates(u32::MAX).expect("read"), Vec::new());
        assert_eq!(t.live(), 0);
    }
}
