//! `fanout` and `churn`: subscribers on one or more channels, events published over the HTTP
//! API with the send time inside; deliveries per second, publish-to-receive latency, losses,
//! stalled readers, and server CPU per delivery. `churn` adds connections opening and closing.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::{ChurnArgs, FanoutArgs};

pub(super) async fn fanout(
    c: &Ctx,
    a: &FanoutArgs,
    churn: Option<&ChurnArgs>,
    out: &mut Out,
) -> Res<()> {
    let s = a.subscribers;
    let stalled = ((s as f64) * a.stalled_pct / 100.0).round() as usize;
    out.line(format!(
        "{}: {s} subscribers ({stalled} stalled) on {} channel(s); {} events, interval {} ms, {} HTTP conn(s), to {}",
        if churn.is_some() { "churn" } else { "fanout" },
        a.channels,
        a.events,
        a.interval_ms,
        a.http_conns,
        c.target()
    ));
    let churn_spec = churn.map(|ch| ChurnSpec {
        rate_per_sec: 0.0,
        hold_ms: ch.churn_hold_ms,
        src_base: 0,
        n_addrs: 250,
        max_inflight: 0,
    });
    let mut reserve = 0;
    if let Some(ch) = churn {
        reserve = ((ch.churn_rate * (ch.churn_hold_ms as f64 / 1000.0 + 1.0)) as usize).max(100);
    }
    let mut specs = plan(
        c,
        &Plan {
            total: s,
            stalled,
            channels: a.channels,
            record_sub_times: false,
            churn: churn_spec,
            reserve_fds: reserve,
        },
    );
    let nw = specs.len();
    for sp in &mut specs {
        sp.stalled_rcvbuf = a.stalled_rcvbuf;
        if let (Some(cs), Some(ch)) = (sp.churn.as_mut(), churn) {
            cs.rate_per_sec = ch.churn_rate / nw as f64;
            cs.max_inflight = (reserve / nw).max(50);
        }
    }
    let mut w = Workers::spawn(&specs).await.map_err(|e| e.to_string())?;
    let (_, subs, sub_reports) = connect_subscribe(c, &mut w, s, out).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    if churn.is_some() {
        w.cmd(json!({"cmd": "churn_start"}), "churn_started", 5_000)
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let channels: Vec<String> = (0..a.channels.max(1))
        .map(|i| format!("{}{}", c.g.channel_prefix, i))
        .collect();
    let cfg = PubCfg {
        channels,
        events: a.events,
        interval: Duration::from_secs_f64(a.interval_ms.max(0.0) / 1000.0),
        max_duration: Duration::from_secs(a.duration_secs),
        http_conns: a.http_conns,
        data_bytes: a.data_bytes,
    };
    let s0 = c.snap();
    let pr = publisher::publish(&c.apis, &cfg).await;
    let churn_res = if churn.is_some() {
        Some(
            w.cmd(json!({"cmd": "churn_stop"}), "churn_stopped", 10_000)
                .await
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let res = w.finish(&pr.published, a.drain_ms).await?;
    let s1 = c.snap();
    let worker_secs = (coord::sum(&res, "cpu_ticks") as f64
        - coord::sum(&sub_reports, "cpu_ticks") as f64)
        .max(0.0)
        / 100.0;
    report_publish(out, &pr);
    let expected = coord::sum(&res, "expected");
    let received = coord::sum(&res, "received");
    let lost = expected.saturating_sub(received);
    let lat = coord::hist(&res, "lat");
    let t_last = coord::max(&res, "t_last_recv");
    let dsecs = secs(pr.t_first_send, t_last);
    let closed = coord::sum(&res, "closed");
    let stalled_closed = coord::sum(&res, "stalled_closed");
    out.line(format!(
        "delivery:  {received}/{expected} delivered, {lost} lost, {} duplicate/late; {:.0} deliveries/s (first publish to last receipt, {dsecs:.2} s)",
        coord::sum(&res, "dups"),
        rate(received, dsecs)
    ));
    out.line(format!("latency:   publish→receive {}", lat.line_ms()));
    out.line(format!(
        "sockets:   {closed} reader(s) closed by the server; stalled: {} subscribed, {stalled_closed} found closed by the server at the end",
        coord::sum(&res, "stalled")
    ));
    errors_line(out, &coord::errors(&res));
    cpu_fields(
        c,
        &s0,
        &s1,
        received,
        "delivery",
        out,
        a.floor_us,
        worker_secs,
    );
    out.set(
        "config",
        json!({"subscribers": s, "stalled": stalled, "channels": a.channels, "events": a.events,
               "interval_ms": a.interval_ms, "http_conns": a.http_conns, "data_bytes": a.data_bytes}),
    );
    out.set("subscribed", json!(subs));
    out.set("expected", json!(expected));
    out.set("delivered", json!(received));
    out.set("lost", json!(lost));
    out.set("duplicates", json!(coord::sum(&res, "dups")));
    out.set("deliveries_per_sec", json!(rate(received, dsecs)));
    out.set("latency", lat.summary_ms());
    out.set("readers_closed_by_server", json!(closed));
    out.set("stalled_closed_by_server", json!(stalled_closed));
    out.set("errors", json!(coord::errors(&res)));
    if let (Some(cr), Some(ch)) = (churn_res, churn) {
        let started = coord::sum(&cr, "started");
        let ok = coord::sum(&cr, "ok");
        let failed = coord::sum(&cr, "failed");
        let skipped = coord::sum(&cr, "skipped");
        let h = coord::hist(&cr, "hist");
        let ps = secs(pr.t_first_send, pr.t_end) + 0.5;
        out.line(format!(
            "churn:     {started} opened at {:.0}/s asked ({:.0}/s achieved), {ok} ok, {failed} failed, {skipped} skipped (in-flight cap); connect+subscribe {}",
            ch.churn_rate,
            rate(ok, ps),
            h.line_ms()
        ));
        out.set(
            "churn",
            json!({"rate_asked": ch.churn_rate, "hold_ms": ch.churn_hold_ms, "started": started, "ok": ok,
                   "failed": failed, "skipped": skipped, "per_sec": rate(ok, ps),
                   "connect_subscribe_latency": h.summary_ms()}),
        );
    }
    w.shutdown().await;
    Ok(())
}

pub(super) fn report_publish(out: &mut Out, pr: &PubResult) {
    let (line, j) = publish_summary(pr, "per_sec");
    out.line(format!("publish:   {line}"));
    if !pr.statuses.is_empty() {
        out.line(format!("  publish errors: {:?}", pr.statuses));
    }
    out.set("publish", j);
}

/// The summary line and JSON of a publishing run; `rate_key` names its rate field.
pub(super) fn publish_summary(pr: &PubResult, rate_key: &str) -> (String, Value) {
    let s = secs(pr.t_first_send, pr.t_end);
    let line = format!(
        "{} accepted, {} failed in {s:.2} s = {:.0} events/s; request {}",
        pr.ok,
        pr.failed,
        rate(pr.ok, s),
        pr.req_hist.line_ms()
    );
    let mut j = json!({"accepted": pr.ok, "failed": pr.failed, "secs": round3(s),
                       "request_latency": pr.req_hist.summary_ms(), "errors": pr.statuses,
                       "http_reconnects": pr.reconnects});
    j[rate_key] = json!(rate(pr.ok, s));
    (line, j)
}

pub(super) async fn churn(c: &Ctx, a: &ChurnArgs, out: &mut Out) -> Res<()> {
    fanout(c, &a.fanout, Some(a), out).await
}
