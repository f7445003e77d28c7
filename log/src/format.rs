//! The on-disk record batch format: the only bytes the log ever writes to a segment.
//!
//! A segment is a sequence of batches. Every batch starts with a fixed 64-byte
//! header, then its records. Two CRC-32C checksums protect it: `body_crc` covers
//! the records and is computed by the producer outside any lock; `header_crc`
//! covers the rest of the header (including `body_crc` and the base offset) and
//! is computed by the appender once it has assigned the base offset. A batch is
//! therefore valid only if both checksums match, so no corrupted byte anywhere in
//! a batch can be returned as data.
//!
//! ```text
//! off size field
//!   0   8  base_offset        u64, offset of the first record
//!   8   4  batch_len          u32, whole batch including this header
//!  12   1  magic              = 2
//!  13   1  reserved           = 0
//!  14   2  attributes         TRANSACTIONAL | CONTROL | SEAL bits
//!  16   4  body_crc           CRC-32C of bytes [64, batch_len)
//!  20   4  header_crc         CRC-32C of bytes [0, 20) ++ [24, 64)
//!  24   4  last_offset_delta  offset of the last record - base_offset
//!  28   4  record_count       records in the body (fewer than the span after compaction)
//!  32   8  first_timestamp    i64 ms since the epoch
//!  40   8  max_timestamp      i64 ms since the epoch
//!  48   8  producer_id        i64, -1 when not idempotent
//!  56   2  producer_epoch     i16, -1 when not idempotent
//!  58   2  reserved           = 0
//!  60   4  base_sequence      i32, -1 when not idempotent
//!  64   …  records
//! ```
//!
//! A record is Kafka's v2 record: `length varint, attributes u8, timestamp_delta
//! zigzag, offset_delta varint, key_len zigzag (-1 = no key), key, value_len zigzag
//! (-1 = tombstone), value, header_count varint, headers (key_len varint, key utf-8,
//! value_len zigzag, value)`. All fixed-width integers are little-endian.
//!
//! The producer id, epoch and sequence, and control batches (transaction markers),
//! are the room left for exactly-once delivery; readers skip control batches. A
//! SEAL batch holds no records and consumes no offset: it marks the end of a
//! segment, telling readers and other writers to continue in the next one.

use std::fmt;

pub const MAGIC: u8 = 2;
pub const HEADER_LEN: usize = 64;
/// Largest batch accepted; bigger lengths in a header are treated as corruption.
pub const MAX_BATCH_LEN: usize = 64 << 20;

/// Batch attribute bits.
pub mod attributes {
    /// The batch belongs to a transaction (exactly-once, later).
    pub const TRANSACTIONAL: u16 = 1 << 4;
    /// The batch holds control records (transaction markers); readers skip it.
    pub const CONTROL: u16 = 1 << 5;
    /// End-of-segment marker: no records, no offsets consumed.
    pub const SEAL: u16 = 1 << 6;
}

/// Control record types, stored as the control record's key (`version u16, type u16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlType {
    Abort = 0,
    Commit = 1,
}

/// Producer identity carried by a batch, for idempotent and transactional writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerInfo {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerInfo {
    pub const NONE: ProducerInfo = ProducerInfo { producer_id: -1, producer_epoch: -1, base_sequence: -1 };
}

/// A record header as given to [`BatchBuilder::push`].
#[derive(Clone, Copy, Debug)]
pub struct Header<'a> {
    pub key: &'a str,
    pub value: Option<&'a [u8]>,
}

/// Builds one batch in memory, reusing its buffer across batches.
#[derive(Clone)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    attributes: u16,
    producer: ProducerInfo,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::with_capacity(16 * 1024)
    }
}

impl fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchBuilder").field("records", &self.count).field("bytes", &self.buf.len()).finish()
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes.max(HEADER_LEN));
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            count: 0,
            first_timestamp: 0,
            max_timestamp: i64::MIN,
            attributes: 0,
            producer: ProducerInfo::NONE,
        }
    }

    /// A control batch holding one transaction marker.
    pub fn control(marker: ControlType, producer: ProducerInfo, timestamp: i64) -> Self {
        let mut b = Self::with_capacity(HEADER_LEN + 32);
        let mut key = [0u8; 4];
        key[2..].copy_from_slice(&(marker as u16).to_le_bytes());
        b.push(Some(&key), Some(&[]), timestamp, &[]);
        b.attributes = attributes::CONTROL | attributes::TRANSACTIONAL;
        b.producer = producer;
        b
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size in bytes, header included.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn set_producer(&mut self, producer: ProducerInfo) {
        self.producer = producer;
    }

    /// Marks the batch as part of a transaction.
    pub fn set_transactional(&mut self, transactional: bool) {
        if transactional {
            self.attributes |= attributes::TRANSACTIONAL;
        } else {
            self.attributes &= !attributes::TRANSACTIONAL;
        }
    }

    /// Empties the builder, keeping its allocation.
    pub fn clear(&mut self) {
        self.buf.truncate(HEADER_LEN);
        self.buf[..HEADER_LEN].fill(0);
        self.count = 0;
        self.first_timestamp = 0;
        self.max_timestamp = i64::MIN;
        self.attributes = 0;
        self.producer = ProducerInfo::NONE;
    }

    /// Appends a record. `value: None` is a tombstone.
    pub fn push(&mut self, key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64, headers: &[Header<'_>]) {
        if self.count == 0 {
            self.first_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let ts_delta = zigzag(timestamp.wrapping_sub(self.first_timestamp));
        let offset_delta = u64::from(self.count);
        let key_len = key.map_or(-1, |k| k.len() as i64);
        let value_len = value.map_or(-1, |v| v.len() as i64);

        let mut body_len = 1 // attributes
            + varint_len(ts_delta)
            + varint_len(offset_delta)
            + varint_len(zigzag(key_len))
            + key.map_or(0, <[u8]>::len)
            + varint_len(zigzag(value_len))
            + value.map_or(0, <[u8]>::len)
            + varint_len(headers.len() as u64);
        for h in headers {
            let hv = h.value.map_or(-1, |v| v.len() as i64);
            body_len += varint_len(h.key.len() as u64)
                + h.key.len()
                + varint_len(zigzag(hv))
                + h.value.map_or(0, <[u8]>::len);
        }

        let buf = &mut self.buf;
        buf.reserve(body_len + 10);
        put_varint(buf, body_len as u64);
        buf.push(0);
        put_varint(buf, ts_delta);
        put_varint(buf, offset_delta);
        put_varint(buf, zigzag(key_len));
        if let Some(k) = key {
            buf.extend_from_slice(k);
        }
        put_varint(buf, zigzag(value_len));
        if let Some(v) = value {
            buf.extend_from_slice(v);
        }
        put_varint(buf, headers.len() as u64);
        for h in headers {
            put_varint(buf, h.key.len() as u64);
            buf.extend_from_slice(h.key.as_bytes());
            put_varint(buf, zigzag(h.value.map_or(-1, |v| v.len() as i64)));
            if let Some(v) = h.value {
                buf.extend_from_slice(v);
            }
        }
        self.count += 1;
    }

    /// Fills in every header field but the base offset and header checksum
    /// (see [`stamp`]) and returns the encoded batch.
    pub(crate) fn finish(&mut self) -> &mut [u8] {
        let count = self.count;
        let max_ts = if count == 0 { self.first_timestamp } else { self.max_timestamp };
        let body_crc = crc32c::crc32c(&self.buf[HEADER_LEN..]);
        let len = self.buf.len() as u32;
        let h = &mut self.buf[..HEADER_LEN];
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[12] = MAGIC;
        h[13] = 0;
        h[14..16].copy_from_slice(&self.attributes.to_le_bytes());
        h[16..20].copy_from_slice(&body_crc.to_le_bytes());
        h[24..28].copy_from_slice(&count.saturating_sub(1).to_le_bytes());
        h[28..32].copy_from_slice(&count.to_le_bytes());
        h[32..40].copy_from_slice(&self.first_timestamp.to_le_bytes());
        h[40..48].copy_from_slice(&max_ts.to_le_bytes());
        h[48..56].copy_from_slice(&self.producer.producer_id.to_le_bytes());
        h[56..58].copy_from_slice(&self.producer.producer_epoch.to_le_bytes());
        h[58..60].fill(0);
        h[60..64].copy_from_slice(&self.producer.base_sequence.to_le_bytes());
        &mut self.buf
    }
}

/// Sets the base offset of a finished batch and seals its header with the header checksum.
pub(crate) fn stamp(batch: &mut [u8], base_offset: u64) {
    batch[0..8].copy_from_slice(&base_offset.to_le_bytes());
    let crc = header_crc(batch);
    batch[20..24].copy_from_slice(&crc.to_le_bytes());
}

fn header_crc(batch: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&batch[0..20]);
    crc32c::crc32c_append(crc, &batch[24..HEADER_LEN])
}

/// Wraps arbitrary `body` bytes in a batch header with correct checksums, so a
/// fuzzer reaches the record decoder without forging CRCs.
#[doc(hidden)]
pub fn wrap_body_for_fuzzing(
    body: &[u8],
    record_count: u32,
    last_offset_delta: u32,
    attributes: u16,
) -> Vec<u8> {
    let mut b = BatchBuilder::with_capacity(HEADER_LEN + body.len());
    b.buf.extend_from_slice(body);
    b.attributes = attributes & !attributes::SEAL;
    let buf = b.finish();
    buf[24..28].copy_from_slice(&last_offset_delta.to_le_bytes());
    buf[28..32].copy_from_slice(&record_count.to_le_bytes());
    stamp(buf, 0);
    buf.to_vec()
}

/// Encodes a SEAL batch: the end-of-segment marker, at offset `next_offset`.
pub(crate) fn seal_batch(next_offset: u64, timestamp: i64) -> Vec<u8> {
    let mut b = BatchBuilder::with_capacity(HEADER_LEN);
    b.first_timestamp = timestamp;
    b.attributes = attributes::SEAL;
    let buf = b.finish();
    // An empty batch spans no offsets: last_offset_delta of 0 with record_count 0.
    stamp(buf, next_offset);
    buf.to_vec()
}

/// What the bytes at some position of a segment turned out to be.
#[derive(Debug)]
pub enum Check<'a> {
    /// A whole, valid batch.
    Valid(BatchView<'a>),
    /// Not enough bytes yet: `needed` bytes would make the batch whole (when known).
    Incomplete { needed: Option<usize> },
    /// Enough bytes, but they are not a valid batch.
    Invalid(&'static str),
}

/// Checks the batch at the start of `buf` without trusting any of its bytes.
pub fn check_batch(buf: &[u8]) -> Check<'_> {
    if buf.len() < HEADER_LEN {
        return Check::Incomplete { needed: None };
    }
    if buf[12] != MAGIC {
        return Check::Invalid("unknown magic byte");
    }
    let stored_header_crc = u32::from_le_bytes(buf[20..24].try_into().unwrap());
    if header_crc(buf) != stored_header_crc {
        return Check::Invalid("header checksum mismatch");
    }
    let len = u32::from_le_bytes(buf[8..12].try_into().unwrap()) as usize;
    if !(HEADER_LEN..=MAX_BATCH_LEN).contains(&len) {
        return Check::Invalid("batch length out of range");
    }
    if buf.len() < len {
        return Check::Incomplete { needed: Some(len) };
    }
    let bytes = &buf[..len];
    let stored_body_crc = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
    if crc32c::crc32c(&bytes[HEADER_LEN..]) != stored_body_crc {
        return Check::Invalid("body checksum mismatch");
    }
    let view = BatchView { bytes };
    if view.base_offset().checked_add(u64::from(view.last_offset_delta()) + 1).is_none() {
        return Check::Invalid("offsets overflow");
    }
    if view.record_count() > 0 && view.last_offset_delta() < view.record_count() - 1 {
        return Check::Invalid("record count exceeds offset span");
    }
    if view.is_seal() && (view.record_count() != 0 || view.len() != HEADER_LEN) {
        return Check::Invalid("seal batch with records");
    }
    Check::Valid(view)
}

/// A validated batch, borrowed from a buffer.
#[derive(Clone, Copy)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
}

impl fmt::Debug for BatchView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchView")
            .field("base_offset", &self.base_offset())
            .field("records", &self.record_count())
            .field("len", &self.len())
            .field("attributes", &self.attributes())
            .finish()
    }
}

impl<'a> BatchView<'a> {
    /// A view of bytes already validated by [`check_batch`]; `bytes` starts at a
    /// batch and may run past its end.
    pub(crate) fn trusted(bytes: &'a [u8]) -> BatchView<'a> {
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        BatchView { bytes: &bytes[..len] }
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap())
    }

    fn i64_at(&self, at: usize) -> i64 {
        i64::from_le_bytes(self.bytes[at..at + 8].try_into().unwrap())
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn base_offset(&self) -> u64 {
        u64::from_le_bytes(self.bytes[0..8].try_into().unwrap())
    }

    /// Encoded length, header included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.record_count() == 0
    }

    pub fn attributes(&self) -> u16 {
        u16::from_le_bytes([self.bytes[14], self.bytes[15]])
    }

    pub fn is_seal(&self) -> bool {
        self.attributes() & attributes::SEAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes() & attributes::CONTROL != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes() & attributes::TRANSACTIONAL != 0
    }

    pub fn last_offset_delta(&self) -> u32 {
        self.u32_at(24)
    }

    pub fn record_count(&self) -> u32 {
        self.u32_at(28)
    }

    /// Offset just past this batch: where the next batch starts numbering.
    /// A SEAL batch spans nothing, so this is its base offset.
    pub fn next_offset(&self) -> u64 {
        if self.is_seal() {
            self.base_offset()
        } else {
            self.base_offset() + u64::from(self.last_offset_delta()) + 1
        }
    }

    pub fn first_timestamp(&self) -> i64 {
        self.i64_at(32)
    }

    pub fn max_timestamp(&self) -> i64 {
        self.i64_at(40)
    }

    pub fn producer(&self) -> ProducerInfo {
        ProducerInfo {
            producer_id: self.i64_at(48),
            producer_epoch: i16::from_le_bytes([self.bytes[56], self.bytes[57]]),
            base_sequence: i32::from_le_bytes(self.bytes[60..64].try_into().unwrap()),
        }
    }

    /// The control type of a control batch.
    pub fn control_type(&self) -> Option<ControlType> {
        if !self.is_control() {
            return None;
        }
        let rec = self.records().next()?.ok()?;
        let key = rec.key?;
        match key.get(2..4).map(|t| u16::from_le_bytes([t[0], t[1]])) {
            Some(0) => Some(ControlType::Abort),
            Some(1) => Some(ControlType::Commit),
            _ => None,
        }
    }

    pub fn records(&self) -> Records<'a> {
        Records {
            body: &self.bytes[HEADER_LEN..],
            base_offset: self.base_offset(),
            first_timestamp: self.first_timestamp(),
            last_offset_delta: self.last_offset_delta(),
            remaining: self.record_count(),
            next_min_delta: 0,
        }
    }
}

/// Why a record inside a checksummed batch could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordError(pub &'static str);

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// One record, borrowed from its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    /// `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    headers: &'a [u8],
    header_count: u32,
}

impl<'a> RecordRef<'a> {
    pub fn header_count(&self) -> u32 {
        self.header_count
    }

    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter { buf: self.headers, remaining: self.header_count }
    }
}

/// Iterator over the records of a batch; yields an error (then stops) on malformed bytes.
pub struct Records<'a> {
    body: &'a [u8],
    base_offset: u64,
    first_timestamp: i64,
    last_offset_delta: u32,
    remaining: u32,
    next_min_delta: u64,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordRef<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            if !self.body.is_empty() {
                self.body = &[];
                return Some(Err(RecordError("trailing bytes after the last record")));
            }
            return None;
        }
        match self.decode_one() {
            Ok(r) => {
                self.remaining -= 1;
                Some(Ok(r))
            }
            Err(e) => {
                self.remaining = 0;
                self.body = &[];
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining as usize))
    }
}

impl<'a> Records<'a> {
    fn decode_one(&mut self) -> Result<RecordRef<'a>, RecordError> {
        let mut cur = Cursor { buf: self.body };
        let len = cur.varint()? as usize;
        let rec = cur.take(len).map_err(|_| RecordError("record length past end of batch"))?;
        self.body = cur.buf;

        let mut r = Cursor { buf: rec };
        let _attributes = r.take(1)?;
        let ts_delta = unzigzag(r.varint()?);
        let offset_delta = r.varint()?;
        if offset_delta < self.next_min_delta || offset_delta > u64::from(self.last_offset_delta) {
            return Err(RecordError("record offset delta out of order"));
        }
        self.next_min_delta = offset_delta + 1;
        let key = r.nullable_bytes()?;
        let value = r.nullable_bytes()?;
        let header_count = r.varint()?;
        if header_count > u64::from(u32::MAX) {
            return Err(RecordError("header count out of range"));
        }
        let headers = r.buf;
        // Walk the headers once so that a record is either entirely valid or an error.
        let mut it = HeaderIter { buf: headers, remaining: header_count as u32 };
        for h in &mut it {
            h?;
        }
        if !it.buf.is_empty() {
            return Err(RecordError("trailing bytes after record headers"));
        }
        Ok(RecordRef {
            offset: self.base_offset + offset_delta,
            timestamp: self.first_timestamp.wrapping_add(ts_delta),
            key,
            value,
            headers,
            header_count: header_count as u32,
        })
    }
}

/// Iterator over a record's headers.
pub struct HeaderIter<'a> {
    buf: &'a [u8],
    remaining: u32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Result<(&'a str, Option<&'a [u8]>), RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let mut c = Cursor { buf: self.buf };
        let res = (|| {
            let klen = c.varint()? as usize;
            let key = c.take(klen)?;
            let key = std::str::from_utf8(key).map_err(|_| RecordError("header key is not utf-8"))?;
            let value = c.nullable_bytes()?;
            Ok((key, value))
        })();
        match res {
            Ok(h) => {
                self.buf = c.buf;
                Some(Ok(h))
            }
            Err(e) => {
                self.remaining = 0;
                Some(Err(e))
            }
        }
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if n > self.buf.len() {
            return Err(RecordError("field length past end of record"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u64, RecordError> {
        let mut value = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(RecordError("malformed varint"))
    }

    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, RecordError> {
        let len = unzigzag(self.varint()?);
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            return Err(RecordError("negative field length"));
        }
        self.take(len as usize).map(Some)
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Encodes `batch` again keeping only the records for which `keep` is true, with
/// their original offsets, timestamps and producer fields (compaction). Returns
/// `None` when no record is kept.
pub(crate) fn rebuild_batch(
    batch: &BatchView<'_>,
    mut keep: impl FnMut(&RecordRef<'_>) -> bool,
) -> Result<Option<Vec<u8>>, RecordError> {
    let mut out = Vec::with_capacity(batch.len());
    out.extend_from_slice(&batch.as_bytes()[..HEADER_LEN]);
    let mut kept = 0u32;
    let mut body = &batch.as_bytes()[HEADER_LEN..];
    for rec in batch.records() {
        let rec = rec?;
        // Re-read the raw record bytes to copy them unchanged.
        let mut c = Cursor { buf: body };
        let len = c.varint()? as usize;
        let prefix = body.len() - c.buf.len();
        let raw = &body[..prefix + len];
        body = &body[prefix + len..];
        if keep(&rec) {
            out.extend_from_slice(raw);
            kept += 1;
        }
    }
    if kept == 0 {
        return Ok(None);
    }
    let len = out.len() as u32;
    let body_crc = crc32c::crc32c(&out[HEADER_LEN..]);
    out[8..12].copy_from_slice(&len.to_le_bytes());
    out[16..20].copy_from_slice(&body_crc.to_le_bytes());
    out[28..32].copy_from_slice(&kept.to_le_bytes());
    let base = batch.base_offset();
    stamp(&mut out, base);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(records: &[(Option<&[u8]>, Option<&[u8]>, i64)]) -> Vec<u8> {
        let mut b = BatchBuilder::new();
        for (k, v, ts) in records {
            b.push(*k, *v, *ts, &[Header { key: "h", value: Some(b"x") }]);
        }
        let buf = b.finish();
        stamp(buf, 42);
        buf.to_vec()
    }

    #[test]
    fn round_trip() {
        let bytes =
            build(&[(Some(b"k1"), Some(b"v1"), 1000), (None, Some(b""), 999), (Some(b"k2"), None, 5000)]);
        let Check::Valid(view) = check_batch(&bytes) else { panic!("invalid") };
        assert_eq!(view.base_offset(), 42);
        assert_eq!(view.record_count(), 3);
        assert_eq!(view.next_offset(), 45);
        assert_eq!(view.max_timestamp(), 5000);
        let recs: Vec<_> = view.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(recs[0].offset, 42);
        assert_eq!(recs[0].key, Some(&b"k1"[..]));
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[1].value, Some(&b""[..]));
        assert_eq!(recs[1].timestamp, 999);
        assert_eq!(recs[2].value, None);
        assert_eq!(recs[2].offset, 44);
        let h: Vec<_> = recs[2].headers().collect::<Result<_, _>>().unwrap();
        assert_eq!(h, vec![("h", Some(&b"x"[..]))]);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = build(&[(Some(b"key"), Some(b"value"), 7), (None, Some(b"v2"), 8)]);
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                match check_batch(&b) {
                    Check::Valid(_) => panic!("flip of byte {i} bit {bit} not detected"),
                    Check::Invalid(_) | Check::Incomplete { .. } => {}
                }
            }
        }
    }

    #[test]
    fn truncation_is_incomplete() {
        let bytes = build(&[(Some(b"key"), Some(b"value"), 7)]);
        for n in 0..bytes.len() {
            assert!(matches!(check_batch(&bytes[..n]), Check::Incomplete { .. }), "prefix {n}");
        }
    }

    #[test]
    fn seal_and_control_batches() {
        let seal = seal_batch(100, 5);
        let Check::Valid(v) = check_batch(&seal) else { panic!() };
        assert!(v.is_seal());
        assert_eq!(v.next_offset(), 100);
        let mut c = BatchBuilder::control(ControlType::Commit, ProducerInfo::NONE, 1);
        let buf = c.finish();
        stamp(buf, 9);
        let Check::Valid(v) = check_batch(buf) else { panic!() };
        assert_eq!(v.control_type(), Some(ControlType::Commit));
        assert_eq!(v.next_offset(), 10);
    }

    #[test]
    fn rebuild_keeps_offsets() {
        let bytes =
            build(&[(Some(b"a"), Some(b"1"), 1), (Some(b"b"), Some(b"2"), 2), (Some(b"c"), Some(b"3"), 3)]);
        let Check::Valid(view) = check_batch(&bytes) else { panic!() };
        let out = rebuild_batch(&view, |r| r.key != Some(b"b")).unwrap().unwrap();
        let Check::Valid(v2) = check_batch(&out) else { panic!("rebuilt batch invalid") };
        assert_eq!(v2.next_offset(), 45);
        let offs: Vec<u64> = v2.records().map(|r| r.unwrap().offset).collect();
        assert_eq!(offs, vec![42, 44]);
        assert!(rebuild_batch(&view, |_| false).unwrap().is_none());
    }
}
