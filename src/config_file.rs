//! `--config chatd.toml` (or `CHAT_CONFIG`): every flag of `chatd serve
//! --help` as a key, spelt `data_dir` or `data-dir`. Flags beat environment
//! variables, which beat the file, which beats the defaults: the file's
//! values go in front of the real arguments as flags, but only for settings
//! whose environment variable is unset, and a later flag overrides an
//! earlier one. An unknown key is an error, not a silent typo.

use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;

use clap::CommandFactory;

use crate::config::Cli;

/// The arguments with the config file's settings put in front, or the
/// arguments as they are when no file is named. `env_set` says whether an
/// environment variable is set.
pub fn args_with_config(args: Vec<OsString>, env_set: impl Fn(&str) -> bool) -> Result<Vec<OsString>, String> {
    let Some(path) = config_path(&args, &env_set) else { return Ok(args) };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let table = toml::Table::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let command = Cli::command();
    let mut injected = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && long != "config")
            .ok_or_else(|| format!("{}: unknown setting `{key}` (see chatd serve --help)", path.display()))?;
        if arg.get_env().and_then(|name| name.to_str()).is_some_and(&env_set) {
            continue;
        }
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => {
                let items: Option<Vec<String>> = items.iter().map(|i| i.as_str().map(str::to_owned)).collect();
                items.ok_or_else(|| format!("{}: `{key}` must be a list of strings", path.display()))?.join(",")
            }
            _ => return Err(format!("{}: `{key}` must be a string, number, boolean or list", path.display())),
        };
        injected.push(OsString::from(format!("--{long}={text}")));
    }
    let mut out = Vec::with_capacity(args.len() + injected.len());
    let mut args = args.into_iter();
    out.extend(args.next());
    out.extend(injected);
    out.extend(args);
    Ok(out)
}

/// `--config PATH`, `--config=PATH`, else `CHAT_CONFIG`.
fn config_path(args: &[OsString], env_set: &impl Fn(&str) -> bool) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy();
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    if env_set("CHAT_CONFIG") {
        return std::env::var_os("CHAT_CONFIG").map(PathBuf::from);
    }
    None
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn flags_beat_environment_which_beats_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("chatd.toml");
        std::fs::write(
            &file,
            "addr = \"0.0.0.0:9000\"\ndata_dir = \"/srv/chatd\"\nmax-group-members = 50\n\
             allowed_origins = [\"https://a.example\", \"https://b.example\"]\ntoken_ttl_secs = 3600\n",
        )
        .expect("write");
        let path = file.to_string_lossy().into_owned();
        // CHAT_TOKEN_TTL_SECS is set in the environment: the file's value is left out.
        let env = |name: &str| name == "CHAT_TOKEN_TTL_SECS";
        let args =
            args_with_config(os(&["chatd", "--config", &path, "--addr", "127.0.0.1:1", "migrate"]), env).expect("read");
        let cli = Cli::try_parse_from(args).expect("parse");
        assert_eq!(cli.settings.addr.to_string(), "127.0.0.1:1", "a flag beats the file");
        assert_eq!(cli.settings.data_dir, PathBuf::from("/srv/chatd"), "the file beats the default");
        assert_eq!(cli.settings.max_group_members, 50);
        assert_eq!(cli.settings.allowed_origins.as_deref(), Some("https://a.example,https://b.example"));
        assert_eq!(cli.settings.token_ttl_secs, 86_400, "not from the file: the environment has it");
        assert!(matches!(cli.command, Some(crate::config::Command::Migrate)));
    }

    #[test]
    fn unknown_keys_and_bad_files_are_errors() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("chatd.toml");
        std::fs::write(&file, "data_dri = \"/srv\"\n").expect("write");
        let path = file.to_string_lossy().into_owned();
        let e = args_with_config(os(&["chatd", &format!("--config={path}")]), |_| false).expect_err("a typo");
        assert!(e.contains("unknown setting `data_dri`"), "{e}");
        std::fs::write(&file, "addr = \n").expect("write");
        assert!(args_with_config(os(&["chatd", "--config", &path]), |_| false).is_err());
        assert_eq!(args_with_config(os(&["chatd", "serve"]), |_| false).expect("no file"), os(&["chatd", "serve"]));
    }
}
