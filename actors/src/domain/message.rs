use super::ValidationError;

/// The most characters a message may have after clean-up.
pub const MAX_MESSAGE_CHARS: usize = 10_000;

/// A message's text, cleaned of control characters and trimmed; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageContent(String);

impl MessageContent {
    /// Cleans and checks message text: drops NUL and control characters except `\n` and
    /// `\t`, trims, and requires 1–10,000 characters. `field` names the request field.
    pub fn parse(raw: &str, field: &str) -> Result<Self, ValidationError> {
        let cleaned: String = raw
            .chars()
            .filter(|&c| c == '\n' || c == '\t' || !c.is_control())
            .collect();
        let trimmed = cleaned.trim();
        let chars = trimmed.chars().count();
        if chars == 0 {
            return Err(ValidationError::new(field, "message must not be empty"));
        }
        if chars > MAX_MESSAGE_CHARS {
            return Err(ValidationError::new(
                field,
                "message must be at most 10000 characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The cleaned text, stored as is.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Gives up the text without a copy, for building store rows.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Who wrote a message; decides what counters it raises and how widgets label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthorType {
    /// The visitor, through a widget.
    Customer,
    /// An AI bot answering through the operator API.
    Ai,
    /// A person answering through the operator API.
    Human,
}

impl AuthorType {
    /// The wire and storage spelling (`customer`, `AI`, `human`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorType::Customer => "customer",
            AuthorType::Ai => "AI",
            AuthorType::Human => "human",
        }
    }

    /// Parses the wire spelling; only `human` and `AI` are valid for operators.
    pub fn parse_operator(raw: &str) -> Result<Self, ValidationError> {
        match raw {
            "human" => Ok(AuthorType::Human),
            "AI" => Ok(AuthorType::Ai),
            _ => Err(ValidationError::new(
                "author_type",
                "author_type must be \"human\" or \"AI\"",
            )),
        }
    }

    /// Reads the stored spelling back; unknown values fall back to `human` rather than fail
    /// a whole listing.
    pub fn from_stored(raw: &str) -> Self {
        match raw {
            "customer" => AuthorType::Customer,
            "AI" => AuthorType::Ai,
            _ => AuthorType::Human,
        }
    }
}

/// A display name shown next to a message: trimmed, control characters removed, ≤ 200 chars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorName(String);

impl AuthorName {
    /// Cleans a display name; an empty result means "no name" (`None`).
    pub fn parse(raw: &str, field: &str) -> Result<Option<Self>, ValidationError> {
        let cleaned: String = raw.chars().filter(|c| !c.is_control()).collect();
        let trimmed = cleaned.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        if trimmed.chars().count() > 200 {
            return Err(ValidationError::new(
                field,
                "name must be at most 200 characters",
            ));
        }
        Ok(Some(Self(trimmed.to_owned())))
    }

    /// The cleaned name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client's idempotency key: the same key twice means "the same message, retried".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientMessageId(String);

impl ClientMessageId {
    /// Accepts 1–200 characters without control characters.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        const FIELD: &str = "client_message_id";
        let n = raw.chars().count();
        if n == 0 || n > 200 {
            return Err(ValidationError::new(
                FIELD,
                "client_message_id must be 1 to 200 characters",
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(ValidationError::new(
                FIELD,
                "client_message_id must not contain control characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn removes_control_characters_but_keeps_newlines_and_tabs() {
        let m = MessageContent::parse("  a\u{0}b\u{7}c\n\td\r  ", "message").unwrap();
        assert_eq!(m.as_str(), "abc\n\td");
    }

    #[test]
    fn keeps_emoji_sql_and_html_verbatim() {
        for raw in [
            "👋🏽 𝕳𝖊𝖑𝖑𝖔",
            "'; DROP TABLE messages; --",
            "<img src=x onerror=alert(1)>",
        ] {
            assert_eq!(MessageContent::parse(raw, "message").unwrap().as_str(), raw);
        }
    }

    #[test]
    fn rejects_empty_and_too_long_messages() {
        assert!(MessageContent::parse(" \u{0}\n ", "message").is_err());
        assert!(MessageContent::parse(&"x".repeat(10_001), "message").is_err());
        assert!(MessageContent::parse(&"😀".repeat(10_000), "message").is_ok());
    }

    #[test]
    fn author_types_round_trip() {
        assert_eq!(AuthorType::parse_operator("AI"), Ok(AuthorType::Ai));
        assert_eq!(AuthorType::parse_operator("human"), Ok(AuthorType::Human));
        assert!(AuthorType::parse_operator("customer").is_err());
        for t in [AuthorType::Customer, AuthorType::Ai, AuthorType::Human] {
            assert_eq!(AuthorType::from_stored(t.as_str()), t);
        }
    }

    #[test]
    fn client_message_ids_are_bounded() {
        assert!(ClientMessageId::parse("c-42").is_ok());
        assert!(ClientMessageId::parse("").is_err());
        assert!(ClientMessageId::parse(&"k".repeat(201)).is_err());
        assert!(ClientMessageId::parse("a\u{0}").is_err());
    }

    proptest! {
        #[test]
        fn parsed_content_never_holds_forbidden_control_characters(raw in "\\PC{0,50}[\\x00-\\x1f]{0,5}\\PC{0,50}") {
            if let Ok(m) = MessageContent::parse(&raw, "message") {
                prop_assert!(m.as_str().chars().all(|c| c == '\n' || c == '\t' || !c.is_control()));
                prop_assert_eq!(m.as_str().trim(), m.as_str());
            }
        }
    }
}
