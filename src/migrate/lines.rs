//! An append-only file of JSON lines whose length the state file records at each checkpoint: the
//! mapping and the problems file are both one.
//!
//! Lines are appended (buffered) only for documents the checkpoint is about to cover, in feed
//! order; [`LineLog::sync`] makes them durable before the state file that records the new length
//! is written. A resumed run opens the file cut back to the recorded length, so lines written
//! after the last checkpoint (possibly half a line) disappear and are written again, once, when
//! their documents are redone.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{Error, Result};

/// An open JSON-lines file being appended to.
pub(crate) struct LineLog {
    path: PathBuf,
    out: BufWriter<File>,
    len: u64,
}

impl LineLog {
    /// Opens (creating it if needed) the file at `path`, cut back to `keep` bytes: the length
    /// recorded at the last checkpoint. Fails if the file is shorter than that (it was truncated
    /// or replaced behind the migration's back); `what` names the file in that error.
    pub(crate) fn open(path: &Path, keep: u64, what: &str) -> Result<LineLog> {
        let io = |op: &'static str| move |e| Error::io(op, path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("open"))?;
        let actual = file.metadata().map_err(io("stat"))?.len();
        if actual < keep {
            return Err(Error::Config(format!(
                "{what} {} has {actual} bytes but the state file recorded {keep}: it was cut or \
                 replaced; restore it or start over with a new state file",
                path.display()
            )));
        }
        if actual > keep {
            tracing::info!(
                file = %path.display(),
                dropped = actual - keep,
                "cutting the {what} back to the last checkpoint"
            );
            file.set_len(keep).map_err(io("truncate"))?;
            file.sync_data().map_err(io("fsync"))?;
        }
        file.seek(SeekFrom::End(0)).map_err(io("seek"))?;
        Ok(LineLog {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            len: keep,
        })
    }

    /// Appends `item` as one line (`encoding` names it if it cannot be encoded).
    pub(crate) fn append(&mut self, item: &impl Serialize, encoding: &str) -> Result<()> {
        self.append_line(encode(item, encoding)?)
    }

    /// Appends `line`, as [`encode`] made it, and its newline.
    pub(crate) fn append_line(&mut self, mut line: Vec<u8>) -> Result<()> {
        line.push(b'\n');
        self.out
            .write_all(&line)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.len += line.len() as u64;
        Ok(())
    }

    /// The file's length with what has been appended (where the next line starts).
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Makes everything appended so far durable and returns the file's length, for the state file.
    pub(crate) fn sync(&mut self) -> Result<u64> {
        self.out
            .flush()
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| Error::io("fsync", &self.path, e))?;
        Ok(self.len)
    }
}

/// `item` as the text of one line, without its newline (`encoding` names it if it cannot be
/// encoded): what [`LineLog::append`] writes, and what a line read back is compared with.
pub(crate) fn encode(item: &impl Serialize, encoding: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(item)
        .map_err(|e| Error::InvalidInput(format!("cannot encode {encoding}: {e}")))
}
