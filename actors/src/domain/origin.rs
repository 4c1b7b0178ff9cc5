/// The hosts a team's widget may be embedded on; empty means "anywhere".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedDomains(Vec<String>);

impl AllowedDomains {
    /// Normalises entries to lower case host names (`example.com`, `*.example.com`); entries
    /// given as URLs keep only their host.
    pub fn new(entries: impl IntoIterator<Item = String>) -> Self {
        Self(
            entries
                .into_iter()
                .filter_map(|e| host_of(&e).map(str::to_ascii_lowercase))
                .collect(),
        )
    }

    /// The normalised entries, for storage and display.
    pub fn entries(&self) -> &[String] {
        &self.0
    }

    /// Whether a request whose Origin (or Referer) is `origin` may use the widget API.
    /// `None` (no header) is refused when the list is non-empty: a browser always sends one.
    pub fn permits(&self, origin: Option<&str>) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(host) = origin.and_then(host_of) else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        self.0.iter().any(|entry| match entry.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            None => *entry == host,
        })
    }
}

/// The host of `https://host:port/path`, or of a bare `host` / `*.host`.
fn host_of(value: &str) -> Option<&str> {
    let rest = value.trim();
    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
    let rest = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = if rest.starts_with('[') {
        rest.split_inclusive(']').next().unwrap_or(rest)
    } else {
        rest.split(':').next().unwrap_or(rest)
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains(list: &[&str]) -> AllowedDomains {
        AllowedDomains::new(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn an_empty_list_allows_everything() {
        assert!(domains(&[]).permits(Some("https://evil.test")));
        assert!(domains(&[]).permits(None));
    }

    #[test]
    fn exact_hosts_match_ignoring_scheme_port_path_and_case() {
        let d = domains(&["Shop.Example.com"]);
        assert!(d.permits(Some("https://shop.example.com")));
        assert!(d.permits(Some("http://SHOP.example.com:8080/cart?x=1")));
        assert!(!d.permits(Some("https://example.com")));
        assert!(!d.permits(Some("https://shop.example.com.evil.test")));
        assert!(!d.permits(None));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let d = domains(&["*.example.com"]);
        assert!(d.permits(Some("https://a.example.com")));
        assert!(d.permits(Some("https://a.b.example.com")));
        assert!(!d.permits(Some("https://example.com")));
        assert!(!d.permits(Some("https://badexample.com")));
    }

    #[test]
    fn url_entries_are_reduced_to_their_host() {
        assert_eq!(domains(&["https://a.test/path"]).entries(), ["a.test"]);
    }
}
