use super::ValidationError;
use chrono::{DateTime, Duration, Utc};

/// Where a ticket stands in the operators' workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TicketStatus {
    /// Opened by the visitor, nobody has looked yet.
    New,
    /// Being worked on.
    Open,
    /// Waiting for the visitor.
    Pending,
    /// Parked by the team.
    OnHold,
    /// Done; a new customer message reopens it.
    Resolved,
}

impl TicketStatus {
    /// Every status, in workflow order.
    pub const ALL: [TicketStatus; 5] = [
        TicketStatus::New,
        TicketStatus::Open,
        TicketStatus::Pending,
        TicketStatus::OnHold,
        TicketStatus::Resolved,
    ];

    /// The wire and storage spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::New => "new",
            TicketStatus::Open => "open",
            TicketStatus::Pending => "pending",
            TicketStatus::OnHold => "on_hold",
            TicketStatus::Resolved => "resolved",
        }
    }

    /// Parses a status filter or update; `field` names the request field.
    pub fn parse(raw: &str, field: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| {
                ValidationError::new(
                    field,
                    "status must be one of new, open, pending, on_hold, resolved",
                )
            })
    }

    /// Reads the stored spelling; the database's CHECK constraint keeps it valid, `Open` is
    /// the harmless fallback.
    pub fn from_stored(raw: &str) -> Self {
        Self::parse(raw, "status").unwrap_or(TicketStatus::Open)
    }

    /// The status after a visitor writes: a resolved ticket is reopened, others keep theirs.
    pub fn after_customer_message(self) -> Self {
        match self {
            TicketStatus::Resolved => TicketStatus::Open,
            other => other,
        }
    }
}

/// Timestamps for `n` messages appended to a ticket whose latest message is at `last`, with
/// the database clock reading `now`: strictly increasing, and strictly after `last` even when
/// the clock reads earlier (clock steps, another node's clock) — the promise that lets a
/// widget poll with `after` and never miss or repeat a message.
pub fn assign_created_at(
    now: DateTime<Utc>,
    last: Option<DateTime<Utc>>,
    n: usize,
) -> Vec<DateTime<Utc>> {
    let one = Duration::microseconds(1);
    let now = super::truncate_to_micros(now);
    let base = match last {
        Some(last) if last + one > now => last + one,
        _ => now,
    };
    (0..n).map(|i| base + one * i as i32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(micros: i64) -> DateTime<Utc> {
        Utc.timestamp_micros(micros).single().unwrap()
    }

    #[test]
    fn statuses_round_trip_and_reject_unknowns() {
        for s in TicketStatus::ALL {
            assert_eq!(TicketStatus::parse(s.as_str(), "status"), Ok(s));
        }
        assert_eq!(
            TicketStatus::parse("closed", "status").unwrap_err().field,
            "status"
        );
    }

    #[test]
    fn a_customer_message_reopens_only_resolved_tickets() {
        assert_eq!(
            TicketStatus::Resolved.after_customer_message(),
            TicketStatus::Open
        );
        for s in [
            TicketStatus::New,
            TicketStatus::Open,
            TicketStatus::Pending,
            TicketStatus::OnHold,
        ] {
            assert_eq!(s.after_customer_message(), s);
        }
    }

    #[test]
    fn uses_the_clock_when_it_is_ahead() {
        assert_eq!(
            assign_created_at(at(100), Some(at(50)), 2),
            vec![at(100), at(101)]
        );
        assert_eq!(assign_created_at(at(100), None, 1), vec![at(100)]);
    }

    #[test]
    fn stays_after_the_last_message_when_the_clock_lags() {
        assert_eq!(
            assign_created_at(at(40), Some(at(50)), 3),
            vec![at(51), at(52), at(53)]
        );
        assert_eq!(assign_created_at(at(50), Some(at(50)), 1), vec![at(51)]);
    }

    #[test]
    fn drops_sub_microsecond_precision() {
        let now = at(100) + Duration::nanoseconds(999);
        assert_eq!(assign_created_at(now, None, 1), vec![at(100)]);
    }

    proptest! {
        #[test]
        fn batches_are_strictly_increasing_and_after_last(
            now in 0i64..1_000_000, last in proptest::option::of(0i64..1_000_000), n in 0usize..50
        ) {
            let ts = assign_created_at(at(now), last.map(at), n);
            prop_assert_eq!(ts.len(), n);
            for w in ts.windows(2) { prop_assert!(w[0] < w[1]); }
            if let (Some(first), Some(last)) = (ts.first(), last) {
                prop_assert!(*first > at(last));
            }
        }
    }
}
