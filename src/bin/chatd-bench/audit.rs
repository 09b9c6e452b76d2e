//! The books of `reconnect`, pure: the stored events the actors caused
//! against what one receiver read over all its connections, counted as
//! lost, duplicated, out of order, unexpected and mismatched.

use std::collections::{HashMap, HashSet};

/// One stored event an actor caused, as its own connection echoed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caused {
    pub kind: String,
    pub message_id: i64,
    pub room_id: i64,
    pub cursor: String,
    /// The stream position behind the cursor: the commit order.
    pub position: u64,
}

/// One stored event frame a receiver read, in the order it read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub kind: String,
    pub message_id: Option<i64>,
    pub cursor: String,
    /// Read before `synced` on a connection opened with a cursor.
    pub replayed: bool,
}

/// What one receiver's sightings amount to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Events of the receiver's rooms the actors caused.
    pub expected: u64,
    /// Expected events read at least once.
    pub delivered: u64,
    /// Expected events never read.
    pub lost: u64,
    /// Readings of an event already read (by cursor).
    pub duplicated: u64,
    /// First readings of an event of a room after a later event of that
    /// room (the contract orders each room by commit).
    pub out_of_order: u64,
    /// Readings of a cursor no actor caused in the receiver's rooms: an
    /// event of a room it is not in, or one nobody did.
    pub unexpected: u64,
    /// Readings whose cursor is expected but whose kind or message differ.
    pub mismatched: u64,
    pub replayed: u64,
    pub live: u64,
}

impl Tally {
    /// Every count that must be zero, summed.
    pub fn faults(&self) -> u64 {
        self.lost + self.duplicated + self.out_of_order + self.unexpected + self.mismatched
    }

    pub fn add(&mut self, other: &Tally) {
        self.expected += other.expected;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.unexpected += other.unexpected;
        self.mismatched += other.mismatched;
        self.replayed += other.replayed;
        self.live += other.live;
    }
}

/// Compares what a receiver member of `rooms` read with every event the
/// actors caused. A cursor names one event: reading it twice is a
/// duplicate, whatever the frames say; its kind and message must be the
/// ones the actor saw.
pub fn tally(caused: &[Caused], rooms: &HashSet<i64>, sightings: &[Sighting]) -> Tally {
    let expected: HashMap<&str, &Caused> = caused
        .iter()
        .filter(|event| rooms.contains(&event.room_id))
        .map(|event| (event.cursor.as_str(), event))
        .collect();
    let mut tally = Tally { expected: expected.len() as u64, ..Tally::default() };
    let mut read: HashSet<&str> = HashSet::with_capacity(sightings.len());
    let mut newest_in_room: HashMap<i64, u64> = HashMap::new();
    for sighting in sightings {
        if sighting.replayed {
            tally.replayed += 1;
        } else {
            tally.live += 1;
        }
        let Some(event) = expected.get(sighting.cursor.as_str()) else {
            tally.unexpected += 1;
            continue;
        };
        if sighting.kind != event.kind || sighting.message_id != Some(event.message_id) {
            tally.mismatched += 1;
        }
        if !read.insert(sighting.cursor.as_str()) {
            tally.duplicated += 1;
            continue;
        }
        let newest = newest_in_room.entry(event.room_id).or_insert(0);
        if event.position < *newest {
            tally.out_of_order += 1;
        } else {
            *newest = event.position;
        }
    }
    tally.delivered = read.len() as u64;
    tally.lost = tally.expected - tally.delivered;
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: i64 = 1;
    const DIRECT: i64 = 2;
    const OTHER_DIRECT: i64 = 3;

    fn caused(position: u64, kind: &str, message_id: i64, room_id: i64) -> Caused {
        Caused { kind: kind.to_string(), message_id, room_id, cursor: format!("v1.{position}"), position }
    }

    /// The actors' side of the made-up runs below: group and direct-room
    /// events interleaved, and one event of a room the receiver is not in.
    fn history() -> Vec<Caused> {
        vec![
            caused(10, "new_message", 100, GROUP),
            caused(11, "new_message", 101, DIRECT),
            caused(12, "message_like", 100, GROUP),
            caused(13, "new_message", 102, OTHER_DIRECT),
            caused(14, "message_update", 101, DIRECT),
            caused(15, "message_delete", 100, GROUP),
        ]
    }

    fn rooms() -> HashSet<i64> {
        HashSet::from([GROUP, DIRECT])
    }

    /// Sightings as (position, replayed), with kind and message taken from
    /// the history.
    fn seen(entries: &[(u64, bool)]) -> Vec<Sighting> {
        let history = history();
        entries
            .iter()
            .map(|(position, replayed)| {
                let event = history.iter().find(|e| e.position == *position).expect("a position of the history");
                Sighting {
                    kind: event.kind.clone(),
                    message_id: Some(event.message_id),
                    cursor: event.cursor.clone(),
                    replayed: *replayed,
                }
            })
            .collect()
    }

    fn check(entries: &[(u64, bool)], want: Tally) {
        assert_eq!(tally(&history(), &rooms(), &seen(entries)), want, "{entries:?}");
    }

    #[test]
    fn everything_once_in_order_is_clean() {
        check(
            &[(10, false), (11, false), (12, true), (14, true), (15, false)],
            Tally { expected: 5, delivered: 5, replayed: 2, live: 3, ..Tally::default() },
        );
    }

    #[test]
    fn an_event_never_read_is_lost() {
        check(
            &[(10, false), (12, false), (14, false), (15, false)],
            Tally { expected: 5, delivered: 4, lost: 1, live: 4, ..Tally::default() },
        );
        check(&[], Tally { expected: 5, lost: 5, ..Tally::default() });
    }

    #[test]
    fn an_event_replayed_after_it_came_live_is_a_duplicate_not_a_reorder() {
        // Live 10, 11, 12; the reconnect's cursor was 11, so 12 comes again.
        check(
            &[(10, false), (11, false), (12, false), (12, true), (14, true), (15, false)],
            Tally { expected: 5, delivered: 5, duplicated: 1, replayed: 2, live: 4, ..Tally::default() },
        );
    }

    #[test]
    fn a_room_read_backwards_is_out_of_order() {
        // 15 before 12 in the group: one reorder (12 comes after its successor).
        check(
            &[(10, false), (11, false), (15, false), (12, false), (14, false)],
            Tally { expected: 5, delivered: 5, out_of_order: 1, live: 5, ..Tally::default() },
        );
    }

    #[test]
    fn rooms_may_interleave_in_any_order() {
        // The direct room's 14 before the group's 12: each room is in order.
        check(
            &[(10, false), (11, false), (14, false), (12, false), (15, false)],
            Tally { expected: 5, delivered: 5, live: 5, ..Tally::default() },
        );
    }

    #[test]
    fn a_reorder_is_measured_against_the_newest_not_the_previous() {
        // After 15, both 10 and 12 are late: two reorders, not one.
        check(
            &[(15, false), (10, false), (12, false), (11, false), (14, false)],
            Tally { expected: 5, delivered: 5, out_of_order: 2, live: 5, ..Tally::default() },
        );
    }

    #[test]
    fn an_event_of_another_room_is_unexpected() {
        check(
            &[(10, false), (11, false), (12, false), (13, false), (14, false), (15, false)],
            Tally { expected: 5, delivered: 5, unexpected: 1, live: 6, ..Tally::default() },
        );
    }

    #[test]
    fn a_cursor_nobody_caused_is_unexpected() {
        let mut sightings = seen(&[(10, false), (11, false), (12, false), (14, false), (15, false)]);
        sightings.push(Sighting {
            kind: "message_read".to_string(),
            message_id: None,
            cursor: "v1.16".to_string(),
            replayed: true,
        });
        let got = tally(&history(), &rooms(), &sightings);
        assert_eq!(got, Tally { expected: 5, delivered: 5, unexpected: 1, replayed: 1, live: 5, ..Tally::default() });
        assert_eq!(got.faults(), 1);
    }

    #[test]
    fn a_known_cursor_on_another_event_is_mismatched() {
        let mut sightings = seen(&[(10, false), (11, false), (14, false), (15, false)]);
        sightings.insert(
            2,
            Sighting {
                kind: "message_update".to_string(),
                message_id: Some(100),
                cursor: "v1.12".to_string(),
                replayed: false,
            },
        );
        let got = tally(&history(), &rooms(), &sightings);
        assert_eq!(got, Tally { expected: 5, delivered: 5, mismatched: 1, live: 5, ..Tally::default() });
    }

    #[test]
    fn faults_add_up_across_receivers() {
        let a = tally(&history(), &rooms(), &seen(&[(10, false), (10, true), (11, false)]));
        let b = tally(&history(), &HashSet::from([OTHER_DIRECT, GROUP]), &seen(&[(13, false), (12, true), (10, true)]));
        assert_eq!((a.lost, a.duplicated, a.out_of_order), (3, 1, 0));
        assert_eq!((b.expected, b.lost, b.out_of_order), (4, 1, 1));
        let mut total = Tally::default();
        total.add(&a);
        total.add(&b);
        assert_eq!(total.expected, 9);
        assert_eq!(total.faults(), 3 + 1 + 1 + 1);
        assert_eq!((total.replayed, total.live), (3, 3));
    }
}
