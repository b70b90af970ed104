//! The figures of one run: counts, failures by kind, latency percentiles, rate, RSS.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

/// Latencies are recorded in microseconds, from 1 µs to one hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

/// Records one latency, clamped into the histogram's range.
pub fn record(hist: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    hist.saturating_record(us.max(1));
}

/// Percentiles of a histogram in milliseconds; `None` everywhere when it is empty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub min: Option<f64>,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Latency {
    pub fn of(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Self {
                count: 0,
                min: None,
                mean: None,
                p50: None,
                p90: None,
                p99: None,
                p999: None,
                max: None,
            };
        }
        let q = |q: f64| Some(us_to_ms(hist.value_at_quantile(q)));
        Self {
            count: hist.len(),
            min: Some(us_to_ms(hist.min())),
            mean: Some(hist.mean() / 1000.0),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: Some(us_to_ms(hist.max())),
        }
    }
}

/// Formats milliseconds with about three significant digits; `-` for no value.
pub fn fmt_ms(v: Option<f64>) -> String {
    match v {
        None => "-".to_string(),
        Some(v) if v < 10.0 => format!("{v:.3}"),
        Some(v) if v < 100.0 => format!("{v:.2}"),
        Some(v) if v < 10_000.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
    }
}

/// Rounds for JSON output (microsecond resolution is all the histogram has).
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn opt_json(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |v| json!(round3(v)))
}

/// Server memory before and after the ramp-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rss {
    pub before_kib: u64,
    pub after_kib: u64,
    /// Connections open when `after_kib` was read.
    pub connections: u64,
}

impl Rss {
    pub fn delta_kib(&self) -> i64 {
        self.after_kib as i64 - self.before_kib as i64
    }

    pub fn per_connection_kib(&self) -> Option<f64> {
        (self.connections > 0).then(|| self.delta_kib() as f64 / self.connections as f64)
    }
}

/// Reads `VmRSS` (KiB) from `/proc/<pid>/status`.
pub fn read_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vmrss(&status)
}

pub fn parse_vmrss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// A process's CPU time so far (user + system, ms) from `/proc/<pid>/stat`;
/// `pid` `None` reads this process.
pub fn read_cpu_ms(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    parse_cpu_ms(&std::fs::read_to_string(path).ok()?)
}

/// `utime` + `stime` of a `/proc/<pid>/stat` line, in ms. The fields are counted
/// after the command name, which may itself hold spaces and parentheses. The kernel
/// reports them in USER_HZ, which is 100 on every Linux architecture we run on.
pub fn parse_cpu_ms(stat: &str) -> Option<u64> {
    const USER_HZ: u64 = 100;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    // After the name: state (3), ppid … cminflt … utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 1000 / USER_HZ)
}

/// CPU spent by the server (when its pid is known) and by this tool between
/// [`CpuMeter::start`] and [`CpuMeter::finish`]: what one operation costs, and how
/// much of the two shared cores the tool itself took.
pub struct CpuMeter {
    pid: Option<u32>,
    server_ms: Option<u64>,
    client_ms: Option<u64>,
}

impl CpuMeter {
    pub fn start(pid: Option<u32>) -> Self {
        CpuMeter {
            pid,
            server_ms: pid.and_then(|p| read_cpu_ms(Some(p))),
            client_ms: read_cpu_ms(None),
        }
    }

    /// The CPU used since the start, in total and per operation (µs).
    pub fn finish(&self, ops: u64) -> Value {
        let delta = |before: Option<u64>, now: Option<u64>| match (before, now) {
            (Some(b), Some(n)) => Some(n.saturating_sub(b)),
            _ => None,
        };
        let server = delta(self.server_ms, self.pid.and_then(|p| read_cpu_ms(Some(p))));
        let client = delta(self.client_ms, read_cpu_ms(None));
        let per_op = |ms: Option<u64>| {
            ms.filter(|_| ops > 0)
                .map(|ms| ms as f64 * 1000.0 / ops as f64)
        };
        json!({
            "operations": ops,
            "server_ms": server,
            "client_ms": client,
            "server_us_per_op": per_op(server).map(|v| (v * 10.0).round() / 10.0),
            "client_us_per_op": per_op(client).map(|v| (v * 10.0).round() / 10.0),
        })
    }
}

pub struct Report {
    pub scenario: &'static str,
    pub url: String,
    /// Operations tried (connections, resumes, refreshes, expected deliveries).
    pub attempted: u64,
    pub successes: u64,
    /// Failures by server error code or transport error kind.
    pub failures: BTreeMap<String, u64>,
    /// Latencies in microseconds.
    pub hist: Histogram<u64>,
    /// The measured phase.
    pub duration: Duration,
    pub rss: Option<Rss>,
    /// Scenario-specific figures and parameters.
    pub extra: Map<String, Value>,
}

impl Report {
    pub fn new(scenario: &'static str, url: &str) -> Self {
        Self {
            scenario,
            url: url.to_string(),
            attempted: 0,
            successes: 0,
            failures: BTreeMap::new(),
            hist: new_histogram(),
            duration: Duration::ZERO,
            rss: None,
            extra: Map::new(),
        }
    }

    pub fn failures_total(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Successful operations per second over the measured phase.
    pub fn rate(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.successes as f64 / secs
        } else {
            0.0
        }
    }

    pub fn to_json(&self) -> Value {
        let l = Latency::of(&self.hist);
        let rss = self.rss.map_or(Value::Null, |r| {
            json!({
                "before_kib": r.before_kib,
                "after_kib": r.after_kib,
                "delta_kib": r.delta_kib(),
                "connections": r.connections,
                "per_connection_kib": opt_json(r.per_connection_kib()),
            })
        });
        json!({
            "scenario": self.scenario,
            "url": self.url,
            "attempted": self.attempted,
            "successes": self.successes,
            "failures_total": self.failures_total(),
            "failures": self.failures,
            "latency_ms": {
                "count": l.count,
                "min": opt_json(l.min),
                "mean": opt_json(l.mean),
                "p50": opt_json(l.p50),
                "p90": opt_json(l.p90),
                "p99": opt_json(l.p99),
                "p99_9": opt_json(l.p999),
                "max": opt_json(l.max),
            },
            "rate_per_s": round3(self.rate()),
            "duration_s": round3(self.duration.as_secs_f64()),
            "rss": rss,
            "extra": self.extra,
        })
    }

    pub fn to_text(&self) -> String {
        let l = Latency::of(&self.hist);
        let mut s = String::new();
        let _ = writeln!(s, "wsauth-load {}  {}", self.scenario, self.url);
        let _ = writeln!(s, "  attempted    {}", self.attempted);
        let _ = writeln!(s, "  successes    {}", self.successes);
        let fails = if self.failures.is_empty() {
            "none".to_string()
        } else {
            self.failures
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(s, "  failures     {}  ({fails})", self.failures_total());
        let _ = writeln!(
            s,
            "  latency ms   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (min {}, mean {}, n={})",
            fmt_ms(l.p50),
            fmt_ms(l.p90),
            fmt_ms(l.p99),
            fmt_ms(l.p999),
            fmt_ms(l.max),
            fmt_ms(l.min),
            fmt_ms(l.mean),
            l.count
        );
        let _ = writeln!(s, "  rate         {:.1} ops/s", self.rate());
        let _ = writeln!(s, "  duration     {:.3} s", self.duration.as_secs_f64());
        if let Some(r) = self.rss {
            let per = r
                .per_connection_kib()
                .map_or("-".to_string(), |v| format!("{v:.2}"));
            let _ = writeln!(
                s,
                "  server rss   before {} KiB, after {} KiB, delta {} KiB over {} connections = {per} KiB/connection",
                r.before_kib,
                r.after_kib,
                r.delta_kib(),
                r.connections
            );
        }
        for (k, v) in &self.extra {
            let _ = writeln!(s, "  {k:<12} {v}");
        }
        s
    }
}

/// Adds one failure of kind `key`.
pub fn count(map: &mut BTreeMap<String, u64>, key: String) {
    *map.entry(key).or_insert(0) += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmt_ms_keeps_about_three_significant_digits() {
        assert_eq!(fmt_ms(None), "-");
        assert_eq!(fmt_ms(Some(0.1234)), "0.123");
        assert_eq!(fmt_ms(Some(1.5)), "1.500");
        assert_eq!(fmt_ms(Some(12.345)), "12.35");
        assert_eq!(fmt_ms(Some(123.44)), "123.4");
        assert_eq!(fmt_ms(Some(12_345.6)), "12346");
    }

    #[test]
    fn percentiles_of_a_uniform_histogram() {
        let mut h = new_histogram();
        for ms in 1..=1000u64 {
            record(&mut h, Duration::from_millis(ms));
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 1000);
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() <= b * 0.001 + 0.001;
        assert!(close(l.p50, 500.0), "{:?}", l.p50);
        assert!(close(l.p90, 900.0), "{:?}", l.p90);
        assert!(close(l.p99, 990.0), "{:?}", l.p99);
        assert!(close(l.p999, 999.0), "{:?}", l.p999);
        assert!(close(l.max, 1000.0), "{:?}", l.max);
        assert!(close(l.min, 1.0), "{:?}", l.min);
    }

    #[test]
    fn empty_report_has_nulls_and_dashes() {
        let r = Report::new("connect", "ws://127.0.0.1:1/ws");
        let j = r.to_json();
        assert_eq!(j["latency_ms"]["p50"], Value::Null);
        assert_eq!(j["rate_per_s"], json!(0.0));
        let t = r.to_text();
        assert!(t.contains("p50 -"), "{t}");
        assert!(t.contains("failures     0  (none)"), "{t}");
    }

    #[test]
    fn report_json_is_one_line_with_every_figure() {
        let mut r = Report::new("connect", "ws://127.0.0.1:1/ws");
        r.attempted = 10;
        r.successes = 8;
        count(&mut r.failures, "TOKEN_EXPIRED".into());
        count(&mut r.failures, "http:429:RATE_LIMITED".into());
        record(&mut r.hist, Duration::from_micros(1500));
        r.duration = Duration::from_secs(2);
        r.rss = Some(Rss {
            before_kib: 1000,
            after_kib: 1800,
            connections: 8,
        });
        let line = r.to_json().to_string();
        assert!(!line.contains('\n'));
        let j: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(j["successes"], 8);
        assert_eq!(j["failures_total"], 2);
        assert_eq!(j["failures"]["TOKEN_EXPIRED"], 1);
        assert_eq!(j["rate_per_s"], json!(4.0));
        assert_eq!(j["latency_ms"]["p50"], json!(1.5));
        assert_eq!(j["rss"]["per_connection_kib"], json!(100.0));
        let t = r.to_text();
        assert!(t.contains("TOKEN_EXPIRED=1"), "{t}");
        assert!(t.contains("100.00 KiB/connection"), "{t}");
    }

    #[test]
    fn cpu_time_is_parsed_after_the_command_name() {
        // utime 250 and stime 130 ticks, with a name holding ") (" to trip a naive split.
        let stat = "4242 (a) (b c) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 130 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ms(stat), Some(3800));
        assert_eq!(parse_cpu_ms("4242 (x) S 1 2"), None);
        let own = read_cpu_ms(None).expect("this process's stat");
        assert!(
            own < 3_600_000,
            "a test process has not used an hour of CPU: {own}"
        );
    }

    #[test]
    fn vmrss_is_parsed_from_proc_status() {
        let s = "Name:\tx\nVmPeak:\t  9999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss(s), Some(12345));
        assert_eq!(parse_vmrss("Name: x\n"), None);
    }
}
