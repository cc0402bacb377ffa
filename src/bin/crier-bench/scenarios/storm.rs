//! `subscribe-storm`: S sockets subscribe to one channel in batches; the subscribe rate of each
//! batch as the channel grows shows whether a subscribe costs O(1) or O(channel size).

use serde_json::json;

use super::*;
use crate::StormArgs;

pub(super) async fn storm(c: &Ctx, a: &StormArgs, out: &mut Out) -> Res<()> {
    let s = a.subscribers;
    let b = a.bucket.max(1);
    out.line(format!(
        "subscribe-storm: {s} sockets subscribe to one channel, {b} at a time (all {b} at once, next batch when all are acknowledged), on {}",
        c.g.url
    ));
    let specs = plan(
        c,
        &Plan {
            total: s,
            stalled: 0,
            channels: 1,
            record_sub_times: true,
            churn: None,
            reserve_fds: 0,
        },
    );
    let mut w = Workers::spawn(&specs).await.map_err(|e| e.to_string())?;
    let connected = connect_phase(c, &mut w, s, out).await?;
    let mut curve = Vec::new();
    let mut lat = crate::hist::Hist::new();
    let mut done_prev = 0u64;
    let mut failed = 0u64;
    let mut total_secs = 0.0;
    let mut upto = 0usize;
    while upto < s {
        upto = (upto + b).min(s);
        let rs = w
            .cmd(
                json!({"cmd": "subscribe", "upto": upto}),
                "subscribed",
                c.g.connect_timeout_ms + 60_000,
            )
            .await
            .map_err(|e| e.to_string())?;
        let ok = coord::sum(&rs, "ok");
        failed = coord::sum(&rs, "failed");
        let t0 = coord::min_nz(&rs, "t_cmd");
        let t1 = rs
            .iter()
            .flat_map(|r| r["times"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_u64())
            .max()
            .unwrap_or(t0);
        let n = ok - done_prev;
        done_prev = ok;
        let bs = secs(t0, t1);
        total_secs += bs;
        curve.push(rate(n, bs));
        lat = coord::hist(&rs, "hist");
    }
    let overall = rate(done_prev, total_secs);
    let (mn, mx) = curve
        .iter()
        .fold((f64::MAX, 0.0f64), |(a, b), v| (a.min(*v), b.max(*v)));
    let mn = if mn == f64::MAX { 0.0 } else { mn };
    // Flatness: the last bucket against the median of the first three.
    let first = {
        let mut f: Vec<f64> = curve.iter().take(3).cloned().collect();
        f.sort_by(|a, b| a.partial_cmp(b).unwrap());
        f.get(f.len() / 2).cloned().unwrap_or(0.0)
    };
    let last = curve.last().cloned().unwrap_or(0.0);
    let last_vs_first = if first > 0.0 { last / first } else { 0.0 };
    // Least-squares line through the curve: less sensitive to one noisy batch.
    let trend = {
        let n = curve.len() as f64;
        let mx_ = (n - 1.0) / 2.0;
        let my = curve.iter().sum::<f64>() / n.max(1.0);
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (i, y) in curve.iter().enumerate() {
            sxy += (i as f64 - mx_) * (y - my);
            sxx += (i as f64 - mx_) * (i as f64 - mx_);
        }
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        let at0 = my - slope * mx_;
        let at_end = my + slope * mx_;
        if at0 > 0.0 { at_end / at0 } else { 0.0 }
    };
    out.line(format!(
        "curve (subscribes/s for each batch of {b}, channel growing): {}",
        curve
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    out.line(format!(
        "subscribed {done_prev}/{connected} ({failed} failed) in {total_secs:.2} s of batches = {overall:.0} sub/s; min batch {mn:.0}/s, max {mx:.0}/s; last/first = {last_vs_first:.2}, fitted line end/start = {trend:.2} (flat within 10% = 0.90..1.10)"
    ));
    out.line(format!(
        "subscribe latency (send → subscription_succeeded): {}",
        lat.line_ms()
    ));
    out.set("subscribers", json!(s));
    out.set("subscribed", json!(done_prev));
    out.set("failed", json!(failed));
    out.set("bucket", json!(b));
    out.set("curve_per_sec", json!(curve));
    out.set("overall_per_sec", json!(overall));
    out.set("min_bucket_per_sec", json!(mn));
    out.set("max_bucket_per_sec", json!(mx));
    out.set("last_vs_first", json!(round3(last_vs_first)));
    out.set("trend_end_vs_start", json!(round3(trend)));
    out.set("subscribe_latency", lat.summary_ms());
    w.shutdown().await;
    Ok(())
}
