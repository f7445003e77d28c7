//! Segment and index files of one partition, and the scans every reader and
//! writer share: finding where valid data ends, and telling a torn tail (which
//! recovery truncates) from corruption in the middle (which is an error).
//!
//! A partition directory holds `{base:020}.log` segment files, each with a
//! sparse `{base:020}.index` of `(offset - base: u32, byte position: u32)` pairs,
//! and `write.lock`, the `flock` that serialises appends from every process.
//! The index is a hint: entries are checked against the log before use, so a
//! stale or torn index costs a scan, never a wrong answer.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, LogError, Result};
use crate::format::{check_batch, BatchView, Check, HEADER_LEN, MAGIC};

/// Identifies a partition in error messages and on disk.
#[derive(Debug, Clone)]
pub struct PartitionId {
    pub stream: String,
    pub partition: u32,
    pub dir: PathBuf,
}

pub(crate) const INDEX_ENTRY: usize = 8;

pub(crate) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

pub(crate) fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

/// Base offsets of the partition's segments, oldest first.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).ctx("cannot list partition directory", dir)? {
        let entry = entry.ctx("cannot list partition directory", dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 20 {
                if let Ok(base) = stem.parse::<u64>() {
                    bases.push(base);
                }
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// An exclusive `flock` on a file, released when dropped (or when the process dies).
pub(crate) struct FileLock(std::os::unix::io::RawFd);

impl FileLock {
    /// Locks `file` if no one else holds it; `None` when someone does.
    pub(crate) fn try_lock(file: &File, path: &Path) -> Result<Option<FileLock>> {
        // SAFETY: flock on a valid, open descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Some(FileLock(file.as_raw_fd())));
        }
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        Err(err).ctx("cannot lock", path)
    }

    /// Locks `file`, which must outlive the returned guard.
    pub(crate) fn lock(file: &File, path: &Path) -> Result<FileLock> {
        loop {
            // SAFETY: flock on a valid, open descriptor.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(FileLock(file.as_raw_fd()));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err).ctx("cannot lock", path);
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking a descriptor we locked.
        unsafe { libc::flock(self.0, libc::LOCK_UN) };
    }
}

pub(crate) fn open_lock_file(dir: &Path, name: &str) -> Result<File> {
    let path = dir.join(name);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .ctx("cannot open lock file", &path)
}

/// Reads the index, dropping a torn trailing entry.
pub(crate) fn read_index(path: &Path) -> Result<Vec<(u32, u32)>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx("cannot read index", path),
    };
    Ok(bytes
        .chunks_exact(INDEX_ENTRY)
        .map(|c| {
            (u32::from_le_bytes(c[0..4].try_into().unwrap()), u32::from_le_bytes(c[4..8].try_into().unwrap()))
        })
        .collect())
}

/// Whether a batch at `pos` of length `len` should get an index entry:
/// the first batch, and any batch that crosses an `interval` boundary. The rule
/// needs no state, so writers in different processes agree on it.
pub(crate) fn wants_index_entry(pos: u64, len: u64, interval: u64) -> bool {
    pos == 0 || pos / interval != (pos + len) / interval
}

pub(crate) fn encode_index_entry(rel: u32, pos: u32) -> [u8; INDEX_ENTRY] {
    let mut e = [0u8; INDEX_ENTRY];
    e[0..4].copy_from_slice(&rel.to_le_bytes());
    e[4..8].copy_from_slice(&pos.to_le_bytes());
    e
}

pub(crate) fn read_at(file: &File, buf: &mut Vec<u8>, pos: u64, len: usize, path: &Path) -> Result<()> {
    buf.clear();
    buf.resize(len, 0);
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).ctx("cannot read segment", path),
        }
    }
    buf.truncate(done);
    Ok(())
}

/// A position in a segment, found through the index, no later than `target`'s
/// batch, that starts a batch with a valid header: `(position, base offset of
/// that batch)`. `(0, base)` when no index entry qualifies. Entries are checked
/// against the log, so a stale, torn or unsorted index costs a scan, never a
/// wrong answer.
pub(crate) fn index_position(
    file: &File,
    log: &Path,
    base: u64,
    index: &[(u32, u32)],
    target: u64,
    file_len: u64,
) -> Result<(u64, u64)> {
    let rel = target.saturating_sub(base).min(u64::from(u32::MAX)) as u32;
    let mut i = index.partition_point(|(r, _)| *r <= rel);
    let mut buf = Vec::new();
    while i > 0 {
        i -= 1;
        let (r, pos) = index[i];
        let pos = u64::from(pos);
        if r > rel || pos + HEADER_LEN as u64 > file_len {
            continue;
        }
        read_at(file, &mut buf, pos, HEADER_LEN, log)?;
        // Only the header is read; its checksum is enough to trust the offset,
        // and the caller validates the body when it reads it.
        let offset = base.checked_add(u64::from(r));
        if header_is_valid(&buf) && Some(u64::from_le_bytes(buf[0..8].try_into().unwrap())) == offset {
            return Ok((pos, base + u64::from(r)));
        }
    }
    Ok((0, base))
}

pub(crate) fn header_is_valid(buf: &[u8]) -> bool {
    if buf.len() < HEADER_LEN || buf[12] != MAGIC {
        return false;
    }
    let stored = u32::from_le_bytes(buf[20..24].try_into().unwrap());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[0..20]), &buf[24..HEADER_LEN]);
    crc == stored
}

/// How a forward scan of valid batches ended.
#[derive(Debug)]
pub(crate) enum ScanEnd {
    /// Reached the end of the file exactly at a batch boundary.
    End,
    /// A SEAL batch at this position: the segment continues in segment `next_base`.
    Sealed { next_base: u64 },
    /// Bytes from here on are not a valid batch (torn or corrupt): `reason`.
    Bad { reason: &'static str },
}

/// Scans valid batches from `pos` to the end of `file`, calling `on_batch` for
/// each data batch. Returns where it stopped and why. Used by writers (under the
/// lock) to learn the tail and by recovery.
pub(crate) fn scan_from(
    file: &File,
    path: &Path,
    mut pos: u64,
    mut on_batch: impl FnMut(u64, &BatchView<'_>),
) -> Result<(u64, ScanEnd)> {
    let len = file.metadata().ctx("cannot stat segment", path)?.len();
    let mut buf = Vec::new();
    const CHUNK: usize = 1 << 20;
    while pos < len {
        let want = ((len - pos) as usize).min(CHUNK);
        read_at(file, &mut buf, pos, want, path)?;
        let mut at = 0usize;
        let mut progressed = false;
        loop {
            match check_batch(&buf[at..]) {
                Check::Valid(v) => {
                    if v.is_seal() {
                        return Ok((pos + at as u64, ScanEnd::Sealed { next_base: v.base_offset() }));
                    }
                    on_batch(pos + at as u64, &v);
                    at += v.len();
                    progressed = true;
                }
                Check::Incomplete { needed } => {
                    let here = pos + at as u64;
                    let needed = needed.unwrap_or(HEADER_LEN) as u64;
                    if here + needed > len {
                        return Ok((here, ScanEnd::Bad { reason: "incomplete batch at end of segment" }));
                    }
                    if !progressed {
                        // One batch bigger than the chunk: read it whole.
                        read_at(file, &mut buf, here, needed as usize, path)?;
                        match check_batch(&buf) {
                            Check::Valid(v) if !v.is_seal() => {
                                on_batch(here, &v);
                                pos = here + v.len() as u64;
                                break;
                            }
                            Check::Valid(v) => {
                                return Ok((here, ScanEnd::Sealed { next_base: v.base_offset() }));
                            }
                            Check::Invalid(reason) => return Ok((here, ScanEnd::Bad { reason })),
                            Check::Incomplete { .. } => {
                                return Ok((
                                    here,
                                    ScanEnd::Bad { reason: "incomplete batch at end of segment" },
                                ))
                            }
                        }
                    }
                    pos = here;
                    break;
                }
                Check::Invalid(reason) => return Ok((pos + at as u64, ScanEnd::Bad { reason })),
            }
            if at == buf.len() {
                pos += at as u64;
                break;
            }
        }
    }
    Ok((pos, ScanEnd::End))
}

/// Decides what invalid bytes at `pos` are, under the partition's write lock:
/// if any valid batch follows them, the segment is corrupt in the middle and
/// this is an error; otherwise they are a torn tail from a crashed writer and
/// are cut off. Returns `Ok(())` after truncating.
pub(crate) fn repair_tail(
    id: &PartitionId,
    file: &File,
    path: &Path,
    pos: u64,
    expected_offset: u64,
    reason: &str,
) -> Result<()> {
    let len = file.metadata().ctx("cannot stat segment", path)?.len();
    if pos >= len {
        return Ok(());
    }
    let mut rest = Vec::new();
    read_at(file, &mut rest, pos, (len - pos) as usize, path)?;
    // A whole header that promises more bytes than the file has is a write cut
    // short: nothing after it can be data (its own value bytes may look like a
    // batch, so they are not searched).
    let declared = if header_is_valid(&rest) {
        Some(u32::from_le_bytes(rest[8..12].try_into().unwrap()) as usize)
    } else {
        None
    };
    let search_from = match declared {
        Some(n) if n > rest.len() => rest.len(),
        Some(n) => n.max(1),
        None => 1,
    };
    for i in search_from..rest.len().saturating_sub(HEADER_LEN - 1) {
        if rest[i + 12] == MAGIC && matches!(check_batch(&rest[i..]), Check::Valid(_)) {
            return Err(LogError::Corruption {
                stream: id.stream.clone(),
                partition: id.partition,
                offset: expected_offset,
                segment: path.to_path_buf(),
                position: pos,
                reason: format!("{reason}, and valid batches follow at byte {}", pos + i as u64),
            });
        }
    }
    tracing::warn!(
        stream = %id.stream, partition = id.partition, segment = %path.display(),
        position = pos, bytes = len - pos, reason, "truncating torn tail"
    );
    file.set_len(pos).ctx("cannot truncate torn tail of", path)?;
    file.sync_all().ctx("cannot sync", path)?;
    Ok(())
}

/// Drops index entries that point at or past `len` (after a truncation) and a torn entry.
pub(crate) fn trim_index(index: &File, path: &Path, len: u64) -> Result<()> {
    let entries = read_index(path)?;
    let keep = entries.iter().take_while(|(_, pos)| u64::from(*pos) < len).count();
    let want = (keep * INDEX_ENTRY) as u64;
    if index.metadata().ctx("cannot stat index", path)?.len() != want {
        index.set_len(want).ctx("cannot truncate index", path)?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).ctx("cannot sync directory", dir)
}
