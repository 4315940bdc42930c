//! The part of ESI 1.0 (<https://www.w3.org/TR/esi-lang/>) bigcache reads:
//! `<esi:include src alt onerror/>`, `<esi:remove>…</esi:remove>`,
//! `<esi:comment …/>` and `<!--esi … -->`. Any other `esi:` element is an
//! error, not text: a page that relies on `<esi:choose>` must not reach a
//! browser with its markup showing.

use memchr::memmem;

/// A page cut at its includes: its text as ranges of the page's bytes, so
/// a parse is kept with a stored page and its pieces are slices of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(std::ops::Range<usize>),
    Include(Include),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// The target to fetch: a path on this site, checked by [`target`].
    pub src: String,
    /// Tried when `src` fails.
    pub alt: Option<String>,
    /// `onerror="continue"`: a failure of both leaves nothing in its place
    /// instead of failing the page.
    pub continue_on_error: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unclosed {0} at byte {1}")]
    Unclosed(&'static str, usize),
    #[error("unsupported ESI element <esi:{0}> at byte {1}")]
    Unsupported(String, usize),
    #[error("include at byte {0} has no src")]
    NoSrc(usize),
    #[error("include at byte {at}: {why}")]
    BadTarget { at: usize, why: &'static str },
}

/// `body` cut into text and includes, or why it cannot be.
pub fn parse(body: &[u8]) -> Result<Vec<Piece>, ParseError> {
    let mut out = Vec::new();
    pieces(body, 0, true, &mut out)?;
    Ok(out)
}

/// Whether `body` holds any ESI markup at all (a page that opted in but
/// uses none is sent as stored).
pub fn has_markup(body: &[u8]) -> bool {
    memmem::find(body, b"<esi:").is_some() || memmem::find(body, b"<!--esi").is_some()
}

fn pieces(
    body: &[u8],
    base: usize,
    comments: bool,
    out: &mut Vec<Piece>,
) -> Result<(), ParseError> {
    let mut rest = 0;
    // The next of each marker from `rest` on, found again only once passed:
    // a search per element, not one over the rest of the page.
    let mut next_tag: Option<Option<usize>> = None;
    let mut next_comment: Option<Option<usize>> = None;
    loop {
        let tail = &body[rest..];
        let find = |slot: &mut Option<Option<usize>>, marker: &[u8]| {
            if slot.is_some_and(|at| at.is_some_and(|at| at < rest)) {
                *slot = None;
            }
            *slot.get_or_insert_with(|| memmem::find(tail, marker).map(|i| rest + i))
        };
        let tag = find(&mut next_tag, b"<esi:").map(|at| at - rest);
        let comment = match comments {
            true => find(&mut next_comment, b"<!--esi").map(|at| at - rest),
            false => None,
        };
        let (at, is_comment) = match (tag, comment) {
            (None, None) => break,
            (Some(t), Some(c)) if c < t => (c, true),
            (Some(t), _) => (t, false),
            (None, Some(c)) => (c, true),
        };
        if at > 0 {
            out.push(Piece::Text(base + rest..base + rest + at));
        }
        let start = rest + at;
        if is_comment {
            // `<!--esi` … `-->`: the markers go, what is inside is ESI.
            let inner = start + b"<!--esi".len();
            let Some(end) = memmem::find(&body[inner..], b"-->") else {
                return Err(ParseError::Unclosed("<!--esi", base + start));
            };
            pieces(&body[inner..inner + end], base + inner, false, out)?;
            rest = inner + end + 3;
            continue;
        }
        let name_at = start + b"<esi:".len();
        let name_len = body[name_at..]
            .iter()
            .position(|b| !b.is_ascii_alphabetic())
            .unwrap_or(body.len() - name_at);
        let name = &body[name_at..name_at + name_len];
        let Some(close) = memchr::memchr(b'>', &body[name_at..]) else {
            return Err(ParseError::Unclosed("<esi:", base + start));
        };
        let tag_end = name_at + close + 1;
        let empty = body[..tag_end - 1].ends_with(b"/");
        let attrs = &body[name_at + name_len..tag_end - 1 - usize::from(empty)];
        rest = tag_end;
        match name {
            b"include" => {
                out.push(Piece::Include(include(attrs, base + start)?));
                if !empty {
                    rest = skip_close(body, tag_end, b"</esi:include>", base + start)?;
                }
            }
            b"remove" if !empty => {
                rest = skip_close(body, tag_end, b"</esi:remove>", base + start)?;
            }
            b"comment" | b"remove" => {}
            other => {
                return Err(ParseError::Unsupported(
                    String::from_utf8_lossy(other).into_owned(),
                    base + start,
                ));
            }
        }
    }
    if rest < body.len() {
        out.push(Piece::Text(base + rest..base + body.len()));
    }
    Ok(())
}

/// Where the text after `close` (searched from `from`) begins.
fn skip_close(body: &[u8], from: usize, close: &[u8], at: usize) -> Result<usize, ParseError> {
    match memmem::find(&body[from..], close) {
        Some(i) => Ok(from + i + close.len()),
        None => Err(ParseError::Unclosed("ESI element", at)),
    }
}

fn include(attrs: &[u8], at: usize) -> Result<Include, ParseError> {
    let mut src = None;
    let mut alt = None;
    let mut continue_on_error = false;
    for (name, value) in attributes(attrs) {
        match name.to_ascii_lowercase().as_slice() {
            b"src" => src = Some(target(&value).map_err(|why| ParseError::BadTarget { at, why })?),
            b"alt" => alt = Some(target(&value).map_err(|why| ParseError::BadTarget { at, why })?),
            b"onerror" => continue_on_error = value.eq_ignore_ascii_case(b"continue"),
            _ => {}
        }
    }
    Ok(Include {
        src: src.ok_or(ParseError::NoSrc(at))?,
        alt,
        continue_on_error,
    })
}

/// `name="value"` pairs (single or double quotes, or none), values with
/// `&amp;` read as `&`, as an HTML attribute would be.
fn attributes(mut s: &[u8]) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
    std::iter::from_fn(move || {
        s = s.trim_ascii_start();
        if s.is_empty() {
            return None;
        }
        let name_len = s
            .iter()
            .position(|b| *b == b'=' || b.is_ascii_whitespace())
            .unwrap_or(s.len());
        let name = s[..name_len].to_vec();
        s = s[name_len..].trim_ascii_start();
        let Some(after) = s.strip_prefix(b"=") else {
            return Some((name, Vec::new()));
        };
        s = after.trim_ascii_start();
        let value = match s.first() {
            Some(&q @ (b'"' | b'\'')) => {
                let end = s[1..]
                    .iter()
                    .position(|b| *b == q)
                    .map_or(s.len(), |i| i + 1);
                let v = &s[1..end];
                s = s.get(end + 1..).unwrap_or_default();
                v
            }
            _ => {
                let end = s
                    .iter()
                    .position(u8::is_ascii_whitespace)
                    .unwrap_or(s.len());
                let v = &s[..end];
                s = &s[end..];
                v
            }
        };
        Some((name, unescape(value)))
    })
}

fn unescape(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i..].starts_with(b"&amp;") {
            out.push(b'&');
            i += 5;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    out
}

/// An include's target, when it names a path on this site: an
/// absolute path (`/…`), not a network path (`//host/…`) or any URL with
/// a scheme, of the bytes RFC 3986 allows in a path and query. The one
/// place an include's reach is decided: whatever passes is requested
/// through the proxy, from its one upstream, for the page's own host.
pub fn target(v: &[u8]) -> Result<String, &'static str> {
    if !v.starts_with(b"/") {
        return Err("src must be a path on this site, starting with /");
    }
    if v.starts_with(b"//") {
        return Err("src names another host");
    }
    if v.len() > 2048 {
        return Err("src is too long");
    }
    if !crate::proxy::key::plain_target(v) {
        return Err("src holds a byte a path may not");
    }
    // Checked: every byte is ASCII.
    String::from_utf8(v.to_vec()).map_err(|_| "src is not ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces with their text read back from `page`.
    fn read(page: &[u8]) -> Vec<Result<&[u8], Include>> {
        parse(page)
            .unwrap()
            .into_iter()
            .map(|p| match p {
                Piece::Text(r) => Ok(&page[r]),
                Piece::Include(i) => Err(i),
            })
            .collect()
    }

    fn inc(src: &str) -> Result<&'static [u8], Include> {
        Err(Include {
            src: src.into(),
            alt: None,
            continue_on_error: false,
        })
    }

    #[test]
    fn text_and_includes_in_order() {
        let page = b"<p>a</p><esi:include src=\"/f/menu/\"/>b<esi:include src='/f/x/?a=1&amp;b=2' alt=\"/f/y/\" onerror=\"continue\"></esi:include>c";
        assert_eq!(
            read(page),
            vec![
                Ok(&b"<p>a</p>"[..]),
                inc("/f/menu/"),
                Ok(b"b"),
                Err(Include {
                    src: "/f/x/?a=1&b=2".into(),
                    alt: Some("/f/y/".into()),
                    continue_on_error: true,
                }),
                Ok(b"c"),
            ]
        );
    }

    #[test]
    fn remove_comment_and_esi_comments() {
        let page = b"a<esi:remove><a href=\"/x\">x</a></esi:remove>b<esi:comment text=\"hi\"/>c<!--esi <esi:include src=\"/f/\"/> d-->e";
        assert_eq!(
            read(page),
            vec![
                Ok(&b"a"[..]),
                Ok(b"b"),
                Ok(b"c"),
                Ok(b" "),
                inc("/f/"),
                Ok(b" d"),
                Ok(b"e"),
            ]
        );
        assert_eq!(read(b"plain"), vec![Ok(&b"plain"[..])]);
        assert!(!has_markup(b"<p>esi</p>"));
        assert!(has_markup(b"x<!--esi y-->"));
    }

    /// Markers inside what is removed, or inside a comment's ESI, are
    /// that region's, found again past it.
    #[test]
    fn markers_in_a_skipped_region_are_not_the_pages() {
        let page = b"a<esi:remove><!--esi x--><esi:include src=\"/n\"/></esi:remove>b<!--esi <esi:include src=\"/y\"/>-->c<esi:comment/>d";
        assert_eq!(
            read(page),
            vec![
                Ok(&b"a"[..]),
                Ok(b"b"),
                Ok(b" "),
                inc("/y"),
                Ok(b"c"),
                Ok(b"d")
            ]
        );
        let many = b"<esi:comment text=\"x\"/>".repeat(5000);
        assert_eq!(parse(&many).unwrap(), vec![]);
    }

    #[test]
    fn broken_or_unsupported_markup_is_an_error() {
        for (page, want) in [
            (&b"a<esi:include src=\"/f/\""[..], "unclosed"),
            (b"a<esi:remove>x", "unclosed"),
            (b"a<!--esi x", "unclosed"),
            (b"<esi:include src=\"/f/\">x", "unclosed"),
            (
                b"<esi:choose><esi:when test=\"1\">x</esi:when></esi:choose>",
                "unsupported",
            ),
            (b"<esi:include alt=\"/f/\"/>", "no src"),
            (b"<esi:include src=\"//evil.example/\"/>", "another host"),
            (
                b"<esi:include src=\"http://evil.example/\"/>",
                "starting with /",
            ),
            (b"<esi:include src=\"f/\"/>", "starting with /"),
            (b"<esi:include src=\"/a b\"/>", "a byte"),
            (b"<esi:include src=\"/a\\b\"/>", "a byte"),
            (
                b"<esi:include src=\"/f/\" alt=\"https://x/\"/>",
                "starting with /",
            ),
        ] {
            let e = parse(page).unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(page));
        }
    }

    /// Any bytes: an answer, never a panic.
    #[test]
    fn any_bytes_parse_or_fail_cleanly() {
        let parts: [&[u8]; 9] = [
            b"<esi:",
            b"include",
            b" src=\"/a\"",
            b"/>",
            b"<!--esi",
            b"-->",
            b"'",
            b"remove>",
            b"\xff",
        ];
        for a in parts {
            for b in parts {
                for c in parts {
                    let page = [a, b, c].concat();
                    let _ = parse(&page);
                }
            }
        }
    }
}
