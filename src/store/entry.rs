//! Blob entries: the byte layout of what blob files hold (specified in
//! `docs/format.md`, "Blob files").
//!
//! An entry is a header (key length, stored length, CRC-32), the key of the
//! record that owns it, and its stored bytes. In a format-1 file the stored
//! bytes are the body alone; its record (headers, lifetime) is only in
//! LevelDB. In a format-2 file they start with the record itself, so one
//! read of the entry answers a lookup with no LevelDB read at all
//! ([`Section`]): the directory (`store::directory`) says where the entry
//! is, the key in it says whose it is.

use bytes::Bytes;

use super::record::{Codec, DecodeError, Record};

/// The magic and version at the start of every blob file this release
/// writes: entries carry their record.
pub const FILE_MAGIC: [u8; 8] = *b"bcblob\0\x02";
/// Files written by releases whose entries held only the body.
pub const FILE_MAGIC_V1: [u8; 8] = *b"bcblob\0\x01";
/// Fixed part of an entry: key length, stored length, CRC-32.
pub const ENTRY_HEADER: usize = 12;
/// Fixed part of a format-2 section: record length, then after the
/// record the codec and the body length.
const SECTION_FIXED: usize = 4 + 1 + 4;

/// A blob file's format, from its magic.
pub fn file_version(magic: &[u8; 8]) -> Option<u8> {
    match *magic {
        FILE_MAGIC => Some(2),
        FILE_MAGIC_V1 => Some(1),
        _ => None,
    }
}

/// A blob entry's bytes: header, key, stored bytes.
#[cfg(test)]
pub fn encode(key: &[u8], stored: &[&[u8]]) -> Vec<u8> {
    let mut out = head(key, stored);
    for part in stored {
        out.extend_from_slice(part);
    }
    out
}

/// An entry's header and key, which the stored bytes (given in parts)
/// follow: written beside them in one vectored write, so a body is not
/// copied first.
pub fn head(key: &[u8], stored: &[&[u8]]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(key);
    let mut len = 0;
    for part in stored {
        crc.update(part);
        len += part.len();
    }
    let mut out = Vec::with_capacity(ENTRY_HEADER + key.len());
    // Lengths fit: keys are capped far below, bodies by `--max-body-size`.
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(key);
    out
}

/// The fixed header of an entry: (key length, stored length, CRC-32).
pub fn decode_header(h: &[u8; ENTRY_HEADER]) -> (usize, usize, u32) {
    let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    (u32_at(0) as usize, u32_at(4) as usize, u32_at(8))
}

/// Checks a whole entry (header, key, stored bytes) against the key
/// expected to own it; returns where its stored bytes start. An entry of
/// another key is [`DecodeError::BadBlobRef`]: a page is never served for
/// another key.
pub fn check(entry: &[u8], key: &[u8]) -> Result<usize, DecodeError> {
    let Some(header) = entry.first_chunk::<ENTRY_HEADER>() else {
        return Err(DecodeError::TooShort(entry.len()));
    };
    let (k, s, crc) = decode_header(header);
    let rest = &entry[ENTRY_HEADER..];
    if k != key.len() || rest.len() != k + s || &rest[..k] != key {
        return Err(DecodeError::BadBlobRef);
    }
    let mut h = crc32fast::Hasher::new();
    h.update(rest);
    if h.finalize() != crc {
        return Err(DecodeError::Checksum);
    }
    Ok(ENTRY_HEADER + k)
}

/// The start of a format-2 entry's stored bytes, before the stored body:
/// the record (encoded with an empty body), how the body is stored and its
/// length.
pub fn section_head(record: &Record, codec: Codec, body_len: u32) -> Vec<u8> {
    let rec = record.encode_head();
    let mut out = Vec::with_capacity(rec.len() + SECTION_FIXED);
    out.extend_from_slice(&(rec.len() as u32).to_le_bytes());
    out.extend_from_slice(&rec);
    out.push(codec as u8);
    out.extend_from_slice(&body_len.to_le_bytes());
    out
}

/// A format-2 entry's stored bytes, taken apart.
#[derive(Debug)]
pub struct Section {
    /// The record, its body empty.
    pub record: Record,
    pub codec: Codec,
    pub body_len: u32,
    /// The stored (possibly compressed) body.
    pub stored: Bytes,
}

impl Section {
    /// Takes apart `stored`, the stored bytes of a format-2 entry.
    pub fn decode(stored: Bytes) -> Result<Section, DecodeError> {
        let bad = DecodeError::BadBlobRef;
        let m = stored.first_chunk::<4>().ok_or(bad)?;
        let m = u32::from_le_bytes(*m) as usize;
        let fixed_end = 4usize
            .checked_add(m)
            .and_then(|e| e.checked_add(5))
            .ok_or(DecodeError::BadBlobRef)?;
        if stored.len() < fixed_end {
            return Err(DecodeError::BadBlobRef);
        }
        let decoded = Record::decode(&stored.slice(4..4 + m))?;
        if decoded.blob.is_some() || !decoded.record.body.is_empty() {
            return Err(DecodeError::BadBlobRef);
        }
        let codec = Codec::from_u8(stored[4 + m]).ok_or(DecodeError::BadBlobRef)?;
        let mut len = [0u8; 4];
        len.copy_from_slice(&stored[5 + m..fixed_end]);
        Ok(Section {
            record: decoded.record,
            codec,
            body_len: u32::from_le_bytes(len),
            stored: stored.slice(fixed_end..),
        })
    }
}

/// The body from its stored bytes, checked to decompress to `body_len`.
pub fn decode_body(codec: Codec, stored: &[u8], body_len: u32) -> Option<Vec<u8>> {
    let body = match codec {
        Codec::None => stored.to_vec(),
        Codec::Snappy => match snap::raw::decompress_len(stored) {
            Ok(n) if n == body_len as usize => {
                snap::raw::Decoder::new().decompress_vec(stored).ok()?
            }
            _ => return None,
        },
        Codec::Lz4 => lz4_flex::block::decompress(stored, body_len as usize).ok()?,
    };
    (body.len() == body_len as usize).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::Kind;

    #[test]
    fn entries_check_their_owner_and_checksum() {
        let entry = encode(b"p/a", &[b"stored ", b"body"]);
        assert_eq!(entry.len(), ENTRY_HEADER + 3 + 11);
        assert_eq!(check(&entry, b"p/a"), Ok(ENTRY_HEADER + 3));
        assert_eq!(&entry[ENTRY_HEADER + 3..], b"stored body");
        assert_eq!(
            check(&entry, b"p/b"),
            Err(DecodeError::BadBlobRef),
            "an entry is never served for another key"
        );
        for i in 0..entry.len() {
            let mut bad = entry.clone();
            bad[i] ^= 0x01;
            assert!(check(&bad, b"p/a").is_err(), "byte {i}");
        }
        for n in 0..entry.len() {
            assert!(check(&entry[..n], b"p/a").is_err());
        }
    }

    fn page() -> Record {
        Record {
            kind: Kind::Http,
            created_at: 1_700_000_000_000,
            expires_at: Some(1_700_000_060_000),
            meta: Bytes::from_static(b"headers"),
            body: Bytes::from_static(b"the body is not in the head"),
            tags: Default::default(),
            stale_since: None,
            memo: Default::default(),
        }
    }

    #[test]
    fn a_section_carries_the_record_and_the_stored_body() {
        let body = vec![b'a'; 3_000];
        let stored = lz4_flex::block::compress(&body);
        let mut section = section_head(&page(), Codec::Lz4, body.len() as u32);
        let head_len = section.len();
        section.extend_from_slice(&stored);
        assert_eq!(&section[..4], &((head_len - 9) as u32).to_le_bytes());
        let s = Section::decode(Bytes::from(section)).unwrap();
        assert_eq!(s.record.expires_at, page().expires_at);
        assert_eq!(s.record.meta, page().meta);
        assert!(s.record.body.is_empty());
        assert_eq!(s.codec, Codec::Lz4);
        assert_eq!(s.body_len, 3_000);
        assert_eq!(decode_body(s.codec, &s.stored, s.body_len), Some(body));
        assert_eq!(decode_body(s.codec, &s.stored, 2_999), None);
    }

    /// A section is only read from an entry whose checksum held, so this
    /// is the second line: any damage or truncation of its own fields is
    /// an error, never a panic or a record taken from the body's bytes.
    #[test]
    fn every_damaged_section_is_an_error_not_a_panic() {
        let mut section = section_head(&page(), Codec::None, 4);
        let fixed = section.len();
        section.extend_from_slice(b"body");
        for n in 0..fixed {
            assert!(
                Section::decode(Bytes::copy_from_slice(&section[..n])).is_err(),
                "cut at {n}"
            );
        }
        for i in 0..fixed {
            let mut bad = section.clone();
            bad[i] ^= 0x40;
            if let Ok(s) = Section::decode(Bytes::from(bad)) {
                // Only the codec or length may change and still parse;
                // the body then fails to decode to its length.
                assert!(i >= fixed - 5, "byte {i} accepted");
                assert!(decode_body(s.codec, &s.stored, s.body_len).is_none() || s.body_len == 4);
            }
        }
        let mut huge = section.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Section::decode(Bytes::from(huge)).is_err());
    }
}
