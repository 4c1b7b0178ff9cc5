//! Bounded windows and maps: what keeps the detector's memory bounded however many keys
//! strangers send (old events fall out of a window; a full map forgets its least recently
//! active keys).

use super::rules::{Score, MAX_EVENTS, WINDOW};
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Instant;

/// Appends to a window, dropping what is too old or beyond [`MAX_EVENTS`].
/// How many distinct visitors a window of (time, visitor hash) holds (at most `MAX_EVENTS`).
pub(super) fn distinct_visitors(window: &VecDeque<(Instant, u64)>) -> usize {
    let mut hashes: Vec<u64> = window.iter().map(|(_, v)| *v).collect();
    hashes.sort_unstable();
    hashes.dedup();
    hashes.len()
}

pub(super) fn push<T>(window: &mut VecDeque<T>, item: T, now: Instant, at: impl Fn(&T) -> Instant) {
    window.push_back(item);
    while window
        .front()
        .is_some_and(|e| now.duration_since(at(e)) > WINDOW)
        || window.len() > MAX_EVENTS
    {
        window.pop_front();
    }
}

/// When an entry was last active: what a full map evicts by.
pub(super) trait LastActive {
    /// The newest instant the entry holds (`None`: empty).
    fn last_active(&self) -> Option<Instant>;
}

impl<T> LastActive for VecDeque<(Instant, T)> {
    fn last_active(&self) -> Option<Instant> {
        self.back().map(|(t, _)| *t)
    }
}

impl LastActive for VecDeque<Instant> {
    fn last_active(&self) -> Option<Instant> {
        self.back().copied()
    }
}

impl LastActive for Score {
    fn last_active(&self) -> Option<Instant> {
        self.reasons.values().max().copied()
    }
}

impl LastActive for (Instant, u32) {
    fn last_active(&self) -> Option<Instant> {
        Some(self.0)
    }
}

/// The entry for `key`, making room first when the map is full (see [`make_room`]).
pub(super) fn bounded_entry<'a, K: Hash + Eq + Clone, V: Default + LastActive>(
    map: &'a mut HashMap<K, V>,
    key: K,
    max_keys: usize,
    evicted: &mut u64,
) -> &'a mut V {
    make_room(map, &key, max_keys, evicted);
    map.entry(key).or_default()
}

/// Before `key` is added to a full map, forgets its least recently active sixteenth (one
/// O(n) pass per n/16 new keys), so a flood of new keys can neither grow the map nor stop a
/// new key from being tracked. Adds the number forgotten to `evicted`.
pub(super) fn make_room<K: Hash + Eq + Clone, V: LastActive>(
    map: &mut HashMap<K, V>,
    key: &K,
    max_keys: usize,
    evicted: &mut u64,
) {
    if map.len() < max_keys || map.contains_key(key) {
        return;
    }
    let target = max_keys - max_keys / 16;
    let excess = (map.len() + 1).saturating_sub(target).clamp(1, map.len());
    let mut by_age: Vec<(Option<Instant>, &K)> =
        map.iter().map(|(k, v)| (v.last_active(), k)).collect();
    by_age.select_nth_unstable_by_key(excess - 1, |(t, _)| *t);
    let oldest: Vec<K> = by_age[..excess].iter().map(|(_, k)| (*k).clone()).collect();
    for k in &oldest {
        map.remove(k);
    }
    *evicted += oldest.len() as u64;
}
