//! The router: a pure function from method and path to an `Endpoint`.
//! Path parameters are parsed here, so handlers get typed ids; a path that
//! exists with another method is a 405 with `Allow`.

use hyper::Method;

use crate::model::{MessageId, RoomId, UserId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Index,
    Static,
    Healthz,
    Metrics,
    Register,
    Login,
    Me,
    SearchUsers,
    ListRooms,
    CreateRoom,
    GetRoom(RoomId),
    Messages(RoomId),
    MarkRead(RoomId),
    EditMessage(MessageId),
    DeleteMessage(MessageId),
    Like(MessageId),
    Unlike(MessageId),
    UnreadCount,
    OnlineUsers,
    WebSocket,
    ChangePassword,
    Logout,
    RenameRoom(RoomId),
    Members(RoomId),
    AddMembers(RoomId),
    RemoveMember(RoomId, UserId),
    SetRole(RoomId, UserId),
    Events,
    AddReaction(MessageId),
    /// The emoji is the path's last segment (percent-encoded).
    RemoveReaction(MessageId),
    Search,
    Forward(MessageId),
    Scheduled,
    CancelScheduled(i64),
    /// A message's file, by its index in `files_data`.
    ShareFile(MessageId, usize),
    CreateUpload,
    /// The upload id is the path's last segment.
    UploadStatus,
    UploadAppend,
    Export,
    /// `/openapi.json`, the document of this API.
    OpenApi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Found(Endpoint),
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
    /// The path exists but an id in it is not a positive integer.
    BadId(&'static str),
}

/// Route names for metrics, indexed by `Endpoint::index` (then "not_found").
pub const ROUTE_NAMES: &[&str] = &[
    "index",
    "static",
    "healthz",
    "metrics",
    "register",
    "login",
    "me",
    "search_users",
    "list_rooms",
    "create_room",
    "get_room",
    "messages",
    "mark_read",
    "edit_message",
    "delete_message",
    "like",
    "unlike",
    "unread_count",
    "online_users",
    "websocket",
    "change_password",
    "logout",
    "rename_room",
    "members",
    "add_members",
    "remove_member",
    "set_role",
    "events",
    "add_reaction",
    "remove_reaction",
    "search",
    "forward",
    "scheduled",
    "cancel_scheduled",
    "share_file",
    "create_upload",
    "upload_status",
    "upload_append",
    "export",
    "openapi",
    "not_found",
];

impl Endpoint {
    pub fn index(self) -> usize {
        match self {
            Endpoint::Index => 0,
            Endpoint::Static => 1,
            Endpoint::Healthz => 2,
            Endpoint::Metrics => 3,
            Endpoint::Register => 4,
            Endpoint::Login => 5,
            Endpoint::Me => 6,
            Endpoint::SearchUsers => 7,
            Endpoint::ListRooms => 8,
            Endpoint::CreateRoom => 9,
            Endpoint::GetRoom(_) => 10,
            Endpoint::Messages(_) => 11,
            Endpoint::MarkRead(_) => 12,
            Endpoint::EditMessage(_) => 13,
            Endpoint::DeleteMessage(_) => 14,
            Endpoint::Like(_) => 15,
            Endpoint::Unlike(_) => 16,
            Endpoint::UnreadCount => 17,
            Endpoint::OnlineUsers => 18,
            Endpoint::WebSocket => 19,
            Endpoint::ChangePassword => 20,
            Endpoint::Logout => 21,
            Endpoint::RenameRoom(_) => 22,
            Endpoint::Members(_) => 23,
            Endpoint::AddMembers(_) => 24,
            Endpoint::RemoveMember(..) => 25,
            Endpoint::SetRole(..) => 26,
            Endpoint::Events => 27,
            Endpoint::AddReaction(_) => 28,
            Endpoint::RemoveReaction(_) => 29,
            Endpoint::Search => 30,
            Endpoint::Forward(_) => 31,
            Endpoint::Scheduled => 32,
            Endpoint::CancelScheduled(_) => 33,
            Endpoint::ShareFile(..) => 34,
            Endpoint::CreateUpload => 35,
            Endpoint::UploadStatus => 36,
            Endpoint::UploadAppend => 37,
            Endpoint::Export => 38,
            Endpoint::OpenApi => 39,
        }
    }
}

/// Index of "not_found" in `ROUTE_NAMES`, for everything that matched nothing.
pub const UNMATCHED: usize = ROUTE_NAMES.len() - 1;

fn id(segment: &str, name: &'static str) -> Result<i64, Route> {
    match segment.parse::<i64>() {
        Ok(v) if v > 0 && segment.bytes().all(|b| b.is_ascii_digit()) => Ok(v),
        _ => Err(Route::BadId(name)),
    }
}

/// Picks the endpoint for `method` among `(method, endpoint)` pairs of one path.
fn pick(method: &Method, options: &[(Method, Endpoint)], allow: &'static str) -> Route {
    for (m, endpoint) in options {
        if m == method || (*m == Method::GET && method == Method::HEAD && *endpoint == Endpoint::Static) {
            return Route::Found(*endpoint);
        }
    }
    Route::MethodNotAllowed { allow }
}

/// Maps a request line onto an endpoint. `path` is the path without the query.
///
/// ```
/// use chatd::http::router::{route, Endpoint, Route};
/// use hyper::Method;
///
/// assert_eq!(route(&Method::GET, "/api/chat/rooms/7/messages"), Route::Found(Endpoint::Messages(7)));
/// assert_eq!(route(&Method::PATCH, "/api/chat/rooms"), Route::MethodNotAllowed { allow: "GET, POST" });
/// assert_eq!(route(&Method::GET, "/api/chat/rooms/seven"), Route::BadId("room_id"));
/// ```
pub fn route(method: &Method, path: &str) -> Route {
    let trimmed = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    let Some(rest) = trimmed.strip_prefix('/') else { return Route::NotFound };
    let mut segments = [""; 7];
    let mut count = 0;
    for segment in rest.split('/') {
        if count == segments.len() {
            return match rest.starts_with("static/") {
                true => pick(method, &[(Method::GET, Endpoint::Static)], "GET, HEAD"),
                false => Route::NotFound,
            };
        }
        segments[count] = segment;
        count += 1;
    }
    let get = |e| pick(method, &[(Method::GET, e)], "GET");
    let post = |e| pick(method, &[(Method::POST, e)], "POST");
    let result = match &segments[..count] {
        [""] => get(Endpoint::Index),
        ["static", _, ..] => pick(method, &[(Method::GET, Endpoint::Static)], "GET, HEAD"),
        ["healthz"] => get(Endpoint::Healthz),
        ["metrics"] => get(Endpoint::Metrics),
        ["openapi.json"] => get(Endpoint::OpenApi),
        ["api", "auth", "register"] => post(Endpoint::Register),
        ["api", "auth", "login"] => post(Endpoint::Login),
        ["api", "auth", "me"] => get(Endpoint::Me),
        ["api", "auth", "password"] => post(Endpoint::ChangePassword),
        ["api", "auth", "logout"] => post(Endpoint::Logout),
        ["api", "chat", tail @ ..] => match tail {
            ["search-users"] => get(Endpoint::SearchUsers),
            ["rooms"] => {
                pick(method, &[(Method::GET, Endpoint::ListRooms), (Method::POST, Endpoint::CreateRoom)], "GET, POST")
            }
            ["rooms", room] => match id(room, "room_id") {
                Ok(room) => pick(
                    method,
                    &[(Method::GET, Endpoint::GetRoom(room)), (Method::PATCH, Endpoint::RenameRoom(room))],
                    "GET, PATCH",
                ),
                Err(bad) => bad,
            },
            ["rooms", room, "members"] => match id(room, "room_id") {
                Ok(room) => pick(
                    method,
                    &[(Method::GET, Endpoint::Members(room)), (Method::POST, Endpoint::AddMembers(room))],
                    "GET, POST",
                ),
                Err(bad) => bad,
            },
            ["rooms", room, "members", user] => match (id(room, "room_id"), id(user, "user_id")) {
                (Ok(room), Ok(user)) => pick(
                    method,
                    &[
                        (Method::DELETE, Endpoint::RemoveMember(room, user)),
                        (Method::PATCH, Endpoint::SetRole(room, user)),
                    ],
                    "DELETE, PATCH",
                ),
                (Err(bad), _) | (_, Err(bad)) => bad,
            },
            ["rooms", room, "messages"] => match id(room, "room_id") {
                Ok(room) => get(Endpoint::Messages(room)),
                Err(bad) => bad,
            },
            ["rooms", room, "read"] => match id(room, "room_id") {
                Ok(room) => post(Endpoint::MarkRead(room)),
                Err(bad) => bad,
            },
            ["messages", message] => match id(message, "message_id") {
                Ok(m) => pick(
                    method,
                    &[(Method::PUT, Endpoint::EditMessage(m)), (Method::DELETE, Endpoint::DeleteMessage(m))],
                    "PUT, DELETE",
                ),
                Err(bad) => bad,
            },
            ["messages", message, "like"] => match id(message, "message_id") {
                Ok(m) => pick(
                    method,
                    &[(Method::POST, Endpoint::Like(m)), (Method::DELETE, Endpoint::Unlike(m))],
                    "POST, DELETE",
                ),
                Err(bad) => bad,
            },
            ["messages", message, "reactions"] => match id(message, "message_id") {
                Ok(m) => post(Endpoint::AddReaction(m)),
                Err(bad) => bad,
            },
            ["messages", message, "reactions", emoji] if !emoji.is_empty() => match id(message, "message_id") {
                Ok(m) => pick(method, &[(Method::DELETE, Endpoint::RemoveReaction(m))], "DELETE"),
                Err(bad) => bad,
            },
            ["messages", message, "forward"] => match id(message, "message_id") {
                Ok(m) => post(Endpoint::Forward(m)),
                Err(bad) => bad,
            },
            ["messages", message, "files", index, "share"] => match (id(message, "message_id"), index.parse()) {
                (Ok(m), Ok(i)) if index.bytes().all(|b| b.is_ascii_digit()) => post(Endpoint::ShareFile(m, i)),
                (Err(bad), _) => bad,
                _ => Route::BadId("index"),
            },
            ["uploads"] => post(Endpoint::CreateUpload),
            ["uploads", upload] if !upload.is_empty() => pick(
                method,
                &[(Method::HEAD, Endpoint::UploadStatus), (Method::PATCH, Endpoint::UploadAppend)],
                "HEAD, PATCH",
            ),
            ["export"] => get(Endpoint::Export),
            ["scheduled"] => get(Endpoint::Scheduled),
            ["scheduled", item] => match id(item, "scheduled_id") {
                Ok(s) => pick(method, &[(Method::DELETE, Endpoint::CancelScheduled(s))], "DELETE"),
                Err(bad) => bad,
            },

            ["unread-count"] => get(Endpoint::UnreadCount),
            ["online-users"] => get(Endpoint::OnlineUsers),
            ["ws"] => get(Endpoint::WebSocket),
            ["events"] => get(Endpoint::Events),
            ["search"] => get(Endpoint::Search),
            _ => Route::NotFound,
        },
        _ => Route::NotFound,
    };
    // A bad id on a path whose method is wrong anyway is a 405, as for any id.
    if let Route::BadId(_) = result
        && !id_route_accepts(method, &segments[..count])
    {
        return Route::NotFound;
    }
    result
}

/// Whether some endpoint with an id at this position takes `method`.
fn id_route_accepts(method: &Method, segments: &[&str]) -> bool {
    match segments {
        ["api", "chat", "rooms", _] => method == Method::GET || method == Method::PATCH,
        ["api", "chat", "rooms", _, "messages"] => method == Method::GET,
        ["api", "chat", "rooms", _, "members"] => method == Method::GET || method == Method::POST,
        ["api", "chat", "rooms", _, "members", _] => method == Method::DELETE || method == Method::PATCH,
        ["api", "chat", "rooms", _, "read"] => method == Method::POST,
        ["api", "chat", "messages", _] => method == Method::PUT || method == Method::DELETE,
        ["api", "chat", "messages", _, "like"] => method == Method::POST || method == Method::DELETE,
        ["api", "chat", "messages", _, "reactions"] => method == Method::POST,
        ["api", "chat", "messages", _, "reactions", _] => method == Method::DELETE,
        ["api", "chat", "messages", _, "forward"] => method == Method::POST,
        ["api", "chat", "scheduled", _] => method == Method::DELETE,
        ["api", "chat", "messages", _, "files", _, "share"] => method == Method::POST,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: Method, path: &str, expected: Route) {
        assert_eq!(route(&method, path), expected, "{method} {path}");
    }

    #[test]
    fn routes_every_endpoint() {
        use Endpoint::*;
        let found = Route::Found;
        check(Method::GET, "/", found(Index));
        check(Method::GET, "/static/chat_files/images/a.png", found(Static));
        check(Method::HEAD, "/static/app.js", found(Static));
        check(Method::GET, "/healthz", found(Healthz));
        check(Method::GET, "/metrics", found(Metrics));
        check(Method::GET, "/openapi.json", found(OpenApi));
        check(Method::POST, "/api/auth/register", found(Register));
        check(Method::POST, "/api/auth/login", found(Login));
        check(Method::GET, "/api/auth/me", found(Me));
        check(Method::POST, "/api/auth/password", found(ChangePassword));
        check(Method::POST, "/api/auth/logout", found(Logout));
        check(Method::GET, "/api/chat/search-users", found(SearchUsers));
        check(Method::GET, "/api/chat/rooms", found(ListRooms));
        check(Method::POST, "/api/chat/rooms/", found(CreateRoom));
        check(Method::GET, "/api/chat/rooms/12", found(GetRoom(12)));
        check(Method::GET, "/api/chat/rooms/12/messages", found(Messages(12)));
        check(Method::POST, "/api/chat/rooms/12/read", found(MarkRead(12)));
        check(Method::PUT, "/api/chat/messages/7", found(EditMessage(7)));
        check(Method::DELETE, "/api/chat/messages/7", found(DeleteMessage(7)));
        check(Method::POST, "/api/chat/messages/7/like", found(Like(7)));
        check(Method::DELETE, "/api/chat/messages/7/like", found(Unlike(7)));
        check(Method::GET, "/api/chat/unread-count", found(UnreadCount));
        check(Method::GET, "/api/chat/online-users", found(OnlineUsers));
        check(Method::GET, "/api/chat/ws", found(WebSocket));
        check(Method::PATCH, "/api/chat/rooms/3", found(RenameRoom(3)));
        check(Method::GET, "/api/chat/rooms/3/members", found(Members(3)));
        check(Method::POST, "/api/chat/rooms/3/members", found(AddMembers(3)));
        check(Method::DELETE, "/api/chat/rooms/3/members/9", found(RemoveMember(3, 9)));
        check(Method::PATCH, "/api/chat/rooms/3/members/9", found(SetRole(3, 9)));
        check(Method::GET, "/api/chat/events", found(Events));
        check(Method::POST, "/api/chat/messages/7/reactions", found(AddReaction(7)));
        check(Method::GET, "/api/chat/search", found(Search));
        check(Method::DELETE, "/api/chat/messages/7/reactions/%F0%9F%91%8D", found(RemoveReaction(7)));
        check(Method::POST, "/api/chat/messages/7/forward", found(Forward(7)));
        check(Method::GET, "/api/chat/scheduled", found(Scheduled));
        check(Method::POST, "/api/chat/uploads", found(CreateUpload));
        check(Method::HEAD, "/api/chat/uploads/abc", found(UploadStatus));
        check(Method::PATCH, "/api/chat/uploads/abc", found(UploadAppend));
        check(Method::GET, "/api/chat/uploads/abc", Route::MethodNotAllowed { allow: "HEAD, PATCH" });
        check(Method::POST, "/api/chat/messages/4/files/0/share", found(ShareFile(4, 0)));
        check(Method::POST, "/api/chat/messages/4/files/x/share", Route::BadId("index"));
        check(Method::DELETE, "/api/chat/scheduled/3", found(CancelScheduled(3)));
        check(Method::GET, "/api/chat/scheduled/3", Route::MethodNotAllowed { allow: "DELETE" });

        check(Method::GET, "/static/a/b/c/d/e/f/g.png", found(Static));
    }

    #[test]
    fn every_endpoint_has_its_own_metric_name() {
        use Endpoint::*;
        let all = [
            Index,
            Static,
            Healthz,
            Metrics,
            Register,
            Login,
            Me,
            SearchUsers,
            ListRooms,
            CreateRoom,
            GetRoom(1),
            Messages(1),
            MarkRead(1),
            EditMessage(1),
            DeleteMessage(1),
            Like(1),
            Unlike(1),
            UnreadCount,
            OnlineUsers,
            WebSocket,
            ChangePassword,
            Logout,
            RenameRoom(1),
            Members(1),
            AddMembers(1),
            RemoveMember(1, 1),
            SetRole(1, 1),
            Events,
            AddReaction(1),
            RemoveReaction(1),
            Search,
            Forward(1),
            Scheduled,
            CancelScheduled(1),
            ShareFile(1, 0),
            CreateUpload,
            UploadStatus,
            UploadAppend,
            Export,
            OpenApi,
        ];
        let mut seen: Vec<usize> = all.iter().map(|e| e.index()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..UNMATCHED).collect::<Vec<_>>(), "indexes are 0..UNMATCHED, each once");
        assert_eq!(ROUTE_NAMES[UNMATCHED], "not_found");
        assert_eq!(ROUTE_NAMES[Logout.index()], "logout");
        assert_eq!(ROUTE_NAMES[ChangePassword.index()], "change_password");
    }

    #[test]
    fn refuses_what_is_not_there() {
        check(Method::GET, "/nope", Route::NotFound);
        check(Method::GET, "/api/chat/rooms/1/2", Route::NotFound);
        check(Method::GET, "", Route::NotFound);
        check(Method::GET, "/static", Route::NotFound);
        check(Method::DELETE, "/api/chat/rooms", Route::MethodNotAllowed { allow: "GET, POST" });
        check(Method::GET, "/api/chat/messages/1", Route::MethodNotAllowed { allow: "PUT, DELETE" });
        check(Method::POST, "/api/chat/ws", Route::MethodNotAllowed { allow: "GET" });
        check(Method::GET, "/api/chat/rooms/abc", Route::BadId("room_id"));
        check(Method::GET, "/api/chat/rooms/-1", Route::BadId("room_id"));
        check(Method::GET, "/api/chat/rooms/+1", Route::BadId("room_id"));
        check(Method::GET, "/api/chat/rooms/99999999999999999999", Route::BadId("room_id"));
        check(Method::PUT, "/api/chat/messages/x", Route::BadId("message_id"));
        check(Method::GET, "/api/chat/messages/x", Route::NotFound);
    }
}
