//! The pages a run warms: sitemaps (a `urlset`, or a `sitemapindex` of
//! them) and files of paths, read within bounds, and what is left out.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};

use super::{HttpClient, WarmError, client, shown};
use crate::server::socket::Dial;

/// Most sitemaps one run follows, and the most pages it takes: Django's
/// sitemaps hold at most 50,000 URLs each.
const MAX_SITEMAPS: usize = 1000;
const MAX_PAGES: usize = 10_000_000;
/// Largest sitemap read (sitemaps.org's limit, uncompressed).
const MAX_SITEMAP_BYTES: usize = 50 << 20;
/// One page to request: its path and query, and the host its URL named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub target: String,
    pub host: Option<String>,
}

impl Page {
    fn from_text(text: &str) -> Result<Page, WarmError> {
        let bad = || WarmError::Target(shown(text));
        if text.starts_with('/') {
            return Ok(Page {
                target: text.to_string(),
                host: None,
            });
        }
        let uri: Uri = text.parse().map_err(|_| bad())?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(bad());
        }
        let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        Ok(Page {
            target,
            host: uri.authority().map(|a| a.as_str().to_ascii_lowercase()),
        })
    }
}

/// Reads a source, at most [`MAX_SITEMAP_BYTES`]: a URL is fetched,
/// anything else is a file.
async fn read_source(
    http: &HttpClient,
    source: &str,
    timeout: Duration,
) -> Result<Vec<u8>, WarmError> {
    let name = shown(source);
    if is_url(source) {
        let uri: Uri = source
            .parse()
            .map_err(|_| WarmError::Target(name.clone()))?;
        if uri
            .scheme_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"))
        {
            return Err(WarmError::Fetch(
                name,
                "https is not supported; fetch the sitemap from Django's or bigcache's http address".into(),
            ));
        }
        let req = Request::get(uri)
            .body(Empty::new())
            .map_err(|e| WarmError::Fetch(name.clone(), e.to_string()))?;
        let fetched = tokio::time::timeout(timeout, async {
            let res = http.request(req).await.map_err(|e| e.to_string())?;
            if !res.status().is_success() {
                return Err(format!("HTTP {}", res.status()));
            }
            let body = http_body_util::Limited::new(res.into_body(), MAX_SITEMAP_BYTES);
            let body = body.collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("larger than {MAX_SITEMAP_BYTES} bytes")
                } else {
                    e.to_string()
                }
            })?;
            Ok(body.to_bytes().to_vec())
        })
        .await
        .map_err(|_| "timed out".to_string());
        return fetched
            .and_then(|r| r)
            .map_err(|e| WarmError::Fetch(name, e));
    }
    // A sitemap file is small; read it on this thread.
    let path = PathBuf::from(source);
    let len = std::fs::metadata(&path)
        .map_err(|e| WarmError::Read(name.clone(), e))?
        .len();
    if len > MAX_SITEMAP_BYTES as u64 {
        return Err(WarmError::Fetch(
            name,
            format!("larger than {MAX_SITEMAP_BYTES} bytes"),
        ));
    }
    std::fs::read(path).map_err(|e| WarmError::Read(name, e))
}

/// Whether a source is a URL: any spelling of `http://` or `https://`, as
/// `Uri` reads the scheme (`HTTP://host/` is never a file's name).
fn is_url(source: &str) -> bool {
    let scheme_is = |s: &str| {
        source
            .get(..s.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(s))
    };
    scheme_is("http://") || scheme_is("https://")
}

/// The scheme and host of a source that is a URL (`None` for a file).
fn origin_of(source: &str) -> Option<String> {
    let uri: Uri = source.parse().ok()?;
    Some(format!(
        "{}://{}",
        uri.scheme_str()?,
        uri.authority()?.as_str().to_ascii_lowercase()
    ))
}

/// What a sitemap document lists: page URLs (`urlset`) or more sitemaps
/// (`sitemapindex`).
#[derive(Debug, PartialEq, Eq)]
pub enum Listed {
    Pages(Vec<String>),
    Sitemaps(Vec<String>),
}

/// Parses a sitemap (sitemaps.org 0.9): the text of every `<loc>`, and
/// whether the root is an index.
pub fn parse_sitemap(xml: &[u8]) -> Result<Listed, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut index = None;
    let mut in_loc = false;
    let mut locs = Vec::new();
    let mut buf = Vec::new();
    loop {
        match reader
            .read_event_into(&mut buf)
            .map_err(|e| e.to_string())?
        {
            Event::Start(e) => {
                let name = e.local_name();
                let name = name.as_ref();
                if index.is_none() {
                    index = match name {
                        b"urlset" => Some(false),
                        b"sitemapindex" => Some(true),
                        other => {
                            return Err(format!(
                                "the root is <{}>, not <urlset> or <sitemapindex>",
                                shown(&String::from_utf8_lossy(other))
                            ));
                        }
                    };
                }
                in_loc = name == b"loc";
            }
            Event::Text(t) if in_loc => {
                let text = t.unescape().map_err(|e| e.to_string())?;
                locs.push(text.trim().to_string());
            }
            Event::CData(t) if in_loc => {
                locs.push(String::from_utf8_lossy(&t).trim().to_string());
            }
            Event::End(_) => in_loc = false,
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    match index {
        Some(true) => Ok(Listed::Sitemaps(locs)),
        Some(false) => Ok(Listed::Pages(locs)),
        None => Err("empty document".into()),
    }
}

/// Every page the sources name, in order, each once; and what was left
/// out, as (what, why). A sitemap index is followed only to sitemaps on
/// its own scheme and host (never to a file); a sitemap's page URLs are
/// taken only on its own host or the site's (`site_host`). A file's lines
/// are the operator's own: taken as they are.
pub async fn collect_pages(
    sources: &[String],
    site_host: &str,
    timeout: Duration,
) -> Result<(Vec<Page>, Vec<(String, &'static str)>), WarmError> {
    let http = client(Dial::tcp());
    let mut pages = Vec::new();
    let mut left_out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut queue: VecDeque<String> = sources.iter().cloned().collect();
    let mut sitemaps = 0;
    while let Some(source) = queue.pop_front() {
        let text = read_source(&http, &source, timeout).await?;
        let origin = origin_of(&source);
        let is_xml = text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<');
        let listed = if is_xml {
            sitemaps += 1;
            if sitemaps > MAX_SITEMAPS {
                return Err(WarmError::Xml(
                    shown(&source),
                    format!("more than {MAX_SITEMAPS} sitemaps"),
                ));
            }
            parse_sitemap(&text).map_err(|e| WarmError::Xml(shown(&source), e))?
        } else {
            let lines = String::from_utf8_lossy(&text);
            Listed::Pages(
                lines
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
                    .collect(),
            )
        };
        match listed {
            Listed::Sitemaps(more) => {
                for loc in more {
                    if origin.is_some() && origin_of(&loc) == origin {
                        queue.push_back(loc);
                    } else {
                        left_out.push((shown(&loc), "a sitemap not on the index's own host"));
                    }
                }
            }
            Listed::Pages(locs) => {
                for loc in locs {
                    let Ok(page) = Page::from_text(&loc) else {
                        left_out.push((shown(&loc), "not a URL or path bigcache can request"));
                        continue;
                    };
                    let own = |h: &String| {
                        *h == site_host
                            || origin
                                .as_deref()
                                .is_some_and(|o| o.ends_with(&format!("://{h}")))
                    };
                    if is_xml && page.host.as_ref().is_some_and(|h| !own(h)) {
                        left_out.push((
                            shown(&loc),
                            "on another host than the sitemap's or the site's",
                        ));
                        continue;
                    }
                    if seen.insert(page.target.clone()) {
                        pages.push(page);
                    }
                    if pages.len() > MAX_PAGES {
                        return Err(WarmError::Xml(
                            shown(&source),
                            format!("more than {MAX_PAGES} pages"),
                        ));
                    }
                }
            }
        }
    }
    Ok((pages, left_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_in_any_case_is_a_url_and_keeps_its_origin() {
        for url in ["http://h/s.xml", "HTTP://h/s.xml", "Https://h/s.xml"] {
            assert!(is_url(url), "{url}");
        }
        for file in ["sitemap.xml", "/etc/passwd", "http:/x", "ht"] {
            assert!(!is_url(file), "{file}");
        }
        assert_eq!(
            origin_of("HTTP://H:8000/x").as_deref(),
            Some("http://h:8000")
        );
        assert_eq!(origin_of("/etc/passwd"), None);
    }

    #[test]
    fn sitemaps_and_indexes_as_django_writes_them() {
        let urlset = br#"<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" xmlns:xhtml="http://www.w3.org/1999/xhtml">
<url><loc>https://www.example.org/dataset/1/</loc><lastmod>2026-11-30</lastmod></url>
<url><loc>https://www.example.org/datasets/?page=2&amp;sort=name</loc></url>
</urlset>"#;
        assert_eq!(
            parse_sitemap(urlset).unwrap(),
            Listed::Pages(vec![
                "https://www.example.org/dataset/1/".into(),
                "https://www.example.org/datasets/?page=2&sort=name".into()
            ])
        );
        let index = br#"<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
<sitemap><loc>http://localhost/sitemap-datasets.xml?p=2</loc></sitemap></sitemapindex>"#;
        assert_eq!(
            parse_sitemap(index).unwrap(),
            Listed::Sitemaps(vec!["http://localhost/sitemap-datasets.xml?p=2".into()])
        );
        assert!(parse_sitemap(b"<html><body>no</body></html>").is_err());
        assert!(
            parse_sitemap(b"<urlset><url><loc>x</loc>")
                .is_ok_and(|l| l == Listed::Pages(vec!["x".into()]))
        );
    }

    #[test]
    fn page_targets_keep_path_query_and_host() {
        let p = Page::from_text("https://WWW.example.org/a/?b=1").unwrap();
        assert_eq!(
            (p.target.as_str(), p.host.as_deref()),
            ("/a/?b=1", Some("www.example.org"))
        );
        let p = Page::from_text("/only/path").unwrap();
        assert_eq!((p.target.as_str(), p.host), ("/only/path", None));
        assert!(Page::from_text("ftp://x/").is_err());
        assert!(Page::from_text("dataset/1").is_err());
        let long = format!("ftp://{}\n", "x".repeat(500));
        let e = Page::from_text(&long).unwrap_err().to_string();
        assert!(e.len() < 160 && !e.contains('\n'), "{e}");
    }
}
