//! The record codec: the bytes of every LevelDB value bigcache keeps (a
//! REST JSON value, raw bytes from `/pickle`, a cached HTTP response, a
//! `Vary` group), and of the entries in blob files.
//!
//! The layouts are specified in `docs/format.md` ("Records, version 3" and
//! "Blob references and blob files"); this module implements them, and its
//! tests pin them (round trips, every flipped bit, every truncation,
//! version 1 records, entries checked against their owner).
//!
//! Decoding never panics and never trusts a length: a short buffer, a length
//! that does not add up, an unknown version, kind or flag, or a checksum
//! mismatch is a [`DecodeError`]; the store logs it and treats the entry as a
//! miss (and deletes it). A future version gets its own decoder beside these,
//! so records written by older releases stay readable.

use bytes::{BufMut, Bytes, BytesMut};

/// The newest version this release writes: for records with tags or a
/// soft-purge time. Others are written as version 2, which they fit, so a
/// release that knows only version 2 still reads them.
pub const FORMAT_VERSION: u8 = 3;
const PLAIN_VERSION: u8 = 2;
const HEADER_LEN: usize = 28;
const CRC_LEN: usize = 4;
const FLAG_BLOB: u16 = 1;
/// A tags section follows the body (version 3).
const FLAG_TAGS: u16 = 2;
/// A soft-purge time follows the body and tags (version 3).
const FLAG_STALE: u16 = 4;

/// Most tags one entry may carry, and the longest tag: the index holds a
/// row per tag, and a purge walks them.
pub const MAX_TAGS: usize = 128;
pub const MAX_TAG_LEN: usize = 256;

const BLOB_REF_LEN: usize = 21;

/// How a blob body is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None = 0,
    /// Written by releases before LZ4; still read.
    Snappy = 1,
    Lz4 = 2,
}

impl Codec {
    pub fn from_u8(b: u8) -> Option<Codec> {
        match b {
            0 => Some(Codec::None),
            1 => Some(Codec::Snappy),
            2 => Some(Codec::Lz4),
            _ => None,
        }
    }
}

/// Where a record's body lives when it is not inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRef {
    pub file: u32,
    pub offset: u64,
    pub stored_len: u32,
    pub body_len: u32,
    pub codec: Codec,
}

impl BlobRef {
    fn encode_into(&self, buf: &mut BytesMut) {
        buf.put_u32_le(self.file);
        buf.put_u64_le(self.offset);
        buf.put_u32_le(self.stored_len);
        buf.put_u32_le(self.body_len);
        buf.put_u8(self.codec as u8);
    }

    fn decode(b: &[u8]) -> Result<BlobRef, DecodeError> {
        if b.len() != BLOB_REF_LEN {
            return Err(DecodeError::BadBlobRef);
        }
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let mut off = [0u8; 8];
        off.copy_from_slice(&b[4..12]);
        let codec = Codec::from_u8(b[20]).ok_or(DecodeError::BadBlobRef)?;
        Ok(BlobRef {
            file: u32_at(0),
            offset: u64::from_le_bytes(off),
            stored_len: u32_at(12),
            body_len: u32_at(16),
            codec,
        })
    }

    /// Bytes the entry occupies in its blob file.
    pub fn entry_len(&self, key_len: usize) -> u64 {
        (super::entry::ENTRY_HEADER + key_len) as u64 + u64::from(self.stored_len)
    }
}

/// A decoded LevelDB value: the record, and where its body is when it is
/// not inline (then `record.body` is empty until the store reads the blob).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub record: Record,
    pub blob: Option<BlobRef>,
}

/// What a record's body holds; decides which API may read it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A JSON value set through `POST /cache/{key}`.
    Json = 1,
    /// Raw bytes set through `POST /pickle/{key}`.
    Bytes = 2,
    /// A cached HTTP response stored by the proxy.
    Http = 3,
    /// The index of a group of entries (a page's variants).
    Group = 4,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::Json),
            2 => Some(Kind::Bytes),
            3 => Some(Kind::Http),
            4 => Some(Kind::Group),
            _ => None,
        }
    }
}

/// One stored entry. `meta` and `body` are [`Bytes`] so a record decoded from
/// a LevelDB value (itself `Bytes`) shares that buffer instead of copying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    /// Unix milliseconds.
    pub created_at: u64,
    /// Unix milliseconds; `None` never expires.
    pub expires_at: Option<u64>,
    pub meta: Bytes,
    pub body: Bytes,
    /// The surrogate keys the entry is indexed under (docs/format.md,
    /// "Tag index"): a tag purge finds it through them.
    pub tags: Tags,
    /// When a soft purge marked the entry stale (unix ms): from then on it
    /// is never fresh again, whatever its own lifetime says.
    pub stale_since: Option<u64>,
    /// What a reader built from this record (the proxy's decoded response),
    /// shared by its clones: a record in the hot tier is decoded once, not
    /// on every hit. Not part of the record's value.
    pub memo: Memo,
}

/// A value derived from a record, kept with it ([`Record::memoized`]).
/// Checked against the record's fields and buffers on every use, so a
/// record built from another (`Record { body, ..old }`) never gets the
/// other's value. The memo holds the buffers it was made from, so none of
/// their addresses can be reused by another buffer while it lives.
#[derive(Clone, Default)]
pub struct Memo(std::sync::Arc<std::sync::OnceLock<Made>>);

/// A memo's value, what it was made from, and those buffers held.
struct Made {
    from: Fingerprint,
    _held: [Bytes; 3],
    value: Derived,
}

type Derived = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// What a memoized value was derived from: every field, and where each
/// buffer is (clones share buffers; a changed buffer is another one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    kind: u8,
    created_at: u64,
    expires_at: Option<u64>,
    stale_since: Option<u64>,
    buffers: [(usize, usize); 3],
}

impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl Eq for Memo {}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

/// An entry's tags, encoded as they are stored: each a u16 length, then
/// its bytes. One buffer, so cloning a record (the hot tier does on every
/// read) costs no allocation per tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(Bytes);

impl Tags {
    /// Tags from their text; the caller has checked them ([`check_tag`]).
    pub fn new<'a>(tags: impl IntoIterator<Item = &'a [u8]>) -> Tags {
        let mut out = BytesMut::new();
        for t in tags {
            let n = t.len().min(usize::from(u16::MAX));
            out.put_u16_le(n as u16);
            out.put_slice(&t[..n]);
        }
        Tags(out.freeze())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The encoded section.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let b = &self.0[..];
        let mut i = 0;
        std::iter::from_fn(move || {
            let len = b.get(i..i + 2)?;
            let n = usize::from(u16::from_le_bytes([len[0], len[1]]));
            let tag = b.get(i + 2..i + 2 + n)?;
            i += 2 + n;
            Some(tag)
        })
    }

    /// Whether `tag` is one of them.
    pub fn contains(&self, tag: &[u8]) -> bool {
        self.iter().any(|t| t == tag)
    }

    /// Reads a stored section, refusing a malformed one (a tag lost from
    /// the index would leave its page unpurgeable).
    fn decode(section: Bytes) -> Result<Tags, DecodeError> {
        let mut i = 0;
        while i < section.len() {
            let Some(len) = section.get(i..i + 2) else {
                return Err(DecodeError::BadTags);
            };
            let n = usize::from(u16::from_le_bytes([len[0], len[1]]));
            let tag = section.get(i + 2..i + 2 + n).ok_or(DecodeError::BadTags)?;
            if check_tag(tag).is_err() {
                return Err(DecodeError::BadTags);
            }
            i += 2 + n;
        }
        Ok(Tags(section))
    }
}

/// Why a tag cannot be indexed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TagError {
    #[error("a tag is empty")]
    Empty,
    #[error("a tag is {0} bytes; the limit is {MAX_TAG_LEN}")]
    TooLong(usize),
    #[error("a tag holds a byte outside visible ASCII, or a comma")]
    BadByte,
    #[error("{0} tags; the limit is {MAX_TAGS} per page")]
    TooMany(usize),
}

/// A tag is 1 to [`MAX_TAG_LEN`] bytes of visible ASCII other than `,`
/// (the separator of `Surrogate-Key` and `xkey` lists). NUL never appears,
/// so a tag's index rows are one exact range.
pub fn check_tag(tag: &[u8]) -> Result<(), TagError> {
    if tag.is_empty() {
        return Err(TagError::Empty);
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(TagError::TooLong(tag.len()));
    }
    if !tag.iter().all(|&b| b.is_ascii_graphic() && b != b',') {
        return Err(TagError::BadByte);
    }
    Ok(())
}

/// Why a stored value could not be read as a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record is {0} bytes, shorter than the fixed header")]
    TooShort(usize),
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("unknown record flags {0:#06x}")]
    UnknownFlags(u16),
    #[error("record section lengths ({meta} + {body}) do not match its size {len}")]
    BadLength {
        meta: usize,
        body: usize,
        len: usize,
    },
    #[error("record checksum mismatch")]
    Checksum,
    #[error("malformed blob reference")]
    BadBlobRef,
    #[error("malformed tags section")]
    BadTags,
}

impl Record {
    /// Whether the record is past its lifetime at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at.is_some_and(|e| e <= now_ms)
    }

    /// A record without tags, never soft-purged.
    pub fn new(
        kind: Kind,
        created_at: u64,
        expires_at: Option<u64>,
        meta: Bytes,
        body: Bytes,
    ) -> Record {
        Record {
            kind,
            created_at,
            expires_at,
            meta,
            body,
            tags: Tags::default(),
            stale_since: None,
            memo: Memo::default(),
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        let at = |b: &[u8]| (b.as_ptr() as usize, b.len());
        Fingerprint {
            kind: self.kind as u8,
            created_at: self.created_at,
            expires_at: self.expires_at,
            stale_since: self.stale_since,
            buffers: [at(&self.meta), at(&self.body), at(self.tags.as_bytes())],
        }
    }

    /// `make(self)`, computed once per record and its clones (the first
    /// caller's value is kept; a record whose fields differ from the ones
    /// it was made from gets its own, uncached).
    pub fn memoized<T: std::any::Any + Send + Sync>(
        &self,
        make: impl FnOnce(&Record) -> T,
    ) -> std::sync::Arc<T> {
        let fp = self.fingerprint();
        if let Some(made) = self.memo.0.get()
            && made.from == fp
            && let Ok(v) = made.value.clone().downcast::<T>()
        {
            return v;
        }
        let v = std::sync::Arc::new(make(self));
        let _ = self.memo.0.set(Made {
            from: fp,
            _held: [self.meta.clone(), self.body.clone(), self.tags.0.clone()],
            value: v.clone(),
        });
        v
    }

    /// Size of the encoded form, for budgets and limits.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.meta.len() + self.body.len() + self.trailer_len() + CRC_LEN
    }

    /// Bytes of the optional sections after the body.
    fn trailer_len(&self) -> usize {
        let tags = if self.tags.is_empty() {
            0
        } else {
            4 + self.tags.as_bytes().len()
        };
        tags + if self.stale_since.is_some() { 8 } else { 0 }
    }

    /// The member suffixes of a group record's body. A malformed tail is
    /// ignored: the list is an index, and a lost member is only a miss.
    pub fn group_members(&self) -> Vec<Bytes> {
        let mut out = Vec::new();
        let b = &self.body;
        let mut i = 0;
        while i + 2 <= b.len() {
            let n = usize::from(u16::from_le_bytes([b[i], b[i + 1]]));
            if i + 2 + n > b.len() {
                break;
            }
            out.push(b.slice(i + 2..i + 2 + n));
            i += 2 + n;
        }
        out
    }

    /// The body of a group record listing `members` (each under 64 KiB).
    pub fn encode_group_members<'a>(members: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
        let mut out = BytesMut::new();
        for m in members {
            let n = m.len().min(usize::from(u16::MAX));
            out.put_u16_le(n as u16);
            out.put_slice(&m[..n]);
        }
        out.freeze()
    }

    /// Encodes the record with its body inline.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_parts(0, |buf| buf.put_slice(&self.body), self.body.len())
    }

    /// Encodes the record with an empty body: what a blob entry carries
    /// beside the body (`store::entry`).
    pub fn encode_head(&self) -> Vec<u8> {
        self.encode_parts(0, |_| {}, 0)
    }

    /// Encodes the record with `blob` in place of its body.
    pub fn encode_with_blob(&self, blob: &BlobRef) -> Vec<u8> {
        self.encode_parts(FLAG_BLOB, |buf| blob.encode_into(buf), BLOB_REF_LEN)
    }

    fn encode_parts(
        &self,
        flags: u16,
        body: impl FnOnce(&mut BytesMut),
        body_len: usize,
    ) -> Vec<u8> {
        let mut buf = BytesMut::with_capacity(
            HEADER_LEN + self.meta.len() + body_len + self.trailer_len() + CRC_LEN,
        );
        let mut flags = flags;
        if !self.tags.is_empty() {
            flags |= FLAG_TAGS;
        }
        if self.stale_since.is_some() {
            flags |= FLAG_STALE;
        }
        let version = if flags & (FLAG_TAGS | FLAG_STALE) != 0 {
            FORMAT_VERSION
        } else {
            PLAIN_VERSION
        };
        buf.put_u8(version);
        buf.put_u8(self.kind as u8);
        buf.put_u16_le(flags);
        buf.put_u64_le(self.created_at);
        buf.put_u64_le(self.expires_at.unwrap_or(0));
        // Lengths fit: the API and proxy cap entries far below 4 GiB.
        buf.put_u32_le(self.meta.len() as u32);
        buf.put_u32_le(body_len as u32);
        buf.put_slice(&self.meta);
        body(&mut buf);
        if !self.tags.is_empty() {
            buf.put_u32_le(self.tags.as_bytes().len() as u32);
            buf.put_slice(self.tags.as_bytes());
        }
        if let Some(at) = self.stale_since {
            buf.put_u64_le(at);
        }
        let crc = crc32fast::hash(&buf);
        buf.put_u32_le(crc);
        buf.into()
    }

    /// Decodes a stored value, sharing `raw`'s buffer for meta and body.
    pub fn decode(raw: &Bytes) -> Result<Stored, DecodeError> {
        let len = raw.len();
        if len < HEADER_LEN + CRC_LEN {
            return Err(DecodeError::TooShort(len));
        }
        let version = raw[0];
        let flags = u16::from_le_bytes([raw[2], raw[3]]);
        let known_flags = match version {
            1 => 0,
            2 => FLAG_BLOB,
            3 => FLAG_BLOB | FLAG_TAGS | FLAG_STALE,
            _ => return Err(DecodeError::UnknownVersion(version)),
        };
        let kind = Kind::from_u8(raw[1]).ok_or(DecodeError::UnknownKind(raw[1]))?;
        if flags & !known_flags != 0 {
            return Err(DecodeError::UnknownFlags(flags));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&raw[at..at + 4]);
            u32::from_le_bytes(b) as usize
        };
        let created_at = u64_at(4);
        let expires_at = match u64_at(12) {
            0 => None,
            e => Some(e),
        };
        let meta_len = u32_at(20);
        let body_len = u32_at(24);
        let body_start = HEADER_LEN.checked_add(meta_len);
        let body_end = body_start.and_then(|n| n.checked_add(body_len));
        let bad_length = || DecodeError::BadLength {
            meta: meta_len,
            body: body_len,
            len,
        };
        // The optional sections between the body and the CRC.
        let crc_at = len - CRC_LEN;
        let mut at = body_end.filter(|&e| e <= crc_at).ok_or_else(bad_length)?;
        let mut tags_section = None;
        if flags & FLAG_TAGS != 0 {
            if at + 4 > crc_at {
                return Err(bad_length());
            }
            let n = u32_at(at);
            let end = (at + 4).checked_add(n).filter(|&e| e <= crc_at);
            let end = end.ok_or_else(bad_length)?;
            tags_section = Some(at + 4..end);
            at = end;
        }
        let mut stale_since = None;
        if flags & FLAG_STALE != 0 {
            if at + 8 > crc_at {
                return Err(bad_length());
            }
            stale_since = Some(u64_at(at));
            at += 8;
        }
        if at != crc_at {
            return Err(bad_length());
        }
        let stored_crc = u32_at(crc_at) as u32;
        if crc32fast::hash(&raw[..crc_at]) != stored_crc {
            return Err(DecodeError::Checksum);
        }
        let body_end = body_end.unwrap_or(crc_at);
        let body = raw.slice(HEADER_LEN + meta_len..body_end);
        let (body, blob) = if flags & FLAG_BLOB != 0 {
            (Bytes::new(), Some(BlobRef::decode(&body)?))
        } else {
            (body, None)
        };
        let tags = match tags_section {
            Some(r) => Tags::decode(raw.slice(r))?,
            None => Tags::default(),
        };
        Ok(Stored {
            record: Record {
                kind,
                created_at,
                expires_at,
                meta: raw.slice(HEADER_LEN..HEADER_LEN + meta_len),
                body,
                tags,
                stale_since,
                memo: Memo::default(),
            },
            blob,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            kind: Kind::Json,
            created_at: 1_700_000_000_123,
            expires_at: Some(1_700_000_060_123),
            meta: Bytes::from_static(b"1m"),
            body: Bytes::from_static(br#"{"title":"example"}"#),
            tags: Tags::default(),
            stale_since: None,
            memo: Memo::default(),
        }
    }

    #[test]
    fn a_memo_follows_its_record_and_never_another() {
        let rec = sample();
        let n = rec.memoized(|r| r.body.len());
        let clone = rec.clone();
        assert_eq!(*clone.memoized(|_| 0usize), *n, "clones share it");
        // Built from the record, with another body or deadline: its own.
        let other = Record {
            body: Bytes::from_static(b"[1]"),
            ..rec.clone()
        };
        assert_eq!(*other.memoized(|r| r.body.len()), 3);
        let soft = Record {
            stale_since: Some(5),
            ..rec.clone()
        };
        assert_eq!(*soft.memoized(|r| r.stale_since), Some(5));
        assert_eq!(*rec.memoized(|_| 0usize), *n);
    }

    /// `raw` relabelled as format `version`, its CRC made right again.
    fn as_version(raw: &[u8], version: u8) -> Bytes {
        let mut raw = raw.to_vec();
        raw[0] = version;
        let n = raw.len() - 4;
        let crc = crc32fast::hash(&raw[..n]);
        raw[n..].copy_from_slice(&crc.to_le_bytes());
        Bytes::from(raw)
    }

    fn tagged() -> Record {
        Record {
            kind: Kind::Http,
            tags: Tags::new([&b"dataset-42"[..], b"list"]),
            stale_since: Some(1_700_000_030_000),
            ..sample()
        }
    }

    #[test]
    fn tags_and_the_soft_purge_time_round_trip_inline_and_with_a_blob() {
        let rec = tagged();
        let raw = Bytes::from(rec.encode());
        assert_eq!(raw.len(), rec.encoded_len());
        assert_eq!(u16::from_le_bytes([raw[2], raw[3]]), 2 | 4, "TAGS, STALE");
        let back = Record::decode(&raw).unwrap().record;
        assert_eq!(back, rec);
        let tags: Vec<&[u8]> = back.tags.iter().collect();
        assert_eq!(tags, [&b"dataset-42"[..], b"list"]);
        assert!(back.tags.contains(b"list") && !back.tags.contains(b"lis"));
        // Tags section: u32 length, then (u16 length, bytes) per tag;
        // then the soft-purge time; then the CRC.
        let n = raw.len();
        assert_eq!(&raw[n - 12..n - 4], &1_700_000_030_000u64.to_le_bytes());
        assert_eq!(&raw[n - 12 - 18 - 4..n - 12 - 18], &18u32.to_le_bytes());

        let with_blob = Bytes::from(rec.encode_with_blob(&blob_ref()));
        let back = Record::decode(&with_blob).unwrap();
        assert_eq!(back.blob, Some(blob_ref()));
        assert_eq!(back.record.tags, rec.tags);
        assert_eq!(back.record.stale_since, rec.stale_since);
    }

    /// Every flipped bit and every truncation of `raw` is an error.
    fn assert_damage_is_noticed(raw: &[u8]) {
        for i in 0..raw.len() {
            for bit in 0..8 {
                let mut bad = raw.to_vec();
                bad[i] ^= 1 << bit;
                assert!(
                    Record::decode(&Bytes::from(bad)).is_err(),
                    "byte {i} bit {bit} went unnoticed"
                );
            }
        }
        for n in 0..raw.len() {
            assert!(Record::decode(&Bytes::copy_from_slice(&raw[..n])).is_err());
        }
    }

    #[test]
    fn a_tagged_record_is_checked_like_any_other() {
        let raw = tagged().encode();
        assert_damage_is_noticed(&raw);
        // Version 2 knew no tags: the flag is refused there.
        assert_eq!(
            Record::decode(&as_version(&raw, 2)),
            Err(DecodeError::UnknownFlags(6))
        );
    }

    #[test]
    fn a_tag_is_visible_ascii_without_commas_and_bounded() {
        assert_eq!(check_tag(b"dataset-42"), Ok(()));
        assert_eq!(check_tag(b""), Err(TagError::Empty));
        assert_eq!(check_tag(b"a b"), Err(TagError::BadByte));
        assert_eq!(check_tag(b"a,b"), Err(TagError::BadByte));
        assert_eq!(check_tag("caf\u{e9}".as_bytes()), Err(TagError::BadByte));
        assert_eq!(check_tag(b"a\0b"), Err(TagError::BadByte));
        assert_eq!(check_tag(&[b'x'; MAX_TAG_LEN]), Ok(()));
        assert_eq!(
            check_tag(&[b'x'; MAX_TAG_LEN + 1]),
            Err(TagError::TooLong(MAX_TAG_LEN + 1))
        );
    }

    #[test]
    fn version_2_records_are_still_read() {
        let raw = as_version(&sample().encode(), 2);
        assert_eq!(Record::decode(&raw).unwrap().record, sample());
    }

    #[test]
    fn round_trips_every_kind() {
        for kind in [Kind::Json, Kind::Bytes, Kind::Http, Kind::Group] {
            for expires_at in [None, Some(42)] {
                let rec = Record {
                    kind,
                    expires_at,
                    ..sample()
                };
                let raw = Bytes::from(rec.encode());
                assert_eq!(raw.len(), rec.encoded_len());
                assert_eq!(Record::decode(&raw).map(|s| s.record), Ok(rec));
            }
        }
    }

    #[test]
    fn round_trips_empty_sections() {
        let rec = Record {
            meta: Bytes::new(),
            body: Bytes::new(),
            ..sample()
        };
        assert_eq!(
            Record::decode(&Bytes::from(rec.encode())).map(|s| s.record),
            Ok(rec)
        );
    }

    #[test]
    fn layout_is_the_documented_one() {
        let raw = sample().encode();
        assert_eq!(raw[0], 2, "version: 2 without tags or a soft purge");
        assert_eq!(tagged().encode()[0], 3, "version 3 with them");
        assert_eq!(raw[1], 1, "kind json");
        assert_eq!(&raw[4..12], &1_700_000_000_123u64.to_le_bytes());
        assert_eq!(&raw[12..20], &1_700_000_060_123u64.to_le_bytes());
        assert_eq!(&raw[20..24], &2u32.to_le_bytes());
        assert_eq!(&raw[28..30], b"1m");
        assert_eq!(&raw[30..raw.len() - 4], br#"{"title":"example"}"#);
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_an_error_not_a_panic() {
        assert_damage_is_noticed(&sample().encode());
    }

    #[test]
    fn unknown_version_and_huge_lengths_are_reported() {
        let mut raw = sample().encode();
        raw[0] = 4;
        assert_eq!(
            Record::decode(&Bytes::from(raw)),
            Err(DecodeError::UnknownVersion(4))
        );
        let mut raw = sample().encode();
        raw[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        raw[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Record::decode(&Bytes::from(raw)),
            Err(DecodeError::BadLength { .. })
        ));
    }

    #[test]
    fn group_members_round_trip() {
        let members: [&[u8]; 3] = [b"\x00accept-encoding=gzip", b"", b"\x00accept-encoding="];
        let rec = Record {
            kind: Kind::Group,
            body: Record::encode_group_members(members),
            ..sample()
        };
        let back = Record::decode(&Bytes::from(rec.encode())).unwrap().record;
        let got: Vec<Bytes> = back.group_members();
        assert_eq!(got, members.map(Bytes::copy_from_slice));
        let torn = Record {
            body: rec.body.slice(..rec.body.len() - 1),
            ..rec
        };
        assert_eq!(torn.group_members().len(), 2);
    }

    #[test]
    fn expiry_is_inclusive_of_the_deadline() {
        let rec = sample();
        assert!(!rec.is_expired(1_700_000_060_122));
        assert!(rec.is_expired(1_700_000_060_123));
        let forever = Record {
            expires_at: None,
            ..sample()
        };
        assert!(!forever.is_expired(u64::MAX));
    }

    fn blob_ref() -> BlobRef {
        BlobRef {
            file: 7,
            offset: 123_456_789_012,
            stored_len: 9_000,
            body_len: 20_480,
            codec: Codec::Snappy,
        }
    }

    #[test]
    fn blob_records_round_trip_without_their_body() {
        let rec = Record {
            kind: Kind::Http,
            body: Bytes::from(vec![b'x'; 20_480]),
            ..sample()
        };
        let raw = Bytes::from(rec.encode_with_blob(&blob_ref()));
        assert_eq!(raw.len(), 28 + 2 + 21 + 4, "the body stays out of LevelDB");
        assert_eq!(u16::from_le_bytes([raw[2], raw[3]]), 1, "BLOB flag");
        let back = Record::decode(&raw).unwrap();
        assert_eq!(back.blob, Some(blob_ref()));
        assert_eq!(back.record.meta, rec.meta);
        assert!(back.record.body.is_empty());
        for i in 0..raw.len() {
            let mut bad = raw.to_vec();
            bad[i] ^= 0x10;
            assert!(Record::decode(&Bytes::from(bad)).is_err(), "byte {i}");
        }
    }

    #[test]
    fn version_1_records_are_still_read_but_may_not_use_blobs() {
        let raw = as_version(&sample().encode(), 1);
        assert_eq!(Record::decode(&raw).unwrap().record, sample());

        let raw = as_version(&sample().encode_with_blob(&blob_ref()), 1);
        assert_eq!(Record::decode(&raw), Err(DecodeError::UnknownFlags(1)));
    }
}
