//! The fingerprints of a large old log ([`super::alias_legacy`]) kept in a temp file, so that a
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
//! sorted in memory. Both files are unnamed temp files (`tempfile::tempfile`), gone when closed or
//! when the process dies.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::positioned::{read_exact_at, write_all_at};

/// Bytes of one entry: fingerprint, segment number and line offset, little-endian `u32`s.
const ENTRY: usize = 12;
/// Fan-out buckets: entries grouped by the top 16 bits of their fingerprint.
const FAN: usize = 1 << 16;
/// Bytes buffered per first byte while the run is scattered into the table.
const SCATTER_BUF: usize = 8 << 10;

/// One segment the table holds entries of.
struct Seg {
    name: String,
    size: u64,
    /// False once the segment is known gone (imported).
    live: bool,
}

/// Entries being collected, segment by segment.
pub(crate) struct Builder {
    /// Where the temp files go (`None`: the system's temp dir).
    dir: Option<PathBuf>,
    run: BufWriter<File>,
    counts: Vec<u64>,
    segs: Vec<Seg>,
    entries: u64,
}

impl Builder {
    /// A builder whose temp files go into `dir` (`None`: the system's temp dir).
    pub(crate) fn new(dir: Option<&Path>) -> io::Result<Builder> {
        Ok(Builder {
            dir: dir.map(Path::to_path_buf),
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

    /// Sorts the entries into the table (blocking: local I/O and a sort, in flat memory).
    pub(crate) fn finish(self) -> io::Result<Table> {
        let mut run = self.run.into_inner().map_err(|e| e.into_error())?;
        let mut starts = Vec::with_capacity(FAN + 1);
        let mut at = 0;
        for c in &self.counts {
            starts.push(at);
            at += c;
        }
        starts.push(at);
        let file = temp_file(self.dir.as_deref())?;
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
        let ids = self
            .segs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i as u32))
            .collect();
        Ok(Table {
            file,
            starts: starts.into_boxed_slice(),
            live: self.segs.len(),
            segs: self.segs,
            ids,
        })
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
}

impl Table {
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
        // Forget some segments: their entries are no longer candidates.
        for s in [3, 17, 39] {
            assert!(t.forget(&format!("seg-{s}")));
            assert!(!t.forget(&format!("seg-{s}")), "once");
        }
        assert!(t.retain(|n| n != "seg-5"));
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
            want.sort();
            got.sort();
            assert_eq!(got, want, "fingerprint {fp:#x}");
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
