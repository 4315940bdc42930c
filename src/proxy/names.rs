//! Lists of names given on the command line, where `name*` stands for
//! every name starting `name`: the query parameters and the cookies
//! bigcache leaves out (`proxy::query`, `proxy::cookies`).

/// Names matched exactly, or by prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl Names {
    /// The list `given`, blanks skipped.
    pub fn new<S: AsRef<str>>(given: &[S]) -> Names {
        let mut names = Names::default();
        for n in given
            .iter()
            .map(|n| n.as_ref().trim())
            .filter(|n| !n.is_empty())
        {
            match n.strip_suffix('*') {
                Some(prefix) => names.prefixes.push(prefix.to_string()),
                None => names.exact.push(n.to_string()),
            }
        }
        names
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// Whether `name` is on the list (compared exactly: case matters).
    pub fn matches(&self, name: &str) -> bool {
        self.exact.iter().any(|n| n == name)
            || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_and_prefixes() {
        let n = Names::new(&["_ga", "_gat*", " ", "utm_*"]);
        for yes in ["_ga", "_gat", "_gat_UA-1", "utm_source", "utm_"] {
            assert!(n.matches(yes), "{yes}");
        }
        for no in ["_gax", "_GA", "ga", "utm", "UTM_source", ""] {
            assert!(!n.matches(no), "{no}");
        }
        assert!(Names::new(&[""]).is_empty());
        assert!(
            Names::new(&["*"]).matches("anything"),
            "a bare * is every name"
        );
    }
}
