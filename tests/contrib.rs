//! The systemd unit in contrib/ says what its comments and the README
//! promise: a dedicated user, a read-only system but the data directory,
//! no privilege gain, a file limit for many connections, and the
//! environment chatd reads. CI also runs `systemd-analyze verify` on it
//! where systemd is installed.

use std::collections::HashMap;

/// `section → key → values` (a key may repeat, as `Environment=` does).
fn parse(text: &str) -> HashMap<String, HashMap<String, Vec<String>>> {
    let mut sections: HashMap<String, HashMap<String, Vec<String>>> = HashMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
        sections.entry(current.clone()).or_default().entry(key.to_owned()).or_default().push(value.to_owned());
    }
    sections
}

#[test]
fn the_unit_is_hardened_and_complete() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/chatd.service")).expect("unit");
    let unit = parse(&text);
    let service = &unit["Service"];
    let one = |key: &str| service.get(key).and_then(|v| v.last()).map(String::as_str);
    assert_eq!(one("User"), Some("chatd"));
    assert_eq!(one("ProtectSystem"), Some("strict"));
    assert_eq!(one("NoNewPrivileges"), Some("yes"));
    assert_eq!(one("ReadWritePaths"), Some("/var/lib/chatd"));
    assert!(one("LimitNOFILE").and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n >= 65_536));
    assert_eq!(one("CapabilityBoundingSet"), Some(""));
    assert!(one("ExecStart").is_some_and(|e| e.ends_with("chatd serve")));
    let env: Vec<&str> = service["Environment"].iter().map(String::as_str).collect();
    for var in ["CHAT_DATA_DIR=/var/lib/chatd/data", "CHAT_STATIC_DIR=/var/lib/chatd/static", "CHAT_LOG_FORMAT=json"] {
        assert!(env.contains(&var), "{var}: {env:?}");
    }
    assert_eq!(unit["Install"]["WantedBy"], ["multi-user.target"]);
}
