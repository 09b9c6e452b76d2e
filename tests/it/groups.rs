//! Group rooms (SPEC section 8): three people exchange everything, members
//! come and go with the right events and the right 404s, roles and
//! succession, read counts per member, and one message to 1,000 members.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::messages::assert_message_shape;
use crate::support::{TestServer, TestUser, Ws};

async fn group(s: &TestServer, admin: &TestUser, name: &str, members: &[&TestUser]) -> Value {
    let ids: Vec<i64> = members.iter().map(|m| m.id).collect();
    let r = s.post("/api/chat/rooms", &admin.token, json!({"name": name, "member_ids": ids})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json
}

async fn send(ws: &mut Ws, room: i64, text: &str, temp: &str) {
    ws.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "text", "content": text, "local_temp_id": temp}})).await;
}

#[tokio::test]
async fn a_group_of_three_exchanges_everything() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let carl = s.user("carl").await;
    let mut a = s.ws(&ann).await;
    let mut b = s.ws(&bob).await;
    let mut c = s.ws(&carl).await;
    let room = group(&s, &ann, "  Lunch crew ", &[&bob, &carl, &bob, &ann]).await;
    let id = room["id"].as_i64().expect("id");
    assert_eq!(room["name"], "Lunch crew", "stored trimmed");
    assert_eq!(room["room_type"], "group");
    assert_eq!(room["role"], "admin");
    assert_eq!(room["member_count"], 3, "duplicates and the creator ignored");
    assert_eq!(room["other_user"], Value::Null);
    assert_eq!(room["participants"].as_array().map(Vec::len), Some(3));
    for ws in [&mut a, &mut b, &mut c] {
        let created = ws.expect("room_created").await;
        assert_eq!(created["data"]["id"], id);
        assert!(created["cursor"].as_str().is_some_and(|c| c.starts_with("v1.")), "{created}");
    }
    let bobs_view = s.get(&format!("/api/chat/rooms/{id}"), &bob.token).await;
    assert_eq!(bobs_view.json["role"], "member");

    send(&mut a, id, "hi all", "g1").await;
    for ws in [&mut a, &mut b, &mut c] {
        let m = ws.expect("new_message").await;
        assert_message_shape(&m["data"]);
        assert_eq!(m["data"]["content"], "hi all");
        assert_eq!(m["data"]["receiver_details"], Value::Null);
        assert_eq!((m["data"]["read_count"].clone(), m["data"]["is_read"].clone()), (json!(0), json!(false)));
    }
    // Typing goes to the others only.
    b.send(json!({"type": "typing", "data": {"room_id": id, "is_typing": true}})).await;
    assert_eq!(a.expect("typing").await["data"]["user_id"], bob.id);
    assert_eq!(c.expect("typing").await["data"]["user_id"], bob.id);
    b.expect_none("typing", Duration::from_millis(200)).await;

    let unread = s.get("/api/chat/unread-count", &carl.token).await;
    assert_eq!(unread.json["unread_count"], 1);
    let read = s.post(&format!("/api/chat/rooms/{id}/read"), &bob.token, json!({})).await;
    assert_eq!(read.json["marked_read"], 1);
    let seen = a.expect("message_read").await;
    assert_eq!(seen["data"]["user_id"], bob.id);
    let page = s.get(&format!("/api/chat/rooms/{id}/messages"), &ann.token).await;
    let first = &page.json["messages"][0];
    assert_eq!((first["read_count"].clone(), first["is_read"].clone()), (json!(1), json!(false)));
    c.send(json!({"type": "mark_read", "data": {"room_id": id}})).await;
    c.expect_where("message_read", |v| v["data"]["user_id"] == carl.id).await;
    let page = s.get(&format!("/api/chat/rooms/{id}/messages"), &ann.token).await;
    let first = &page.json["messages"][0];
    assert_eq!((first["read_count"].clone(), first["is_read"].clone()), (json!(2), json!(true)));
    assert_eq!(s.get("/api/chat/unread-count", &carl.token).await.json["unread_count"], 0);

    let mid = first["id"].as_i64().expect("id");
    let edit = s
        .send_json(
            Method::PUT,
            &format!("/api/chat/messages/{mid}"),
            Some(&ann.token),
            json!({"content": "hi everyone"}),
        )
        .await;
    assert_eq!(edit.status, StatusCode::OK);
    let like = s.post(&format!("/api/chat/messages/{mid}/like"), &carl.token, json!({})).await;
    assert_eq!(like.json["like_count"], 1);
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(ws.expect("message_update").await["data"]["content"], "hi everyone");
        assert_eq!(ws.expect("message_like").await["data"]["user_id"], carl.id);
    }
    let del = s.raw(Method::DELETE, &format!("/api/chat/messages/{mid}"), Some(&ann.token), None, Vec::new()).await;
    assert_eq!(del.status, StatusCode::OK);
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(ws.expect("message_delete").await["data"]["id"], mid);
    }
    // receiver_id is ignored in a group.
    b.send(json!({"type": "send_message", "data": {"room_id": id, "receiver_id": 999, "message_type": "text", "content": "ok", "local_temp_id": "g2"}})).await;
    assert_eq!(b.expect("new_message").await["data"]["content"], "ok");
    s.stop().await;
}

#[tokio::test]
async fn members_come_and_go_with_roles_and_404s() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let carl = s.user("carl").await;
    let dave = s.user("dave").await;
    let room = group(&s, &ann, "Team", &[&bob, &carl]).await;
    let id = room["id"].as_i64().expect("id");
    let mut ann_ws = s.ws(&ann).await;
    send(&mut ann_ws, id, "history", "h1").await;
    ann_ws.expect("new_message").await;

    let members = s.get(&format!("/api/chat/rooms/{id}/members"), &bob.token).await;
    assert_eq!(members.json["total"], 3);
    let roles: Vec<(i64, String)> = members.json["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (m["id"].as_i64().unwrap_or(0), m["role"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(roles, vec![(ann.id, "admin".into()), (bob.id, "member".into()), (carl.id, "member".into())]);
    let keyset = s.get(&format!("/api/chat/rooms/{id}/members?limit=1&after_id={}", ann.id), &bob.token).await;
    assert_eq!(keyset.json["members"][0]["id"], bob.id);
    assert_eq!(keyset.json["members"].as_array().map(Vec::len), Some(1));

    // Only admins rename, add, remove others and change roles.
    let rename =
        s.send_json(Method::PATCH, &format!("/api/chat/rooms/{id}"), Some(&bob.token), json!({"name": "Mine"})).await;
    assert_eq!(rename.status, StatusCode::FORBIDDEN);
    let add = s.post(&format!("/api/chat/rooms/{id}/members"), &bob.token, json!({"user_ids": [dave.id]})).await;
    assert_eq!(add.status, StatusCode::FORBIDDEN);
    let kick = s
        .raw(Method::DELETE, &format!("/api/chat/rooms/{id}/members/{}", carl.id), Some(&bob.token), None, Vec::new())
        .await;
    assert_eq!(kick.status, StatusCode::FORBIDDEN);
    let bad =
        s.send_json(Method::PATCH, &format!("/api/chat/rooms/{id}"), Some(&ann.token), json!({"name": "   "})).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let renamed =
        s.send_json(Method::PATCH, &format!("/api/chat/rooms/{id}"), Some(&ann.token), json!({"name": "Team 2"})).await;
    assert_eq!((renamed.status, renamed.json["name"].clone()), (StatusCode::OK, json!("Team 2")));
    assert_eq!(ann_ws.expect("room_updated").await["data"]["name"], "Team 2");

    // Unknown ids add nobody; a later member sees history, none of it unread.
    let unknown =
        s.post(&format!("/api/chat/rooms/{id}/members"), &ann.token, json!({"user_ids": [dave.id, 9999]})).await;
    assert_eq!((unknown.status, unknown.detail()), (StatusCode::NOT_FOUND, "User not found"));
    let mut dave_ws = s.ws(&dave).await;
    let added =
        s.post(&format!("/api/chat/rooms/{id}/members"), &ann.token, json!({"user_ids": [dave.id, bob.id]})).await;
    assert_eq!(added.status, StatusCode::OK);
    assert_eq!(
        added.json["added"].as_array().map(|a| a.iter().map(|u| u["id"].clone()).collect::<Vec<_>>()),
        Some(vec![json!(dave.id)])
    );
    let note = dave_ws.expect("member_added").await;
    assert_eq!((note["data"]["by"].clone(), note["data"]["users"][0]["id"].clone()), (json!(ann.id), json!(dave.id)));
    assert_eq!(ann_ws.expect("member_added").await["data"]["room_id"], id);
    let history = s.get(&format!("/api/chat/rooms/{id}/messages"), &dave.token).await;
    assert_eq!(history.json["messages"][0]["content"], "history");
    assert_eq!(s.get(&format!("/api/chat/rooms/{id}"), &dave.token).await.json["unread_count"], 0);

    // Removal: the removed get room_removed, the rest member_removed, and 404s.
    let mut carl_ws = s.ws(&carl).await;
    let removed = s
        .raw(Method::DELETE, &format!("/api/chat/rooms/{id}/members/{}", carl.id), Some(&ann.token), None, Vec::new())
        .await;
    assert_eq!((removed.status, removed.json.clone()), (StatusCode::OK, json!({"room_id": id, "user_id": carl.id})));
    assert_eq!(carl_ws.expect("room_removed").await["data"]["room_id"], id);
    let gone = ann_ws.expect("member_removed").await;
    assert_eq!((gone["data"]["user_id"].clone(), gone["data"]["by"].clone()), (json!(carl.id), json!(ann.id)));
    assert_eq!(s.get(&format!("/api/chat/rooms/{id}"), &carl.token).await.status, StatusCode::NOT_FOUND);
    assert_eq!(s.get(&format!("/api/chat/rooms/{id}/messages"), &carl.token).await.status, StatusCode::NOT_FOUND);
    assert_eq!(s.get(&format!("/api/chat/rooms/{id}/members"), &carl.token).await.status, StatusCode::NOT_FOUND);
    send(&mut carl_ws, id, "still here?", "c1").await;
    assert_eq!(carl_ws.expect("error").await["message"], "Room not found");
    send(&mut ann_ws, id, "after carl", "h2").await;
    carl_ws.expect_none("new_message", Duration::from_millis(300)).await;

    // Promote, demote; the last admin leaving hands over to the oldest member.
    let promoted = s
        .send_json(
            Method::PATCH,
            &format!("/api/chat/rooms/{id}/members/{}", dave.id),
            Some(&ann.token),
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!((promoted.status, promoted.json["role"].clone()), (StatusCode::OK, json!("admin")));
    let demoted = s
        .send_json(
            Method::PATCH,
            &format!("/api/chat/rooms/{id}/members/{}", dave.id),
            Some(&ann.token),
            json!({"role": "member"}),
        )
        .await;
    assert_eq!(demoted.json["role"], "member");
    let weird = s
        .send_json(
            Method::PATCH,
            &format!("/api/chat/rooms/{id}/members/{}", dave.id),
            Some(&ann.token),
            json!({"role": "owner"}),
        )
        .await;
    assert_eq!(weird.status, StatusCode::UNPROCESSABLE_ENTITY);
    let leave = s
        .raw(Method::DELETE, &format!("/api/chat/rooms/{id}/members/{}", ann.id), Some(&ann.token), None, Vec::new())
        .await;
    assert_eq!(leave.status, StatusCode::OK);
    let now = s.get(&format!("/api/chat/rooms/{id}"), &bob.token).await;
    assert_eq!(
        (now.json["role"].clone(), now.json["member_count"].clone()),
        (json!("admin"), json!(2)),
        "bob has been in longest"
    );
    // The last to leave makes the room inactive: nobody sees it.
    for who in [&bob, &dave] {
        let r = s
            .raw(
                Method::DELETE,
                &format!("/api/chat/rooms/{id}/members/{}", who.id),
                Some(&who.token),
                None,
                Vec::new(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let active = s.sql_i64(&format!("SELECT count(*) FROM chat_rooms WHERE id = {id} AND is_active")).await == 1;
    assert!(!active);
    s.stop().await;
}

#[tokio::test]
async fn group_rules_refuse_what_does_not_fit() {
    let s = TestServer::start_with(|c| c.max_group_members = 3).await;
    let (ann, bob, direct) = s.pair("ann", "bob").await;
    let carl = s.user("carl").await;
    let dave = s.user("dave").await;
    let unknown = s.post("/api/chat/rooms", &ann.token, json!({"name": "X", "member_ids": [bob.id, 4242]})).await;
    assert_eq!((unknown.status, unknown.detail()), (StatusCode::NOT_FOUND, "User not found"));
    let rooms = s.get("/api/chat/rooms", &ann.token).await;
    assert_eq!(rooms.json["total"], 1, "nothing was created");
    let too_many =
        s.post("/api/chat/rooms", &ann.token, json!({"name": "X", "member_ids": [bob.id, carl.id, dave.id]})).await;
    assert_eq!(
        (too_many.status, too_many.detail()),
        (StatusCode::UNPROCESSABLE_ENTITY, "A group may have at most 3 members")
    );
    let long = s.post("/api/chat/rooms", &ann.token, json!({"name": "n".repeat(101), "member_ids": []})).await;
    assert_eq!(long.status, StatusCode::UNPROCESSABLE_ENTITY);
    let neither = s.post("/api/chat/rooms", &ann.token, json!({})).await;
    assert_eq!(neither.status, StatusCode::UNPROCESSABLE_ENTITY);
    let alone = s.post("/api/chat/rooms", &ann.token, json!({"name": "Just me"})).await;
    assert_eq!((alone.status, alone.json["member_count"].clone()), (StatusCode::CREATED, json!(1)));
    // Direct rooms have no members to manage.
    let add = s.post(&format!("/api/chat/rooms/{direct}/members"), &ann.token, json!({"user_ids": [carl.id]})).await;
    assert_eq!(add.status, StatusCode::BAD_REQUEST);
    let leave = s
        .raw(
            Method::DELETE,
            &format!("/api/chat/rooms/{direct}/members/{}", ann.id),
            Some(&ann.token),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(leave.status, StatusCode::BAD_REQUEST);
    let listed = s.get(&format!("/api/chat/rooms/{direct}/members"), &bob.token).await;
    assert_eq!(listed.json["total"], 2, "a direct room lists its two people");
    // A direct room is announced to the other person at once.
    let mut carl_ws = s.ws(&carl).await;
    let created = s.post("/api/chat/rooms", &dave.token, json!({"receiver_id": carl.id})).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let note = carl_ws.expect("room_created").await;
    assert_eq!(
        (note["data"]["room_type"].clone(), note["data"]["other_user"]["id"].clone()),
        (json!("direct"), json!(dave.id))
    );
    s.stop().await;
}

#[tokio::test]
async fn a_message_to_a_group_of_1000_reaches_every_connection() {
    let s = TestServer::start().await;
    const MEMBERS: usize = 1000;
    // Users straight through the writer with one shared hash: 1,000 Argon2
    // hashes would take the test's whole time budget.
    let hash = chatd::auth::password::hash("password123").expect("hash");
    let mut users = Vec::with_capacity(MEMBERS);
    for i in 0..MEMBERS {
        let user = s
            .state
            .writer
            .register(chatd::store::writer::NewUser {
                name: format!("m{i}"),
                email: format!("m{i}@big.io"),
                password_hash: hash.clone(),
                avatar_url: None,
            })
            .await
            .expect("register");
        let token = s.state.keys.issue(user.id, 0).expect("token");
        users.push(TestUser { id: user.id, token });
    }
    let mut sockets = Vec::with_capacity(MEMBERS);
    for user in &users {
        sockets.push(s.ws(user).await);
    }
    let ids: Vec<i64> = users[1..].iter().map(|u| u.id).collect();
    let r = s.post("/api/chat/rooms", &users[0].token, json!({"name": "Everyone", "member_ids": ids})).await;
    assert_eq!((r.status, r.json["member_count"].clone()), (StatusCode::CREATED, json!(MEMBERS)));
    let room = r.json["id"].as_i64().expect("id");
    send(&mut sockets[0], room, "hello, thousand", "big").await;
    let mut received = 0;
    for ws in &mut sockets {
        let message = ws.expect("new_message").await;
        assert_eq!(message["data"]["content"], "hello, thousand");
        received += 1;
    }
    assert_eq!(received, MEMBERS);
    drop(sockets);
    s.stop().await;
}
