//! Resident memory and CPU time of a process from `/proc/<pid>` (Linux).

use std::io;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on every Linux platform that
/// matters; reading `sysconf(_SC_CLK_TCK)` would need `unsafe`).
const TICKS_PER_SEC: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ProcSample {
    /// Resident set size.
    pub(crate) rss_bytes: u64,
    /// User plus system CPU time.
    pub(crate) cpu_secs: f64,
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`; `pid` may be `self`.
///
/// # Errors
/// Returns the I/O error, e.g. when the process does not exist.
pub(crate) fn sample(pid: &str) -> io::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(ProcSample {
        rss_bytes: parse_rss_bytes(&status).unwrap_or(0),
        cpu_secs: parse_cpu_secs(&stat).unwrap_or(0.0),
    })
}

/// Returns the share of the last 10 s in which some runnable task waited for a CPU
/// (`/proc/pressure/cpu`, "some avg10"), in percent: a noise gauge for shared machines.
pub(crate) fn cpu_pressure_pct() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    parse_cpu_pressure(&text)
}

fn parse_cpu_pressure(text: &str) -> Option<f64> {
    let line = text.lines().find(|line| line.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("avg10="))?
        .parse()
        .ok()
}

fn parse_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn parse_cpu_secs(stat: &str) -> Option<f64> {
    // The command name (field 2) may contain spaces and parentheses: fields after the last
    // ')' start with field 3 (state); utime and stime are fields 14 and 15.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_lines_parse() {
        let stat = "1234 (my (odd) proc) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0 100";
        assert_eq!(parse_cpu_secs(stat), Some(3.0));
        let status = "Name:\tmosquitto\nVmRSS:\t    2048 kB\nThreads:\t1\n";
        assert_eq!(parse_rss_bytes(status), Some(2 * 1024 * 1024));
        let pressure = "some avg10=72.30 avg60=56.31 avg300=52.16 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_cpu_pressure(pressure), Some(72.3));
    }

    #[test]
    fn own_process_can_be_sampled() {
        let sample = sample("self").unwrap();
        assert!(sample.rss_bytes > 0);
    }
}
