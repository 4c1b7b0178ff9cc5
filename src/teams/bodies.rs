//! Parsing the admin API's team body (`POST /api/teams`) and the operator API's settings
//! change (`PATCH /api/conversations/settings`) into validated values; each failure names
//! its field.

use super::Team;
use colloquy_actors::domain::{
    AllowedDomains, IdentityVerification, RateLimits, SuspicionSettings, ValidationError,
};
use serde_json::{Map, Value};

/// A validated `POST /api/teams` body.
#[derive(Debug, Clone)]
pub struct NewTeam {
    /// Name.
    pub name: String,
    /// Widget API switch (default on).
    pub conversations_enabled: bool,
    /// Allowed embedding hosts (default: anywhere).
    pub allowed_widget_domains: AllowedDomains,
    /// Budgets (defaults for keys not given).
    pub rate_limits: RateLimits,
    /// Identity verification mode (default off).
    pub identity_verification: IdentityVerification,
    /// Spam-defence settings (defaults for keys not given).
    pub suspicion: SuspicionSettings,
}

impl NewTeam {
    /// Just a name, everything else default (the CLI's `team create`).
    pub fn named(name: &str) -> Result<Self, ValidationError> {
        let mut body = Map::new();
        body.insert("name".into(), Value::from(name));
        Self::parse(&body)
    }

    /// Parses the admin API body; unknown fields are refused, naming them.
    pub fn parse(body: &Map<String, Value>) -> Result<Self, ValidationError> {
        const KNOWN: [&str; 6] = [
            "name",
            "conversations_enabled",
            "allowed_widget_domains",
            "rate_limits",
            "identity_verification",
            "suspicion",
        ];
        if let Some(unknown) = body.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(ValidationError::new(unknown.as_str(), "unknown field"));
        }
        let name = match body.get("name") {
            Some(Value::String(s))
                if (1..=200).contains(&s.trim().chars().count()) && !s.contains('\0') =>
            {
                s.trim().to_owned()
            }
            _ => {
                return Err(ValidationError::new(
                    "name",
                    "name must be a string of 1 to 200 characters",
                ))
            }
        };
        let conversations_enabled = match body.get("conversations_enabled") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            _ => {
                return Err(ValidationError::new(
                    "conversations_enabled",
                    "conversations_enabled must be a boolean",
                ))
            }
        };
        let allowed_widget_domains = match body.get("allowed_widget_domains") {
            None | Some(Value::Null) => AllowedDomains::default(),
            Some(Value::Array(items)) if items.len() <= 100 => {
                let mut hosts = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s)
                            if (1..=253).contains(&s.trim().len())
                                && !s.chars().any(|c| c.is_control() || c.is_whitespace()) =>
                        {
                            hosts.push(s.clone())
                        }
                        _ => {
                            return Err(ValidationError::new(
                                "allowed_widget_domains",
                                "each allowed domain must be a host name such as shop.example.com or *.example.com",
                            ))
                        }
                    }
                }
                AllowedDomains::parse(hosts)?
            }
            _ => {
                return Err(ValidationError::new(
                    "allowed_widget_domains",
                    "allowed_widget_domains must be a list of at most 100 host names",
                ))
            }
        };
        let rate_limits = match body.get("rate_limits") {
            None | Some(Value::Null) => RateLimits::default(),
            Some(v) => RateLimits::default().merge_json(v)?,
        };
        let identity_verification = match body.get("identity_verification") {
            None | Some(Value::Null) => IdentityVerification::Off,
            Some(Value::String(s)) => IdentityVerification::parse(s, "identity_verification")?,
            _ => {
                return Err(ValidationError::new(
                    "identity_verification",
                    "identity_verification must be off, optional or required",
                ))
            }
        };
        let suspicion = match body.get("suspicion") {
            None | Some(Value::Null) => SuspicionSettings::default(),
            Some(v) => SuspicionSettings::default().merge_json(v)?,
        };
        Ok(Self {
            name,
            conversations_enabled,
            allowed_widget_domains,
            rate_limits,
            identity_verification,
            suspicion,
        })
    }
}

/// A validated `PATCH /api/conversations/settings` body: only the fields given change.
#[derive(Debug, Clone, Default)]
pub struct SettingsPatch {
    /// New widget switch.
    pub conversations_enabled: Option<bool>,
    /// New allowed hosts.
    pub allowed_widget_domains: Option<AllowedDomains>,
    /// New budgets (merged over the current ones).
    pub rate_limits: Option<RateLimits>,
    /// New identity verification mode.
    pub identity_verification: Option<IdentityVerification>,
    /// New notification recipients.
    pub notification_recipients: Option<Vec<String>>,
    /// New spam-defence settings (merged over the current ones).
    pub suspicion: Option<SuspicionSettings>,
}

impl SettingsPatch {
    /// Parses a settings change against the team's current settings; unknown fields are refused.
    pub fn parse(current: &Team, body: &Map<String, Value>) -> Result<Self, ValidationError> {
        const KNOWN: [&str; 6] = [
            "conversations_enabled",
            "allowed_widget_domains",
            "rate_limits",
            "identity_verification",
            "notification_recipients",
            "suspicion",
        ];
        if let Some(unknown) = body.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(ValidationError::new(unknown.as_str(), "unknown field"));
        }
        // The team-creation rules apply to each field; reuse them.
        let mut as_new = body.clone();
        as_new.remove("notification_recipients");
        as_new.insert("name".into(), Value::from(current.name.clone()));
        as_new.remove("rate_limits");
        as_new.remove("suspicion");
        let parsed = NewTeam::parse(&as_new)?;
        let notification_recipients = match body.get("notification_recipients") {
            None => None,
            Some(Value::Array(items)) if items.len() <= 20 => Some(
                items
                    .iter()
                    .map(|v| match v.as_str().map(str::trim) {
                        Some(e)
                            if e.contains('@')
                                && (3..=254).contains(&e.len())
                                && !e.chars().any(char::is_control) =>
                        {
                            Ok(e.to_owned())
                        }
                        _ => Err(ValidationError::new(
                            "notification_recipients",
                            "each recipient must be an email address",
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => {
                return Err(ValidationError::new(
                    "notification_recipients",
                    "notification_recipients must be a list of at most 20 email addresses",
                ))
            }
        };
        Ok(Self {
            conversations_enabled: body
                .contains_key("conversations_enabled")
                .then_some(parsed.conversations_enabled),
            allowed_widget_domains: body
                .contains_key("allowed_widget_domains")
                .then_some(parsed.allowed_widget_domains),
            rate_limits: body
                .get("rate_limits")
                .map(|v| current.rate_limits.merge_json(v))
                .transpose()?,
            identity_verification: body
                .contains_key("identity_verification")
                .then_some(parsed.identity_verification),
            notification_recipients,
            suspicion: body
                .get("suspicion")
                .map(|v| current.suspicion.merge_json(v))
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_name_alone_gets_the_defaults() {
        let t = NewTeam::parse(&body(json!({"name": " Acme "}))).unwrap();
        assert_eq!(t.name, "Acme");
        assert!(t.conversations_enabled);
        assert_eq!(t.rate_limits, RateLimits::default());
        assert_eq!(t.identity_verification, IdentityVerification::Off);
    }

    #[test]
    fn bad_fields_are_named() {
        for (v, field) in [
            (json!({}), "name"),
            (json!({"name": ""}), "name"),
            (json!({"name": "a", "colour": 1}), "colour"),
            (
                json!({"name": "a", "conversations_enabled": "yes"}),
                "conversations_enabled",
            ),
            (
                json!({"name": "a", "allowed_widget_domains": "x.com"}),
                "allowed_widget_domains",
            ),
            (
                json!({"name": "a", "rate_limits": {"nope": 1}}),
                "rate_limits.nope",
            ),
            (
                json!({"name": "a", "identity_verification": "maybe"}),
                "identity_verification",
            ),
        ] {
            assert_eq!(NewTeam::parse(&body(v)).unwrap_err().field, field);
        }
    }
}
