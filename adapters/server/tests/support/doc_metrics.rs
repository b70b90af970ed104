//! What the operator documentation names: the metric names of `docs/admin-api.md` and
//! the PromQL of `docs/grafana-dashboard.json`. Shared by `operator_docs.rs` (against the
//! node's own exposition) and `prometheus.rs` (against a real Prometheus scraping it).

use std::collections::BTreeSet;

use serde_json::Value;

/// Every `wsauth_…` and `process_…` identifier in `text`.
pub fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = prefixed_names(text, "wsauth_");
    names.extend(prefixed_names(text, "process_"));
    names
}

fn prefixed_names(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find(prefix) {
        let start = i + pos;
        let preceded = start > 0 && {
            let c = bytes[start - 1];
            c.is_ascii_alphanumeric() || c == b'_'
        };
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// Every PromQL expression of a Grafana dashboard (rows' nested panels included).
pub fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    fn walk(panels: &Value, out: &mut Vec<String>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(expr.to_owned());
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}
