//! Rendered pages of messages, shared by every member of a room: a page is
//! kept as JSON with holes for the fields that depend on the viewer
//! (`is_sender`, `is_liked`, each reaction's `me`), filled in per request.
//! Bounded in entries and bytes (the least recently used go first); a
//! room's pages are dropped by the writer's committed changes to it. Pure
//! bookkeeping: no SQL, HTTP or sockets.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::model::{Envelope, Event, RoomId, UserId, VIEWER_KEYS, ViewerField};

/// Which page of which room (the newest page, `per_page` messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub room_id: RoomId,
    pub per_page: u32,
}

/// A rendered page with a hole at each per-viewer boolean.
#[derive(Debug)]
pub struct PageTemplate {
    /// The page's JSON without the per-viewer booleans.
    text: Box<[u8]>,
    /// Where each boolean goes in `text`, in order.
    holes: Box<[Hole]>,
    /// The users each hole is true for: one sorted run per hole.
    users: Box<[UserId]>,
    /// The room's members, sorted: who may be shown the page.
    members: Box<[UserId]>,
    /// The people whose own fields (presence) the page shows, sorted.
    people: Box<[UserId]>,
    /// The expiry of the file links in it (`Links::expiry_now` when rendered).
    links_exp: u64,
}

#[derive(Debug)]
struct Hole {
    /// Offset in `text`.
    at: usize,
    /// Range of `users`.
    start: usize,
    end: usize,
}

/// What a page shows besides its text.
pub struct PageFacts {
    pub members: Vec<UserId>,
    pub people: Vec<UserId>,
    pub links_exp: u64,
}

impl PageTemplate {
    /// `text` is the page rendered for a viewer for whom every per-viewer
    /// field is false; `fields` lists those fields in the order they appear
    /// in it. `None` when they do not match the text exactly (then nothing
    /// is cached and the caller serves its own rendering).
    ///
    /// Finding a field by its key is exact because serde_json escapes every
    /// `"` inside a string: the bytes `"is_liked":false` can only be a key
    /// and its value, never part of a user's text. Each field must be the
    /// next occurrence of its key, and each of `VIEWER_KEYS` must occur
    /// exactly as often as it is listed, so no field is skipped, left out or
    /// mistaken for another.
    pub fn new(text: String, fields: Vec<ViewerField>, facts: PageFacts) -> Option<PageTemplate> {
        let mut out = Vec::with_capacity(text.len());
        let mut holes = Vec::with_capacity(fields.len());
        let mut users = Vec::new();
        let mut from = 0;
        let mut wanted = [0usize; VIEWER_KEYS.len()];
        for field in fields {
            let needle = format!("\"{}\":false", field.key);
            let found = from + text.get(from..)?.find(&needle)?;
            let value = found + needle.len() - "false".len();
            out.extend_from_slice(&text.as_bytes()[from..value]);
            let start = users.len();
            let mut true_for = field.true_for;
            true_for.sort_unstable();
            users.extend(true_for);
            holes.push(Hole { at: out.len(), start, end: users.len() });
            from = found + needle.len();
            wanted[VIEWER_KEYS.iter().position(|key| *key == field.key)?] += 1;
        }
        out.extend_from_slice(&text.as_bytes()[from..]);
        for (key, count) in VIEWER_KEYS.iter().zip(wanted) {
            if text.matches(&format!("\"{key}\":")).count() != count {
                return None;
            }
        }
        let sorted = |mut ids: Vec<UserId>| {
            ids.sort_unstable();
            ids.dedup();
            ids.into_boxed_slice()
        };
        Some(PageTemplate {
            text: out.into_boxed_slice(),
            holes: holes.into_boxed_slice(),
            users: users.into_boxed_slice(),
            members: sorted(facts.members),
            people: sorted(facts.people),
            links_exp: facts.links_exp,
        })
    }

    /// Whether `viewer` is a member of the page's room.
    pub fn may_see(&self, viewer: UserId) -> bool {
        self.members.binary_search(&viewer).is_ok()
    }

    /// The page as `viewer` sees it.
    pub fn render(&self, viewer: UserId) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + 5 * self.holes.len());
        let mut from = 0;
        for hole in self.holes.iter() {
            out.extend_from_slice(&self.text[from..hole.at]);
            let yes = self.users[hole.start..hole.end].binary_search(&viewer).is_ok();
            out.extend_from_slice(if yes { b"true" } else { b"false" });
            from = hole.at;
        }
        out.extend_from_slice(&self.text[from..]);
        out
    }

    /// Memory it holds, roughly.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<PageTemplate>()
            + self.text.len()
            + self.holes.len() * std::mem::size_of::<Hole>()
            + (self.users.len() + self.members.len() + self.people.len()) * std::mem::size_of::<UserId>()
    }

    fn shows(&self, people: &[UserId]) -> bool {
        people.iter().any(|id| self.people.binary_search(id).is_ok())
    }
}

/// Taken before a page is read: the page may be stored only if nothing that
/// could change it was committed since (see `RenderedPages::insert`).
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    room_id: RoomId,
    at: u64,
}

/// Slots of invalidation stamps; rooms share a slot by their id modulo
/// this, which only ever refuses more than needed.
const STAMP_SLOTS: usize = 4096;

/// The cache. A std `Mutex`: every critical section is a few map operations.
pub struct RenderedPages {
    state: Mutex<Pages>,
    max_entries: usize,
    max_bytes: usize,
}

struct Pages {
    /// A room's cached pages (one per `per_page`).
    rooms: HashMap<RoomId, Vec<(u32, Cached)>>,
    /// Least recently used first: use number → key.
    by_use: BTreeMap<u64, PageKey>,
    entries: usize,
    bytes: usize,
    uses: u64,
    /// Counts invalidations; a ticket holds its value.
    clock: u64,
    /// The clock at each slot's last invalidation.
    room_stamps: Box<[u64]>,
    /// The clock at the last invalidation of everything (presence, retention).
    all_stamp: u64,
}

struct Cached {
    page: Arc<PageTemplate>,
    used: u64,
}

/// What a committed batch may have changed on pages: its events and the
/// changes the writer makes without one.
pub struct Changes<'a> {
    pub events: &'a [Envelope],
    /// Rooms whose read state may have moved.
    pub rooms: &'a [RoomId],
    /// Users whose presence changed.
    pub users: &'a [UserId],
    /// Messages were removed by retention (anywhere).
    pub everything: bool,
}

impl RenderedPages {
    /// A cache of at most `max_entries` pages and `max_bytes` bytes; either
    /// at 0 keeps nothing.
    pub fn new(max_entries: usize, max_bytes: usize) -> RenderedPages {
        let state = Pages {
            rooms: HashMap::new(),
            by_use: BTreeMap::new(),
            entries: 0,
            bytes: 0,
            uses: 0,
            clock: 0,
            room_stamps: vec![0; STAMP_SLOTS].into_boxed_slice(),
            all_stamp: 0,
        };
        RenderedPages { state: Mutex::new(state), max_entries, max_bytes }
    }

    pub fn enabled(&self) -> bool {
        self.max_entries > 0 && self.max_bytes > 0
    }

    fn lock(&self) -> MutexGuard<'_, Pages> {
        // The state stays consistent between statements; a panic elsewhere
        // while holding the lock does not make it unusable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached page, if there is one with file links of `links_exp`
    /// (the expiry a rendering now gives); one with older links is dropped.
    pub fn get(&self, key: PageKey, links_exp: u64) -> Option<Arc<PageTemplate>> {
        let mut pages = self.lock();
        let pages = &mut *pages;
        let (_, cached) = pages.rooms.get_mut(&key.room_id)?.iter_mut().find(|(n, _)| *n == key.per_page)?;
        if cached.page.links_exp != links_exp {
            pages.remove(key);
            return None;
        }
        pages.uses += 1;
        pages.by_use.remove(&cached.used);
        cached.used = pages.uses;
        pages.by_use.insert(cached.used, key);
        Some(cached.page.clone())
    }

    /// Take before reading the room's page from the store.
    pub fn ticket(&self, room_id: RoomId) -> Ticket {
        Ticket { room_id, at: self.lock().clock }
    }

    /// Stores `page` unless the room (or everything) was invalidated after
    /// `ticket` was taken: a read that began before a commit may hold the
    /// state before it, and must not outlive that commit's invalidation.
    /// Evicts the least recently used pages to stay within the bounds.
    /// Whether it was stored.
    pub fn insert(&self, key: PageKey, ticket: Ticket, page: PageTemplate) -> bool {
        let size = page.bytes();
        if !self.enabled() || size > self.max_bytes || ticket.room_id != key.room_id {
            return false;
        }
        let mut pages = self.lock();
        if pages.room_stamps[slot(key.room_id)] > ticket.at || pages.all_stamp > ticket.at {
            return false;
        }
        pages.remove(key);
        while pages.entries >= self.max_entries || pages.bytes + size > self.max_bytes {
            let Some((_, oldest)) = pages.by_use.pop_first() else { break };
            pages.remove(oldest);
        }
        pages.uses += 1;
        let used = pages.uses;
        pages.by_use.insert(used, key);
        pages.rooms.entry(key.room_id).or_default().push((key.per_page, Cached { page: Arc::new(page), used }));
        pages.entries += 1;
        pages.bytes += size;
        true
    }

    /// Drops what `changes` may have made stale, under one lock.
    pub fn forget(&self, changes: &Changes<'_>) {
        let mut pages = self.lock();
        if changes.everything {
            pages.forget_everything();
            return;
        }
        for envelope in changes.events {
            if let Some(room) = room_changed_by(&envelope.event) {
                pages.forget_room(room);
            }
        }
        for room in changes.rooms {
            pages.forget_room(*room);
        }
        let mut users: Vec<UserId> = changes.users.to_vec();
        users.extend(changes.events.iter().filter_map(|envelope| match envelope.event.as_ref() {
            Event::Presence { user_id, .. } => Some(*user_id),
            _ => None,
        }));
        if !users.is_empty() {
            pages.forget_people(&users);
        }
    }

    /// Pages and bytes held now.
    pub fn usage(&self) -> (usize, usize) {
        let pages = self.lock();
        (pages.entries, pages.bytes)
    }
}

/// The room whose pages an event changes. Presence changes people, not
/// rooms; a scheduled message is not on any page yet; typing and token
/// revocations show nowhere.
fn room_changed_by(event: &Event) -> Option<RoomId> {
    match event {
        Event::NewMessage(message) | Event::MessageUpdate { message, .. } => Some(message.room_id),
        Event::MessageDelete { room_id, .. }
        | Event::MessageLike { room_id, .. }
        | Event::MessageReaction { room_id, .. }
        | Event::MessageRead { room_id, .. }
        | Event::MemberAdded { room_id, .. }
        | Event::MemberRemoved { room_id, .. }
        | Event::RoomRemoved { room_id } => Some(*room_id),
        Event::RoomCreated(view) | Event::RoomUpdated(view) => Some(view.room.id),
        Event::Presence { .. } | Event::Typing { .. } | Event::MessageScheduled(_) | Event::TokensRevoked(_) => None,
    }
}

fn slot(room_id: RoomId) -> usize {
    room_id.rem_euclid(STAMP_SLOTS as i64) as usize
}

impl Pages {
    fn remove(&mut self, key: PageKey) {
        let Some(list) = self.rooms.get_mut(&key.room_id) else { return };
        let Some(index) = list.iter().position(|(n, _)| *n == key.per_page) else { return };
        let (_, cached) = list.swap_remove(index);
        if list.is_empty() {
            self.rooms.remove(&key.room_id);
        }
        self.by_use.remove(&cached.used);
        self.entries -= 1;
        self.bytes -= cached.page.bytes();
    }

    fn forget_room(&mut self, room_id: RoomId) {
        self.clock += 1;
        self.room_stamps[slot(room_id)] = self.clock;
        for (_, cached) in self.rooms.remove(&room_id).unwrap_or_default() {
            self.by_use.remove(&cached.used);
            self.entries -= 1;
            self.bytes -= cached.page.bytes();
        }
    }

    /// Drops the pages that show any of `users`. A page of any room being
    /// read now may show them too, so no read in flight may store its page.
    fn forget_people(&mut self, users: &[UserId]) {
        self.clock += 1;
        self.all_stamp = self.clock;
        let stale: Vec<PageKey> = self
            .rooms
            .iter()
            .flat_map(|(room_id, list)| {
                list.iter()
                    .filter(|(_, cached)| cached.page.shows(users))
                    .map(|(per_page, _)| PageKey { room_id: *room_id, per_page: *per_page })
            })
            .collect();
        for key in stale {
            self.remove(key);
        }
    }

    fn forget_everything(&mut self) {
        self.clock += 1;
        self.all_stamp = self.clock;
        self.rooms.clear();
        self.by_use.clear();
        self.entries = 0;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(members: &[UserId], people: &[UserId]) -> PageFacts {
        PageFacts { members: members.to_vec(), people: people.to_vec(), links_exp: 7 }
    }

    fn field(key: &'static str, true_for: &[UserId]) -> ViewerField {
        ViewerField { key, true_for: true_for.to_vec() }
    }

    /// A page of `size` bytes of text for room members 1 and 2.
    fn page(size: usize) -> PageTemplate {
        let text = format!(r#"{{"pad":"{}"}}"#, "x".repeat(size.saturating_sub(10)));
        PageTemplate::new(text, Vec::new(), facts(&[1, 2], &[1])).expect("template")
    }

    fn key(room_id: RoomId) -> PageKey {
        PageKey { room_id, per_page: 50 }
    }

    #[test]
    fn holes_are_filled_per_viewer() {
        let text = r#"{"m":[{"content":"\"is_sender\":false","is_sender":false,"is_liked":false,"reactions":[{"emoji":"👍","me":false},{"emoji":"🎉","me":false}]},{"is_sender":false,"is_liked":false,"reactions":[]}]}"#;
        let fields = vec![
            field("is_sender", &[1]),
            field("is_liked", &[2, 3]),
            field("me", &[3]),
            field("me", &[]),
            field("is_sender", &[2]),
            field("is_liked", &[]),
        ];
        let template = PageTemplate::new(text.to_owned(), fields, facts(&[1, 2, 3], &[1, 2])).expect("template");
        let render = |viewer| String::from_utf8(template.render(viewer)).expect("utf-8");
        assert_eq!(render(0), text, "nobody sees it as rendered for nobody");
        assert_eq!(
            render(1),
            r#"{"m":[{"content":"\"is_sender\":false","is_sender":true,"is_liked":false,"reactions":[{"emoji":"👍","me":false},{"emoji":"🎉","me":false}]},{"is_sender":false,"is_liked":false,"reactions":[]}]}"#
        );
        assert_eq!(
            render(3),
            r#"{"m":[{"content":"\"is_sender\":false","is_sender":false,"is_liked":true,"reactions":[{"emoji":"👍","me":true},{"emoji":"🎉","me":false}]},{"is_sender":false,"is_liked":false,"reactions":[]}]}"#
        );
        assert!(template.may_see(2) && !template.may_see(4));
    }

    /// A page of real Messages whose text imitates the per-viewer keys
    /// renders, through the template, exactly as rendered for each viewer.
    #[test]
    fn a_template_renders_real_messages_exactly_as_a_direct_rendering() {
        use crate::links::Links;
        use crate::model::{Message, MessageType, NOBODY, Reaction, TempId, User};
        let person = |id: UserId| {
            Arc::new(User { id, name: format!("u{id}"), email: format!("u{id}@x"), avatar_url: None, is_online: true })
        };
        let message = |id, sender: UserId, content: &str, reactions: Vec<Reaction>| Message {
            id,
            room_id: 1,
            sender: person(sender),
            receiver: None,
            message_type: MessageType::Text,
            content: content.to_owned(),
            files: None,
            duration: None,
            local_temp_id: Some("t".into()),
            created_at: 1_700_000_000_000,
            edited_at: None,
            is_read: false,
            read_count: 0,
            is_deleted: false,
            like_count: 0,
            reply_to: None,
            reactions,
            forwarded_from: None,
        };
        let messages = [
            message(1, 1, r#""is_sender":false,"is_liked":false,"me":false"#, Vec::new()),
            message(2, 2, r#"\"me\":false}"#, vec![Reaction { emoji: "👍".into(), users: vec![3, 1] }]),
            message(
                3,
                3,
                "",
                vec![Reaction { emoji: "🎉".into(), users: vec![2] }, Reaction { emoji: "👍".into(), users: vec![1] }],
            ),
        ];
        let likers: [Vec<UserId>; 3] = [vec![2], vec![], vec![1, 3]];
        let links = Links::public("http://h");
        let render = |viewer: UserId| {
            let page: Vec<_> = messages
                .iter()
                .zip(&likers)
                .map(|(m, l)| m.json(viewer, l.contains(&viewer), &links, TempId::Hide))
                .collect();
            serde_json::to_string(&page).expect("json")
        };
        let fields = messages.iter().zip(&likers).flat_map(|(m, l)| m.viewer_fields(l)).collect();
        let template = PageTemplate::new(render(NOBODY), fields, facts(&[1, 2, 3], &[1, 2, 3])).expect("template");
        for viewer in [NOBODY, 1, 2, 3, 4] {
            assert_eq!(String::from_utf8(template.render(viewer)).expect("utf-8"), render(viewer), "viewer {viewer}");
        }
    }

    #[test]
    fn fields_that_do_not_match_the_text_give_no_template() {
        let text = r#"{"is_sender":false,"is_liked":false,"me":false}"#;
        let none = |fields: Vec<ViewerField>| PageTemplate::new(text.to_owned(), fields, facts(&[], &[])).is_none();
        assert!(none(vec![field("is_sender", &[]), field("is_liked", &[])]), "a `me` left out");
        assert!(none(vec![field("is_liked", &[]), field("is_sender", &[]), field("me", &[])]), "out of order");
        assert!(none(vec![field("is_sender", &[]), field("is_liked", &[]), field("me", &[]), field("me", &[])]));
        assert!(!none(vec![field("is_sender", &[]), field("is_liked", &[]), field("me", &[])]));
    }

    #[test]
    fn the_least_recently_used_page_goes_first_and_bounds_hold() {
        let cache = RenderedPages::new(2, 1_000_000);
        for room in [1, 2] {
            assert!(cache.insert(key(room), cache.ticket(room), page(100)));
        }
        assert!(cache.get(key(1), 7).is_some(), "room 1 is now the most recent");
        assert!(cache.insert(key(3), cache.ticket(3), page(100)));
        assert!(cache.get(key(2), 7).is_none(), "room 2 was the least recently used");
        assert!(cache.get(key(1), 7).is_some() && cache.get(key(3), 7).is_some());
        assert_eq!(cache.usage().0, 2);

        let one = page(1000).bytes();
        let cache = RenderedPages::new(100, one * 3);
        for room in 1..=10 {
            cache.insert(key(room), cache.ticket(room), page(1000));
            assert!(cache.usage().1 <= one * 3);
        }
        assert_eq!(cache.usage(), (3, one * 3));
        assert!(!cache.insert(key(11), cache.ticket(11), page(one * 4)), "larger than the whole cache");
        assert!(!RenderedPages::new(0, 1000).insert(key(1), RenderedPages::new(0, 1000).ticket(1), page(10)));
    }

    #[test]
    fn a_read_that_began_before_an_invalidation_is_not_stored() {
        let cache = RenderedPages::new(10, 1_000_000);
        let before = cache.ticket(1);
        let other_room = cache.ticket(2);
        let message = Envelope::new(vec![2], Event::MessageDelete { id: 5, room_id: 1 });
        cache.forget(&Changes { events: &[message], rooms: &[], users: &[], everything: false });
        assert!(!cache.insert(key(1), before, page(10)), "stale: read before the delete");
        assert!(cache.insert(key(2), other_room, page(10)), "another room is unaffected");
        assert!(cache.insert(key(1), cache.ticket(1), page(10)), "a read after it may be stored");
        cache.forget(&Changes { events: &[], rooms: &[1], users: &[], everything: false });
        assert!(cache.get(key(1), 7).is_none(), "a read mark drops the room's pages");
        assert!(cache.get(key(2), 7).is_some());
        let late = cache.ticket(1);
        cache.forget(&Changes { events: &[], rooms: &[], users: &[], everything: true });
        assert!(cache.get(key(2), 7).is_none() && !cache.insert(key(1), late, page(10)));
        assert_eq!(cache.usage(), (0, 0));
    }

    #[test]
    fn presence_drops_the_pages_that_show_the_person() {
        let cache = RenderedPages::new(10, 1_000_000);
        let shows = |people: &[UserId]| PageTemplate::new("{}".into(), Vec::new(), facts(&[1, 2, 3], people));
        cache.insert(key(1), cache.ticket(1), shows(&[1, 2]).expect("template"));
        cache.insert(key(2), cache.ticket(2), shows(&[3]).expect("template"));
        let in_flight = cache.ticket(3);
        let online = Envelope::new(vec![1], Event::Presence { user_id: 2, user_name: "b".into(), is_online: true });
        cache.forget(&Changes { events: &[online], rooms: &[], users: &[], everything: false });
        assert!(cache.get(key(1), 7).is_none() && cache.get(key(2), 7).is_some());
        assert!(!cache.insert(key(3), in_flight, shows(&[2]).expect("template")), "a read in flight may show 2");
        cache.forget(&Changes { events: &[], rooms: &[], users: &[3], everything: false });
        assert!(cache.get(key(2), 7).is_none(), "a quiet presence change too");
    }

    #[test]
    fn a_page_with_older_file_links_is_a_miss() {
        let cache = RenderedPages::new(10, 1_000_000);
        cache.insert(key(1), cache.ticket(1), page(10));
        assert!(cache.get(key(1), 7).is_some());
        assert!(cache.get(key(1), 7 + 3600).is_none(), "links of the next hour");
        assert_eq!(cache.usage(), (0, 0), "and it is dropped");
    }
}
