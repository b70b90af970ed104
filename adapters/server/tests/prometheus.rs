//! A real Prometheus (Debian's `prometheus`, the one `cargo xtask test` installs)
//! scraping a live node on loopback, with `packaging/prometheus/alerts.yml` loaded:
//! the target is up, every series `docs/admin-api.md` lists is stored, and every query
//! of `docs/grafana-dashboard.json` and every alert rule evaluates without error.
//! Skipped (visibly) without `prometheus`; a failure when `WSAUTH_REQUIRE_PROMETHEUS`
//! is set, as in CI.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "support/doc_metrics.rs"]
mod doc_metrics;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, token};
use doc_metrics::{dashboard_exprs, metric_names};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsauth_test_support::skip;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
/// How long Prometheus gets to start, scrape twice and evaluate every rule.
const DEADLINE: Duration = Duration::from_secs(45);

/// A `prometheus` process, killed (and its data directory removed) on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping `target`'s `/metrics` every
    /// second as job `wsauth` and evaluating the alert rules every second.
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let rules = Path::new(ROOT).join("packaging/prometheus/alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: wsauth\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules = rules.display(),
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        let addr = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Prometheus { child, addr, dir }
    }

    /// Its log so far, for a failure message.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/…`: the `data` of a `success` answer, or why not.
    async fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let (status, body) = get(self.addr, path_and_query).await?;
        let answer: Value = serde_json::from_str(&body)
            .map_err(|e| format!("{path_and_query}: {status}, not JSON ({e}): {body}"))?;
        if status == 200 && answer["status"] == "success" {
            Ok(answer["data"].clone())
        } else {
            Err(format!("{path_and_query}: {status} {answer}"))
        }
    }

    /// Polls `probe` until it returns `Some`, or fails the test at [`DEADLINE`].
    async fn until<T, F, Fut>(&self, started: Instant, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, String>>,
    {
        let mut last = String::from("no answer yet");
        loop {
            match probe().await {
                Ok(Some(value)) => return value,
                Ok(None) => {}
                Err(why) => last = why,
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{what}: not within {DEADLINE:?} (last: {last})\nprometheus log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address no one listens on (yet).
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr")
}

/// Percent-encodes a query parameter's value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A plain HTTP/1.0 GET (so that the answer is neither chunked nor kept alive):
/// (status, body).
async fn get(addr: SocketAddr, path_and_query: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status line: {text}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("GET {path_and_query}: no answer within 10 s"))?
}

/// A dashboard query as Grafana sends it: its variables replaced by what they stand for
/// ("All" nodes, a one-minute rate window).
fn as_grafana_sends(expr: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", "1m")
        .replace("$instance", ".*");
    assert!(
        !expr.contains('$'),
        "a Grafana variable this test does not know: {expr}"
    );
    expr
}

/// Whether `prometheus --version` runs.
fn prometheus_installed() -> bool {
    Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_node_and_evaluates_the_dashboard_and_the_alerts() {
    if !prometheus_installed() {
        skip(
            "a real Prometheus scraping a node",
            "`prometheus` is not installed (Debian package `prometheus`)",
            "WSAUTH_REQUIRE_PROMETHEUS",
        );
        return;
    }
    let started = Instant::now();
    let server = common::server(common::test_config()).await;

    // One authentication that succeeds and one that fails.
    let (ok, _) = Client::authed(server.ws_addr, &token("prom-user", json!({}))).await;
    let mut bad = Client::connect(server.ws_addr).await;
    bad.send(json!({"type": "auth", "id": 1, "token": "not-a-jwt"}))
        .await;
    bad.expect_fatal("INVALID_TOKEN", 4401).await;

    let prometheus = Prometheus::start(server.admin_addr);
    let p = &prometheus;

    // The node is a target, and up.
    let target = prometheus
        .until(started, "the node's target is up", move || async move {
            let data = p.api("/api/v1/targets?state=active").await?;
            let targets = data["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            Ok(targets.into_iter().find(|t| t["health"] == "up"))
        })
        .await;
    assert_eq!(target["labels"]["job"], "wsauth", "{target}");
    assert_eq!(
        target["scrapeUrl"],
        format!("http://{}/metrics", server.admin_addr),
        "{target}"
    );

    // Two scrapes, so that rate() has two points: the auths above are counted.
    let refused = prometheus
        .until(started, "two scrapes of the refused auth", move || async move {
            let query = encode(
                r#"sum(increase(wsauth_auth_total{outcome="refused",code="INVALID_TOKEN"}[1m]) >= 0) and count(count_over_time(wsauth_auth_total[1m]) >= 2)"#,
            );
            let data = p.api(&format!("/api/v1/query?query={query}")).await?;
            Ok(data["result"].as_array().filter(|r| !r.is_empty()).cloned())
        })
        .await;
    assert_eq!(refused.len(), 1, "{refused:?}");

    // Every series the docs list is stored (a histogram under its `_bucket`; a counter's
    // family, as OpenMetrics' `# TYPE` line names it, under its `_total`).
    let names: BTreeSet<String> = prometheus
        .api("/api/v1/label/__name__/values")
        .await
        .expect("metric names")
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    let md = std::fs::read_to_string(format!("{ROOT}/docs/admin-api.md")).expect("admin-api.md");
    let documented = metric_names(&md);
    assert!(documented.len() > 40, "{documented:?}");
    let missing: Vec<&String> = documented
        .iter()
        .filter(|n| {
            !["", "_bucket", "_total"]
                .iter()
                .any(|s| names.contains(&format!("{n}{s}")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "documented in admin-api.md but not in Prometheus: {missing:?}\n(it has {names:?})"
    );

    // Every dashboard query evaluates, and the dashboard's node picker finds this node.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/docs/grafana-dashboard.json"))
            .expect("grafana-dashboard.json"),
    )
    .expect("JSON");
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() > 30, "{exprs:?}");
    let mut failed = Vec::new();
    for expr in &exprs {
        let query = encode(&as_grafana_sends(expr));
        if let Err(why) = prometheus
            .api(&format!("/api/v1/query?query={query}"))
            .await
        {
            failed.push(why);
        }
    }
    assert!(
        failed.is_empty(),
        "dashboard queries Prometheus refuses:\n{}",
        failed.join("\n")
    );
    let instances = prometheus
        .api(&format!(
            "/api/v1/label/instance/values?match[]={}",
            encode("wsauth_connections_open")
        ))
        .await
        .expect("label_values(wsauth_connections_open, instance)");
    assert_eq!(
        instances,
        json!([server.admin_addr.to_string()]),
        "the dashboard's $instance variable"
    );

    // Every alert rule is loaded and has been evaluated without error.
    let rules_file = std::fs::read_to_string(format!("{ROOT}/packaging/prometheus/alerts.yml"))
        .expect("alerts.yml");
    let in_file = rules_file
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert!(in_file >= 10, "alerts.yml has {in_file} alerts");
    let rules = prometheus
        .until(started, "every alert rule evaluated", move || async move {
            let data = p.api("/api/v1/rules?type=alert").await?;
            let rules: Vec<Value> = (data["groups"].as_array().into_iter().flatten())
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let evaluated = rules.len() == in_file
                && rules.iter().all(|r| {
                    r["health"] != "unknown"
                        && !r["lastEvaluation"]
                            .as_str()
                            .is_some_and(|t| t.starts_with("0001-"))
                });
            Ok(evaluated.then_some(rules))
        })
        .await;
    let unhealthy: Vec<String> = rules
        .iter()
        .filter(|r| r["health"] != "ok")
        .map(|r| format!("{}: {} ({})", r["name"], r["health"], r["lastError"]))
        .collect();
    assert!(unhealthy.is_empty(), "alert rules in error: {unhealthy:?}");
    // …and each expression also answers a query of its own. On a healthy node none fires.
    for rule in &rules {
        let expr = rule["query"].as_str().expect("a rule's query");
        let data = prometheus
            .api(&format!("/api/v1/query?query={}", encode(expr)))
            .await
            .unwrap_or_else(|why| panic!("{}: {why}", rule["name"]));
        assert_eq!(
            data["result"],
            json!([]),
            "{} fires on a healthy node: {expr}",
            rule["name"]
        );
    }

    drop(prometheus);
    ok.close(1000).await;
    server.shutdown().await;
    eprintln!(
        "prometheus: {} documented series, {} dashboard queries, {} alert rules, in {:.1?}",
        documented.len(),
        exprs.len(),
        rules.len(),
        started.elapsed()
    );
}
