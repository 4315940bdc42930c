//! The storage layer's errors. The REST API maps them to statuses in
//! `api::error`; the proxy treats any of them as "serve uncached".

use std::io;
use std::path::PathBuf;

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory or a shard in it could not be opened.
    #[error("opening {path}: {kind}")]
    Open { path: PathBuf, kind: OpenError },
    #[error("LevelDB: {0}")]
    Db(#[from] rusty_leveldb::Status),
    #[error("store I/O: {0}")]
    Io(#[from] io::Error),
    /// The shard thread is gone or dropped the request (it panicked).
    #[error("store unavailable")]
    Unavailable,
    /// The write backlog stayed full (`store::backlog`): the disk is
    /// behind, and the write was not taken. It may succeed later.
    #[error("store busy: the disk is behind on writes; try again shortly")]
    Busy,
}

/// Why opening failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("locked ({0}); is another bigcache using this data directory?")]
    Locked(String),
    #[error("LevelDB: {0}")]
    Db(rusty_leveldb::Status),
    #[error("rusty-leveldb panicked on an empty database")]
    Panicked,
    #[error("{0}")]
    Layout(#[from] LayoutError),
}

/// What is wrong with a data directory's `bigcache.meta` (docs/format.md,
/// "Data directory").
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error(
        "data directory format {found:?} is not one this bigcache reads \
         (it reads format {reads}); was it written by a newer release?"
    )]
    UnknownFormat { found: String, reads: u32 },
    #[error("no `format=` line")]
    NoFormat,
    #[error("no valid `shards=` line (1 to {max})")]
    BadShards { max: usize },
}

impl StoreError {
    pub(crate) fn open(path: impl Into<PathBuf>, kind: impl Into<OpenError>) -> StoreError {
        StoreError::Open {
            path: path.into(),
            kind: kind.into(),
        }
    }

    /// Whether the disk (or a quota) is full: the write may succeed later.
    pub fn is_disk_full(&self) -> bool {
        // rusty-leveldb folds I/O errors into an `IOError` status that keeps
        // only the message, so its "no space" is recognised by the text.
        let leveldb_full = |s: &rusty_leveldb::Status| {
            s.code == rusty_leveldb::StatusCode::IOError
                && (s.err.contains("os error 28") || s.err.contains("os error 122"))
        };
        match self {
            StoreError::Io(e) => e.kind() == io::ErrorKind::StorageFull,
            StoreError::Db(s) => leveldb_full(s),
            StoreError::Open { kind, .. } => match kind {
                OpenError::Io(e) => e.kind() == io::ErrorKind::StorageFull,
                OpenError::Db(s) => leveldb_full(s),
                _ => false,
            },
            StoreError::Unavailable | StoreError::Busy => false,
        }
    }
}
