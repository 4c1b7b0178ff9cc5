//! A ticket's rules for new messages: their timestamps and author names, reopening, the
//! counters, the public preview and the merged traits. They are plain functions so they are
//! written and tested once: the store locks the ticket's row, reads a [`TicketBefore`] from
//! it, inserts the messages with their [`Stamp`]s and writes the [`TicketAfter`] — for a
//! follow-up batch (`src/store/commit.rs`) and for a ticket's first message alike.
//!
//! Over 500 lines only because of its unit and property tests (the rules themselves are
//! about 170 lines).

use super::{assign_created_at, AuthorType, TicketStatus, Traits};
use crate::store::NewMessage;
use chrono::{DateTime, Utc};

/// What the rules read from a ticket's row, under its lock.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketBefore {
    /// Status; a visitor's message may reopen it.
    pub status: TicketStatus,
    /// The newest message's timestamp: new ones come strictly after it.
    pub last_created_at: Option<DateTime<Utc>>,
    /// Public messages so far (what widgets count).
    pub message_count: i32,
    /// Visitor messages the team has not read.
    pub unread_team: i32,
    /// Operator messages the visitor has not read.
    pub unread_customer: i32,
    /// The `name` trait as text: labels visitor messages that carry no name of their own.
    pub name: Option<String>,
    /// The stored traits, which a merge is capped against. `None` when they were not read,
    /// which is right only for a batch that merges none ([`merges_traits`]): reading them on
    /// every append would cost every POST a JSON parse.
    pub traits: Option<Traits>,
}

impl TicketBefore {
    /// A ticket about to be opened with `traits`: nothing counted yet, status new.
    pub fn opening(traits: Traits) -> Self {
        Self {
            status: TicketStatus::New,
            last_created_at: None,
            message_count: 0,
            unread_team: 0,
            unread_customer: 0,
            name: traits.get_str("name").map(str::to_owned),
            traits: Some(traits),
        }
    }
}

/// A message's place in its ticket, fixed under the row lock before it is inserted.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    /// See [`assign_created_at`]: strictly increasing within the ticket.
    pub created_at: DateTime<Utc>,
    /// The name shown with the message.
    pub author_name: Option<String>,
}

/// What a ticket's row becomes once a batch's written messages are counted.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketAfter {
    /// Status after the batch.
    pub status: TicketStatus,
    /// The newest written message's timestamp.
    pub last_created_at: DateTime<Utc>,
    /// Public messages, the batch's included.
    pub message_count: i32,
    /// Visitor messages the team has not read, the batch's included.
    pub unread_team: i32,
    /// Operator messages the visitor has not read, the batch's included.
    pub unread_customer: i32,
    /// The newest public message's text and timestamp (the preview); `None` keeps the stored
    /// one, so a batch of private notes does not erase it.
    pub last_public: Option<(String, DateTime<Utc>)>,
    /// Traits to set over the stored ones: only keys that change, and only what fits the
    /// caps ([`Traits::merge_within_caps`]); `None` keeps them as they are.
    pub traits: Option<Traits>,
}

/// Whether a batch may merge traits, so the store must read the ticket's traits with its
/// lock ([`TicketBefore::traits`]).
pub fn merges_traits(messages: &[NewMessage]) -> bool {
    messages.iter().any(|m| {
        m.author_type == AuthorType::Customer && m.traits.as_ref().is_some_and(|t| !t.is_empty())
    })
}

/// The timestamps and author names of a batch appended to `before` with the database clock
/// reading `now`. A visitor message without a name of its own is labelled with the `name`
/// trait as it stands after that message (a batch may rename the visitor midway).
pub fn stamp_batch(
    before: &TicketBefore,
    now: DateTime<Utc>,
    messages: &[NewMessage],
) -> Vec<Stamp> {
    let times = assign_created_at(now, before.last_created_at, messages.len());
    let mut name = before.name.as_deref();
    messages
        .iter()
        .zip(times)
        .map(|(m, created_at)| {
            if let Some(n) = m.traits.as_ref().and_then(|t| t.get_str("name")) {
                name = Some(n);
            }
            let author_name = match (&m.author_name, m.author_type) {
                (Some(n), _) => Some(n.clone()),
                (None, AuthorType::Customer) => name.map(str::to_owned),
                (None, _) => None,
            };
            Stamp {
                created_at,
                author_name,
            }
        })
        .collect()
}

/// The ticket after the messages of a batch that were `written` (the others reused an
/// idempotency key and change nothing), or `None` when none was: the row stays as it was.
///
/// A visitor's message reopens a resolved ticket when it `reopens`, counts as unread for the
/// team and merges its traits; an operator's public message counts as unread for the
/// visitor; every public message counts and becomes the preview. The batch's traits are
/// merged in order, then capped once against the stored ones.
pub fn apply_batch(
    before: &TicketBefore,
    messages: &[NewMessage],
    stamps: &[Stamp],
    written: &[bool],
) -> Option<TicketAfter> {
    debug_assert_eq!(messages.len(), stamps.len());
    debug_assert_eq!(messages.len(), written.len());
    let mut status = before.status;
    let (mut public, mut from_visitor, mut from_team) = (0i32, 0i32, 0i32);
    let mut last_created_at = None;
    let mut last_public = None;
    let mut traits = Traits::default();
    let batch = messages.iter().zip(stamps).zip(written);
    for ((m, stamp), _) in batch.filter(|(_, written)| **written) {
        last_created_at = Some(stamp.created_at);
        if m.author_type == AuthorType::Customer {
            if m.reopens {
                status = status.after_customer_message();
            }
            from_visitor += 1;
            if let Some(t) = &m.traits {
                traits.merge(t);
            }
        } else if !m.is_private {
            from_team += 1;
        }
        if !m.is_private {
            public += 1;
            last_public = Some((m.content.as_str(), stamp.created_at));
        }
    }
    debug_assert!(
        traits.is_empty() || before.traits.is_some(),
        "a batch that merges traits needs the stored ones"
    );
    let traits = match &before.traits {
        Some(stored) if !traits.is_empty() => stored.merge_within_caps(&traits),
        _ => None,
    };
    Some(TicketAfter {
        status,
        last_created_at: last_created_at?,
        message_count: before.message_count.saturating_add(public),
        unread_team: before.unread_team.saturating_add(from_visitor),
        unread_customer: before.unread_customer.saturating_add(from_team),
        last_public: last_public.map(|(text, at)| (text.to_owned(), at)),
        traits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;
    use uuid::Uuid;

    fn at(micros: i64) -> DateTime<Utc> {
        Utc.timestamp_micros(micros).single().unwrap()
    }

    fn visitor(content: &str) -> NewMessage {
        NewMessage {
            id: Uuid::now_v7(),
            content: content.to_owned(),
            author_type: AuthorType::Customer,
            author_name: None,
            is_private: false,
            distinct_id: Some("visitor@example.com".into()),
            client_message_id: None,
            traits: None,
            reopens: true,
        }
    }

    fn operator(content: &str, private: bool) -> NewMessage {
        NewMessage {
            author_type: AuthorType::Human,
            author_name: Some("Olga".into()),
            is_private: private,
            distinct_id: None,
            reopens: false,
            ..visitor(content)
        }
    }

    fn with_traits(mut m: NewMessage, traits: serde_json::Value) -> NewMessage {
        m.traits = Some(Traits::parse(&traits).unwrap());
        m
    }

    fn before(status: TicketStatus) -> TicketBefore {
        TicketBefore {
            status,
            last_created_at: Some(at(1_000)),
            message_count: 3,
            unread_team: 1,
            unread_customer: 2,
            name: Some("Ann".into()),
            traits: Some(Traits::default()),
        }
    }

    /// Stamps and applies a batch whose every message was written.
    fn apply_all(b: &TicketBefore, batch: &[NewMessage]) -> Option<TicketAfter> {
        let stamps = stamp_batch(b, at(2_000), batch);
        apply_batch(b, batch, &stamps, &vec![true; batch.len()])
    }

    #[test]
    fn a_visitor_message_reopens_a_resolved_ticket_and_waits_for_the_team() {
        let after = apply_all(&before(TicketStatus::Resolved), &[visitor("hello?")]).unwrap();
        assert_eq!(after.status, TicketStatus::Open);
        assert_eq!(
            (
                after.message_count,
                after.unread_team,
                after.unread_customer
            ),
            (4, 2, 2)
        );
        assert_eq!(after.last_public, Some(("hello?".to_owned(), at(2_000))));
        assert_eq!(after.last_created_at, at(2_000));
        assert_eq!(after.traits, None);
    }

    #[test]
    fn a_message_that_does_not_reopen_leaves_a_resolved_ticket_resolved() {
        let mut m = visitor("from posthog-js");
        m.reopens = false;
        let after = apply_all(&before(TicketStatus::Resolved), &[m]).unwrap();
        assert_eq!(after.status, TicketStatus::Resolved);
        assert_eq!(after.unread_team, 2, "it still waits for the team");
    }

    #[test]
    fn operators_count_for_the_visitor_and_private_notes_for_nobody() {
        let b = before(TicketStatus::Pending);
        let after = apply_all(&b, &[operator("on it", false), operator("note", true)]).unwrap();
        assert_eq!(after.status, TicketStatus::Pending);
        assert_eq!(
            (
                after.message_count,
                after.unread_team,
                after.unread_customer
            ),
            (4, 1, 3)
        );
        assert_eq!(
            after.last_public,
            Some(("on it".to_owned(), at(2_000))),
            "the note is newer but not the preview"
        );
        assert_eq!(
            after.last_created_at,
            at(2_001),
            "the note is still the newest message"
        );

        let note_only = apply_all(&b, &[operator("note", true)]).unwrap();
        assert_eq!(note_only.last_public, None, "the stored preview stays");
        assert_eq!((note_only.message_count, note_only.unread_customer), (3, 2));
    }

    #[test]
    fn a_batch_of_replays_changes_nothing() {
        let b = before(TicketStatus::Resolved);
        let batch = [visitor("again"), visitor("and again")];
        let stamps = stamp_batch(&b, at(2_000), &batch);
        assert_eq!(apply_batch(&b, &batch, &stamps, &[false, false]), None);
        let second_only = apply_batch(&b, &batch, &stamps, &[false, true]).unwrap();
        assert_eq!(second_only.last_created_at, at(2_001));
        assert_eq!(second_only.message_count, 4);
    }

    #[test]
    fn visitor_messages_are_signed_with_the_name_trait_as_it_stood() {
        let b = before(TicketStatus::Open);
        let batch = [
            visitor("first"),
            with_traits(visitor("renamed"), json!({"name": "Bea"})),
            operator("hi Bea", false),
            NewMessage {
                author_name: None,
                ..operator("unsigned", false)
            },
            with_traits(visitor("no name trait"), json!({"plan": "pro"})),
        ];
        let names: Vec<_> = stamp_batch(&b, at(500), &batch)
            .into_iter()
            .map(|s| s.author_name)
            .collect();
        let expected = [Some("Ann"), Some("Bea"), Some("Olga"), None, Some("Bea")];
        assert_eq!(names, expected.map(|n| n.map(str::to_owned)));
        let stamps = stamp_batch(&TicketBefore { name: None, ..b }, at(500), &[visitor("x")]);
        assert_eq!(stamps[0].author_name, None, "no name known");
        assert_eq!(
            stamps[0].created_at,
            at(1_001),
            "after the stored newest message"
        );
    }

    #[test]
    fn a_batch_merges_its_traits_in_order_then_caps_them_once() {
        let b = TicketBefore {
            traits: Some(Traits::parse(&json!({"name": "Ann", "plan": "free"})).unwrap()),
            ..before(TicketStatus::Open)
        };
        let batch = [
            with_traits(visitor("a"), json!({"plan": "pro", "seats": 2})),
            with_traits(visitor("b"), json!({"seats": 5})),
        ];
        assert!(merges_traits(&batch));
        let after = apply_all(&b, &batch).unwrap();
        assert_eq!(
            after.traits.map(|t| t.to_json()),
            Some(json!({"plan": "pro", "seats": 5}))
        );
        // Only visitors' written messages merge.
        let stamps = stamp_batch(&b, at(2_000), &batch);
        let none_written = apply_batch(&b, &batch, &stamps, &[false, true]).unwrap();
        assert_eq!(
            none_written.traits.map(|t| t.to_json()),
            Some(json!({"seats": 5}))
        );
        let mut from_operator = operator("x", false);
        from_operator.traits = batch[0].traits.clone();
        assert!(!merges_traits(&[from_operator]));
        assert!(!merges_traits(&[with_traits(visitor("x"), json!({}))]));
    }

    #[test]
    fn a_new_ticket_counts_its_first_message() {
        let traits = Traits::parse(&json!({"name": "Ann"})).unwrap();
        let first = with_traits(visitor("help"), json!({"name": "Ann"}));
        let b = TicketBefore::opening(traits);
        let stamps = stamp_batch(&b, at(7), std::slice::from_ref(&first));
        assert_eq!(
            stamps,
            vec![Stamp {
                created_at: at(7),
                author_name: Some("Ann".into())
            }]
        );
        let after = apply_batch(&b, &[first], &stamps, &[true]).unwrap();
        assert_eq!(
            after,
            TicketAfter {
                status: TicketStatus::New,
                last_created_at: at(7),
                message_count: 1,
                unread_team: 1,
                unread_customer: 0,
                last_public: Some(("help".into(), at(7))),
                traits: None,
            }
        );
    }

    /// A message of any kind, and whether it was written (not a replay).
    fn message() -> impl Strategy<Value = (NewMessage, bool)> {
        let author = prop_oneof![
            Just(AuthorType::Customer),
            Just(AuthorType::Human),
            Just(AuthorType::Ai),
        ];
        let name = proptest::option::of(0u8..3);
        (
            author,
            any::<bool>(),
            any::<bool>(),
            name.clone(),
            name,
            any::<bool>(),
            0u16..1000,
        )
            .prop_map(
                |(author_type, is_private, reopens, signed, renamed, written, n)| {
                    let mut m = visitor(&format!("message {n}"));
                    m.author_type = author_type;
                    m.is_private = is_private && author_type != AuthorType::Customer;
                    m.reopens = reopens;
                    m.author_name = signed.map(|i| format!("signed{i}"));
                    if let Some(i) = renamed {
                        m = with_traits(m, json!({"name": format!("renamed{i}")}));
                    }
                    (m, written)
                },
            )
    }

    fn status() -> impl Strategy<Value = TicketStatus> {
        proptest::sample::select(TicketStatus::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn counters_status_and_preview_follow_the_written_messages(
            status in status(), counts in (0i32..1000, 0i32..1000, 0i32..1000),
            batch in proptest::collection::vec(message(), 0..12),
        ) {
            let b = TicketBefore {
                status, message_count: counts.0, unread_team: counts.1, unread_customer: counts.2,
                ..before(status)
            };
            let (messages, written): (Vec<NewMessage>, Vec<bool>) = batch.into_iter().unzip();
            let stamps = stamp_batch(&b, at(0), &messages);
            let after = apply_batch(&b, &messages, &stamps, &written);
            let kept: Vec<(&NewMessage, &Stamp)> = messages.iter().zip(&stamps).zip(&written)
                .filter(|(_, w)| **w).map(|(x, _)| x).collect();
            let Some(after) = after else {
                prop_assert!(kept.is_empty());
                return Ok(());
            };
            let count = |f: &dyn Fn(&NewMessage) -> bool| kept.iter().filter(|(m, _)| f(m)).count() as i32;
            let customer = |m: &NewMessage| m.author_type == AuthorType::Customer;
            prop_assert_eq!(after.message_count, b.message_count + count(&|m| !m.is_private));
            prop_assert_eq!(after.unread_team, b.unread_team + count(&customer));
            prop_assert_eq!(after.unread_customer, b.unread_customer + count(&|m| !customer(m) && !m.is_private));
            let reopened = status == TicketStatus::Resolved && count(&|m| customer(m) && m.reopens) > 0;
            prop_assert_eq!(after.status, if reopened { TicketStatus::Open } else { status });
            prop_assert_eq!(Some(after.last_created_at), kept.last().map(|(_, s)| s.created_at));
            let preview = kept.iter().rev().find(|(m, _)| !m.is_private).map(|(m, s)| (m.content.clone(), s.created_at));
            prop_assert_eq!(after.last_public, preview);
        }

        #[test]
        fn messages_are_signed_with_their_own_name_or_the_latest_name_trait(
            batch in proptest::collection::vec(message(), 0..12), known in proptest::option::of("[a-z]{1,5}"),
        ) {
            let b = TicketBefore { name: known.clone(), ..before(TicketStatus::Open) };
            let (messages, _): (Vec<NewMessage>, Vec<bool>) = batch.into_iter().unzip();
            let stamps = stamp_batch(&b, at(0), &messages);
            prop_assert_eq!(stamps.len(), messages.len());
            for (i, (m, stamp)) in messages.iter().zip(&stamps).enumerate() {
                let trait_name = messages[..=i].iter().rev()
                    .find_map(|m| m.traits.as_ref().and_then(|t| t.get_str("name")).map(str::to_owned))
                    .or(known.clone());
                let expected = match m.author_type {
                    _ if m.author_name.is_some() => m.author_name.clone(),
                    AuthorType::Customer => trait_name,
                    _ => None,
                };
                prop_assert_eq!(&stamp.author_name, &expected);
            }
        }

        #[test]
        fn two_batches_end_where_one_batch_of_both_ends(
            status in status(),
            batch in proptest::collection::vec(message(), 1..12), split in 0usize..12,
        ) {
            let (messages, _): (Vec<NewMessage>, Vec<bool>) = batch.into_iter().unzip();
            let split = split.min(messages.len());
            let b = before(status);
            let whole = apply_all(&b, &messages).unwrap();
            let (first, second) = messages.split_at(split);
            let first_after = apply_all(&b, first);
            let middle = match &first_after {
                Some(a) => TicketBefore {
                    status: a.status,
                    last_created_at: Some(a.last_created_at),
                    message_count: a.message_count,
                    unread_team: a.unread_team,
                    unread_customer: a.unread_customer,
                    ..b.clone()
                },
                None => b.clone(),
            };
            // The same clock reading: the second batch's timestamps continue where the
            // first's ended, as within the whole batch.
            let stamps = stamp_batch(&middle, at(2_000), second);
            let end = apply_batch(&middle, second, &stamps, &vec![true; second.len()]);
            if let Some(end) = end {
                prop_assert_eq!(
                    (end.status, end.message_count, end.unread_team, end.unread_customer),
                    (whole.status, whole.message_count, whole.unread_team, whole.unread_customer)
                );
                prop_assert_eq!(end.last_created_at, whole.last_created_at);
                let preview = end.last_public.or(first_after.and_then(|a| a.last_public));
                prop_assert_eq!(preview, whole.last_public);
            } else {
                prop_assert!(second.is_empty());
                prop_assert_eq!(first_after, Some(whole));
            }
        }
    }
}
