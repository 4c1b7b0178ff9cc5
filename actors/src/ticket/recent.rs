//! The recent-messages window a ticket actor keeps, so a widget polling at the tail of a
//! ticket (the common case: nothing new) is answered from memory without a query.

use crate::store::{MessagePage, StoredMessage};
use chrono::{DateTime, Utc};
use std::collections::VecDeque;

/// The newest messages of one ticket, with a `floor`: every message created strictly after
/// the floor is in the window. Without a floor the window answers nothing.
#[derive(Debug, Clone, Default)]
pub struct Recent {
    floor: Option<DateTime<Utc>>,
    /// The window holds the ticket's whole history (it has seen every message since the
    /// first), so a read without `after` is answered from memory too.
    from_start: bool,
    messages: VecDeque<StoredMessage>,
    capacity: usize,
}

impl Recent {
    /// A window that knows nothing yet (every read goes to the database).
    pub fn unknown(capacity: usize) -> Self {
        Self {
            floor: None,
            from_start: false,
            messages: VecDeque::new(),
            capacity,
        }
    }

    /// A window for a ticket whose newest message is at `tail`: nothing after it exists yet.
    pub fn at_tail(capacity: usize, tail: Option<DateTime<Utc>>) -> Self {
        Self {
            floor: tail,
            from_start: false,
            messages: VecDeque::new(),
            capacity,
        }
    }

    /// Forgets everything, after a write whose outcome is unknown.
    pub fn invalidate(&mut self) {
        self.floor = None;
        self.from_start = false;
        self.messages.clear();
    }

    /// Adds committed messages. `prev_tail` is the ticket's newest timestamp before them as
    /// read under the row lock: if it is not what this window ends with, someone else wrote
    /// in between, and the window restarts from `prev_tail`.
    pub fn extend(&mut self, prev_tail: Option<DateTime<Utc>>, committed: Vec<StoredMessage>) {
        let tail = self.messages.back().map(|m| m.created_at).or(self.floor);
        if self.floor.is_none() || tail != prev_tail || prev_tail.is_none() {
            self.messages.clear();
            self.from_start = prev_tail.is_none();
            self.floor = match (prev_tail, committed.first()) {
                (Some(p), _) => Some(p),
                (None, Some(first)) => Some(first.created_at - chrono::Duration::microseconds(1)),
                (None, None) => None,
            };
        }
        for m in committed {
            self.messages.push_back(m);
        }
        while self.messages.len() > self.capacity {
            if let Some(old) = self.messages.pop_front() {
                self.floor = Some(old.created_at);
                self.from_start = false;
            }
        }
    }

    /// Answers "messages strictly after `after`" from memory, or `None` when the window
    /// does not reach back that far.
    pub fn page(
        &self,
        after: Option<DateTime<Utc>>,
        limit: usize,
        include_private: bool,
    ) -> Option<MessagePage> {
        let floor = self.floor?;
        let after = match after {
            Some(a) if a >= floor => a,
            None if self.from_start => floor,
            _ => return None,
        };
        let mut visible = self
            .messages
            .iter()
            .filter(|m| m.created_at > after && (include_private || !m.is_private));
        let messages: Vec<StoredMessage> = visible.by_ref().take(limit).cloned().collect();
        let has_more = visible.next().is_some();
        Some(MessagePage { messages, has_more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AuthorType;
    use chrono::TimeZone;
    use uuid::Uuid;

    fn at(micros: i64) -> DateTime<Utc> {
        Utc.timestamp_micros(micros).single().unwrap()
    }

    fn msg(micros: i64, private: bool) -> StoredMessage {
        StoredMessage {
            id: Uuid::now_v7(),
            content: format!("m{micros}"),
            rich_content: None,
            author_type: AuthorType::Customer,
            author_name: None,
            is_private: private,
            created_at: at(micros),
        }
    }

    fn times(p: &MessagePage) -> Vec<DateTime<Utc>> {
        p.messages.iter().map(|m| m.created_at).collect()
    }

    #[test]
    fn polling_at_the_tail_is_answered_with_nothing_new() {
        let r = Recent::at_tail(8, Some(at(10)));
        let p = r.page(Some(at(10)), 50, false).unwrap();
        assert!(p.messages.is_empty() && !p.has_more);
        assert!(
            r.page(Some(at(9)), 50, false).is_none(),
            "before the floor: ask the database"
        );
        assert!(
            r.page(None, 50, false).is_none(),
            "whole history: ask the database"
        );
    }

    #[test]
    fn contiguous_appends_are_served_in_order_without_private_notes() {
        let mut r = Recent::at_tail(8, Some(at(10)));
        r.extend(Some(at(10)), vec![msg(11, false), msg(12, true)]);
        r.extend(Some(at(12)), vec![msg(13, false)]);
        let p = r.page(Some(at(10)), 50, false).unwrap();
        assert_eq!(times(&p), vec![at(11), at(13)]);
        let p = r.page(Some(at(10)), 50, true).unwrap();
        assert_eq!(times(&p), vec![at(11), at(12), at(13)]);
        let p = r.page(Some(at(10)), 1, false).unwrap();
        assert_eq!((times(&p), p.has_more), (vec![at(11)], true));
    }

    #[test]
    fn a_gap_from_another_writer_restarts_the_window() {
        let mut r = Recent::at_tail(8, Some(at(10)));
        r.extend(Some(at(10)), vec![msg(11, false)]);
        // Someone else appended at 12; our next batch sees prev tail 12.
        r.extend(Some(at(12)), vec![msg(13, false)]);
        assert!(
            r.page(Some(at(11)), 50, false).is_none(),
            "12 is unknown here"
        );
        assert_eq!(
            times(&r.page(Some(at(12)), 50, false).unwrap()),
            vec![at(13)]
        );
    }

    #[test]
    fn a_window_that_saw_the_first_message_answers_the_whole_history() {
        let mut r = Recent::unknown(3);
        r.extend(None, vec![msg(11, false)]);
        r.extend(Some(at(11)), vec![msg(12, false)]);
        assert_eq!(
            times(&r.page(None, 50, false).unwrap()),
            vec![at(11), at(12)]
        );
        r.extend(Some(at(12)), vec![msg(13, false), msg(14, false)]);
        assert!(
            r.page(None, 50, false).is_none(),
            "the first message fell out of the window"
        );
    }

    #[test]
    fn overflow_raises_the_floor() {
        let mut r = Recent::at_tail(2, Some(at(10)));
        r.extend(
            Some(at(10)),
            vec![msg(11, false), msg(12, false), msg(13, false)],
        );
        assert!(r.page(Some(at(10)), 50, false).is_none());
        assert_eq!(
            times(&r.page(Some(at(11)), 50, false).unwrap()),
            vec![at(12), at(13)]
        );
    }

    #[test]
    fn an_invalidated_window_answers_nothing_until_the_next_append() {
        let mut r = Recent::at_tail(8, Some(at(10)));
        r.invalidate();
        assert!(r.page(Some(at(10)), 50, false).is_none());
        r.extend(Some(at(15)), vec![msg(16, false)]);
        assert_eq!(
            times(&r.page(Some(at(15)), 50, false).unwrap()),
            vec![at(16)]
        );
    }
}
