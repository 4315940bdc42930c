//! The data directory: where each shard's files live, and `bigcache.meta`,
//! which records the format and the shard count (docs/format.md, "Data
//! directory"). Startup refuses a directory whose format it does not know,
//! rather than reading it as something it is not.

use std::path::{Path, PathBuf};

use super::error::{LayoutError, StoreError};

const META_FILE: &str = "bigcache.meta";
/// The data-directory format this release writes and reads.
pub const DIR_FORMAT: u32 = 1;
/// Shard counts a directory may record.
pub const SHARDS: std::ops::RangeInclusive<usize> = 1..=256;
const BLOBS_DIR: &str = "blobs";

/// Where shard `index` keeps its LevelDB files.
pub fn shard_dir(data: &Path, index: usize) -> PathBuf {
    data.join(format!("shard-{index:02}"))
}

/// Where shard `index`'s read mirror keeps its copy of them.
pub fn mirror_dir(data: &Path, index: usize) -> PathBuf {
    data.join(format!("mirror-{index:02}"))
}

/// A shard's blob files.
pub fn blobs_dir(shard_dir: &Path) -> PathBuf {
    shard_dir.join(BLOBS_DIR)
}

/// Reads the layout of the data directory `dir`, or records `wanted`
/// shards in a new one; returns the shard count to use.
pub fn open(dir: &Path, wanted: usize) -> Result<usize, StoreError> {
    let path = dir.join(META_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let n = parse(&text).map_err(|e| StoreError::open(&path, e))?;
            if n != wanted {
                tracing::info!(
                    existing = n,
                    requested = wanted,
                    "data directory keeps its shard count"
                );
            }
            Ok(n)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, render(wanted)).map_err(|e| StoreError::open(&path, e))?;
            Ok(wanted)
        }
        Err(e) => Err(StoreError::open(&path, e)),
    }
}

fn render(shards: usize) -> String {
    format!("format={DIR_FORMAT}\nshards={shards}\n")
}

/// The shard count of a `bigcache.meta`, once its format is known good.
fn parse(text: &str) -> Result<usize, LayoutError> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(str::trim)
    };
    match field("format") {
        Some(f) if f.parse() == Ok(DIR_FORMAT) => {}
        Some(f) => {
            return Err(LayoutError::UnknownFormat {
                found: f.to_string(),
                reads: DIR_FORMAT,
            });
        }
        None => return Err(LayoutError::NoFormat),
    }
    field("shards")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| SHARDS.contains(n))
        .ok_or(LayoutError::BadShards { max: *SHARDS.end() })
}

/// Bytes on disk under a shard's (or mirror's) directory: LevelDB's flat
/// files plus the blob files.
pub fn dir_size(dir: &Path) -> u64 {
    fn flat(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
    flat(dir) + flat(&blobs_dir(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_records_its_format_and_keeps_its_shard_count() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(open(dir.path(), 4).unwrap(), 4);
        assert_eq!(open(dir.path(), 8).unwrap(), 4);
        let text = std::fs::read_to_string(dir.path().join(META_FILE)).unwrap();
        assert_eq!(text, "format=1\nshards=4\n");
    }

    #[test]
    fn an_unknown_format_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(META_FILE), "format=2\nshards=4\n").unwrap();
        let e = open(dir.path(), 4).unwrap_err().to_string();
        assert!(
            e.contains("format \"2\"") && e.contains("newer release"),
            "{e}"
        );
        std::fs::write(dir.path().join(META_FILE), "shards=4\n").unwrap();
        let e = open(dir.path(), 4).unwrap_err().to_string();
        assert!(e.contains("no `format=` line"), "{e}");
        assert_eq!(
            parse("format=1\nshards=0\n"),
            Err(LayoutError::BadShards { max: 256 })
        );
        assert_eq!(parse("format=1\nshards=12\n"), Ok(12));
    }
}
