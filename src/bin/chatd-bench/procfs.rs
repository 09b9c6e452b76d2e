//! What Linux's /proc says about the server under test (memory, CPU time,
//! open files, one thread's CPU time) and about this process (its
//! open-file limit). Parsers are pure and tested; the readers around them
//! only open files.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{BenchError, Context, Result};

/// Clock ticks per second of /proc/<pid>/stat times: 100 on every Linux
/// this tool runs on (USER_HZ; `getconf CLK_TCK` says so).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// The memory lines of /proc/<pid>/status, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStatus {
    pub vm_rss_kb: u64,
    pub vm_hwm_kb: u64,
    pub threads: u64,
}

/// One reading of the server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSnapshot {
    pub memory: MemoryStatus,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    pub open_files: Option<usize>,
}

/// A soft and hard limit; `u64::MAX` stands for "unlimited".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: u64,
    pub hard: u64,
}

/// Parses /proc/<pid>/status; None when a memory line is missing (a kernel
/// thread, or a process that just exited).
pub fn parse_status(text: &str) -> Option<MemoryStatus> {
    let mut rss = None;
    let mut hwm = None;
    let mut threads = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let number = value.split_whitespace().next().and_then(|word| word.parse::<u64>().ok());
        match key {
            "VmRSS" => rss = number,
            "VmHWM" => hwm = number,
            "Threads" => threads = number.unwrap_or(0),
            _ => {}
        }
    }
    Some(MemoryStatus { vm_rss_kb: rss?, vm_hwm_kb: hwm?, threads })
}

/// Parses the utime + stime fields of /proc/<pid>/stat. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted from
/// the last ')'.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Parses the "Max open files" line of /proc/<pid>/limits.
pub fn parse_nofile_limit(limits: &str) -> Option<Limit> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    let mut words = line["Max open files".len()..].split_whitespace();
    let parse = |word: Option<&str>| match word? {
        "unlimited" => Some(u64::MAX),
        number => number.parse().ok(),
    };
    let soft = parse(words.next())?;
    let hard = parse(words.next())?;
    Some(Limit { soft, hard })
}

/// The socket inodes of /proc/net/tcp or tcp6 lines that listen (state 0A)
/// on `port`, whatever the local address.
pub fn parse_listening_inodes(net_tcp: &str, port: u16) -> Vec<u64> {
    let mut inodes = Vec::new();
    for line in net_tcp.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || fields[3] != "0A" {
            continue;
        }
        let Some((_, port_hex)) = fields[1].rsplit_once(':') else {
            continue;
        };
        if u16::from_str_radix(port_hex, 16) != Ok(port) {
            continue;
        }
        if let Ok(inode) = fields[9].parse::<u64>()
            && inode != 0
        {
            inodes.push(inode);
        }
    }
    inodes
}

/// The 1-minute load average, the first field of /proc/loadavg.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// This machine's 1-minute load average.
pub fn read_loadavg() -> Option<f64> {
    parse_loadavg(&fs::read_to_string("/proc/loadavg").ok()?)
}

/// Reads the memory lines of a process.
pub fn read_memory(pid: u32) -> Result<MemoryStatus> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).context(format!("reading {path}"))?;
    parse_status(&text).ok_or_else(|| BenchError::new(format!("{path} has no VmRSS/VmHWM")))
}

/// Reads memory, CPU time and the number of open files of a process.
pub fn snapshot(pid: u32) -> Result<ProcessSnapshot> {
    let memory = read_memory(pid)?;
    let stat_path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&stat_path).context(format!("reading {stat_path}"))?;
    let cpu_ticks = parse_cpu_ticks(&stat).ok_or_else(|| BenchError::new(format!("{stat_path} has no CPU times")))?;
    let open_files = fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|entries| entries.count());
    Ok(ProcessSnapshot { memory, cpu_ticks, open_files })
}

/// CPU ticks used by this process so far.
pub fn own_cpu_ticks() -> Option<u64> {
    parse_cpu_ticks(&fs::read_to_string("/proc/self/stat").ok()?)
}

/// The open-file limit of a process (`"self"` or a pid).
pub fn read_nofile_limit(pid: &str) -> Option<Limit> {
    parse_nofile_limit(&fs::read_to_string(format!("/proc/{pid}/limits")).ok()?)
}

/// Resets the server's VmHWM to its current VmRSS (Linux ≥ 4.0), so that a
/// later reading shows the peak of this run alone.
pub fn reset_peak(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    fs::write(&path, "5").context(format!("writing 5 to {path}"))
}

/// Whether /proc knows this pid.
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}/status")).exists()
}

/// The process that holds a socket listening on `port` (IPv4 or IPv6).
pub fn find_pid_by_port(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = fs::read_to_string(table) {
            inodes.extend(parse_listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|inode| format!("socket:[{inode}]")).collect();
    let own_pid = std::process::id();
    for pid in numeric_proc_entries() {
        if pid == own_pid {
            continue;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = fs::read_link(fd.path())
                && wanted.iter().any(|w| link.as_os_str() == w.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// The first process whose command name is `name` (not this one).
pub fn find_pid_by_name(name: &str) -> Option<u32> {
    let own_pid = std::process::id();
    numeric_proc_entries().into_iter().find(|pid| {
        *pid != own_pid && fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim_end() == name)
    })
}

/// The id of a thread of `pid` whose name (`comm`) is `name`.
pub fn find_thread(pid: u32, name: &str) -> Option<u32> {
    let entries = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut tids: Vec<u32> = entries.flatten().filter_map(|entry| entry.file_name().to_str()?.parse().ok()).collect();
    tids.sort_unstable();
    tids.into_iter().find(|tid| {
        fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).is_ok_and(|comm| comm.trim_end() == name)
    })
}

/// User plus system CPU ticks of one thread.
pub fn thread_cpu_ticks(pid: u32, tid: u32) -> Option<u64> {
    parse_cpu_ticks(&fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?)
}

/// The path of a file `pid` holds open whose name is `file_name`, from
/// its /proc/<pid>/fd links.
pub fn find_open_file(pid: u32, file_name: &str) -> Option<PathBuf> {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    fds.flatten().find_map(|fd| open_file_named(&fs::read_link(fd.path()).ok()?, file_name))
}

/// `link` (an fd's target) when it is a live file named `file_name`.
pub fn open_file_named(link: &Path, file_name: &str) -> Option<PathBuf> {
    (link.is_absolute() && link.file_name()? == file_name).then(|| link.to_path_buf())
}

fn numeric_proc_entries() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries.flatten().filter_map(|entry| entry.file_name().to_str()?.parse().ok()).collect();
    pids.sort_unstable();
    pids
}

/// What happened to this process's open-file limit at start.
#[derive(Debug, Clone)]
pub struct NofileRaise {
    pub before: Option<Limit>,
    pub after: Option<Limit>,
    pub note: Option<String>,
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (processes it
/// starts later inherit it); when that fails, the note says so and the run
/// goes on.
pub fn raise_own_nofile_limit() -> NofileRaise {
    let before = read_nofile_limit("self");
    let Some(limit) = before else {
        return NofileRaise { before, after: None, note: Some("cannot read /proc/self/limits".to_string()) };
    };
    if limit.soft >= limit.hard {
        return NofileRaise { before, after: before, note: None };
    }
    let note = raise_soft_to_hard().err();
    NofileRaise { before, after: read_nofile_limit("self"), note }
}

#[cfg(unix)]
fn raise_soft_to_hard() -> std::result::Result<(), String> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum })
        .map_err(|error| format!("setrlimit: {error}"))
}

#[cfg(not(unix))]
fn raise_soft_to_hard() -> std::result::Result<(), String> {
    Err("not supported on this system".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tchatd\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t  812344 kB\nVmSize:\t  812340 kB\nVmHWM:\t   40960 kB\n\
        VmRSS:\t   20480 kB\nRssAnon:\t   10000 kB\nThreads:\t5\n";

    #[test]
    fn status_gives_rss_hwm_and_threads() {
        let status = parse_status(STATUS).expect("memory lines");
        assert_eq!(status, MemoryStatus { vm_rss_kb: 20480, vm_hwm_kb: 40960, threads: 5 });
    }

    #[test]
    fn status_without_memory_lines_is_none() {
        assert_eq!(parse_status("Name:\tkthreadd\nThreads:\t1\n"), None);
    }

    #[test]
    fn stat_times_are_counted_after_the_last_parenthesis() {
        let stat = "4242 (chat d (x)) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    120 30 0 0 20 0 5 0 1000 812340000 5120 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(150));
    }

    #[test]
    fn stat_that_is_cut_short_is_none() {
        assert_eq!(parse_cpu_ticks("1 (init) S 0 1"), None);
    }

    #[test]
    fn nofile_limit_reads_soft_and_hard() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max cpu time              unlimited            unlimited            seconds   \n\
            Max open files            1024                 524288               files     \n";
        assert_eq!(parse_nofile_limit(limits), Some(Limit { soft: 1024, hard: 524288 }));
        let unlimited = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_nofile_limit(unlimited), Some(Limit { soft: u64::MAX, hard: u64::MAX }));
    }

    const NET_TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:4650 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 55501 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 55502 1 0000000000000000 100 0 0 10 0\n\
   2: 0100007F:4650 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 55503 1 0000000000000000 20 4 30 10 -1\n";

    #[test]
    fn listening_inode_is_found_by_port() {
        // 0x4650 = 18000, 0x1F40 = 8000.
        assert_eq!(parse_listening_inodes(NET_TCP, 18000), vec![55501]);
        assert_eq!(parse_listening_inodes(NET_TCP, 8000), vec![55502]);
        assert!(parse_listening_inodes(NET_TCP, 9999).is_empty());
    }

    #[test]
    fn established_sockets_are_not_listeners() {
        // Line 2 is an accepted connection on 18000 (state 01): not counted.
        assert_eq!(parse_listening_inodes(NET_TCP, 18000).len(), 1);
    }

    #[test]
    fn ipv6_lines_are_parsed_too() {
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000001000000:4650 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(parse_listening_inodes(tcp6, 18000), vec![77]);
    }

    #[test]
    fn open_files_are_matched_by_their_whole_name() {
        let live = Path::new("/tmp/x/data/search.sqlite3");
        assert_eq!(open_file_named(live, "search.sqlite3"), Some(live.to_path_buf()));
        assert_eq!(open_file_named(Path::new("/tmp/x/data/search.sqlite3-wal"), "search.sqlite3"), None);
        // A removed file's link ends in " (deleted)"; sockets are not paths.
        assert_eq!(open_file_named(Path::new("/tmp/x/search.sqlite3 (deleted)"), "search.sqlite3"), None);
        assert_eq!(open_file_named(Path::new("socket:[123]"), "search.sqlite3"), None);
    }

    #[test]
    fn this_process_has_named_threads_with_cpu_times() {
        let pid = std::process::id();
        let name = fs::read_to_string(format!("/proc/{pid}/task/{pid}/comm")).expect("own comm");
        let tid = find_thread(pid, name.trim_end()).expect("the main thread by its name");
        assert!(thread_cpu_ticks(pid, tid).is_some());
        assert_eq!(find_thread(pid, "no-such-thread-name"), None);
    }

    #[test]
    fn loadavg_is_the_first_field() {
        assert_eq!(parse_loadavg("9.61 8.51 5.85 3/250 31871\n"), Some(9.61));
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn this_process_has_memory_and_cpu() {
        let pid = std::process::id();
        let reading = snapshot(pid).expect("own /proc entry");
        assert!(reading.memory.vm_rss_kb > 0);
        assert!(reading.open_files.is_some());
    }
}
