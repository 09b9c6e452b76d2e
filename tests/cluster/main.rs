//! chatd as a cluster: several chatd processes sharing one PostgreSQL store
//! (`CHAT_DATABASE_URL`) and one NATS fan-out (`CHAT_NATS_URL`).
//!
//! Every test here is ignored by default, as it needs PostgreSQL and
//! nats-server installed: `.ci/cluster.sh` installs them
//! (`.ci/cluster-deps.sh`) and runs `cargo test --test cluster -- --ignored`.

mod chat;
mod faults;
mod services;
#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;

use services::{Nats, Node, Postgres, lock, nats_info, services};

/// The shared PostgreSQL answers SQL on its `chatd` database and in a fresh
/// database of this test; the shared NATS greets a client with `INFO`.
#[test]
#[ignore = "needs PostgreSQL and NATS: run by .ci/run via --ignored"]
fn services_start_and_answer() {
    let (postgres, nats) = services();
    let postgres = lock(postgres);
    assert_eq!(postgres.psql("chatd", "select 1"), "1", "{}", postgres.logs());
    let url = postgres.create_database("services_start_and_answer");
    assert_eq!(url, format!("postgres://chatd@127.0.0.1:{}/services_start_and_answer", postgres.port()));
    assert_eq!(postgres.psql("services_start_and_answer", "select current_database()"), "services_start_and_answer");

    let nats = lock(nats);
    assert!(nats.url().starts_with("nats://127.0.0.1:"), "{}", nats.url());
    let info = nats_info(nats.addr()).unwrap_or_else(|e| panic!("NATS at {}: {e}\n{}", nats.url(), nats.logs()));
    assert!(info.contains("\"server_id\""), "{info}");
}

/// A server of its own (the shared one must not go away under other tests):
/// data written before a restart, and before a crash (SIGKILL), is there
/// afterwards, on the same port.
#[test]
#[ignore = "needs PostgreSQL and NATS: run by .ci/run via --ignored"]
fn postgres_restarts_on_the_same_port() {
    let mut postgres = Postgres::start();
    let url = postgres.url();
    postgres.psql("chatd", "create table kept (n int); insert into kept values (1)");

    postgres.restart();
    assert_eq!(postgres.url(), url);
    assert_eq!(postgres.psql("chatd", "select n from kept"), "1", "{}", postgres.logs());

    postgres.psql("chatd", "insert into kept values (2)");
    postgres.kill();
    postgres.restart();
    assert_eq!(postgres.url(), url);
    assert_eq!(postgres.psql("chatd", "select sum(n) from kept"), "3", "{}", postgres.logs());
}

/// A nats-server of its own, killed and restarted: it greets again on the
/// same port.
#[test]
#[ignore = "needs PostgreSQL and NATS: run by .ci/run via --ignored"]
fn nats_restarts_on_the_same_port() {
    let mut nats = Nats::start();
    let addr = nats.addr();
    nats.kill();
    assert!(nats_info(addr).is_err(), "NATS still answers after a kill");
    nats.restart();
    assert_eq!(nats.addr(), addr);
    nats_info(addr).unwrap_or_else(|e| panic!("NATS after a restart: {e}\n{}", nats.logs()));
}

/// chatd as a child process in its embedded mode (SQLite in its own data
/// directory, no cluster settings): /healthz answers, SIGTERM stops it
/// cleanly. The cluster tests start their nodes the same way.
#[test]
#[ignore = "starts the chatd binary as a process: run by .ci/cluster.sh via --ignored"]
fn a_node_starts_and_answers() {
    let mut node = Node::start(&[]);
    let (status, body) = node.get("/healthz");
    assert_eq!(status, 200, "{body}\n{}", node.logs());
    assert!(body.contains("ok"), "{body}");
    assert!(node.dir().join("data").is_dir(), "no data directory in {}", node.dir().display());

    let status = node.stop().expect("chatd was running");
    assert!(status.success(), "chatd exited with {status} on SIGTERM:\n{}", node.logs());
}
