//! Cache directives as RFC 9111 §5.2 defines them, read with RFC 9110
//! §5.6's list grammar: `directive = token [ "=" ( token / quoted-string ) ]`,
//! comma-separated across any number of field lines.
//!
//! A naive split on `,` and `=` reads `foo="max-age=8, private"` as two
//! directives; here a quoted string is one value whatever it holds. Where
//! the RFC leaves a choice, the reading is the conservative one:
//! - a lifetime directive (`max-age`, `s-maxage`) whose value is not a
//!   delta-seconds, or that appears twice with different values, makes the
//!   response stale (RFC 9111 §4.2.1: "consider the response stale");
//! - `private` and `no-cache` with field names are taken unqualified: a
//!   shared cache must not guess which fields are safe to keep;
//! - a list element that is not a directive at all is ignored (RFC 9111
//!   §5.2: unrecognised directives are ignored).
//!
//! The same grammar reads the targeted fields (`CDN-Cache-Control`, RFC
//! 9213, and bigcache's own `Bigcache-Cache-Control`): their structured-
//! field dictionaries are, for these directives, written the same way.

/// The directives bigcache acts on, from one field.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    pub s_maxage: Option<u64>,
    pub max_age: Option<u64>,
    pub private: bool,
    pub no_store: bool,
    pub no_cache: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    /// RFC 9110 §7.7: no intermediary may change the content (bigcache
    /// then stores the body as sent, never in its own coding).
    pub no_transform: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    /// Some directive bigcache knows was read (a targeted field without
    /// any is ignored, RFC 9213 §2.1).
    pub known: bool,
}

/// RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as
/// 2^31.
const DELTA_MAX: u64 = 1 << 31;

/// A field value that is not text bigcache can read (bytes outside
/// visible ASCII and whitespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

impl Directives {
    /// Reads every line of one field. `None` when the field is absent.
    pub fn parse<'a>(
        lines: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Option<Directives>, Unreadable> {
        let mut d = Directives::default();
        let mut any = false;
        for line in lines {
            any = true;
            if !super::fields::is_text(line) {
                return Err(Unreadable);
            }
            for (name, value) in elements(line)? {
                d.apply(&name, value.as_deref());
            }
            d.restrict_on_words(line);
        }
        Ok(any.then_some(d))
    }

    /// `private`, `no-store` and `no-cache` anywhere outside a quoted
    /// string count, even in an element that is not a well-formed
    /// directive (`private;`, `x private`): as nginx reads them, a sender's
    /// typo must not make a private page shared.
    fn restrict_on_words(&mut self, line: &[u8]) {
        let mut quoted = false;
        let mut escaped = false;
        let mut word_start = None;
        for (i, &b) in line.iter().chain(std::iter::once(&b' ')).enumerate() {
            if quoted {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => quoted = false,
                    _ => {}
                }
                continue;
            }
            if is_tchar(b) {
                word_start.get_or_insert(i);
                continue;
            }
            if let Some(start) = word_start.take() {
                match &line[start..i] {
                    w if w.eq_ignore_ascii_case(b"private") => self.private = true,
                    w if w.eq_ignore_ascii_case(b"no-store") => self.no_store = true,
                    w if w.eq_ignore_ascii_case(b"no-cache") => self.no_cache = true,
                    w if w.eq_ignore_ascii_case(b"no-transform") => self.no_transform = true,
                    _ => {}
                }
            }
            if b == b'"' {
                quoted = true;
            }
        }
        if self.private || self.no_store || self.no_cache {
            self.known = true;
        }
    }

    fn apply(&mut self, name: &str, value: Option<&str>) {
        let lifetime = |slot: &mut Option<u64>, value: Option<&str>| {
            // Invalid, or a second value disagreeing with the first: stale.
            let v = value.and_then(delta_seconds).unwrap_or(0);
            *slot = match *slot {
                Some(old) if old != v => Some(0),
                _ => Some(v),
            };
        };
        if name == "no-transform" {
            // Not a caching directive: a targeted field naming only it
            // still names none (`known`).
            self.no_transform = true;
            return;
        }
        match name {
            "s-maxage" => lifetime(&mut self.s_maxage, value),
            "max-age" => lifetime(&mut self.max_age, value),
            "private" => self.private = true,
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            // A window that cannot be read grants nothing.
            "stale-while-revalidate" => self.stale_while_revalidate = value.and_then(delta_seconds),
            "stale-if-error" => self.stale_if_error = value.and_then(delta_seconds),
            _ => return,
        }
        self.known = true;
    }
}

/// `1*DIGIT`, saturating at [`DELTA_MAX`].
fn delta_seconds(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().map_or(DELTA_MAX, |n| n.min(DELTA_MAX)))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The list elements of one field line as (lower-case name, value), the
/// value unquoted. Elements that are not `token [ "=" value ]` are skipped;
/// a quoted string left open makes the line unreadable (what follows it,
/// `private` perhaps, cannot be told from its content).
fn elements(line: &[u8]) -> Result<Vec<(String, Option<String>)>, Unreadable> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = line.len();
    let skip_ows = |i: &mut usize| {
        while *i < n && (line[*i] == b' ' || line[*i] == b'\t') {
            *i += 1;
        }
    };
    // Skips to just past the next top-level comma (quoted strings
    // honoured); `false` when a quoted string is left open.
    let skip_element = |i: &mut usize| {
        let mut quoted = false;
        while *i < n {
            match line[*i] {
                b'\\' if quoted => *i += 1,
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    *i += 1;
                    return true;
                }
                _ => {}
            }
            *i += 1;
        }
        !quoted
    };
    while i < n {
        skip_ows(&mut i);
        let start = i;
        while i < n && is_tchar(line[i]) {
            i += 1;
        }
        if i == start {
            if !skip_element(&mut i) {
                return Err(Unreadable);
            }
            continue;
        }
        let name = String::from_utf8_lossy(&line[start..i]).to_ascii_lowercase();
        skip_ows(&mut i);
        let mut value = None;
        if i < n && line[i] == b'=' {
            i += 1;
            skip_ows(&mut i);
            if i < n && line[i] == b'"' {
                let mut v = Vec::new();
                i += 1;
                let mut closed = false;
                while i < n {
                    match line[i] {
                        b'\\' if i + 1 < n => {
                            v.push(line[i + 1]);
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            closed = true;
                            break;
                        }
                        b => {
                            v.push(b);
                            i += 1;
                        }
                    }
                }
                if !closed {
                    return Err(Unreadable);
                }
                value = Some(String::from_utf8_lossy(&v).into_owned());
            } else {
                let vs = i;
                while i < n && is_tchar(line[i]) {
                    i += 1;
                }
                value = Some(String::from_utf8_lossy(&line[vs..i]).into_owned());
            }
            skip_ows(&mut i);
        }
        if i < n && line[i] != b',' {
            // Trailing junk: not a directive.
            if !skip_element(&mut i) {
                return Err(Unreadable);
            }
            continue;
        }
        i += 1;
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(lines: &[&str]) -> Directives {
        Directives::parse(lines.iter().map(|l| l.as_bytes()))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn quoted_strings_hide_what_they_hold() {
        let d = cc(&[r#"foo="max-age=8", max-age=60"#]);
        assert_eq!(d.max_age, Some(60));
        let d = cc(&[r#"max-age=60, foo="x, max-age=8, private""#]);
        assert_eq!((d.max_age, d.private), (Some(60), false));
        let d = cc(&[r#"community="UCI\", private", max-age=5"#]);
        assert_eq!((d.max_age, d.private), (Some(5), false));
    }

    #[test]
    fn lines_and_case_and_whitespace() {
        let d = cc(&["Public", "MAX-AGE = 60 ,  Stale-While-Revalidate=30"]);
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.stale_while_revalidate, Some(30));
        assert_eq!(cc(&[r#"max-age="120""#]).max_age, Some(120));
    }

    #[test]
    fn bad_or_conflicting_lifetimes_are_stale() {
        for v in [
            "max-age=abc",
            "max-age=-1",
            "max-age=",
            "max-age",
            "max-age=1.5",
        ] {
            assert_eq!(cc(&[v]).max_age, Some(0), "{v}");
        }
        assert_eq!(cc(&["max-age=60", "max-age=3600"]).max_age, Some(0));
        assert_eq!(cc(&["max-age=60, max-age=60"]).max_age, Some(60));
        assert_eq!(
            cc(&["s-maxage=99999999999999999999"]).s_maxage,
            Some(DELTA_MAX)
        );
        assert_eq!(cc(&["stale-if-error=x"]).stale_if_error, None);
    }

    #[test]
    fn restrictions_count_however_they_are_written() {
        for line in [
            "max-age=600, private;",
            "private:, max-age=600",
            "max-age=600, no-store;",
            "private max-age=0",
            "max-age=600 private",
            "foo=private, max-age=60",
        ] {
            let d = cc(&[line]);
            assert!(d.private || d.no_store, "{line}");
        }
        let d = cc(&[r#"foo="private, no-store", max-age=60"#]);
        assert!(!d.private && !d.no_store, "inside a quoted string");
    }

    #[test]
    fn qualified_forms_are_taken_whole() {
        let d = cc(&[r#"private="set-cookie", no-cache="x-a, x-b", max-age=60"#]);
        assert!(d.private && d.no_cache);
        assert_eq!(d.max_age, Some(60));
    }

    #[test]
    fn junk_is_skipped_and_unreadable_bytes_fail() {
        let d = cc(&["=5, ;;, max-age=7 junk, no-store"]);
        assert_eq!(d.max_age, None);
        assert!(d.no_store);
        assert_eq!(
            Directives::parse([&b"max-age=5, \xff"[..]]),
            Err(Unreadable)
        );
        assert_eq!(Directives::parse(std::iter::empty()), Ok(None));
        // An open quote could hide anything after it.
        for open in [r#"a=", private"#, r#"a=b"c, private"#, r#""x, private"#] {
            assert_eq!(
                Directives::parse([open.as_bytes()]),
                Err(Unreadable),
                "{open}"
            );
        }
    }
}
