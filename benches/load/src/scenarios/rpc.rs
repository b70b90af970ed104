//! `rpc`: N sessions authenticate, then call an application method, back to back or paced.

use std::collections::HashMap;

use futures_util::SinkExt;

use super::*;

/// How each session makes its calls.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// `calls` calls, each sent when the previous one's answer came.
    BackToBack { calls: u64 },
    /// `per_second` calls a second for `secs` seconds, sent on schedule whatever the answers,
    /// with at most `max_in_flight` unanswered (a call due beyond it is not sent and counts
    /// as `skipped:max-in-flight`).
    Paced {
        per_second: f64,
        secs: f64,
        max_in_flight: usize,
    },
}

impl Pace {
    pub fn calls_per_session(&self) -> u64 {
        match *self {
            Pace::BackToBack { calls } => calls,
            Pace::Paced {
                per_second, secs, ..
            } => (per_second * secs).round() as u64,
        }
    }
}

/// The text of call `k` (id `k + 2`: the `auth` was 1). `method_json` is already a JSON string.
fn call_text(method_json: &str, k: u64) -> String {
    format!(
        r#"{{"type":"rpc","id":{},"method":{method_json},"data":{{"k":{k}}}}}"#,
        k + 2
    )
}

/// Settles one answer to call `k`: `Ok` when it is an `rpc_result` whose data echoes `k`
/// (`{"data":{"k":k}}` as `app_echo` answers, or `{"k":k}` from a handler that returns its
/// data as is), else the failure's key.
fn judge(v: &Value, k: u64) -> Result<(), String> {
    match v.get("type").and_then(Value::as_str) {
        Some("rpc_result") => {
            let data = v.get("data");
            let echoed = data.and_then(|d| d.pointer("/data/k").or_else(|| d.get("k")));
            if echoed.and_then(Value::as_u64) == Some(k) {
                Ok(())
            } else {
                Err("mismatch".into())
            }
        }
        Some("error") => Err(v
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("error-without-code")
            .to_string()),
        Some(other) => Err(format!("unexpected:{other}")),
        None => Err("unexpected:no-type".into()),
    }
}

/// The id a server message answers, if it is an answer (`rpc_result` or `error`).
fn answer_id(v: &Value) -> Option<u64> {
    match v.get("type").and_then(Value::as_str) {
        Some("rpc_result" | "error") => v.get("id").and_then(Value::as_u64),
        _ => None,
    }
}

/// One session's calls in flight and its progress through the schedule.
struct Calls {
    /// Unanswered calls by id: (k, sent at).
    outstanding: HashMap<u64, (u64, Instant)>,
    /// The next call's index.
    next_k: u64,
}

async fn back_to_back(
    ctx: &Ctx,
    ws: &mut Ws,
    method_json: &str,
    calls: &mut Calls,
    total: u64,
    col: &Collector,
) -> Result<(), Fail> {
    while calls.next_k < total {
        let k = calls.next_k;
        calls.next_k += 1;
        let start = Instant::now();
        calls.outstanding.insert(k + 2, (k, start));
        let res = within(ctx.timeout, "rpc", async {
            ws.send(Message::text(call_text(method_json, k)))
                .await
                .map_err(Fail::from_ws)?;
            loop {
                let v = client::recv(ws).await?;
                if answer_id(&v) == Some(k + 2) {
                    return Ok(v);
                }
            }
        })
        .await;
        match res {
            Ok(v) => {
                calls.outstanding.clear();
                match judge(&v, k) {
                    Ok(()) => col.ok(start.elapsed()),
                    Err(key) => col.fail(key),
                }
            }
            Err(f @ Fail::Timeout(_)) => {
                calls.outstanding.clear();
                col.fail(f.key());
            }
            Err(f) => return Err(f),
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn paced(
    ctx: &Ctx,
    ws: &mut Ws,
    method_json: &str,
    calls: &mut Calls,
    (total, period, max_in_flight): (u64, Duration, usize),
    first_at: Instant,
    col: &Collector,
    unmatched: &AtomicU64,
) -> Result<(), Fail> {
    let mut due = first_at;
    // Timeouts are looked for once a second: a finer sweep would add a wake-up per session
    // and tick, as many as the calls themselves at 10 calls/s.
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while calls.next_k < total || !calls.outstanding.is_empty() {
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()), if calls.next_k < total => {
                let k = calls.next_k;
                calls.next_k += 1;
                // Late (the tool fell behind): send now, keep the schedule of the others.
                due += period;
                if calls.outstanding.len() >= max_in_flight {
                    col.fail("skipped:max-in-flight".into());
                    continue;
                }
                calls.outstanding.insert(k + 2, (k, Instant::now()));
                ws.send(Message::text(call_text(method_json, k)))
                    .await
                    .map_err(Fail::from_ws)?;
            }
            _ = sweep.tick() => {
                let timeout = ctx.timeout;
                calls.outstanding.retain(|_, (_, sent)| {
                    let waiting = sent.elapsed() < timeout;
                    if !waiting {
                        col.fail("timeout:rpc".into());
                    }
                    waiting
                });
            }
            m = client::recv(ws) => {
                let v = m?;
                let Some(id) = answer_id(&v) else { continue };
                match calls.outstanding.remove(&id) {
                    Some((k, sent)) => {
                        let elapsed = sent.elapsed();
                        match judge(&v, k) {
                            Ok(()) => col.ok(elapsed),
                            Err(key) => col.fail(key),
                        }
                    }
                    // An answer to a call already counted as timed out, or to none.
                    None => {
                        unmatched.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
    Ok(())
}

/// `rpc`: N sessions authenticate; once all are in, each calls `method` with `{"k": k}`.
/// Latency: `rpc` sent → its `rpc_result`.
pub async fn rpc(
    ctx: Arc<Ctx>,
    n: u64,
    method: String,
    pace: Pace,
    r: Ramp,
    pid: Option<u32>,
) -> Report {
    let mut report = Report::new("rpc", &ctx.target.url);
    ramp_extra(&mut report, r);
    let per_session = pace.calls_per_session();
    report.extra.insert("sessions".into(), json!(n));
    report.extra.insert("method".into(), json!(method));
    report
        .extra
        .insert("calls_per_session".into(), json!(per_session));
    match pace {
        Pace::BackToBack { .. } => {
            report.extra.insert("pace".into(), json!("back-to-back"));
        }
        Pace::Paced {
            per_second,
            secs,
            max_in_flight,
        } => {
            report.extra.insert(
                "pace".into(),
                json!({"per_second": per_second, "secs": secs, "max_in_flight": max_in_flight,
                       "target_calls_per_s": per_second * n as f64}),
            );
        }
    }
    let method_json = Arc::new(serde_json::to_string(&method).unwrap_or_default());
    let auth = Collector::new(ctx.progress.clone());
    let col = Collector::new(ctx.progress.clone());
    let unmatched = Arc::new(AtomicU64::new(0));
    ctx.progress.phase("auth", n);
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let handles = ramp(n, r, |i, permit| {
        let ctx = ctx.clone();
        let auth = auth.clone();
        let col = col.clone();
        let unmatched = unmatched.clone();
        let method_json = method_json.clone();
        let mut go = go_rx.clone();
        async move {
            let sub = format!("load-{}-{i}", ctx.run_id);
            let token = ctx.signer.token(&sub, &format!("{sub}-0"));
            let start = Instant::now();
            let res = within(ctx.timeout, "auth", open_authenticated(&ctx, &token)).await;
            drop(permit);
            let mut ws = match res {
                Ok((ws, _)) => {
                    auth.ok(start.elapsed());
                    ws
                }
                Err(f) => {
                    auth.fail(f.key());
                    return;
                }
            };
            let Ok(go_at) = go
                .wait_for(Option::is_some)
                .await
                .map(|v| v.unwrap_or_else(Instant::now))
            else {
                return;
            };
            let mut calls = Calls {
                outstanding: HashMap::new(),
                next_k: 0,
            };
            let res = match pace {
                Pace::BackToBack { calls: total } => {
                    back_to_back(&ctx, &mut ws, &method_json, &mut calls, total, &col).await
                }
                Pace::Paced {
                    per_second,
                    max_in_flight,
                    ..
                } => {
                    let period = Duration::from_secs_f64(1.0 / per_second);
                    // Spread the sessions' first calls over one period, so that the calls
                    // of all sessions come evenly rather than N at a time.
                    let offset = period.mul_f64(i as f64 / n as f64);
                    let plan = (per_session, period, max_in_flight.max(1));
                    paced(
                        &ctx,
                        &mut ws,
                        &method_json,
                        &mut calls,
                        plan,
                        go_at + offset,
                        &col,
                        &unmatched,
                    )
                    .await
                }
            };
            match res {
                Ok(()) => {
                    close(ws).await;
                }
                Err(f) => {
                    // The connection is gone: what was in flight failed with it, and the
                    // calls not yet made are counted as skipped.
                    for _ in 0..calls.outstanding.len() {
                        col.fail(f.key());
                    }
                    for _ in calls.next_k..per_session {
                        col.fail(format!("skipped-after-{}", f.key()));
                    }
                }
            }
        }
    })
    .await;
    settled(&ctx.progress, n).await;
    let authed = ctx.progress.ok_count();
    let (auth_hist, auth_fail) = auth.take();
    let total = authed * per_session;
    ctx.progress.phase("rpc", total);
    let cpu = CpuMeter::start(pid);
    let go_at = Instant::now();
    let _ = go_tx.send(Some(go_at));
    settled(&ctx.progress, total).await;
    report
        .extra
        .insert("cpu".into(), cpu.finish(ctx.progress.ok_count()));
    ctx.progress.finish();
    report.duration = col.last_instant().saturating_duration_since(go_at);
    let (_, panicked) = join_all(handles).await;
    let (hist, failures) = col.take();
    report.hist = hist;
    report.failures = failures;
    report.attempted = n * per_session;
    let missing_auth = (n - authed) * per_session;
    if missing_auth > 0 {
        report
            .failures
            .insert("not-attempted-auth-failed".into(), missing_auth);
    }
    merge_failures(&mut report.failures, auth_fail, "auth:");
    if panicked > 0 {
        report.failures.insert("panic".into(), panicked);
    }
    report.successes = report.hist.len();
    report.extra.insert("authenticated".into(), json!(authed));
    report
        .extra
        .insert("auth_latency_ms".into(), latency_json(&auth_hist));
    report.extra.insert(
        "unmatched_answers".into(),
        json!(unmatched.load(Ordering::Relaxed)),
    );
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_carries_its_counter_and_an_id_after_auth() {
        let v: Value = serde_json::from_str(&call_text("\"echo\"", 7)).unwrap();
        assert_eq!(
            v,
            json!({"type": "rpc", "id": 9, "method": "echo", "data": {"k": 7}})
        );
    }

    #[test]
    fn answers_are_judged_by_their_echoed_counter() {
        let ok = json!({"type": "rpc_result", "id": 9, "data": {"sub": "u", "data": {"k": 7}}});
        assert_eq!(judge(&ok, 7), Ok(()));
        assert_eq!(answer_id(&ok), Some(9));
        let plain = json!({"type": "rpc_result", "id": 9, "data": {"k": 7}});
        assert_eq!(judge(&plain, 7), Ok(()));
        assert_eq!(judge(&ok, 8), Err("mismatch".into()));
        let busy = json!({"type": "error", "id": 9, "code": "BUSY", "fatal": false});
        assert_eq!(judge(&busy, 7), Err("BUSY".into()));
        assert_eq!(answer_id(&busy), Some(9));
        assert_eq!(answer_id(&json!({"type": "expiring", "id": 3})), None);
    }

    #[test]
    fn paced_calls_per_session() {
        let p = Pace::Paced {
            per_second: 10.0,
            secs: 10.0,
            max_in_flight: 16,
        };
        assert_eq!(p.calls_per_session(), 100);
        assert_eq!(Pace::BackToBack { calls: 5 }.calls_per_session(), 5);
    }
}
