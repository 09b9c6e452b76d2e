//! The `chatd` binary: parses arguments, then serves or runs a subcommand.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use chatd::auth::{Keys, password};
use std::io::IsTerminal;

use chatd::config::{Cli, Command, Config, LogFormat, UserCommand};
use chatd::store::{self, NullSink, writer::NewUser};

fn main() -> ExitCode {
    let args = match chatd::config_file::args_with_config(std::env::args_os().collect(), |name| {
        std::env::var_os(name).is_some()
    }) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("chatd: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    let logs = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr);
    match cli.settings.log_format {
        LogFormat::Json => logs.json().with_current_span(true).with_span_list(false).init(),
        // Colour only for a person at a terminal: a file or journald gets plain text.
        LogFormat::Text => logs.with_target(false).with_ansi(std::io::stderr().is_terminal()).init(),
    }
    let config = match Config::from_settings(&cli.settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chatd: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chatd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::Migrate => migrate(&config),
            Command::User(UserCommand::Add { name, email, password }) => add_user(&config, name, email, password).await,
            Command::Token { email } => token(&config, &email).await,
            Command::Doctor => doctor(&config),
            Command::Backup { dest } => {
                let done = chatd::backup::backup(&config.data_dir, &config.static_dir, &dest)?;
                println!(
                    "backed up to {}: {:.1} MB, {} files, {:.2} s{}",
                    dest.display(),
                    done.bytes as f64 / 1e6,
                    done.files,
                    done.seconds,
                    match done.deleted_meanwhile {
                        0 => String::new(),
                        n => format!(" ({n} messages deleted meanwhile are deleted in the backup too)"),
                    }
                );
                Ok(())
            }
            Command::Export { email, out } => export(&config, &email, &out).await,
            Command::Restore { src } => {
                let files = chatd::backup::restore(&src, &config.data_dir, &config.static_dir)?;
                println!("restored {} with {files} files into {}", src.display(), config.data_dir.display());
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatd: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let addr = config.addr;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let server = chatd::server::start(config).await.map_err(|e| e.to_string())?;
    tracing::info!(addr = %listener.local_addr().map_err(|e| e.to_string())?, "chatd listening");
    server.run(listener, chatd::server::shutdown_signal()).await;
    Ok(())
}

fn doctor(config: &Config) -> Result<(), String> {
    let checks = chatd::doctor::run(config);
    for check in &checks {
        println!("{check}");
    }
    match checks.iter().filter(|c| c.status == chatd::doctor::Status::Fail).count() {
        0 => Ok(()),
        n => Err(format!("{n} check(s) failed")),
    }
}

async fn export(config: &Config, email: &str, out: &std::path::Path) -> Result<(), String> {
    let (reader, writer) = store::open(config, Box::new(NullSink), store::Opener::Tool).map_err(|e| e.to_string())?;
    let email = email.trim().to_lowercase();
    let found = reader.credentials_by_email(email.clone()).await.map_err(|e| e.to_string());
    writer.shutdown().await;
    let user = found?.ok_or_else(|| format!("no user with email {email}"))?.user.id;
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")).to_owned();
    let (mut file, messages) = reader.export(user, config.static_dir.clone(), dir).await.map_err(|e| e.to_string())?;
    let mut target = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let bytes = std::io::copy(&mut file, &mut target).map_err(|e| format!("{}: {e}", out.display()))?;
    target.sync_all().map_err(|e| format!("{}: {e}", out.display()))?;
    println!("exported {messages} messages to {} ({:.1} MB)", out.display(), bytes as f64 / 1e6);
    Ok(())
}

fn migrate(config: &Config) -> Result<(), String> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| e.to_string())?;
    let mut conn = store::open_writer(&store::db_path(&config.data_dir), config.db_sync).map_err(|e| e.to_string())?;
    let applied = store::migrate::apply(&mut conn).map_err(|e| e.to_string())?;
    println!("applied {applied} migration(s); schema version {}", store::migrate::latest());
    Ok(())
}

async fn add_user(config: &Config, name: String, email: String, password: Option<String>) -> Result<(), String> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| e.to_string())?;
    let email = chatd::http::normalize_email(&email).map_err(|e| e.to_string())?;
    let generated = password.is_none();
    let password = match password {
        Some(p) if p.chars().count() >= 8 => p,
        Some(_) => return Err("the password must be at least 8 characters".into()),
        None => {
            let mut raw = [0u8; 12];
            getrandom::fill(&mut raw).map_err(|e| e.to_string())?;
            raw.iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    let password_hash = password::hash(&password)?;
    let (_, writer) = store::open(config, Box::new(NullSink), store::Opener::Tool).map_err(|e| e.to_string())?;
    let user = writer
        .register(NewUser { name: name.trim().to_owned(), email, password_hash, avatar_url: None })
        .await
        .map_err(|e| e.to_string());
    writer.shutdown().await;
    let user = user?;
    println!("created user {} <{}>", user.id, user.email);
    if generated {
        println!("password: {password}");
    }
    Ok(())
}

async fn token(config: &Config, email: &str) -> Result<(), String> {
    let (reader, writer) = store::open(config, Box::new(NullSink), store::Opener::Tool).map_err(|e| e.to_string())?;
    let email = email.trim().to_lowercase();
    let found = reader.credentials_by_email(email.clone()).await.map_err(|e| e.to_string());
    writer.shutdown().await;
    let credentials = found?.ok_or_else(|| format!("no user with email {email}"))?;
    let keys =
        Keys::load(config.jwt_secret.as_deref(), &config.data_dir, config.token_ttl).map_err(|e| e.to_string())?;
    println!("{}", keys.issue(credentials.user.id, credentials.token_version).map_err(|e| e.to_string())?);
    Ok(())
}
