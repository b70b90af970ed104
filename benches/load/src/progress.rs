//! A once-a-second progress line on stderr: phase, done/total, ok, failed, rate.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Progress {
    phase: Mutex<String>,
    total: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
    tty: bool,
}

impl Progress {
    /// Starts the ticker task.
    pub fn start() -> Arc<Self> {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let p = Arc::new(Self {
            phase: Mutex::new(String::new()),
            total: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            tty,
        });
        let ticker = p.clone();
        tokio::spawn(async move {
            let mut last_done = 0u64;
            let mut last_at = Instant::now();
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.tick().await;
            loop {
                interval.tick().await;
                if ticker.stop.load(Ordering::Relaxed) {
                    break;
                }
                let done = ticker.done();
                let now = Instant::now();
                let rate = done.saturating_sub(last_done) as f64
                    / now.duration_since(last_at).as_secs_f64().max(1e-6);
                last_done = done;
                last_at = now;
                ticker.print(rate);
            }
        });
        p
    }

    fn done(&self) -> u64 {
        self.ok.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    fn print(&self, rate: f64) {
        let phase = self.phase.lock().map(|p| p.clone()).unwrap_or_default();
        let line = format!(
            "[{phase}] {}/{} ok={} failed={} {rate:.0}/s",
            self.done(),
            self.total.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Starts a new phase with its own counters.
    pub fn phase(&self, name: &str, total: u64) {
        if self.tty && self.total.load(Ordering::Relaxed) > 0 {
            self.print(0.0);
            eprintln!();
        }
        if let Ok(mut p) = self.phase.lock() {
            *p = name.to_string();
        }
        self.total.store(total, Ordering::Relaxed);
        self.ok.store(0, Ordering::Relaxed);
        self.failed.store(0, Ordering::Relaxed);
    }

    pub fn ok(&self) {
        self.ok.fetch_add(1, Ordering::Relaxed);
    }

    pub fn fail(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn ok_count(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    pub fn settled(&self) -> u64 {
        self.done()
    }

    /// Prints the final state of the phase and stops the ticker.
    pub fn finish(&self) {
        self.print(0.0);
        if self.tty {
            eprintln!();
        }
        self.stop.store(true, Ordering::Relaxed);
    }
}
