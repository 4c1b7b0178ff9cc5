use super::ValidationError;
use serde_json::{Map, Value};

/// Visitor attributes sent by the widget (name, email, plan…): a flat object of scalars.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Traits(Map<String, Value>);

impl Traits {
    /// Accepts at most 50 keys of 1–200 characters whose values are strings (≤ 500 chars),
    /// numbers, booleans or null; anything nested is refused.
    pub fn parse(value: &Value) -> Result<Self, ValidationError> {
        const FIELD: &str = "traits";
        let Value::Object(map) = value else {
            return Err(ValidationError::new(FIELD, "traits must be an object"));
        };
        if map.len() > 50 {
            return Err(ValidationError::new(
                FIELD,
                "traits may have at most 50 keys",
            ));
        }
        for (key, v) in map {
            if key.contains('\0') || matches!(v, Value::String(s) if s.contains('\0')) {
                return Err(ValidationError::new(
                    FIELD,
                    "traits must not contain NUL characters",
                ));
            }
            let n = key.chars().count();
            if n == 0 || n > 200 {
                return Err(ValidationError::new(
                    FIELD,
                    "trait names must be 1 to 200 characters",
                ));
            }
            match v {
                Value::String(s) if s.chars().count() > 500 => {
                    return Err(ValidationError::new(
                        FIELD,
                        format!("trait {key:?} is longer than 500 characters"),
                    ))
                }
                Value::Array(_) | Value::Object(_) => {
                    return Err(ValidationError::new(
                        FIELD,
                        format!("trait {key:?} must be a string, number, boolean or null"),
                    ))
                }
                _ => {}
            }
        }
        Ok(Self(map.clone()))
    }

    /// Whether there is nothing to merge.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Merges `later` over `self`, as a follow-up's traits are merged into the ticket's.
    pub fn merge(&mut self, later: &Traits) {
        for (k, v) in &later.0 {
            self.0.insert(k.clone(), v.clone());
        }
    }

    /// The JSON object to store.
    pub fn to_json(&self) -> Value {
        Value::Object(self.0.clone())
    }

    /// A string trait such as `name`, for labelling the visitor's messages.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_flat_scalars() {
        let t = Traits::parse(&json!({"name": "John", "age": 3, "vip": true, "x": null})).unwrap();
        assert_eq!(t.get_str("name"), Some("John"));
    }

    #[test]
    fn refuses_nesting_non_objects_and_oversize() {
        assert!(Traits::parse(&json!({"a": {"b": 1}})).is_err());
        assert!(Traits::parse(&json!({"a": [1]})).is_err());
        assert!(Traits::parse(&json!([1])).is_err());
        assert!(Traits::parse(&json!("x")).is_err());
        assert!(Traits::parse(&json!({"": 1})).is_err());
        assert!(
            Traits::parse(&json!({"name": "a\u{0}b"})).is_err(),
            "PostgreSQL cannot store NUL"
        );
        assert!(Traits::parse(&json!({"a\u{0}": 1})).is_err());
        assert!(Traits::parse(&json!({"a": "x".repeat(501)})).is_err());
        let many: Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
        assert!(Traits::parse(&Value::Object(many)).is_err());
    }

    #[test]
    fn later_traits_win_when_merged() {
        let mut t = Traits::parse(&json!({"name": "John", "plan": "free"})).unwrap();
        t.merge(&Traits::parse(&json!({"plan": "pro"})).unwrap());
        assert_eq!(t.to_json(), json!({"name": "John", "plan": "pro"}));
    }
}
