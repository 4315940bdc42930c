//! Measures the codings a stored text page could be kept in, on real
//! files: bytes against the identity body, and single-core compression and
//! decompression speed. LZ4 is what the store writes today; gzip, brotli
//! and zstd are what a browser accepts.
//!
//! `cargo run --release --example codings -- <file or directory>...`
//! (`bench/run.sh codings` runs it on the HTML of Debian's python3-doc and
//! on the bench origin's pages).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

type Codec = (
    &'static str,
    fn(&[u8]) -> Vec<u8>,
    fn(&[u8], usize) -> Vec<u8>,
);

fn gzip(level: u32, b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(b).expect("writing to a Vec");
    e.finish().expect("writing to a Vec")
}

fn gunzip(b: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .expect("our own gzip");
    out
}

fn brotli(quality: i32, b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams {
        quality,
        lgwin: 22,
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &b[..], &mut out, &params).expect("writing to a Vec");
    out
}

fn unbrotli(b: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    brotli::BrotliDecompress(&mut &b[..], &mut out).expect("our own brotli");
    out
}

fn zstd_at(level: i32, b: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(b, level).expect("zstd")
}

fn unzstd(b: &[u8], len: usize) -> Vec<u8> {
    zstd::bulk::decompress(b, len).expect("our own zstd")
}

fn files(paths: &[PathBuf], out: &mut Vec<Vec<u8>>) {
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            entries.sort();
            files(&entries, out);
        } else if is_text(p)
            && let Ok(b) = std::fs::read(p)
        {
            out.push(b);
        }
    }
}

fn is_text(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("html" | "htm" | "css" | "js" | "json" | "xml" | "svg" | "txt")
    )
}

fn main() {
    let paths: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    let mut pages = Vec::new();
    files(&paths, &mut pages);
    if pages.is_empty() {
        eprintln!(
            "usage: codings <file or directory>... (text files: html, css, js, json, xml, svg, txt)"
        );
        std::process::exit(2);
    }
    let raw: usize = pages.iter().map(Vec::len).sum();
    println!(
        "{} files, {} bytes, {} bytes on average",
        pages.len(),
        raw,
        raw / pages.len()
    );
    let codecs: [Codec; 9] = [
        (
            "lz4 (stored today)",
            |b| lz4_flex::block::compress(b),
            |b, n| lz4_flex::block::decompress(b, n).expect("our own lz4"),
        ),
        ("gzip 1", |b| gzip(1, b), gunzip),
        ("gzip 6", |b| gzip(6, b), gunzip),
        ("gzip 9", |b| gzip(9, b), gunzip),
        ("brotli 5", |b| brotli(5, b), unbrotli),
        ("brotli 9", |b| brotli(9, b), unbrotli),
        ("brotli 11", |b| brotli(11, b), unbrotli),
        ("zstd 3", |b| zstd_at(3, b), unzstd),
        ("zstd 19", |b| zstd_at(19, b), unzstd),
    ];
    println!(
        "{:<20} {:>12} {:>7} {:>16} {:>16}",
        "coding", "bytes", "ratio", "compress MB/s", "decompress MB/s"
    );
    for (name, enc, dec) in codecs {
        let t = Instant::now();
        let packed: Vec<Vec<u8>> = pages.iter().map(|p| enc(p)).collect();
        let c = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (p, z) in pages.iter().zip(&packed) {
            assert_eq!(dec(z, p.len()).len(), p.len(), "{name} round trip");
        }
        let d = t.elapsed().as_secs_f64();
        let bytes: usize = packed.iter().map(Vec::len).sum();
        let mb = raw as f64 / 1e6;
        println!(
            "{:<20} {:>12} {:>7.3} {:>16.0} {:>16.0}",
            name,
            bytes,
            bytes as f64 / raw as f64,
            mb / c,
            mb / d
        );
    }
}
