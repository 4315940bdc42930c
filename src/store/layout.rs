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

/// Where releases before the directory in RAM kept shard `index`'s read
/// mirror (a second LevelDB): removed at start.
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
            write_atomically(&path, &render(wanted)).map_err(|e| StoreError::open(&path, e))?;
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

/// The `--max-disk` default for the data directory `dir`: half of its
/// filesystem's size when the directory was first opened with a budget,
/// recorded in `bigcache.meta` (`max_disk_default=`) so it does not drift
/// as the disk fills or is resized.
pub fn default_max_disk(dir: &Path) -> Result<u64, StoreError> {
    let path = dir.join(META_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| StoreError::open(&path, e))?;
    let recorded = text
        .lines()
        .find_map(|l| l.strip_prefix(MAX_DISK_DEFAULT)?.strip_prefix('='))
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = recorded {
        return Ok(n);
    }
    // Without a figure for the filesystem there is nothing to record: no
    // budget this time, and the next start tries again.
    let Some(space) = fs_space(dir) else {
        return Ok(0);
    };
    let half = space.total / 2;
    let mut text = text;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{MAX_DISK_DEFAULT}={half}\n"));
    write_atomically(&path, &text).map_err(|e| StoreError::open(&path, e))?;
    Ok(half)
}

const MAX_DISK_DEFAULT: &str = "max_disk_default";
const PAGE_SITE: &str = "page_site";

/// The site (`<scheme>://<host>`) whose pages keep bare keys in the data
/// directory `dir` (`proxy::site`): the one recorded in `bigcache.meta`
/// (`page_site=`), or `configured`, recorded now, the first time.
pub fn page_site(dir: &Path, configured: &str) -> Result<String, StoreError> {
    let path = dir.join(META_FILE);
    let mut text = std::fs::read_to_string(&path).map_err(|e| StoreError::open(&path, e))?;
    let recorded = text
        .lines()
        .find_map(|l| l.strip_prefix(PAGE_SITE)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    if let Some(site) = recorded {
        return Ok(site);
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{PAGE_SITE}={configured}\n"));
    write_atomically(&path, &text).map_err(|e| StoreError::open(&path, e))?;
    Ok(configured.to_string())
}

/// Replaces `path` by `text` so that a crash leaves the old file or the new
/// one, never an empty one (the file, then its directory, reach the disk).
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Size and free space of a filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    pub total: u64,
    /// What an unprivileged writer may still use.
    pub available: u64,
}

/// The size and free space of the filesystem holding `dir`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn fs_space(dir: &Path) -> Option<FsSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` is written by the call
    // before it is read (only when it returns 0).
    let st = unsafe {
        if libc::statvfs(c.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    let unit = st.f_frsize as u64;
    Some(FsSpace {
        total: (st.f_blocks as u64).saturating_mul(unit),
        available: (st.f_bavail as u64).saturating_mul(unit),
    })
}

/// Without `statvfs` there is no free-space figure: only `--max-disk`
/// applies.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn fs_space(_dir: &Path) -> Option<FsSpace> {
    None
}

/// Bytes the data directory `dir` occupies: every file under it, a file
/// with several names counted once. Shards moved aside as damaged (`shard-NN.corrupt-<ms>`) are left
/// out: eviction cannot shrink them, and counting them would empty the
/// cache to make up for them. Delete them once inspected.
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                if !e.file_name().to_string_lossy().contains(".corrupt-") {
                    stack.push(e.path());
                }
            } else if m.is_file() && (m.nlink() < 2 || seen.insert((m.dev(), m.ino()))) {
                total += m.len();
            }
        }
    }
    total
}

/// Bytes on disk under a shard's directory: LevelDB's flat
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
    fn the_default_budget_is_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path(), 2).unwrap();
        let first = default_max_disk(dir.path()).unwrap();
        let half = fs_space(dir.path()).map_or(0, |s| s.total / 2);
        assert_eq!(first, half);
        let meta = dir.path().join(META_FILE);
        let text = std::fs::read_to_string(&meta).unwrap();
        assert_eq!(
            text,
            format!("format=1\nshards=2\nmax_disk_default={half}\n")
        );
        // Recorded: a later start reads it back, whatever the disk says.
        std::fs::write(&meta, "format=1\nshards=2\nmax_disk_default=12345\n").unwrap();
        assert_eq!(default_max_disk(dir.path()).unwrap(), 12345);
        assert_eq!(open(dir.path(), 2).unwrap(), 2);
    }

    #[test]
    fn hard_linked_files_count_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/t"), [0u8; 1000]).unwrap();
        std::fs::hard_link(dir.path().join("a/t"), dir.path().join("u")).unwrap();
        std::fs::write(dir.path().join("v"), [0u8; 10]).unwrap();
        assert_eq!(disk_usage(dir.path()), 1010);
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
