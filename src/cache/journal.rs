//! The disk tier's index on disk: one append-only journal file, compacted in place.
//!
//! cacache's own index keeps one bucket file per key in a two-level directory tree (about 6 KB
//! of disk per key once directory blocks are counted, 592 MB for 100,000 avatars) and appends a
//! line to the bucket on every update, so it grows without bound under churn and is costly to
//! read back at start. Here the content stays in cacache (content-addressed, integrity-checked),
//! and the index is a single file of JSON lines:
//!
//! ```text
//! {"k":"src:…","i":"sha256-…","s":5321,"m":{…}}   a key now maps to these bytes (put, 304 update)
//! {"k":"src:…"}                                    the key is gone (eviction, purge, corruption)
//! ```
//!
//! The last line of a key wins at replay; a torn last line (a crash mid-write) is skipped. Every
//! line that a later line supersedes is dead weight: [`Journal`] counts the file's bytes and the
//! bytes of live lines, and rewrites the file from the live set (temp file, fsync, rename) as soon
//! as the dead bytes exceed half the live ones plus [`COMPACT_SLACK`]. So the file never exceeds
//! 1.5 × its live lines + 256 KiB, whatever the churn; the live lines are counted in the tier's
//! byte budget, entry by entry.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::disk::EntryMeta;

/// Dead bytes tolerated beyond half the live ones before the journal is rewritten.
pub const COMPACT_SLACK: u64 = 256 * 1024;

/// One line of the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The cache key.
    #[serde(rename = "k")]
    pub key: String,
    /// cacache integrity of the bytes (`sha256-<base64>`); absent in a removal.
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<String>,
    /// Size of the bytes.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Metadata kept beside the bytes.
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<EntryMeta>,
}

impl Record {
    /// The line for this record, newline included.
    pub fn line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// A live record read back, with the length of its line.
pub(crate) struct Replayed {
    pub record: Record,
    pub line_len: u64,
}

struct State {
    file: File,
    /// Length of the file.
    bytes: u64,
    /// Length of the lines that are live now.
    live: u64,
}

/// The journal file and its byte counts.
pub(crate) struct Journal {
    path: PathBuf,
    state: Mutex<State>,
}

impl Journal {
    /// Open (creating, mode 0600) the journal at `path` for appending. Counts start at the
    /// file's length with nothing live: [`Journal::replay`] sets them.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = open_append(path)?;
        let bytes = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new(State {
                file,
                bytes,
                live: 0,
            }),
        })
    }

    /// Read the journal back: the live records, oldest write first. Also sets the live count.
    pub fn replay(&self) -> std::io::Result<Vec<Replayed>> {
        let reader = BufReader::new(File::open(&self.path)?);
        let mut latest: HashMap<String, (u64, Replayed)> = HashMap::new();
        let mut order = 0u64;
        for line in reader.split(b'\n') {
            let line = line?;
            let Ok(record) = serde_json::from_slice::<Record>(&line) else {
                continue; // torn or foreign line
            };
            order += 1;
            if record.integrity.is_some() {
                let line_len = line.len() as u64 + 1;
                let key = record.key.clone();
                latest.insert(key, (order, Replayed { record, line_len }));
            } else {
                latest.remove(&record.key);
            }
        }
        let mut live: Vec<(u64, Replayed)> = latest.into_values().collect();
        live.sort_by_key(|(order, _)| *order);
        let live_bytes = live.iter().map(|(_, r)| r.line_len).sum();
        self.lock().live = live_bytes;
        Ok(live.into_iter().map(|(_, r)| r).collect())
    }

    /// Append one record; returns the length of its line. A put counts as live.
    pub fn append(&self, record: &Record) -> std::io::Result<u64> {
        let line = record.line();
        let mut state = self.lock();
        state.file.write_all(&line)?;
        state.bytes += line.len() as u64;
        if record.integrity.is_some() {
            state.live += line.len() as u64;
        }
        Ok(line.len() as u64)
    }

    /// A live line of `len` bytes was superseded or removed.
    pub fn retire(&self, len: u64) {
        let mut state = self.lock();
        state.live = state.live.saturating_sub(len);
    }

    /// Whether enough of the file is dead to rewrite it.
    pub fn wants_compaction(&self) -> bool {
        let state = self.lock();
        state.bytes.saturating_sub(state.live) > state.live / 2 + COMPACT_SLACK
    }

    /// Rewrite the file with exactly `live` (temp file, fsync, rename); appends wait meanwhile.
    pub fn compact(&self, live: impl Iterator<Item = Record>) -> std::io::Result<()> {
        let mut state = self.lock();
        let temp = self.path.with_extension("compacting");
        let mut bytes = 0u64;
        {
            let mut out = std::io::BufWriter::new(private_file(&temp)?);
            for record in live {
                let line = record.line();
                out.write_all(&line)?;
                bytes += line.len() as u64;
            }
            out.flush()?;
            out.get_ref().sync_all()?;
        }
        std::fs::rename(&temp, &self.path)?;
        state.file = open_append(&self.path)?;
        state.bytes = bytes;
        state.live = bytes;
        Ok(())
    }

    /// File length and live bytes.
    #[cfg(test)]
    pub fn sizes(&self) -> (u64, u64) {
        let state = self.lock();
        (state.bytes, state.live)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn private_file(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, n: u8) -> Record {
        Record {
            key: key.into(),
            integrity: Some(format!("sha256-{n}")),
            size: Some(u64::from(n)),
            meta: None,
        }
    }

    #[test]
    fn the_last_line_of_a_key_wins_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index.log");
        let journal = Journal::open(&path).expect("open");
        journal.append(&put("a", 1)).expect("append");
        journal.append(&put("b", 2)).expect("append");
        journal.append(&put("a", 3)).expect("append");
        journal
            .append(&Record {
                key: "b".into(),
                integrity: None,
                size: None,
                meta: None,
            })
            .expect("append");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"k\":\"c\",\"i\":\"sha"))
            .expect("torn write");
        let live = Journal::open(&path)
            .expect("reopen")
            .replay()
            .expect("replay");
        let keys: Vec<_> = live
            .iter()
            .map(|r| (r.record.key.as_str(), r.record.size))
            .collect();
        assert_eq!(keys, vec![("a", Some(3))]);
    }

    #[test]
    fn compaction_keeps_exactly_the_live_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index.log");
        let journal = Journal::open(&path).expect("open");
        for n in 0..100u8 {
            let len = journal.append(&put("hot", n)).expect("append");
            if n > 0 {
                journal.retire(len);
            }
        }
        journal
            .compact([put("hot", 99)].into_iter())
            .expect("compact");
        let (bytes, live) = journal.sizes();
        assert_eq!(bytes, live);
        assert_eq!(bytes, std::fs::metadata(&path).expect("meta").len());
        journal
            .append(&put("cold", 1))
            .expect("append after compaction");
        let replayed = Journal::open(&path)
            .expect("reopen")
            .replay()
            .expect("replay");
        assert_eq!(replayed.len(), 2);
    }
}
