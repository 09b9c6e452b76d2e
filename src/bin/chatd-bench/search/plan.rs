//! The pure parts of `search`: who shares a room with whom, how many
//! messages each user sends, and the query shapes with their texts.

use crate::random::XorShift;

use super::texts::{CHINESE, ENGLISH, RUSSIAN, UZBEK, skewed};

/// Direct rooms such that every user is in exactly `per_user` of them and
/// no two users share two: user `u` talks to `u ± d` (mod `users`) for
/// `per_user / 2` distinct offsets `d` drawn from `1..=(users - 1) / 2`
/// (a circulant graph; `d` and `users - d` would be the same rooms).
pub fn direct_pairs(users: usize, per_user: usize, random: &mut XorShift) -> Result<Vec<(usize, usize)>, String> {
    if !per_user.is_multiple_of(2) {
        return Err(format!("--direct-rooms {per_user}: must be even (each room has two members)"));
    }
    let room = (users.saturating_sub(1)) / 2;
    if per_user / 2 > room {
        return Err(format!("--direct-rooms {per_user}: {users} users allow at most {}", room * 2));
    }
    let mut offsets: Vec<usize> = (1..=room).collect();
    // The first per_user/2 of a seeded shuffle.
    for i in 0..offsets.len() {
        let j = i + random.below((offsets.len() - i) as u64) as usize;
        offsets.swap(i, j);
    }
    offsets.truncate(per_user / 2);
    offsets.sort_unstable();
    let mut pairs = Vec::with_capacity(users * per_user / 2);
    for &d in &offsets {
        for u in 0..users {
            pairs.push((u, (u + d) % users));
        }
    }
    Ok(pairs)
}

/// `count` groups of `size` members, members spread evenly: a seeded
/// shuffle of the users, dealt in order around the circle, so each user is
/// in `count * size / users` groups, give or take one.
pub fn groups(users: usize, count: usize, size: usize, random: &mut XorShift) -> Vec<Vec<usize>> {
    let size = size.min(users);
    let mut order: Vec<usize> = (0..users).collect();
    for i in 0..order.len() {
        let j = i + random.below((order.len() - i) as u64) as usize;
        order.swap(i, j);
    }
    (0..count).map(|g| (0..size).map(|j| order[(g * size + j) % users]).collect()).collect()
}

/// User `index`'s part of `total` messages split over `users` (the first
/// `total % users` send one more).
pub fn share(total: u64, users: usize, index: usize) -> u64 {
    let users = users.max(1) as u64;
    total / users + u64::from((index as u64) < total % users)
}

/// The rooms one user sends into.
#[derive(Debug, Clone, Default)]
pub struct UserRooms {
    pub direct: Vec<i64>,
    pub groups: Vec<i64>,
}

impl UserRooms {
    /// A room for the next message: a group `group_percent` of the time
    /// (when the user is in one), else a direct room.
    pub fn pick(&self, random: &mut XorShift, group_percent: u64) -> Option<i64> {
        let use_group = !self.groups.is_empty() && (self.direct.is_empty() || random.below(100) < group_percent);
        let from = if use_group { &self.groups } else { &self.direct };
        (!from.is_empty()).then(|| from[random.below(from.len() as u64) as usize])
    }

    pub fn all(&self) -> impl Iterator<Item = i64> + '_ {
        self.direct.iter().chain(&self.groups).copied()
    }
}

/// What is searched for, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// An English word of 4+ letters, over all the user's rooms.
    Latin,
    /// An Uzbek (Latin script) word of 4+ letters.
    Uzbek,
    /// A Russian word of 4+ letters.
    Cyrillic,
    /// A Chinese word of 3+ characters.
    Chinese,
    /// Two common words of one language with a space between: many
    /// messages hold both, fewer side by side.
    Phrase,
    /// Letters no message holds (absent trigrams).
    Absent,
    /// 1–2 characters that are common (window scan, ends early).
    Short,
    /// 1–2 characters no message holds (the whole window is scanned).
    ShortRare,
    /// A 4+ letter word in one of the user's rooms (`room_id`).
    Room,
}

impl Shape {
    pub const ALL: [Shape; 9] = [
        Shape::Latin,
        Shape::Uzbek,
        Shape::Cyrillic,
        Shape::Chinese,
        Shape::Phrase,
        Shape::Absent,
        Shape::Short,
        Shape::ShortRare,
        Shape::Room,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Latin => "latin",
            Shape::Uzbek => "uzbek",
            Shape::Cyrillic => "cyrillic",
            Shape::Chinese => "chinese",
            Shape::Phrase => "phrase",
            Shape::Absent => "absent",
            Shape::Short => "short",
            Shape::ShortRare => "short_rare",
            Shape::Room => "room",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Shape::Latin => "English word, 4+ letters",
            Shape::Uzbek => "Uzbek (Latin) word, 4+ letters",
            Shape::Cyrillic => "Russian word, 4+ letters",
            Shape::Chinese => "Chinese word, 3+ characters",
            Shape::Phrase => "two common words with a space",
            Shape::Absent => "3+ letters found nowhere",
            Shape::Short => "1-2 common characters (window scan)",
            Shape::ShortRare => "1-2 characters found nowhere (whole window)",
            Shape::Room => "4+ letter word with room_id",
        }
    }

    /// Whether the query names one of the user's rooms.
    pub fn in_one_room(self) -> bool {
        self == Shape::Room
    }

    /// The query text.
    pub fn text(self, random: &mut XorShift) -> String {
        match self {
            Shape::Latin => long_word(random, ENGLISH, 4),
            Shape::Uzbek => long_word(random, UZBEK, 4),
            Shape::Cyrillic => long_word(random, RUSSIAN, 4),
            Shape::Chinese => long_word(random, CHINESE, 3),
            Shape::Room => {
                let list = [ENGLISH, UZBEK, RUSSIAN][random.below(3) as usize];
                long_word(random, list, 4)
            }
            Shape::Phrase => {
                let lists = [ENGLISH, UZBEK, RUSSIAN];
                let list = lists[random.below(3) as usize];
                let first = long_word(random, list, 3);
                let mut second = long_word(random, list, 3);
                while second == first {
                    second = long_word(random, list, 3);
                }
                format!("{first} {second}")
            }
            Shape::Absent => (0..5 + random.below(4)).map(|_| pick(random, &['j', 'q', 'x', 'z'])).collect(),
            Shape::Short => {
                pick(random, &["a", "o", "ha", "uy", "да", "мы", "вы", "и", "好的", "你好", "今天", "👍", "🎉"])
                    .to_string()
            }
            Shape::ShortRare => pick(random, &["zq", "qj", "xj", "ъ", "щ", "Ъ", "鳄", "🦖"]).to_string(),
        }
    }
}

fn pick<T: Copy>(random: &mut XorShift, from: &[T]) -> T {
    from[random.below(from.len() as u64) as usize]
}

/// A word of at least `min` characters from `list`, common ones likelier.
fn long_word(random: &mut XorShift, list: &[&str], min: usize) -> String {
    let long: Vec<&str> = list.iter().copied().filter(|w| w.chars().count() >= min).collect();
    long[skewed(random, long.len())].to_lowercase()
}

/// `text` for a URL query: unreserved ASCII as is, every other byte of
/// its UTF-8 as `%XX`.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_user_is_in_as_many_direct_rooms_as_asked_and_no_pair_twice() {
        for (users, per_user) in [(200, 10), (7, 6), (10, 2), (201, 10)] {
            let pairs = direct_pairs(users, per_user, &mut XorShift::new(1)).expect("possible");
            let mut degree = vec![0; users];
            let mut seen = HashSet::new();
            for &(a, b) in &pairs {
                assert_ne!(a, b);
                assert!(seen.insert((a.min(b), a.max(b))), "{a}-{b} twice");
                degree[a] += 1;
                degree[b] += 1;
            }
            assert!(degree.iter().all(|d| *d == per_user), "{users} users: {degree:?}");
        }
    }

    #[test]
    fn impossible_direct_layouts_are_refused() {
        assert!(direct_pairs(200, 9, &mut XorShift::new(1)).is_err());
        assert!(direct_pairs(6, 6, &mut XorShift::new(1)).is_err());
        assert!(direct_pairs(7, 6, &mut XorShift::new(1)).is_ok());
    }

    #[test]
    fn groups_spread_their_members_evenly() {
        let groups = groups(200, 60, 10, &mut XorShift::new(4));
        assert_eq!(groups.len(), 60);
        let mut count = vec![0; 200];
        for group in &groups {
            assert_eq!(group.len(), 10);
            assert_eq!(group.iter().collect::<HashSet<_>>().len(), 10, "a member twice in {group:?}");
            for &member in group {
                count[member] += 1;
            }
        }
        assert!(count.iter().all(|c| *c == 3), "{count:?}");
    }

    #[test]
    fn shares_add_up_to_the_total() {
        assert_eq!((0..200).map(|u| share(1_000_000, 200, u)).sum::<u64>(), 1_000_000);
        assert_eq!((0..7).map(|u| share(50, 7, u)).collect::<Vec<_>>(), [8, 7, 7, 7, 7, 7, 7]);
    }

    #[test]
    fn rooms_are_picked_by_their_share() {
        let rooms = UserRooms { direct: vec![1, 2], groups: vec![10] };
        let mut random = XorShift::new(2);
        let picks: Vec<i64> = (0..10_000).filter_map(|_| rooms.pick(&mut random, 10)).collect();
        let in_groups = picks.iter().filter(|r| **r == 10).count();
        assert!((800..1200).contains(&in_groups), "{in_groups}");
        assert!(picks.contains(&1) && picks.contains(&2));
        let only_groups = UserRooms { direct: vec![], groups: vec![7] };
        assert_eq!(only_groups.pick(&mut random, 0), Some(7));
        assert_eq!(UserRooms::default().pick(&mut random, 50), None);
    }

    #[test]
    fn query_texts_fit_their_shape() {
        let mut random = XorShift::new(8);
        for _ in 0..200 {
            for shape in Shape::ALL {
                let text = shape.text(&mut random);
                let chars = text.chars().count();
                match shape {
                    Shape::Short | Shape::ShortRare => assert!((1..=2).contains(&chars), "{text}"),
                    Shape::Chinese => assert!(chars >= 3, "{text}"),
                    Shape::Phrase => assert!(text.contains(' ') && chars >= 7, "{text}"),
                    _ => assert!(chars >= 4, "{shape:?}: {text}"),
                }
                assert_eq!(text, text.trim());
            }
        }
    }

    #[test]
    fn rare_texts_never_occur_in_the_word_lists() {
        let mut random = XorShift::new(12);
        let everything: Vec<&str> = [ENGLISH, UZBEK, RUSSIAN, CHINESE, super::super::texts::EMOJI].concat();
        for _ in 0..500 {
            for shape in [Shape::Absent, Shape::ShortRare] {
                let text = shape.text(&mut random);
                // No word holds it, in any case; the letters are never next to a space.
                assert!(everything.iter().all(|w| !w.to_lowercase().contains(&text.to_lowercase())), "{text}");
            }
        }
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(percent_encode("meeting"), "meeting");
        assert_eq!(percent_encode("yo'q ha"), "yo%27q%20ha");
        assert_eq!(percent_encode("да"), "%D0%B4%D0%B0");
        assert_eq!(percent_encode("a&b=c+d"), "a%26b%3Dc%2Bd");
    }
}
