//! The on-disk record format: the single place where the bytes stored as a
//! LevelDB value are defined. Every entry bigcache keeps — a REST JSON value,
//! raw bytes from `/pickle`, and (later) a cached HTTP response — is one
//! [`Record`] encoded as below.
//!
//! # Format, version 1
//!
//! All integers are little-endian.
//!
//! | offset      | size | field                                                        |
//! |-------------|------|--------------------------------------------------------------|
//! | 0           | 1    | format version, `1`                                          |
//! | 1           | 1    | kind: `1` JSON value, `2` raw bytes, `3` HTTP response, `4` group |
//! | 2           | 2    | flags, reserved, must be `0`                                 |
//! | 4           | 8    | created-at, unix milliseconds                                |
//! | 12          | 8    | expires-at, unix milliseconds; `0` means never               |
//! | 20          | 4    | `m`: length of the metadata section                          |
//! | 24          | 4    | `b`: length of the body section                              |
//! | 28          | m    | metadata (kind-specific, see below)                          |
//! | 28 + m      | b    | body                                                         |
//! | 28 + m + b  | 4    | CRC-32 (IEEE) of every preceding byte of the record          |
//!
//! Metadata per kind:
//! - JSON value: the `duration` string the client sent (UTF-8), empty if none.
//!   The body is the value's JSON text, exactly as validated at write time.
//! - raw bytes: empty. The body is the bytes, verbatim.
//! - HTTP response: defined by the proxy (`proxy::entry`: status, headers,
//!   freshness). The body is the response body.
//! - group: the entries stored under `<group key><member suffix>` (a page's
//!   `Vary` variants). Metadata is the owner's (the proxy keeps the `Vary`
//!   header names there); the body lists the member suffixes, each as a u16
//!   length followed by that many bytes. The store keeps the list in step
//!   with the members (see `store::shard`).
//!
//! Decoding never panics and never trusts a length: a short buffer, a length
//! that does not add up, an unknown version, kind or flag, or a checksum
//! mismatch is a [`DecodeError`]; the store logs it and treats the entry as a
//! miss (and deletes it). A future version 2 gets its own decoder beside
//! version 1's, so records written by older releases stay readable.
//!
//! The LevelDB layer compresses blocks with snappy, so the body is stored
//! uncompressed here.

use bytes::{BufMut, Bytes, BytesMut};

/// The version written by this release.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 28;
const CRC_LEN: usize = 4;

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
}

impl Record {
    /// Whether the record is past its lifetime at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at.is_some_and(|e| e <= now_ms)
    }

    /// Size of the encoded form, for budgets and limits.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.meta.len() + self.body.len() + CRC_LEN
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

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        buf.put_u8(FORMAT_VERSION);
        buf.put_u8(self.kind as u8);
        buf.put_u16_le(0);
        buf.put_u64_le(self.created_at);
        buf.put_u64_le(self.expires_at.unwrap_or(0));
        // Lengths fit: the API and proxy cap entries far below 4 GiB.
        buf.put_u32_le(self.meta.len() as u32);
        buf.put_u32_le(self.body.len() as u32);
        buf.put_slice(&self.meta);
        buf.put_slice(&self.body);
        let crc = crc32fast::hash(&buf);
        buf.put_u32_le(crc);
        buf.into()
    }

    /// Decodes a stored value, sharing `raw`'s buffer for meta and body.
    pub fn decode(raw: &Bytes) -> Result<Record, DecodeError> {
        let len = raw.len();
        if len < HEADER_LEN + CRC_LEN {
            return Err(DecodeError::TooShort(len));
        }
        let version = raw[0];
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let kind = Kind::from_u8(raw[1]).ok_or(DecodeError::UnknownKind(raw[1]))?;
        let flags = u16::from_le_bytes([raw[2], raw[3]]);
        if flags != 0 {
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
        let body_end = HEADER_LEN
            .checked_add(meta_len)
            .and_then(|n| n.checked_add(body_len));
        if body_end.and_then(|n| n.checked_add(CRC_LEN)) != Some(len) {
            return Err(DecodeError::BadLength {
                meta: meta_len,
                body: body_len,
                len,
            });
        }
        let body_end = len - CRC_LEN;
        let stored_crc = u32_at(body_end) as u32;
        if crc32fast::hash(&raw[..body_end]) != stored_crc {
            return Err(DecodeError::Checksum);
        }
        Ok(Record {
            kind,
            created_at,
            expires_at,
            meta: raw.slice(HEADER_LEN..HEADER_LEN + meta_len),
            body: raw.slice(HEADER_LEN + meta_len..body_end),
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
        }
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
                assert_eq!(Record::decode(&raw), Ok(rec));
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
        assert_eq!(Record::decode(&Bytes::from(rec.encode())), Ok(rec));
    }

    #[test]
    fn layout_is_the_documented_one() {
        let raw = sample().encode();
        assert_eq!(raw[0], 1, "version");
        assert_eq!(raw[1], 1, "kind json");
        assert_eq!(&raw[4..12], &1_700_000_000_123u64.to_le_bytes());
        assert_eq!(&raw[12..20], &1_700_000_060_123u64.to_le_bytes());
        assert_eq!(&raw[20..24], &2u32.to_le_bytes());
        assert_eq!(&raw[28..30], b"1m");
        assert_eq!(&raw[30..raw.len() - 4], br#"{"title":"example"}"#);
    }

    #[test]
    fn every_flipped_byte_is_an_error_not_a_panic() {
        let raw = sample().encode();
        for i in 0..raw.len() {
            for bit in 0..8 {
                let mut bad = raw.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    Record::decode(&Bytes::from(bad)).is_err(),
                    "byte {i} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let raw = sample().encode();
        for n in 0..raw.len() {
            assert!(Record::decode(&Bytes::copy_from_slice(&raw[..n])).is_err());
        }
    }

    #[test]
    fn unknown_version_and_huge_lengths_are_reported() {
        let mut raw = sample().encode();
        raw[0] = 2;
        assert_eq!(
            Record::decode(&Bytes::from(raw)),
            Err(DecodeError::UnknownVersion(2))
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
        let back = Record::decode(&Bytes::from(rec.encode())).unwrap();
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
}
