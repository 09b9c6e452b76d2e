//! `reconnect`: N receivers keep their cursor and drop and reopen their
//! connection every few seconds while M actors send, edit, like and delete
//! in the same rooms (one group, and a direct room per receiver). At the end
//! every receiver reconnects once more and reads to `synced`; what each one
//! read is checked against what the actors caused (`audit`). Actors whose
//! connection the server ends reopen it with their own cursor; a probe
//! member checks that connections without a cursor start with `synced`.
//! Also measures how fast the server replays.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use clap::value_parser;
use futures_util::{SinkExt, StreamExt, stream};
use hyper::Method;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::audit::{Caused, Sighting, Tally, tally};
use crate::client::{
    Api, Session, Target, WsStream, busy_ws_config, close_quietly, connect_ws_at, text_content, text_message_frame,
};
use crate::context::{Bench, CpuMeter, Report, progress, rss_change_human, snapshot_json};
use crate::error::{BenchError, Result, describe};
use crate::random::XorShift;
use crate::stats::{rate, round2};
use crate::stream::{
    MESSAGE_DELETE, MESSAGE_LIKE, MESSAGE_UPDATE, NEW_MESSAGE, SYNC_TIMEOUT, StoredEvent, StreamFrame, cursor_position,
    is_url_safe, parse_stream_frame, read_until_synced,
};

#[derive(Debug, Clone, clap::Args)]
pub struct ReconnectArgs {
    /// Receiving users; each holds one connection at a time and reopens it with its cursor.
    #[arg(long, default_value_t = 20, value_parser = value_parser!(u32).range(1..=2000))]
    pub receivers: u32,
    /// Acting users; each sends, edits, likes and deletes in the group and in its direct rooms.
    #[arg(long, default_value_t = 4, value_parser = value_parser!(u32).range(1..=200))]
    pub actors: u32,
    /// Seconds the actors act.
    #[arg(long, default_value_t = 20, value_parser = value_parser!(u64).range(1..=3600))]
    pub duration: u64,
    /// Actions per second of each actor (each waits for its own echo first).
    #[arg(long, default_value_t = 25, value_parser = value_parser!(u32).range(1..=1000))]
    pub rate: u32,
    /// A receiver stays connected at least this many milliseconds ...
    #[arg(long, default_value_t = 1000, value_parser = value_parser!(u64).range(0..=600_000))]
    pub online_min_ms: u64,
    /// ... and at most this many.
    #[arg(long, default_value_t = 4000, value_parser = value_parser!(u64).range(0..=600_000))]
    pub online_max_ms: u64,
    /// Then it stays away at least this many milliseconds before reconnecting ...
    #[arg(long, default_value_t = 500, value_parser = value_parser!(u64).range(0..=600_000))]
    pub offline_min_ms: u64,
    /// ... and at most this many.
    #[arg(long, default_value_t = 4000, value_parser = value_parser!(u64).range(0..=600_000))]
    pub offline_max_ms: u64,
    /// Reconnects that replayed at least this many events count toward the replay rate.
    #[arg(long, default_value_t = 100, value_parser = value_parser!(u64).range(1..=10_000_000))]
    pub min_replay: u64,
}

/// How long an actor waits for the event of its own action on its own
/// connection; past that the event counts as unconfirmed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long receivers may go on after the actors stop, at most.
const RECEIVER_OVERTIME: Duration = Duration::from_secs(180);
/// Pause after a failed reconnect, so a server that refuses is not hammered.
const FAILED_RECONNECT_PAUSE: Duration = Duration::from_millis(200);

pub async fn run(bench: &Bench, args: &ReconnectArgs) -> Result<Report> {
    let actor_count = args.actors as usize;
    let receiver_count = args.receivers as usize;
    let setup_started = Instant::now();
    progress(format!("reconnect: registering {} users", actor_count + receiver_count + 1));
    let mut users = bench.api.register_users(&bench.run_id, 0, actor_count + receiver_count + 1, 4).await?;
    let prober = users.pop().ok_or_else(|| BenchError::new("no user was registered"))?;
    let receivers = users.split_off(actor_count);
    let actors = users;
    let member_ids: Vec<i64> = actors[1..].iter().chain(&receivers).chain([&prober]).map(|user| user.user_id).collect();
    let group = bench.api.create_group(&actors[0].token, &format!("reconnect {}", bench.run_id), &member_ids).await?;
    progress(format!(
        "reconnect: group {group} of {} members; opening {receiver_count} direct rooms",
        member_ids.len() + 1
    ));
    let (api, actors_ref) = (&bench.api, &actors);
    let direct: Vec<Result<i64>> = stream::iter(receivers.iter().enumerate())
        .map(|(index, receiver)| async move {
            api.open_room(&actors_ref[index % actor_count].token, receiver.user_id).await
        })
        .buffered(16)
        .collect()
        .await;
    let direct = direct.into_iter().collect::<Result<Vec<i64>>>()?;

    progress(format!("reconnect: connecting {} users without a cursor", actor_count + receiver_count));
    let target = bench.target;
    let mut receiver_sockets = Vec::with_capacity(receiver_count);
    for receiver in &receivers {
        receiver_sockets.push(open_synced(&target, receiver).await?);
    }
    let mut actor_sockets = Vec::with_capacity(actor_count);
    for actor in &actors {
        actor_sockets.push(open_synced(&target, actor).await?);
    }
    let setup = setup_started.elapsed();

    let before = bench.server_snapshot();
    let cpu = CpuMeter::start(before.as_ref());
    let start_at = Instant::now() + Duration::from_millis(200);
    let act_until = start_at + Duration::from_secs(args.duration);
    let (stop_sender, stop) = watch::channel(false);
    let receiver_plan = Arc::new(ReceiverPlan {
        target,
        online: (args.online_min_ms, args.online_max_ms),
        offline: (args.offline_min_ms, args.offline_max_ms),
        give_up_at: act_until + RECEIVER_OVERTIME,
    });
    let receiver_tasks: Vec<_> = receivers
        .iter()
        .cloned()
        .zip(receiver_sockets)
        .enumerate()
        .map(|(index, (session, (ws, cursor)))| {
            let receiver = Receiver::new(index, session, cursor, Arc::clone(&receiver_plan));
            tokio::spawn(receiver.run(ws, stop.clone()))
        })
        .collect();
    let probe = tokio::spawn(probe_fresh_connections(target, prober, stop.clone()));
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    progress(format!(
        "reconnect: {actor_count} actors at {} actions/s for {} s; {receiver_count} receivers reconnecting",
        args.rate, args.duration
    ));
    let actor_tasks: Vec<_> = actors
        .iter()
        .cloned()
        .zip(actor_sockets)
        .enumerate()
        .map(|(index, (session, ws))| {
            let mut rooms = vec![group];
            rooms.extend(direct.iter().enumerate().filter(|(r, _)| r % actor_count == index).map(|(_, room)| *room));
            let actor = Actor::new(index, &bench.run_id, session, ws, rooms, bench);
            tokio::spawn(actor.run(start_at, act_until, interval))
        })
        .collect();
    let mut actor_outcomes = Vec::with_capacity(actor_count);
    for task in actor_tasks {
        actor_outcomes.push(task.await.map_err(|error| BenchError::new(format!("an actor task failed: {error}")))?);
    }
    let acted = start_at.elapsed();
    progress("reconnect: actors done; every receiver reconnects once more and reads to synced");
    // Err only when every receiver is gone already; each then has its outcome.
    let _ = stop_sender.send(true);
    let mut receiver_outcomes = Vec::with_capacity(receiver_count);
    for task in receiver_tasks {
        receiver_outcomes
            .push(task.await.map_err(|error| BenchError::new(format!("a receiver task failed: {error}")))?);
    }
    let probe = probe.await.map_err(|error| BenchError::new(format!("the probe task failed: {error}")))?;
    let after = bench.server_snapshot();
    let cpu_use = cpu.finish(after.as_ref());

    let caused: Vec<Caused> = actor_outcomes.iter().flat_map(|outcome| outcome.caused.iter().cloned()).collect();
    let mut per_receiver = Vec::with_capacity(receiver_count);
    for (index, outcome) in receiver_outcomes.iter().enumerate() {
        let rooms = HashSet::from([group, direct[index]]);
        per_receiver.push(tally(&caused, &rooms, &outcome.sightings));
    }
    let mut summary = Summary::of(&actor_outcomes, &receiver_outcomes, &per_receiver, args.min_replay, acted);
    summary.probe = probe;
    Ok(report(bench, args, &summary, setup, before, after, cpu_use))
}

/// Opens a connection without a cursor and reads it to `synced`.
async fn open_synced(target: &Target, session: &Session) -> Result<(WsStream, String)> {
    let mut ws = connect_ws_at(target, &session.token, None, busy_ws_config())
        .await
        .map_err(|failure| BenchError::new(format!("opening the WebSocket of {}: {failure}", session.email)))?;
    let synced = read_until_synced(&mut ws, Instant::now() + SYNC_TIMEOUT, |_| {})
        .await
        .map_err(|error| BenchError::new(format!("{}: {error}", session.email)))?;
    Ok((ws, synced.cursor))
}

/// Connections without a cursor opened while the actors act: by contract
/// (SPEC section 9) the first frame of each is `synced`.
#[derive(Debug, Default)]
struct ProbeOutcome {
    opened: u64,
    /// First frames that were something else (a stored event, by type).
    first_not_synced: u64,
    samples: Vec<String>,
    failures: u64,
}

/// A group member that opens a connection without a cursor, reads its
/// first frame and closes it, every 100 ms until told to stop.
async fn probe_fresh_connections(target: Target, session: Session, mut stop: watch::Receiver<bool>) -> ProbeOutcome {
    let mut outcome = ProbeOutcome::default();
    while !*stop.borrow() {
        match connect_ws_at(&target, &session.token, None, busy_ws_config()).await {
            Ok(mut ws) => {
                outcome.opened += 1;
                let first = timeout_at(Instant::now() + SYNC_TIMEOUT, first_text(&mut ws)).await.ok().flatten();
                match first.as_deref().map(parse_stream_frame) {
                    Some(Some(StreamFrame::Synced { .. })) => {}
                    Some(Some(StreamFrame::Stored(event))) => {
                        outcome.first_not_synced += 1;
                        if outcome.samples.len() < 3 {
                            outcome.samples.push(format!("{} {}", event.kind, event.cursor));
                        }
                    }
                    other => {
                        outcome.first_not_synced += 1;
                        if outcome.samples.len() < 3 {
                            outcome.samples.push(format!("{other:?}"));
                        }
                    }
                }
                close_quietly(ws).await;
            }
            Err(_) => outcome.failures += 1,
        }
        tokio::select! {
            () = sleep(Duration::from_millis(100)) => {}
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
    }
    outcome
}

/// The first text frame of a connection, None when it ends first.
async fn first_text(ws: &mut WsStream) -> Option<String> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => return Some(text.as_str().to_string()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// What an actor is waiting for on its own connection after an action.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Echo(String),
    Update(i64),
    Delete(i64),
    Like(i64),
}

impl Want {
    fn matches(&self, event: &StoredEvent, me: i64) -> bool {
        match self {
            Want::Echo(temp_id) => event.kind == NEW_MESSAGE && event.local_temp_id.as_deref() == Some(temp_id),
            Want::Update(id) => event.kind == MESSAGE_UPDATE && event.message_id == Some(*id),
            Want::Delete(id) => event.kind == MESSAGE_DELETE && event.message_id == Some(*id),
            Want::Like(id) => event.kind == MESSAGE_LIKE && event.message_id == Some(*id) && event.user_id == Some(me),
        }
    }
}

/// How reading an actor's connection ended.
enum Pumped {
    Found(StoredEvent),
    Refused(String),
    Deadline,
    Closed(String),
}

#[derive(Default)]
struct ActorOutcome {
    caused: Vec<Caused>,
    /// Actions the server refused (a like of a message deleted meanwhile).
    refused: u64,
    refusal_samples: Vec<String>,
    /// Actions the server accepted whose event never reached the actor.
    unconfirmed: u64,
    /// Cursors the tool cannot order (not `v1.<n>`) or not URL-safe.
    bad_cursors: Vec<String>,
    /// Why the actor stopped early: its connection ended and could not be reopened.
    closed: Option<String>,
    /// Connections of the actor the server ended (1013 for a slow reader)
    /// that it reopened with its cursor.
    reopens: u64,
    reopen_samples: Vec<String>,
    confirm_latencies: Vec<Duration>,
}

/// An actor reopens its connection with its cursor at most this often.
const ACTOR_REOPENS: u64 = 100;

struct Actor {
    session: Session,
    target: Target,
    ws: WsStream,
    /// The cursor of the last stored event read, for reopening.
    cursor: String,
    api: Api,
    rooms: Vec<i64>,
    random: XorShift,
    temp_prefix: String,
    next_temp: u64,
    /// Per room: this actor's messages not deleted (it may edit and delete them).
    own: HashMap<i64, Vec<i64>>,
    /// Per room: every message not known to be deleted (anyone may like them).
    known: HashMap<i64, Vec<i64>>,
    liked: HashSet<i64>,
    outcome: ActorOutcome,
}

impl Actor {
    fn new(
        index: usize,
        run_id: &str,
        session: Session,
        (ws, cursor): (WsStream, String),
        rooms: Vec<i64>,
        bench: &Bench,
    ) -> Actor {
        Actor {
            session,
            target: bench.target,
            ws,
            cursor,
            api: bench.api.clone(),
            rooms,
            random: XorShift::for_worker(1000 + index as u64),
            temp_prefix: format!("rc{run_id}-{index}-"),
            next_temp: 0,
            own: HashMap::new(),
            known: HashMap::new(),
            liked: HashSet::new(),
            outcome: ActorOutcome::default(),
        }
    }

    async fn run(mut self, start_at: Instant, act_until: Instant, interval: Duration) -> ActorOutcome {
        let mut next_at = start_at;
        while next_at < act_until && self.outcome.closed.is_none() {
            // Others' events keep arriving: read them while waiting to act.
            if let Pumped::Closed(reason) = self.pump(next_at, None).await {
                self.outcome.closed = Some(reason);
                break;
            }
            self.act().await;
            next_at = (next_at + interval).max(Instant::now());
        }
        close_quietly(self.ws).await;
        self.outcome
    }

    /// Half the actions go to the group, half to one of its direct rooms.
    fn pick_room(&mut self) -> i64 {
        if self.rooms.len() == 1 || self.random.below(2) == 0 {
            return self.rooms[0];
        }
        self.rooms[1 + self.random.below(self.rooms.len() as u64 - 1) as usize]
    }

    fn pick(&mut self, ids: Option<&Vec<i64>>) -> Option<i64> {
        let ids = ids.filter(|ids| !ids.is_empty())?;
        Some(ids[self.random.below(ids.len() as u64) as usize])
    }

    /// One action and the wait for its event: 50% send, 20% edit, 20% like
    /// or unlike, 10% delete (a send when there is nothing to edit, like or
    /// delete in the room).
    async fn act(&mut self) {
        let room = self.pick_room();
        let roll = self.random.below(100);
        let own = self.own.get(&room).cloned();
        let known = self.known.get(&room).cloned();
        let chosen = match roll {
            0..50 => None,
            50..70 => {
                self.pick(own.as_ref()).map(|id| (Method::PUT, format!("/api/chat/messages/{id}"), Want::Update(id)))
            }
            70..90 => self.pick(known.as_ref()).map(|id| {
                let method = if self.liked.contains(&id) { Method::DELETE } else { Method::POST };
                (method, format!("/api/chat/messages/{id}/like"), Want::Like(id))
            }),
            _ => {
                self.pick(own.as_ref()).map(|id| (Method::DELETE, format!("/api/chat/messages/{id}"), Want::Delete(id)))
            }
        };
        let started = Instant::now();
        let want = match chosen {
            None => {
                let temp_id = format!("{}{}", self.temp_prefix, self.next_temp);
                self.next_temp += 1;
                let frame = text_message_frame(room, &text_content(64), &temp_id);
                if let Err(error) = self.ws.send(Message::text(frame.clone())).await {
                    // Resending the same temp id is safe: the server stores it once.
                    let resent = match self.reopen(format!("sending: {}", describe(&error))).await {
                        Ok(()) => self.ws.send(Message::text(frame)).await.map_err(|e| describe(&e)),
                        Err(reason) => Err(reason),
                    };
                    if let Err(reason) = resent {
                        self.outcome.closed = Some(reason);
                        return;
                    }
                }
                Want::Echo(temp_id)
            }
            Some((method, path, want)) => {
                let body =
                    matches!(want, Want::Update(_)).then(|| json!({"content": format!("edited {}", self.next_temp)}));
                match self.api.call(method.clone(), &path, Some(&self.session.token), body.as_ref()).await {
                    Ok(answer) if answer.status.is_success() => want,
                    Ok(answer) => {
                        self.refuse(format!("{method} {path}: HTTP {} {}", answer.status, answer.detail()));
                        return;
                    }
                    Err(error) => {
                        self.refuse(error.to_string());
                        return;
                    }
                }
            }
        };
        match self.pump(Instant::now() + CONFIRM_TIMEOUT, Some(&want)).await {
            Pumped::Found(event) => {
                self.outcome.confirm_latencies.push(started.elapsed());
                self.confirmed(room, &want, event);
            }
            Pumped::Refused(message) => self.refuse(format!("send_message: {message}")),
            Pumped::Deadline => self.outcome.unconfirmed += 1,
            Pumped::Closed(reason) => self.outcome.closed = Some(reason),
        }
    }

    fn refuse(&mut self, sample: String) {
        self.outcome.refused += 1;
        if self.outcome.refusal_samples.len() < 5 {
            self.outcome.refusal_samples.push(sample);
        }
    }

    fn confirmed(&mut self, room: i64, want: &Want, event: StoredEvent) {
        let Some(message_id) = event.message_id else { return };
        match want {
            Want::Echo(_) => self.own.entry(room).or_default().push(message_id),
            // A like was asked for when the message was not liked, an unlike when it was.
            Want::Like(id) => {
                if !self.liked.remove(id) {
                    self.liked.insert(*id);
                }
            }
            Want::Update(_) | Want::Delete(_) => {}
        }
        let position = cursor_position(&event.cursor);
        if position.is_none() || !is_url_safe(&event.cursor) {
            self.outcome.bad_cursors.push(event.cursor.clone());
        }
        self.outcome.caused.push(Caused {
            kind: event.kind,
            message_id,
            room_id: event.room_id.unwrap_or(room),
            cursor: event.cursor,
            position: position.unwrap_or(0),
        });
    }

    /// Keeps the books of what others did (new messages, deletions).
    fn note(&mut self, event: &StoredEvent) {
        let (Some(room), Some(id)) = (event.room_id, event.message_id) else { return };
        match event.kind.as_str() {
            NEW_MESSAGE => self.known.entry(room).or_default().push(id),
            MESSAGE_DELETE => {
                for list in [self.known.get_mut(&room), self.own.get_mut(&room)].into_iter().flatten() {
                    list.retain(|other| *other != id);
                }
            }
            _ => {}
        }
    }

    /// Replaces an ended connection with one that resumes from the cursor.
    async fn reopen(&mut self, reason: String) -> std::result::Result<(), String> {
        if self.outcome.reopens >= ACTOR_REOPENS {
            return Err(format!("{reason} (after {ACTOR_REOPENS} reopens)"));
        }
        self.outcome.reopens += 1;
        if self.outcome.reopen_samples.len() < 3 {
            self.outcome.reopen_samples.push(reason.clone());
        }
        let ws = connect_ws_at(&self.target, &self.session.token, Some(&self.cursor), busy_ws_config())
            .await
            .map_err(|failure| format!("{reason}; reopening failed: {failure}"))?;
        self.ws = ws;
        Ok(())
    }

    /// Reads the actor's connection until `want` arrives (or, without one,
    /// until `deadline`), keeping the books on every stored event.
    async fn pump(&mut self, deadline: Instant, want: Option<&Want>) -> Pumped {
        let me = self.session.user_id;
        loop {
            let Ok(item) = timeout_at(deadline, self.ws.next()).await else { return Pumped::Deadline };
            let ended = match item {
                Some(Ok(Message::Text(text))) => Ok(text),
                Some(Ok(Message::Close(frame))) => Err(frame.map_or_else(
                    || "closed by the server".to_string(),
                    |f| format!("closed by the server with code {}", u16::from(f.code)),
                )),
                Some(Ok(_)) => continue,
                Some(Err(error)) => Err(describe(&error)),
                None => Err("connection ended".to_string()),
            };
            let text = match ended {
                Ok(text) => text,
                Err(reason) => match self.reopen(reason).await {
                    // The replay brings what the old connection did not.
                    Ok(()) => continue,
                    Err(reason) => return Pumped::Closed(reason),
                },
            };
            match parse_stream_frame(text.as_str()) {
                Some(StreamFrame::Synced { cursor }) => self.cursor = cursor,
                Some(StreamFrame::Stored(event)) => {
                    self.cursor.clone_from(&event.cursor);
                    self.note(&event);
                    if want.is_some_and(|want| want.matches(&event, me)) {
                        return Pumped::Found(event);
                    }
                }
                Some(StreamFrame::Error { message, local_temp_id }) => match want {
                    Some(Want::Echo(temp_id)) if local_temp_id.as_deref() == Some(temp_id) => {
                        return Pumped::Refused(message);
                    }
                    _ => self.refuse(format!("error frame: {message}")),
                },
                _ => {}
            }
        }
    }
}

/// What every receiver is told.
struct ReceiverPlan {
    target: Target,
    online: (u64, u64),
    offline: (u64, u64),
    give_up_at: Instant,
}

/// One reconnect: stored events read before `synced`, and how long from
/// the start of the connect to `synced`.
#[derive(Debug, Clone, Copy)]
struct ReplayTiming {
    events: u64,
    elapsed: Duration,
}

#[derive(Default)]
struct ReceiverOutcome {
    sightings: Vec<Sighting>,
    /// Reconnects with the cursor while the actors acted.
    reconnects: u64,
    /// The reconnect after the actors stopped reached `synced`.
    final_synced: bool,
    replays: Vec<ReplayTiming>,
    resync_required: u64,
    failures: u64,
    failure_samples: Vec<String>,
    /// Connections the server ended (the tool ends the others).
    server_closes: u64,
    server_close_samples: Vec<String>,
    bad_cursors: u64,
}

impl ReceiverOutcome {
    fn fail(&mut self, sample: String) {
        self.failures += 1;
        if self.failure_samples.len() < 3 {
            self.failure_samples.push(sample);
        }
    }
}

struct Receiver {
    session: Session,
    cursor: String,
    plan: Arc<ReceiverPlan>,
    random: XorShift,
    outcome: ReceiverOutcome,
}

impl Receiver {
    fn new(index: usize, session: Session, cursor: String, plan: Arc<ReceiverPlan>) -> Receiver {
        let random = XorShift::for_worker(index as u64);
        Receiver { session, cursor, plan, random, outcome: ReceiverOutcome::default() }
    }

    /// Online for a while, away for a while, back with the cursor, until
    /// told to stop; then one last reconnect that reads to `synced`.
    async fn run(mut self, ws: WsStream, mut stop: watch::Receiver<bool>) -> ReceiverOutcome {
        let mut socket = Some(ws);
        while !*stop.borrow() && Instant::now() < self.plan.give_up_at {
            if let Some(mut ws) = socket.take() {
                let online = self.random.millis_between(self.plan.online.0, self.plan.online.1);
                let stopped = self.live(&mut ws, Instant::now() + online, &mut stop).await;
                // Half the drops say goodbye, half just go: the events in
                // flight are unread either way, and the cursor says so.
                if self.random.below(2) == 0 {
                    close_quietly(ws).await;
                } else {
                    drop(ws);
                }
                if stopped {
                    break;
                }
            }
            let away = self.random.millis_between(self.plan.offline.0, self.plan.offline.1);
            tokio::select! {
                () = sleep(away) => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
            self.outcome.reconnects += 1;
            socket = self.reconnect().await;
            if socket.is_none() {
                sleep(FAILED_RECONNECT_PAUSE).await;
            }
        }
        drop(socket);
        if let Some(ws) = self.reconnect().await {
            self.outcome.final_synced = true;
            close_quietly(ws).await;
        }
        self.outcome
    }

    /// Reads live events until `until`; true when told to stop.
    async fn live(&mut self, ws: &mut WsStream, until: Instant, stop: &mut watch::Receiver<bool>) -> bool {
        loop {
            tokio::select! {
                item = ws.next() => match item {
                    Some(Ok(Message::Text(text))) => match parse_stream_frame(text.as_str()) {
                        Some(StreamFrame::Stored(event)) => self.read(event, false),
                        Some(StreamFrame::ResyncRequired) => self.outcome.resync_required += 1,
                        _ => {}
                    },
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map_or_else(|| "no code".to_string(), |f| u16::from(f.code).to_string());
                        self.server_closed(format!("closed by the server ({code})"));
                        return false;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        self.server_closed(describe(&error));
                        return false;
                    }
                    None => {
                        self.server_closed("connection ended".to_string());
                        return false;
                    }
                },
                () = sleep_until(until) => return false,
                _ = stop.wait_for(|stopped| *stopped) => return true,
            }
        }
    }

    fn server_closed(&mut self, sample: String) {
        self.outcome.server_closes += 1;
        if self.outcome.server_close_samples.len() < 3 {
            self.outcome.server_close_samples.push(sample);
        }
    }

    /// Processes one stored event: it is seen, and its cursor is kept.
    fn read(&mut self, event: StoredEvent, replayed: bool) {
        if !is_url_safe(&event.cursor) {
            self.outcome.bad_cursors += 1;
        }
        self.cursor.clone_from(&event.cursor);
        self.outcome.sightings.push(Sighting {
            kind: event.kind,
            message_id: event.message_id,
            cursor: event.cursor,
            replayed,
        });
    }

    /// Connects with the cursor and reads the replay to `synced`.
    async fn reconnect(&mut self) -> Option<WsStream> {
        let started = Instant::now();
        let connected =
            connect_ws_at(&self.plan.target, &self.session.token, Some(&self.cursor), busy_ws_config()).await;
        let mut ws = match connected {
            Ok(ws) => ws,
            Err(failure) => {
                self.outcome.fail(format!("reconnect: {failure}"));
                return None;
            }
        };
        let mut replayed = Vec::new();
        let synced = read_until_synced(&mut ws, started + SYNC_TIMEOUT, |event| replayed.push(event)).await;
        for event in replayed {
            self.read(event, true);
        }
        match synced {
            Ok(synced) => {
                self.outcome.replays.push(ReplayTiming { events: synced.events, elapsed: started.elapsed() });
                if synced.resync_required {
                    self.outcome.resync_required += 1;
                }
                self.cursor = synced.cursor;
                Some(ws)
            }
            Err(error) => {
                self.outcome.fail(format!("replay: {error}"));
                None
            }
        }
    }
}

/// The run, added up.
struct Summary {
    tally: Tally,
    receivers_with_faults: usize,
    caused_by_kind: BTreeMap<String, u64>,
    caused: u64,
    refused: u64,
    refusal_samples: Vec<String>,
    unconfirmed: u64,
    actors_closed: Vec<String>,
    actor_reopens: u64,
    actor_reopen_samples: Vec<String>,
    bad_cursors: u64,
    bad_cursor_samples: Vec<String>,
    reconnects: u64,
    final_synced: u64,
    /// Receivers whose last reconnect did not reach `synced`.
    final_missing: u64,
    failures: u64,
    failure_samples: Vec<String>,
    server_closes: u64,
    server_close_samples: Vec<String>,
    resync_required: u64,
    /// Reconnects that replayed at least `min_replay` events: events/s each.
    replay_rates: Vec<f64>,
    replay_sizes: Vec<u64>,
    largest_replay: u64,
    acted: Duration,
    confirm_p50_ms: Option<f64>,
    probe: ProbeOutcome,
}

impl Summary {
    fn of(
        actors: &[ActorOutcome],
        receivers: &[ReceiverOutcome],
        tallies: &[Tally],
        min_replay: u64,
        acted: Duration,
    ) -> Summary {
        let mut tally = Tally::default();
        for one in tallies {
            tally.add(one);
        }
        let mut caused_by_kind = BTreeMap::new();
        let mut confirm: Vec<Duration> = Vec::new();
        let mut bad_cursor_samples = Vec::new();
        for actor in actors {
            for event in &actor.caused {
                *caused_by_kind.entry(event.kind.clone()).or_default() += 1;
            }
            confirm.extend(&actor.confirm_latencies);
            bad_cursor_samples.extend(actor.bad_cursors.iter().take(3).cloned());
        }
        let mut replay_rates = Vec::new();
        let mut replay_sizes = Vec::new();
        for timing in receivers.iter().flat_map(|r| &r.replays).filter(|t| t.events >= min_replay) {
            replay_rates.push(rate(timing.events as f64, timing.elapsed));
            replay_sizes.push(timing.events);
        }
        replay_rates.sort_by(f64::total_cmp);
        replay_sizes.sort_unstable();
        confirm.sort_unstable();
        Summary {
            tally,
            receivers_with_faults: tallies.iter().filter(|t| t.faults() > 0).count(),
            caused: caused_by_kind.values().sum(),
            caused_by_kind,
            refused: actors.iter().map(|a| a.refused).sum(),
            refusal_samples: first_samples(actors.iter().map(|a| &a.refusal_samples)),
            unconfirmed: actors.iter().map(|a| a.unconfirmed).sum(),
            actors_closed: actors.iter().filter_map(|a| a.closed.clone()).collect(),
            actor_reopens: actors.iter().map(|a| a.reopens).sum(),
            actor_reopen_samples: first_samples(actors.iter().map(|a| &a.reopen_samples)),
            bad_cursors: actors.iter().map(|a| a.bad_cursors.len() as u64).sum::<u64>()
                + receivers.iter().map(|r| r.bad_cursors).sum::<u64>(),
            bad_cursor_samples,
            reconnects: receivers.iter().map(|r| r.reconnects).sum(),
            final_synced: receivers.iter().filter(|r| r.final_synced).count() as u64,
            final_missing: receivers.iter().filter(|r| !r.final_synced).count() as u64,
            failures: receivers.iter().map(|r| r.failures).sum(),
            failure_samples: first_samples(receivers.iter().map(|r| &r.failure_samples)),
            server_closes: receivers.iter().map(|r| r.server_closes).sum(),
            server_close_samples: first_samples(receivers.iter().map(|r| &r.server_close_samples)),
            resync_required: receivers.iter().map(|r| r.resync_required).sum(),
            replay_rates,
            replay_sizes,
            largest_replay: receivers.iter().flat_map(|r| &r.replays).map(|t| t.events).max().unwrap_or(0),
            acted,
            confirm_p50_ms: confirm.get(confirm.len() / 2).map(|d| round2(d.as_secs_f64() * 1000.0)),
            probe: ProbeOutcome::default(),
        }
    }

    /// Everything that must be zero for the stream to be trusted.
    fn faults(&self) -> u64 {
        self.tally.faults()
            + self.unconfirmed
            + self.bad_cursors
            + self.resync_required
            + self.actors_closed.len() as u64
            + self.final_missing
            + self.probe.first_not_synced
    }
}

/// The first five samples of several lists.
fn first_samples<'a>(lists: impl Iterator<Item = &'a Vec<String>>) -> Vec<String> {
    lists.flatten().take(5).cloned().collect()
}

/// The middle value of an ascending slice (the upper one of an even count).
fn median<T: Copy>(sorted: &[T]) -> Option<T> {
    sorted.get(sorted.len() / 2).copied()
}

fn report(
    bench: &Bench,
    args: &ReconnectArgs,
    summary: &Summary,
    setup: Duration,
    before: Option<crate::procfs::ProcessSnapshot>,
    after: Option<crate::procfs::ProcessSnapshot>,
    cpu: crate::context::CpuUse,
) -> Report {
    let tally = &summary.tally;
    let verdict = if summary.faults() == 0 { "PASS" } else { "FAIL" };
    let replay_median = median(&summary.replay_rates).map(round2);
    let replay_min = summary.replay_rates.first().copied().map(round2);
    let replay_max = summary.replay_rates.last().copied().map(round2);
    let action_rate = round2(rate(summary.caused as f64, summary.acted));
    let mut json = bench.header("reconnect");
    for (key, value) in [
        ("receivers", json!(args.receivers)),
        ("actors", json!(args.actors)),
        ("duration_s", json!(args.duration)),
        ("rate_per_actor", json!(args.rate)),
        ("online_ms", json!([args.online_min_ms, args.online_max_ms])),
        ("offline_ms", json!([args.offline_min_ms, args.offline_max_ms])),
        ("setup_s", json!(round2(setup.as_secs_f64()))),
        ("verdict", json!(verdict)),
        ("caused", json!(summary.caused)),
        ("caused_per_s", json!(action_rate)),
        ("caused_by_kind", json!(summary.caused_by_kind)),
        ("refused", json!(summary.refused)),
        ("refusal_samples", json!(summary.refusal_samples)),
        ("unconfirmed", json!(summary.unconfirmed)),
        ("actor_confirm_p50_ms", json!(summary.confirm_p50_ms)),
        ("actors_closed", json!(summary.actors_closed)),
        ("actor_reopens", json!(summary.actor_reopens)),
        ("actor_reopen_samples", json!(summary.actor_reopen_samples)),
        ("expected", json!(tally.expected)),
        ("delivered", json!(tally.delivered)),
        ("lost", json!(tally.lost)),
        ("duplicated", json!(tally.duplicated)),
        ("out_of_order", json!(tally.out_of_order)),
        ("unexpected", json!(tally.unexpected)),
        ("mismatched", json!(tally.mismatched)),
        ("receivers_with_faults", json!(summary.receivers_with_faults)),
        ("bad_cursors", json!(summary.bad_cursors)),
        ("bad_cursor_samples", json!(summary.bad_cursor_samples)),
        ("resync_required", json!(summary.resync_required)),
        ("reconnects", json!(summary.reconnects)),
        ("fresh_connections", json!(summary.probe.opened)),
        ("fresh_first_frame_not_synced", json!(summary.probe.first_not_synced)),
        ("fresh_first_frame_samples", json!(summary.probe.samples)),
        ("fresh_connect_failures", json!(summary.probe.failures)),
        ("final_reconnects_synced", json!(summary.final_synced)),
        ("reconnect_failures", json!(summary.failures)),
        ("reconnect_failure_samples", json!(summary.failure_samples)),
        ("server_closes", json!(summary.server_closes)),
        ("server_close_samples", json!(summary.server_close_samples)),
        ("events_replayed", json!(tally.replayed)),
        ("events_live", json!(tally.live)),
        ("largest_replay", json!(summary.largest_replay)),
        ("min_replay", json!(args.min_replay)),
        ("replays_counted", json!(summary.replay_rates.len())),
        ("replay_events_median", json!(median(&summary.replay_sizes))),
        ("replay_events_per_s_median", json!(replay_median)),
        ("replay_events_per_s_min", json!(replay_min)),
        ("replay_events_per_s_max", json!(replay_max)),
        ("server_cpu_percent", json!(cpu.server_percent)),
        ("bench_cpu_percent", json!(cpu.bench_percent)),
        ("server_before", snapshot_json(before.as_ref())),
        ("server_after", snapshot_json(after.as_ref())),
    ] {
        json.insert(key.to_string(), value);
    }

    let mut text = format!(
        "reconnect: {} receivers, {} actors at {} actions/s each for {} s; online {}–{} ms, away {}–{} ms (set-up {:.1} s)\n",
        args.receivers,
        args.actors,
        args.rate,
        args.duration,
        args.online_min_ms,
        args.online_max_ms,
        args.offline_min_ms,
        args.offline_max_ms,
        setup.as_secs_f64()
    );
    let kinds: Vec<String> = summary.caused_by_kind.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
    text.push_str(&format!(
        "  actors caused {} events ({action_rate:.1}/s: {}); refused {}, unconfirmed {}; {} actor connections reopened\n",
        summary.caused,
        kinds.join(", "),
        summary.refused,
        summary.unconfirmed,
        summary.actor_reopens
    ));
    text.push_str(&format!(
        "  receivers: {} reconnects with their cursor + {} final ones synced; {} failed; {} closed by the server; resync_required {}\n",
        summary.reconnects, summary.final_synced, summary.failures, summary.server_closes, summary.resync_required
    ));
    text.push_str(&format!(
        "  events read: {} expected, {} delivered ({} replayed, {} live readings)\n",
        tally.expected, tally.delivered, tally.replayed, tally.live
    ));
    text.push_str(&format!(
        "  lost {}, duplicated {}, out of order {}, unexpected {}, mismatched {}, bad cursors {} → {verdict}\n",
        tally.lost, tally.duplicated, tally.out_of_order, tally.unexpected, tally.mismatched, summary.bad_cursors
    ));
    text.push_str(&format!(
        "  connections without a cursor: {} opened, {} with a first frame other than synced{}\n",
        summary.probe.opened,
        summary.probe.first_not_synced,
        summary.probe.samples.first().map_or(String::new(), |s| format!(" (e.g. {s})"))
    ));
    match replay_median {
        Some(median_rate) => text.push_str(&format!(
            "  replay: {} reconnects replayed ≥ {} events (median {}): median {median_rate:.0} events/s connect → synced (min {:.0}, max {:.0})\n",
            summary.replay_rates.len(),
            args.min_replay,
            median(&summary.replay_sizes).unwrap_or(0),
            replay_min.unwrap_or(0.0),
            replay_max.unwrap_or(0.0)
        )),
        None => text.push_str(&format!(
            "  replay: no reconnect replayed ≥ {} events (largest {}); lengthen --offline-max-ms or raise --rate\n",
            args.min_replay, summary.largest_replay
        )),
    }
    for sample in summary
        .refusal_samples
        .iter()
        .map(|s| format!("refused: {s}"))
        .chain(summary.failure_samples.iter().map(|s| format!("reconnect failed: {s}")))
        .chain(summary.server_close_samples.iter().map(|s| format!("server closed: {s}")))
        .chain(summary.actor_reopen_samples.iter().map(|s| format!("actor reopened after: {s}")))
        .chain(summary.actors_closed.iter().map(|s| format!("actor stopped: {s}")))
        .chain(summary.bad_cursor_samples.iter().map(|s| format!("bad cursor: {s:?}")))
    {
        text.push_str(&format!("  {sample}\n"));
    }
    text.push_str(&format!("  {}\n  {}", cpu.human(), rss_change_human(before.as_ref(), after.as_ref())));
    Report { json: Value::Object(json), text }
}
