//! Where a team's widget may run, and where its restore links may point.
//!
//! Two parsers with one list: [`AllowedDomains`] is what an operator configures (refused
//! when an entry names no host, so a typo never turns into "anywhere"), and [`RestorePage`]
//! is a visitor's `request_url`, parsed with the `url` crate and re-serialised, because the
//! link we mail must be exactly a page on one of those hosts and nothing else.

use super::ValidationError;
use url::{Host, Url};

/// The hosts a team's widget may be embedded on; empty means "anywhere".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedDomains(Vec<String>);

impl AllowedDomains {
    /// Rebuilds a list that was parsed before (stored settings): entries are lower-cased host
    /// names (`example.com`, `*.example.com`); URL-shaped entries keep only their host.
    pub fn new(entries: impl IntoIterator<Item = String>) -> Self {
        Self(
            entries
                .into_iter()
                .filter_map(|e| host_of(&e).map(str::to_ascii_lowercase))
                .collect(),
        )
    }

    /// Parses an operator's list (team creation, settings): every entry must name a host,
    /// because an entry silently dropped could leave an empty list, which allows every origin.
    pub fn parse(entries: impl IntoIterator<Item = String>) -> Result<Self, ValidationError> {
        entries
            .into_iter()
            .map(|e| {
                entry_host(&e).ok_or_else(|| {
                    ValidationError::new(
                        "allowed_widget_domains",
                        format!(
                            "{e:?} is not a host name such as shop.example.com or *.example.com"
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
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
        origin
            .and_then(host_of)
            .is_some_and(|host| self.lists(&host.to_ascii_lowercase()))
    }

    /// Whether `host` (lower case, as a URL parser gives it) is on the list. Unlike
    /// [`Self::permits`], an empty list lists nothing: what we mail fails closed.
    pub fn lists(&self, host: &str) -> bool {
        self.0.iter().any(|entry| match entry.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            None => entry == host,
        })
    }
}

/// The normalised host of an operator's entry (`shop.example.com`, `*.example.com`,
/// `https://shop.example.com:8443/path`, `[::1]`), or `None` when it names no host or
/// carries what a host never has (userinfo, backslashes, a bare `*`).
fn entry_host(entry: &str) -> Option<String> {
    let entry = entry.trim();
    if entry.contains(['@', '\\']) || entry.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let host = host_of(entry)?;
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(name) => (true, name),
        None => (false, host),
    };
    if name.is_empty() || name.contains('*') {
        return None;
    }
    // The WHATWG host parser: lower case, IDNA to punycode, IPv4/IPv6 normalised, forbidden
    // code points refused. What browsers put in Origin is what it produces.
    let parsed = Host::parse(name).ok()?;
    if let Host::Domain(d) = &parsed {
        if d.split('.').any(str::is_empty) {
            return None;
        }
    } else if wildcard {
        return None;
    }
    let name = parsed.to_string();
    Some(if wildcard { format!("*.{name}") } else { name })
}

/// The page a restore link may point at: an absolute `http(s)` URL on one of the team's
/// allowed hosts, without userinfo, whitespace, control characters or backslashes. It is
/// kept parsed, so the mailed link is the URL re-serialised, never the text a stranger sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePage(Url);

/// The query parameter the posthog-js widget reads the restore token from.
pub const RESTORE_TOKEN_PARAM: &str = "ph_conv_restore";

impl RestorePage {
    /// The longest `request_url` considered.
    pub const MAX_LEN: usize = 2000;

    /// Parses `raw` against the team's list; `None` for anything that is not plainly a page
    /// on a listed host (an empty list lists nothing).
    pub fn parse(raw: &str, allowed: &AllowedDomains) -> Option<Self> {
        if raw.len() > Self::MAX_LEN
            || raw
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
        {
            return None;
        }
        let url = Url::parse(raw).ok()?;
        if !matches!(url.scheme(), "http" | "https")
            || !url.username().is_empty()
            || url.password().is_some()
            || url.cannot_be_a_base()
        {
            return None;
        }
        let host = url.host_str()?;
        allowed.lists(host).then_some(Self(url))
    }

    /// The link to mail: this page with `ph_conv_restore=<token>` as its only token parameter
    /// (one the page already carried is dropped), the rest of the query and the fragment kept.
    pub fn link(&self, token: &str) -> String {
        let mut url = self.0.clone();
        if url.query_pairs().any(|(k, _)| k == RESTORE_TOKEN_PARAM) {
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .into_owned()
                .filter(|(k, _)| k != RESTORE_TOKEN_PARAM)
                .collect();
            url.set_query(None);
            if !kept.is_empty() {
                url.query_pairs_mut().extend_pairs(kept);
            }
        }
        url.query_pairs_mut()
            .append_pair(RESTORE_TOKEN_PARAM, token);
        url.into()
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

    fn parsed(list: &[&str]) -> Result<AllowedDomains, ValidationError> {
        AllowedDomains::parse(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn operator_entries_must_name_a_host() {
        let ok = parsed(&[
            "Shop.Example.com",
            "*.Example.org",
            "https://a.test:8443/path",
            "127.0.0.1",
            "[::1]",
            "localhost:3000",
            "bücher.example",
        ])
        .unwrap();
        assert_eq!(
            ok.entries(),
            [
                "shop.example.com",
                "*.example.org",
                "a.test",
                "127.0.0.1",
                "[::1]",
                "localhost",
                "xn--bcher-kva.example"
            ]
        );
        for bad in [
            "",
            "https://",
            ":8443",
            "https:///x",
            "*.",
            "*",
            "*.*.a.test",
            "a..test",
            ".a.test",
            "user@a.test",
            "https://u:p@a.test",
            "a.test\\b",
            "a test",
            "*.[::1]",
            "a<b.test",
        ] {
            let e = parsed(&["fine.test", bad]).unwrap_err();
            assert_eq!(e.field, "allowed_widget_domains", "{bad:?}");
        }
    }

    fn page(raw: &str) -> Option<String> {
        let d = domains(&["shop.example.com", "*.example.org"]);
        RestorePage::parse(raw, &d).map(|p| p.link("TOKEN"))
    }

    #[test]
    fn restore_pages_are_clean_absolute_urls_on_a_listed_host() {
        assert_eq!(
            page("https://shop.example.com/help").as_deref(),
            Some("https://shop.example.com/help?ph_conv_restore=TOKEN")
        );
        assert_eq!(
            page("http://a.example.org/?x=1#top").as_deref(),
            Some("http://a.example.org/?x=1&ph_conv_restore=TOKEN#top")
        );
        assert_eq!(
            page("HTTPS://SHOP.example.com:443").as_deref(),
            Some("https://shop.example.com/?ph_conv_restore=TOKEN")
        );
        for bad in [
            "https://shop.example.com/\n\nContinue here: https://evil.example/c",
            "https://evil.example\\@shop.example.com/",
            "https://evil.example@shop.example.com/",
            "https://:pw@shop.example.com/",
            "https://shop.example.com\\.evil.example/",
            " https://shop.example.com/",
            "https://shop.example.com/\u{7f}",
            "https://shop.example.com/\u{a0}",
            "https://shop.example.com.evil.example/",
            "https://example.org/",
            "javascript://shop.example.com/%0Aalert(1)",
            "data:text/html,shop.example.com",
            "mailto:a@shop.example.com",
            "//shop.example.com/",
            "shop.example.com",
            "",
        ] {
            assert_eq!(page(bad), None, "{bad:?}");
        }
        let long = format!(
            "https://shop.example.com/{}",
            "a".repeat(RestorePage::MAX_LEN)
        );
        assert_eq!(page(&long), None);
        // An empty list lists nothing.
        assert!(RestorePage::parse("https://shop.example.com/", &domains(&[])).is_none());
    }

    #[test]
    fn a_token_the_page_already_carries_is_replaced() {
        assert_eq!(
            page("https://shop.example.com/?ph_conv_restore=evil&x=a%20b#f").as_deref(),
            Some("https://shop.example.com/?x=a+b&ph_conv_restore=TOKEN#f")
        );
        assert_eq!(
            page("https://shop.example.com/?ph_conv_restore=evil").as_deref(),
            Some("https://shop.example.com/?ph_conv_restore=TOKEN")
        );
    }
}
