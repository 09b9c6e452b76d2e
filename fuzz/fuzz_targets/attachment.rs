//! check_files and store_files on one message, stored into a temporary dir.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn static_dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        chatd::attach::prepare_dirs(dir.path()).expect("chat_files dirs");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let _stored = chatd::attach::fuzz::attachment(data, static_dir().path());
});
