use super::ValidationError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Points each suspicion rule adds to a visitor's (or an IP's) score, 0–100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SuspicionWeights {
    /// A bot filled the hidden honeypot field.
    pub honeypot: u8,
    /// The same text three times from one visitor.
    pub repeated_message: u8,
    /// The same (non-trivial) text from three visitors of the team.
    pub repeated_across_visitors: u8,
    /// A message that is mostly links.
    pub link_density: u8,
    /// Many visitor keys from one IP (someone guessing distinct_ids).
    pub enumeration: u8,
    /// Repeated rate-limit refusals.
    pub rate_limited: u8,
    /// Many messages right after a ticket was opened.
    pub burst_after_creation: u8,
}

impl Default for SuspicionWeights {
    fn default() -> Self {
        Self {
            honeypot: 90,
            repeated_message: 40,
            repeated_across_visitors: 40,
            link_density: 50,
            enumeration: 50,
            rate_limited: 30,
            burst_after_creation: 30,
        }
    }
}

impl SuspicionWeights {
    /// The weight of a rule by its reason name.
    pub fn of(&self, reason: &str) -> u8 {
        match reason {
            "honeypot" => self.honeypot,
            "repeated_message" => self.repeated_message,
            "repeated_across_visitors" => self.repeated_across_visitors,
            "link_density" => self.link_density,
            "enumeration" => self.enumeration,
            "rate_limited" => self.rate_limited,
            "burst_after_creation" => self.burst_after_creation,
            _ => 0,
        }
    }
}

/// A team's spam-defence settings: when a score flags a visitor for operators, and when it
/// blocks the IP for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SuspicionSettings {
    /// Score from which a visitor is listed as suspicious.
    pub flag_threshold: u8,
    /// Score from which the IP is blocked.
    pub block_threshold: u8,
    /// How long an automatic block lasts.
    pub block_minutes: u32,
    /// Points per rule.
    pub weights: SuspicionWeights,
}

impl Default for SuspicionSettings {
    fn default() -> Self {
        Self {
            flag_threshold: 50,
            block_threshold: 80,
            block_minutes: 60,
            weights: SuspicionWeights::default(),
        }
    }
}

impl SuspicionSettings {
    /// Applies a partial `suspicion` object (weights may be partial too) over `self`.
    pub fn merge_json(&self, patch: &Value) -> Result<Self, ValidationError> {
        const FIELD: &str = "suspicion";
        let bad = |m: &str| ValidationError::new(FIELD, m);
        let Value::Object(patch) = patch else {
            return Err(bad("suspicion must be an object"));
        };
        let mut current = serde_json::to_value(self).map_err(|_| bad("invalid settings"))?;
        for (k, v) in patch {
            match (k.as_str(), v) {
                ("weights", Value::Object(w)) => {
                    for (wk, wv) in w {
                        let slot = current["weights"].get_mut(wk).ok_or_else(|| {
                            ValidationError::new(format!("suspicion.weights.{wk}"), "unknown rule")
                        })?;
                        match wv.as_u64() {
                            Some(n) if n <= 100 => *slot = Value::from(n),
                            _ => {
                                return Err(ValidationError::new(
                                    format!("suspicion.weights.{wk}"),
                                    "a weight is an integer from 0 to 100",
                                ))
                            }
                        }
                    }
                }
                ("flag_threshold" | "block_threshold", v) => match v.as_u64() {
                    Some(n) if (1..=100).contains(&n) => current[k] = Value::from(n),
                    _ => {
                        return Err(ValidationError::new(
                            format!("suspicion.{k}"),
                            "a threshold is an integer from 1 to 100",
                        ))
                    }
                },
                ("block_minutes", v) => match v.as_u64() {
                    Some(n) if (1..=10_080).contains(&n) => current[k] = Value::from(n),
                    _ => {
                        return Err(ValidationError::new(
                            "suspicion.block_minutes",
                            "block_minutes is an integer from 1 to 10080",
                        ))
                    }
                },
                _ => {
                    return Err(ValidationError::new(
                        format!("suspicion.{k}"),
                        "unknown or invalid setting",
                    ))
                }
            }
        }
        let merged: Self = serde_json::from_value(current).map_err(|_| bad("invalid settings"))?;
        if merged.block_threshold < merged.flag_threshold {
            return Err(ValidationError::new(
                "suspicion.block_threshold",
                "block_threshold must not be below flag_threshold",
            ));
        }
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partial_settings_keep_the_defaults() {
        let s = SuspicionSettings::default()
            .merge_json(&json!({"flag_threshold": 40, "weights": {"link_density": 10}}))
            .unwrap();
        assert_eq!(s.flag_threshold, 40);
        assert_eq!(s.weights.link_density, 10);
        assert_eq!(s.weights.honeypot, 90);
    }

    #[test]
    fn nonsense_is_refused_naming_the_setting() {
        let d = SuspicionSettings::default();
        for (v, field) in [
            (json!({"weights": {"vibes": 1}}), "suspicion.weights.vibes"),
            (
                json!({"weights": {"honeypot": 101}}),
                "suspicion.weights.honeypot",
            ),
            (json!({"flag_threshold": 0}), "suspicion.flag_threshold"),
            (json!({"block_threshold": 10}), "suspicion.block_threshold"),
            (json!({"colour": 1}), "suspicion.colour"),
        ] {
            assert_eq!(d.merge_json(&v).unwrap_err().field, field);
        }
    }
}
