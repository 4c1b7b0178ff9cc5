use super::ValidationError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// A budget: `count` requests per `period`, with a burst of up to `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// How many requests the period allows.
    pub count: u32,
    /// The period the count is spread over.
    pub period: Duration,
}

impl Limit {
    /// `count` per minute.
    pub fn per_minute(count: u32) -> Self {
        Self {
            count,
            period: Duration::from_secs(60),
        }
    }

    /// `count` per hour.
    pub fn per_hour(count: u32) -> Self {
        Self {
            count,
            period: Duration::from_secs(3600),
        }
    }
}

/// A team's rate budgets for both widget surfaces; each team may change any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Documented surface: POSTs per visitor per minute.
    pub message_distinct_id_per_minute: u32,
    /// Documented surface: POSTs per client IP per minute.
    pub message_ip_per_minute: u32,
    /// Documented surface: POSTs per team per hour.
    pub message_team_per_hour: u32,
    /// Documented surface: GETs per visitor per minute.
    pub read_distinct_id_per_minute: u32,
    /// posthog-js surface: calls per widget session (or IP) per minute.
    pub widget_session_per_minute: u32,
    /// posthog-js surface: reads per team per hour.
    pub team_reads_per_hour: u32,
    /// posthog-js surface: writes per team per hour.
    pub team_writes_per_hour: u32,
    /// Restore-by-email requests per email per hour.
    pub restore_email_per_hour: u32,
    /// Restore-by-email requests per IP per minute.
    pub restore_ip_per_minute: u32,
    /// Both surfaces: every widget request per client IP (IPv6: per /64) per minute, refused
    /// ones included; generous, as many visitors may share one NAT address.
    pub widget_ip_per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            message_distinct_id_per_minute: 10,
            message_ip_per_minute: 100,
            message_team_per_hour: 1000,
            read_distinct_id_per_minute: 30,
            widget_session_per_minute: 30,
            team_reads_per_hour: 3600,
            team_writes_per_hour: 3600,
            restore_email_per_hour: 3,
            restore_ip_per_minute: 10,
            widget_ip_per_minute: 1200,
        }
    }
}

/// The largest budget a team may set; beyond it a limit is no limit.
const MAX_LIMIT: u64 = 100_000_000;

impl RateLimits {
    /// Applies a partial `rate_limits` object over `self`: unknown keys and values that are
    /// not integers in 1..=100,000,000 are refused, naming the key.
    pub fn merge_json(&self, value: &Value) -> Result<Self, ValidationError> {
        let Value::Object(patch) = value else {
            return Err(ValidationError::new(
                "rate_limits",
                "rate_limits must be an object",
            ));
        };
        let mut current = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(ValidationError::new(
                    "rate_limits",
                    "rate_limits are invalid",
                ))
            }
        };
        for (key, v) in patch {
            if !current.contains_key(key) {
                return Err(ValidationError::new(
                    format!("rate_limits.{key}"),
                    format!("unknown rate limit {key:?}"),
                ));
            }
            match v.as_u64() {
                Some(n) if (1..=MAX_LIMIT).contains(&n) => {
                    current.insert(key.clone(), Value::from(n));
                }
                _ => {
                    return Err(ValidationError::new(
                        format!("rate_limits.{key}"),
                        "a rate limit must be an integer from 1 to 100000000",
                    ))
                }
            }
        }
        serde_json::from_value(Value::Object(current))
            .map_err(|_| ValidationError::new("rate_limits", "rate_limits are invalid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partial_updates_keep_the_other_defaults() {
        let l = RateLimits::default()
            .merge_json(&json!({"message_distinct_id_per_minute": 3}))
            .unwrap();
        assert_eq!(l.message_distinct_id_per_minute, 3);
        assert_eq!(l.message_ip_per_minute, 100);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let d = RateLimits::default();
        assert_eq!(
            d.merge_json(&json!({"per_second": 1})).unwrap_err().field,
            "rate_limits.per_second"
        );
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("10"),
            json!(null),
            json!(1u64 << 40),
        ] {
            assert!(d
                .merge_json(&json!({"message_ip_per_minute": bad}))
                .is_err());
        }
        assert!(d.merge_json(&json!([1])).is_err());
    }

    #[test]
    fn stored_json_round_trips() {
        let v = serde_json::to_value(RateLimits::default()).unwrap();
        assert_eq!(v["restore_ip_per_minute"], 10);
        let back: RateLimits = serde_json::from_value(v).unwrap();
        assert_eq!(back, RateLimits::default());
    }
}
