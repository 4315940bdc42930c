//! The documentation's links: every relative link in the README, `docs/`
//! and the other Markdown files a reader reaches from them names a file
//! that exists and, with a `#fragment`, a heading that file has (GitHub's
//! anchors). A moved section or a renamed heading fails here rather than
//! leaving a reader at a dead link.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files a reader can reach: the README, `docs/`, and the
/// READMEs beside the code they describe.
fn pages() -> Vec<PathBuf> {
    let root = root();
    let mut pages = vec![
        root.join("README.md"),
        root.join("nginx/README.md"),
        root.join("contrib/django-bigcache/README.md"),
    ];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// GitHub's anchor for a heading: lower case, spaces to hyphens, every
/// character but letters, digits, `-` and `_` dropped; a repeated heading
/// gets `-1`, `-2`, ...
fn slug(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

struct Page {
    anchors: BTreeSet<String>,
    /// Link targets with the line they are on.
    links: Vec<(String, usize)>,
}

fn read(path: &Path) -> Page {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
    let mut anchors = BTreeSet::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut links = Vec::new();
    let mut heading: Option<String> = None;
    for (event, range) in Parser::new_ext(&text, Options::all()).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => {
                let base = slug(&heading.take().unwrap_or_default());
                let n = seen.entry(base.clone()).or_insert(0);
                anchors.insert(match *n {
                    0 => base.clone(),
                    n => format!("{base}-{n}"),
                });
                *n += 1;
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::Start(Tag::Link { dest_url, .. }) => {
                links.push((dest_url.to_string(), line_of(range.start)));
            }
            _ => {}
        }
    }
    Page { anchors, links }
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    let mut cache: HashMap<PathBuf, Page> = HashMap::new();
    for page in pages() {
        let here = read(&page);
        for (link, line) in &here.links {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, fragment) = match link.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (link.as_str(), None),
            };
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().expect("a page's directory").join(file)
            };
            let shown = format!(
                "{}:{line}: {link}",
                page.strip_prefix(root()).unwrap_or(&page).display()
            );
            if !target.exists() {
                broken.push(format!("{shown} (no such file)"));
                continue;
            }
            let Some(fragment) = fragment else { continue };
            if target.extension().is_none_or(|x| x != "md") {
                broken.push(format!(
                    "{shown} (an anchor into a file that is not Markdown)"
                ));
                continue;
            }
            let target = target.canonicalize().expect("an existing file");
            let anchors = &cache
                .entry(target.clone())
                .or_insert_with(|| read(&target))
                .anchors;
            if !anchors.contains(fragment) {
                broken.push(format!("{shown} (no heading with that anchor)"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked > 20,
        "only {checked} links found: is the parser reading the pages?"
    );
}

#[test]
fn every_page_in_docs_is_linked_from_the_readme() {
    let readme = read(&root().join("README.md"));
    let linked: BTreeSet<String> = readme
        .links
        .iter()
        .filter_map(|(l, _)| l.strip_prefix("docs/"))
        .map(|l| l.split('#').next().unwrap_or(l).to_string())
        .collect();
    let missing: Vec<String> = pages()
        .iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("docs")))
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .filter(|name| !linked.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/ pages the README does not link: {missing:?}"
    );
}

#[test]
fn anchors_are_spelt_as_github_spells_them() {
    assert_eq!(slug("How it stores data"), "how-it-stores-data");
    assert_eq!(
        slug("`X-Cache` and `Cache-Status`"),
        "x-cache-and-cache-status"
    );
    assert_eq!(
        slug("Reads: without the shard (thread)"),
        "reads-without-the-shard-thread"
    );
}

/// The REST operations `docs/rest-api.md`'s table lists, as `(method,
/// path)` with path parameters spelt `{...}`: a row's `` `GET /keys?...` ``
/// and its "(or `HEAD`)" / "(or DELETE)" alternatives.
fn documented_operations() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(root().join("docs/rest-api.md")).expect("docs/rest-api.md");
    let mut ops = BTreeSet::new();
    // The first table: the endpoints (later tables hold examples).
    let table = text
        .lines()
        .skip_while(|l| !l.starts_with("| method"))
        .take_while(|l| l.starts_with('|'));
    for row in table.filter(|l| l.starts_with("| `")) {
        let first = row.trim_start_matches("| `");
        let Some((op, rest)) = first.split_once('`') else {
            continue;
        };
        let Some((method, path)) = op.split_once(' ') else {
            continue;
        };
        let path = path.split('?').next().unwrap_or(path).to_string();
        ops.insert((method.to_lowercase(), path.clone()));
        let cell = rest.split('|').next().unwrap_or("");
        for alt in ["GET", "HEAD", "POST", "DELETE", "PATCH"] {
            if cell.contains(&format!("(or `{alt}`)")) || cell.contains(&format!("(or {alt})")) {
                ops.insert((alt.to_lowercase(), path.clone()));
            }
        }
    }
    ops
}

/// The REST API's three descriptions agree: every operation in the docs'
/// table is in `/openapi.json` and the other way round, and the server
/// routes each (its answer is the handler's, not the router's 404 or 405).
#[tokio::test]
async fn the_rest_docs_the_openapi_document_and_the_server_agree() {
    let (_d, s) = crate::util::start(&[]);
    let client = crate::util::client();
    let (status, doc) = crate::util::get_json(&s, "/openapi.json").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let mut openapi = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            openapi.insert((method.clone(), path.clone()));
        }
    }
    // HEAD is answered wherever GET is (axum); the docs name it where it
    // means something, OpenAPI leaves it implied.
    let documented: BTreeSet<_> = documented_operations()
        .into_iter()
        .filter(|(m, _)| m != "head")
        .collect();
    let only_docs: Vec<_> = documented.difference(&openapi).collect();
    let only_openapi: Vec<_> = openapi.difference(&documented).collect();
    assert!(
        only_docs.is_empty() && only_openapi.is_empty(),
        "in docs/rest-api.md only: {only_docs:?}\nin /openapi.json only: {only_openapi:?}"
    );
    assert!(openapi.len() >= 20, "{openapi:?}");
    for (method, path) in &openapi {
        let url = s.url(
            &path
                .replace("{key}", "k")
                .replace("{prefix}", "p")
                .replace("{tag}", "t"),
        );
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut req = client.request(method.clone(), url);
        if method == reqwest::Method::POST || method == reqwest::Method::PATCH {
            req = req.header("Content-Type", "application/json").body("{}");
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_ne!(
            status,
            reqwest::StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert!(
            !(status == reqwest::StatusCode::NOT_FOUND && body.contains("\"Not Found\"")),
            "{method} {path}: the router has no such route"
        );
    }
}

/// Every metric family `/metrics` serves (with the access log on, so its
/// own counter is there too) is described in `docs/operating.md`, and
/// every `bigcache_*` name the docs describe is served; every reason the
/// proxy counts is in `docs/proxy.md`'s list, and the list names no other.
#[tokio::test]
async fn the_metric_and_reason_lists_in_the_docs_are_the_servers() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (_d, s) = crate::util::start(&["--access-log", log.to_str().unwrap()]);
    let text = crate::util::client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let reasons: BTreeSet<String> = text
        .lines()
        .filter(|l| l.starts_with("bigcache_proxy_not_cached_total{"))
        .filter_map(|l| {
            l.split("reason=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .collect();
    assert!(
        served.len() > 30 && reasons.len() > 20,
        "{served:?} {reasons:?}"
    );

    let operating = std::fs::read_to_string(root().join("docs/operating.md")).unwrap();
    let named = |doc: &str, prefix: &str| -> BTreeSet<String> {
        doc.split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| w.starts_with(prefix))
            .map(|w| w.split(['{', ' ']).next().unwrap_or(w).to_string())
            .collect()
    };
    let documented = named(&operating, "bigcache_");
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in docs/operating.md: {undocumented:?}\nin the docs but not served: {unserved:?}"
    );

    let proxy = std::fs::read_to_string(root().join("docs/proxy.md")).unwrap();
    let list = proxy
        .split("the reason (")
        .nth(1)
        .and_then(|rest| rest.split(") come from one decision").next())
        .expect("docs/proxy.md's reason list");
    let listed: BTreeSet<String> = named(list, "");
    assert_eq!(
        listed, reasons,
        "docs/proxy.md's reasons against the server's"
    );
}
