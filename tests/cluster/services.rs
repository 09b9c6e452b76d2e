//! Real PostgreSQL, NATS and chatd processes for the cluster tests.
//!
//! Each service runs as a child process on a free 127.0.0.1 port, with its
//! files (data, sockets, logs) in its own temporary directory. Every wait is
//! bounded; when a service does not come up, the panic message carries the
//! tail of its log, so a CI failure explains itself without a rerun.
//!
//! Most tests share one PostgreSQL and one NATS per test binary
//! ([`services`]) and isolate themselves with a fresh database each
//! ([`Postgres::create_database`]); a test that stops, restarts or kills a
//! service starts its own instance, so it cannot disturb the others.
//!
//! Needs `nats-server` and a PostgreSQL server installed (`.ci/cluster-deps.sh`),
//! and, when run as root, the user `chatd-ci` (postgres refuses to run as root).

// Support code: each test binary that includes it uses only part of it.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use tempfile::TempDir;

/// How long a service may take to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a service may take to exit after being asked to.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The pause between two readiness checks.
const POLL: Duration = Duration::from_millis(50);
/// Log lines shown in a panic message.
const TAIL_LINES: usize = 40;
/// The PostgreSQL role every database belongs to (trust authentication).
const PG_USER: &str = "chatd";
/// The unprivileged user that runs PostgreSQL when the tests run as root.
const PG_OS_USER: &str = "chatd-ci";

// ---------------------------------------------------------------------------
// Shared services

/// The PostgreSQL and NATS shared by the tests of one binary.
pub type Shared = (Mutex<Postgres>, Mutex<Nats>);

/// The first call's outcome: the services, or why they did not start (kept,
/// so that every later test fails at once with the same reason instead of
/// waiting for its own 20 s timeout).
static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();

/// One PostgreSQL and one NATS, started on first use and shared by every test
/// of this binary that does not stop or restart them. Take a database of your
/// own with `lock(&services().0).create_database("my_test")`.
///
/// They are stopped and their directories removed when the test binary exits
/// (statics are never dropped, so an exit hook does it).
pub fn services() -> &'static Shared {
    let shared = SHARED.get_or_init(|| {
        let started = std::panic::catch_unwind(|| {
            std::thread::scope(|scope| {
                // NATS is quick; start it while initdb runs.
                let nats = scope.spawn(Nats::start);
                let postgres = Postgres::start();
                let nats = nats.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (Mutex::new(postgres), Mutex::new(nats))
            })
        });
        match started {
            Ok(shared) => {
                stop_shared_at_exit();
                Ok(shared)
            }
            Err(panic) => Err(panic_message(&*panic)),
        }
    });
    match shared {
        Ok(shared) => shared,
        Err(why) => panic!("the shared services did not start: {why}"),
    }
}

/// A fresh database on the shared PostgreSQL: its URL.
pub fn shared_database(name: &str) -> String {
    lock(&services().0).create_database(name)
}

/// The shared NATS server's URL.
pub fn shared_nats_url() -> String {
    lock(&services().1).url()
}

/// Locks a shared service even after a test panicked while holding it: the
/// service itself is still fine, and one failure should not fail every test.
pub fn lock<T>(service: &Mutex<T>) -> MutexGuard<'_, T> {
    service.lock().unwrap_or_else(PoisonError::into_inner)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "(a panic without a message)".to_owned()
    }
}

/// Registers an exit hook that stops the shared services and removes their
/// directories. Without it every `cargo test` run would leave a postgres and
/// a nats-server running: a static's destructor never runs. (A test binary
/// killed by a signal still leaves them behind: nothing runs then.)
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn stop_shared_at_exit() {
    extern "C" fn stop_shared() {
        // Unwinding out of an exit hook would abort: swallow any panic.
        let _ = std::panic::catch_unwind(|| {
            if let Some(Ok((postgres, nats))) = SHARED.get() {
                // try_lock: no test runs any more, but never hang the exit.
                if let Some(mut postgres) = try_lock(postgres) {
                    postgres.shut_down();
                }
                if let Some(mut nats) = try_lock(nats) {
                    nats.shut_down();
                }
            }
        });
    }
    // SAFETY: `stop_shared` is an `extern "C"` function taking nothing that
    // cannot unwind; atexit only stores its address.
    let failed = unsafe { libc::atexit(stop_shared) } != 0;
    if failed {
        eprintln!("cluster services: cannot register the exit hook; postgres and nats-server may outlive this run");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn stop_shared_at_exit() {}

fn try_lock<T>(service: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match service.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL

/// A PostgreSQL server of its own: a fresh cluster (initdb) in a temporary
/// directory, trust authentication for the role `chatd`, fsync off.
pub struct Postgres {
    // Declared before `dir`: the server must be gone before its files are.
    server: Proc,
    bin: PathBuf,
    port: u16,
    dir: TempDir,
}

impl Postgres {
    /// initdb, start the server, create the database `chatd`. Panics with
    /// initdb's or the server's output when either fails.
    pub fn start() -> Postgres {
        let began = Instant::now();
        let bin = postgres_bindir();
        let dir = tempfile::Builder::new().prefix("chatd-pg-").tempdir().expect("a temporary directory for PostgreSQL");
        if let Some(owner) = postgres_os_user() {
            chown(dir.path(), owner);
        }
        let data = dir.path().join("data");
        let initdb = run_tool(
            postgres_command(&bin, "initdb", dir.path())
                .args(["-A", "trust", "-U", PG_USER, "--no-sync", "-E", "UTF8", "--locale=C", "-D"])
                .arg(&data),
        );
        if !initdb.status.success() {
            panic!("initdb failed ({}):\n{}", initdb.status, output_text(&initdb));
        }
        let initdb_took = began.elapsed();
        let mut postgres = Postgres { server: Proc::new("postgres", dir.path()), bin, port: free_port(), dir };
        postgres.run();
        postgres.create_database("chatd");
        eprintln!(
            "postgres ready on 127.0.0.1:{} in {:.2} s (initdb {:.2} s)",
            postgres.port,
            began.elapsed().as_secs_f64(),
            initdb_took.as_secs_f64()
        );
        postgres
    }

    /// `postgres://chatd@127.0.0.1:PORT/chatd`
    pub fn url(&self) -> String {
        self.url_of("chatd")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates the database `name` (a-z, 0-9 and `_`; fails if it
    /// exists) and returns its URL: tests sharing a server each take one.
    pub fn create_database(&self, name: &str) -> String {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        assert!(valid, "database name {name:?}: use 1 to 63 of a-z, 0-9 and _");
        let created = run_tool(self.client("createdb").arg(name));
        if !created.status.success() {
            panic!("createdb {name} failed ({}):\n{}", created.status, output_text(&created));
        }
        self.url_of(name)
    }

    /// Runs one SQL command through psql on `database` and returns what it
    /// printed (unaligned, tuples only: `select 1` gives `1`).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        // No ~/.psqlrc, unaligned, tuples only, quiet, stop at the first error.
        let flags = ["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"];
        let out = run_tool(self.client("psql").args(flags).args(["-d", database, "-c", sql]));
        if !out.status.success() {
            panic!("psql {sql:?} on {database} failed ({}):\n{}", out.status, output_text(&out));
        }
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Fast shutdown (SIGINT: disconnects clients, checkpoints) and waits.
    pub fn stop(&mut self) {
        self.server.stop(Signal::INT);
    }

    /// Stops (when running) and starts again: same port, same data.
    pub fn restart(&mut self) {
        if self.server.is_running() {
            self.stop();
        }
        self.run();
    }

    /// SIGKILL to the postmaster, as in a crash; its backends notice and
    /// exit by themselves. `restart` afterwards recovers from the WAL.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// The tail of the server's log, for a test's own panic messages.
    pub fn logs(&self) -> String {
        self.server.tail()
    }

    /// Immediate shutdown (SIGQUIT stops the backends too, unlike SIGKILL)
    /// and the directory removed. Used on drop and at exit.
    fn shut_down(&mut self) {
        self.server.signal_and_wait(Signal::QUIT, Duration::from_secs(5));
        self.server.kill();
        let _ = std::fs::remove_dir_all(self.dir.path());
    }

    fn url_of(&self, database: &str) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server on `self.port` and waits until it accepts
    /// connections. Retries while the previous server's leftovers are in
    /// the way (its port, or after a kill its backends' shared memory).
    fn run(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let dir = self.dir.path();
            let mut command = postgres_command(&self.bin, "postgres", dir);
            command.arg("-D").arg(dir.join("data")).args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-k"]);
            command.arg(dir).args(["-c", "fsync=off", "-c", "max_connections=200"]);
            self.server.spawn(&mut command);
            let (bin, port) = (&self.bin, self.port);
            match self.server.wait_ready(deadline, || postgres_accepts(bin, port)) {
                Ok(()) => return,
                Err(NotReady::Exited(_)) if Instant::now() < deadline && self.server.new_output_mentions(TRANSIENT) => {
                    std::thread::sleep(POLL)
                }
                Err(why) => panic!("postgres {why}:\n{}", self.server.tail()),
            }
        }
    }

    /// A client tool (createdb, psql) pointed at this server as `chatd`.
    fn client(&self, tool: &str) -> Command {
        let mut command = Command::new(self.bin.join(tool));
        clear_pg_env(&mut command);
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", PG_USER]);
        command
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// What a postgres that exits at start says when the previous server's
/// leftovers are in the way: worth another try, unlike a bad setting.
const TRANSIENT: &[&str] =
    &["could not bind", "Address already in use", "pre-existing shared memory block", "lock file"];

/// Whether the server on `port` accepts connections: a TCP connect first
/// (cheap), then pg_isready (the server may listen but still be starting).
fn postgres_accepts(bin: &Path, port: u16) -> bool {
    if TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1)).is_err() {
        return false;
    }
    let mut check = Command::new(bin.join("pg_isready"));
    clear_pg_env(&mut check);
    check.args(["-q", "-t", "2", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", PG_USER, "-d", "postgres"]);
    check.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The PostgreSQL server's bin directory: `pg_config --bindir` when it holds
/// a server (Debian's pg_config may come from libpq-dev alone), else the
/// newest `/usr/lib/postgresql/*/bin`.
fn postgres_bindir() -> PathBuf {
    static BINDIR: OnceLock<PathBuf> = OnceLock::new();
    BINDIR
        .get_or_init(|| {
            let from_pg_config = Command::new("pg_config")
                .arg("--bindir")
                .output()
                .ok()
                .filter(|out| out.status.success())
                .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
            let installed = || {
                let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
                    .collect();
                dirs.sort();
                dirs.into_iter().map(|(_, dir)| dir).rev().find(|dir| dir.join("postgres").is_file())
            };
            from_pg_config.filter(|dir| dir.join("postgres").is_file()).or_else(installed).unwrap_or_else(|| {
                panic!("no PostgreSQL server found (pg_config, /usr/lib/postgresql/*/bin): run .ci/cluster-deps.sh")
            })
        })
        .clone()
}

/// The uid and gid to run PostgreSQL as: `chatd-ci` when we are root
/// (postgres refuses root), none (ourselves) otherwise.
fn postgres_os_user() -> Option<(u32, u32)> {
    static USER: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *USER.get_or_init(|| {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, PG_OS_USER]).output().expect("run id");
            let text = String::from_utf8_lossy(&out.stdout);
            match text.trim().parse() {
                Ok(id) if out.status.success() => id,
                _ => panic!(
                    "running as root, and there is no user {PG_OS_USER} to run PostgreSQL: run .ci/cluster-deps.sh"
                ),
            }
        };
        Some((id("-u"), id("-g")))
    })
}

/// A PostgreSQL server program (initdb, postgres) run as the right user,
/// in `dir` (the user may not be able to enter our working directory).
fn postgres_command(bin: &Path, program: &str, dir: &Path) -> Command {
    let mut command = Command::new(bin.join(program));
    clear_pg_env(&mut command);
    command.current_dir(dir);
    // Command::uid execs the program itself (no runuser in between, which
    // would stay the parent): the Child we hold is the postmaster, so our
    // signals reach it. std drops root's supplementary groups too.
    if let Some((uid, gid)) = postgres_os_user() {
        command.uid(uid).gid(gid);
    }
    command
}

/// The caller's PG* variables (PGHOST, PGDATABASE, PGOPTIONS...) would
/// quietly point the tools elsewhere.
fn clear_pg_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("PG")) {
            command.env_remove(name);
        }
    }
}

fn chown(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("cannot give {} to {PG_OS_USER}: {e}", path.display()));
}

// ---------------------------------------------------------------------------
// NATS

/// A nats-server of its own: core NATS only (no JetStream, no monitoring).
pub struct Nats {
    server: Proc,
    port: u16,
    dir: TempDir,
}

impl Nats {
    /// Starts nats-server on a free port and waits until it greets a client.
    pub fn start() -> Nats {
        let began = Instant::now();
        let dir = tempfile::Builder::new().prefix("chatd-nats-").tempdir().expect("a temporary directory for NATS");
        let mut nats = Nats { server: Proc::new("nats-server", dir.path()), port: free_port(), dir };
        nats.run();
        eprintln!("nats-server ready on 127.0.0.1:{} in {:.2} s", nats.port, began.elapsed().as_secs_f64());
        nats
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGTERM (a clean stop: clients see the connection close) and waits.
    pub fn stop(&mut self) {
        self.server.stop(Signal::TERM);
    }

    /// Stops (when running) and starts again on the same port.
    pub fn restart(&mut self) {
        if self.server.is_running() {
            self.stop();
        }
        self.run();
    }

    /// SIGKILL, as in a crash.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    pub fn logs(&self) -> String {
        self.server.tail()
    }

    fn shut_down(&mut self) {
        self.server.kill();
        let _ = std::fs::remove_dir_all(self.dir.path());
    }

    fn run(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut command = Command::new("nats-server");
            command.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]).current_dir(self.dir.path());
            self.server.spawn(&mut command);
            let addr = self.addr();
            match self.server.wait_ready(deadline, || nats_info(addr).is_ok()) {
                Ok(()) => return,
                Err(NotReady::Exited(_))
                    if Instant::now() < deadline && self.server.new_output_mentions(&["address already in use"]) =>
                {
                    std::thread::sleep(POLL)
                }
                Err(why) => panic!("nats-server {why}:\n{}", self.server.tail()),
            }
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Connects to a NATS server and reads its greeting, the `INFO {...}` line.
pub fn nats_info(addr: SocketAddr) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.starts_with("INFO ") {
        Ok(line.trim_end().to_owned())
    } else {
        Err(std::io::Error::other(format!("not a NATS greeting: {line:?}")))
    }
}

// ---------------------------------------------------------------------------
// chatd

/// A chatd process (the binary this package builds), serving on a free
/// 127.0.0.1 port with the test settings of `Config::for_tests`.
pub struct Node {
    server: Proc,
    addr: SocketAddr,
    dir: TempDir,
}

impl Node {
    /// Starts `chatd serve` and waits until `GET /healthz` answers 200.
    ///
    /// Defaults: its own data and static directories (`CHAT_DATA_DIR`,
    /// `CHAT_STATIC_DIR` in a temporary directory), `CHAT_RATE_LIMITS=off`,
    /// `CHAT_DB_SYNC=normal`, `CHAT_HUB_SHARDS=4`, `RUST_LOG=info`; `env`
    /// adds to them or overrides them (`CHAT_DATABASE_URL`, `CHAT_NATS_URL`,
    /// `CHAT_JWT_SECRET`, a shared `CHAT_STATIC_DIR`...). `CHAT_*` variables
    /// of the environment the tests run in are not passed on.
    pub fn start(env: &[(&str, String)]) -> Node {
        let began = Instant::now();
        let dir = tempfile::Builder::new().prefix("chatd-node-").tempdir().expect("a temporary directory for chatd");
        let mut node = Node { server: Proc::new("chatd", dir.path()), addr: free_addr(), dir };
        // Another process may take the free port before chatd binds it: then
        // try another port, a few times.
        for attempt in 1.. {
            let deadline = Instant::now() + START_TIMEOUT;
            node.server.spawn(&mut node.command(env));
            let addr = node.addr;
            let healthy = || http_get(addr, "/healthz").is_ok_and(|(status, _)| status == 200);
            match node.server.wait_ready(deadline, healthy) {
                Ok(()) => break,
                Err(NotReady::Exited(_)) if attempt < 3 && node.server.new_output_mentions(&["cannot listen on"]) => {
                    node.addr = free_addr();
                }
                Err(why) => panic!("chatd {why}:\n{}", node.logs()),
            }
        }
        eprintln!("chatd ready on {} in {:.2} s", node.addr, began.elapsed().as_secs_f64());
        node
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its temporary directory (data/ and static/ unless `env` moved them).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A blocking `GET path`: the status and the body. Panics (with the
    /// node's logs) when the request fails.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).unwrap_or_else(|e| panic!("GET {path} on {}: {e}\n{}", self.addr, self.logs()))
    }

    /// SIGKILL, as in a crash.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// SIGTERM (chatd's graceful shutdown) and waits for the exit: its
    /// status. Panics, with the logs, if chatd takes longer than 20 s.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.server.stop(Signal::TERM)
    }

    /// The tail of chatd's stderr (its log) and stdout.
    pub fn logs(&self) -> String {
        self.server.tail()
    }

    fn command(&self, env: &[(&str, String)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatd"));
        command.arg("serve").current_dir(self.dir.path());
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(|n| n.starts_with("CHAT_") || n == "BASE_URL") {
                command.env_remove(name);
            }
        }
        let dir = self.dir.path();
        command
            .env("CHAT_ADDR", self.addr.to_string())
            .env("BASE_URL", self.base_url())
            .env("CHAT_DATA_DIR", dir.join("data"))
            .env("CHAT_STATIC_DIR", dir.join("static"))
            .env("CHAT_RATE_LIMITS", "off")
            .env("CHAT_DB_SYNC", "normal")
            .env("CHAT_HUB_SHARDS", "4")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
        command.envs(env.iter().map(|(name, value)| (name, value)));
        command
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.server.kill();
    }
}

/// A blocking HTTP/1.1 GET with `Connection: close`: the status and body.
/// Enough for health checks without an async runtime in the harness.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))?;
    Ok((status, body.to_owned()))
}

// ---------------------------------------------------------------------------
// Processes

/// A service's process (none while stopped) and its output, appended to
/// `<name>.stdout.log` and `<name>.stderr.log` across restarts. Killed when
/// dropped.
struct Proc {
    name: &'static str,
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Where stderr stood when the current process started: what it has
    /// said since is what tells why it exited.
    stderr_start: u64,
}

/// Why a process did not become ready.
enum NotReady {
    Exited(ExitStatus),
    TimedOut(Duration),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Exited(status) => write!(f, "exited while starting ({status})"),
            NotReady::TimedOut(after) => write!(f, "did not start within {} s", after.as_secs()),
        }
    }
}

impl Proc {
    fn new(name: &'static str, dir: &Path) -> Proc {
        Proc {
            name,
            child: None,
            stdout: dir.join(format!("{name}.stdout.log")),
            stderr: dir.join(format!("{name}.stderr.log")),
            stderr_start: 0,
        }
    }

    fn spawn(&mut self, command: &mut Command) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let stdout = append(&self.stdout);
        let stderr = append(&self.stderr);
        self.stderr_start = stderr.metadata().map_or(0, |m| m.len());
        let child = command.stdin(Stdio::null()).stdout(stdout).stderr(stderr).spawn();
        match child {
            Ok(child) => self.child = Some(child),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("{} not found ({:?}): run .ci/cluster-deps.sh", self.name, command.get_program())
            }
            Err(e) => panic!("cannot start {} ({:?}): {e}", self.name, command.get_program()),
        }
    }

    fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Polls `ready` every 50 ms until it holds, the process exits, or the
    /// deadline passes.
    fn wait_ready(&mut self, deadline: Instant, mut ready: impl FnMut() -> bool) -> Result<(), NotReady> {
        let began = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Err(NotReady::Exited(status));
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut(began.elapsed()));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The exit status once the process has exited (it is then reaped).
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Whether the current process's stderr mentions one of `words`.
    fn new_output_mentions(&self, words: &[&str]) -> bool {
        let said = std::fs::read(&self.stderr).unwrap_or_default();
        let said = String::from_utf8_lossy(said.get(self.stderr_start as usize..).unwrap_or_default());
        words.iter().any(|word| said.contains(word))
    }

    /// Sends `signal` and waits for the exit; a process still running after
    /// 20 s is killed and the test fails. None when it was not running.
    fn stop(&mut self, signal: Signal) -> Option<ExitStatus> {
        let status = self.signal_and_wait(signal, STOP_TIMEOUT);
        if self.child.is_some() {
            self.kill();
            panic!("{} did not exit within {} s of {signal:?}:\n{}", self.name, STOP_TIMEOUT.as_secs(), self.tail());
        }
        status
    }

    /// Sends `signal`, then waits up to `bound` for the exit. The child stays
    /// in place if it outlives the bound.
    fn signal_and_wait(&mut self, signal: Signal, bound: Duration) -> Option<ExitStatus> {
        let child = self.child.as_ref()?;
        if let Some(pid) = Pid::from_raw(child.id() as i32) {
            // Fails only if it has exited already: the wait below sees that.
            let _ = rustix::process::kill_process(pid, signal);
        }
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if self.child.is_none() || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL and reap (a killed process exits at once).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of stderr, then of stdout when there is any.
    fn tail(&self) -> String {
        let mut text = format!("--- {} stderr ({}) ---\n{}", self.name, self.stderr.display(), tail(&self.stderr));
        let stdout = tail(&self.stdout);
        if !stdout.trim().is_empty() {
            text += &format!("--- {} stdout ({}) ---\n{stdout}", self.name, self.stdout.display());
        }
        text
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// The last lines of a log file (or why it cannot be read).
fn tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let mut tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
            tail.push('\n');
            tail
        }
        Err(e) => format!("(cannot read {}: {e})\n", path.display()),
    }
}

/// Runs a short-lived tool to completion, its output captured.
fn run_tool(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {:?}: {e}", command.get_program()))
}

fn output_text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A port nothing listens on right now: bind port 0, read it, let it go.
/// (Another process could take it before the service binds it; the
/// services retry where that matters.)
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port on 127.0.0.1").port()
}

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}
