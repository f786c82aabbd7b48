//! Process figures read from `/proc/self` (Linux only; elsewhere every figure is `None`).

/// Clock ticks per second of `/proc/<pid>/stat` times. `USER_HZ` is fixed at 100 in the
/// Linux user-space ABI on every architecture Starling is built for, so no `sysconf` call
/// (which would need `unsafe` libc code) is made.
const USER_HZ: f64 = 100.0;

/// One reading of the process figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSample {
    /// Resident set size, bytes.
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_memory_bytes: Option<u64>,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Open file descriptors (sockets included).
    pub open_fds: Option<u64>,
    /// Soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Threads of the process.
    pub threads: Option<u64>,
    /// Start time of the process, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// Reads the current figures; a figure that cannot be read is `None`.
pub fn sample() -> ProcessSample {
    let mut sample = ProcessSample::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        parse_stat(&stat, boot_time_seconds(), &mut sample);
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        sample.resident_memory_bytes = status_kib(&status, "VmRSS:").map(|kib| kib * 1024);
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle itself is one of the entries; it is closed right after.
        sample.open_fds = Some(entries.count().saturating_sub(1) as u64);
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        sample.max_fds = parse_max_open_files(&limits);
    }
    sample
}

fn boot_time_seconds() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// Parses `/proc/self/stat`; field numbers as in proc(5), counted after the `comm` field,
/// which may itself contain spaces and parentheses.
fn parse_stat(stat: &str, boot_time_seconds: Option<u64>, sample: &mut ProcessSample) {
    let Some(after_comm) = stat.rfind(')').map(|idx| &stat[idx + 1..]) else {
        return;
    };
    // fields[0] is field 3 (state).
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |number: usize| -> Option<u64> { fields.get(number - 3)?.parse().ok() };
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        sample.cpu_seconds = Some((utime + stime) as f64 / USER_HZ);
    }
    sample.threads = field(20);
    sample.virtual_memory_bytes = field(23);
    if let (Some(start_ticks), Some(boot)) = (field(22), boot_time_seconds) {
        sample.start_time_seconds = Some(boot as f64 + start_ticks as f64 / USER_HZ);
    }
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "17436 (my (odd) prog) R 17432 17432 2979 0 -1 4194304 105 0 0 0 250 50 0 0 20 0 7 0 1000 2998272 395 18446744073709551615";
        let mut sample = ProcessSample::default();
        parse_stat(stat, Some(1_700_000_000), &mut sample);
        assert_eq!(sample.cpu_seconds, Some(3.0));
        assert_eq!(sample.threads, Some(7));
        assert_eq!(sample.virtual_memory_bytes, Some(2_998_272));
        assert_eq!(sample.start_time_seconds, Some(1_700_000_010.0));
    }

    #[test]
    fn status_and_limits_are_parsed() {
        let status = "Name:\tstarling\nVmSize:\t    3892 kB\nVmRSS:\t    2080 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(2080));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            20000                20000                files\n";
        assert_eq!(parse_max_open_files(limits), Some(20000));
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = sample();
        if cfg!(target_os = "linux") {
            assert!(sample.resident_memory_bytes.unwrap() > 0);
            assert!(sample.open_fds.unwrap() > 0);
            assert!(sample.threads.unwrap() >= 1);
            assert!(sample.start_time_seconds.unwrap() > 1_000_000_000.0);
        }
    }
}
