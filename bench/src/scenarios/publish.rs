//! `publish`: signed HTTP API events per second from several keep-alive connections, to a
//! channel with subscribers and to one without; optionally beside a subscription churn and a
//! webhook receiver that answers or hangs (what webhook work costs the publish path).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::PublishArgs;
use crate::side_load::{self, ChurnStats, ReceiverStats};

pub(super) async fn publish(c: &Ctx, a: &PublishArgs, out: &mut Out) -> Res<()> {
    out.line(format!(
        "publish: {} s per phase, {} HTTP keep-alive conn(s), {} subscriber(s) in phase 1, to {}",
        a.duration_secs,
        a.http_conns,
        a.subscribers,
        c.target()
    ));
    let prefix = format!("{}pub-", c.g.channel_prefix);
    let mut specs = plan(
        c,
        &Plan {
            total: a.subscribers,
            stalled: 0,
            channels: 1,
            record_sub_times: false,
            churn: None,
            reserve_fds: 0,
        },
    );
    for sp in &mut specs {
        sp.channel_prefix = prefix.clone();
    }
    let receiver = match &a.webhook_receiver {
        Some(spec) => {
            let (mode, addr) = side_load::parse_receiver(spec)?;
            let stats = Rc::new(ReceiverStats::default());
            let task = tokio::task::spawn_local(side_load::receiver(mode, addr, stats.clone()));
            out.line(format!("webhook receiver ({mode:?}) on {addr}"));
            Some((task, stats))
        }
        None => None,
    };
    let churn_stop = Rc::new(Cell::new(false));
    let churn_stats = Rc::new(ChurnStats::default());
    let churn = if a.sub_churn_rate > 0.0 {
        out.line(format!(
            "subscription churn: {} fresh channel(s)/s over {} connection(s)",
            a.sub_churn_rate, a.sub_churn_conns
        ));
        Some(tokio::task::spawn_local(side_load::subscription_churn(
            c.nodes[0].clone(),
            c.src_base,
            format!("{}churn-", c.g.channel_prefix),
            a.sub_churn_rate,
            a.sub_churn_conns,
            churn_stop.clone(),
            churn_stats.clone(),
        )))
    } else {
        None
    };
    let mut phases = Vec::new();
    let mut w = if a.subscribers > 0 {
        let mut w = Workers::spawn(&specs).await.map_err(|e| e.to_string())?;
        connect_subscribe(c, &mut w, a.subscribers, out).await?;
        Some(w)
    } else {
        None
    };
    for (name, ch) in [
        ("with_subscribers", format!("{prefix}0")),
        (
            "without_subscribers",
            format!("{}nosub-0", c.g.channel_prefix),
        ),
    ] {
        if name == "with_subscribers" && w.is_none() {
            continue;
        }
        let cfg = PubCfg {
            channels: vec![ch.clone()],
            events: a.events,
            interval: Duration::ZERO,
            max_duration: Duration::from_secs(a.duration_secs),
            http_conns: a.http_conns,
            data_bytes: a.data_bytes,
        };
        let s0 = c.snap();
        let pr = publisher::publish(&c.apis, &cfg).await;
        let s1 = c.snap();
        let (line, mut j) = super::fanout::publish_summary(&pr, "events_per_sec");
        out.line(format!("[{name}] channel {ch}: {line}"));
        if !pr.statuses.is_empty() {
            out.line(format!("  errors: {:?}", pr.statuses));
        }
        j["channel"] = json!(ch);
        let mut tmp = Out::new("x");
        cpu_fields(c, &s0, &s1, pr.ok, "event", &mut tmp, None, 0.0);
        j["cpu"] = tmp.json["cpu"].clone();
        if name == "with_subscribers" {
            let res = w
                .as_mut()
                .unwrap()
                .finish(&pr.published, a.drain_ms)
                .await?;
            let exp = coord::sum(&res, "expected");
            let got = coord::sum(&res, "received");
            let lat = coord::hist(&res, "lat");
            out.line(format!(
                "  subscribers got {got}/{exp} ({} lost); publish→receive {}",
                exp.saturating_sub(got),
                lat.line_ms()
            ));
            j["expected"] = json!(exp);
            j["delivered"] = json!(got);
            j["lost"] = json!(exp.saturating_sub(got));
            j["latency"] = lat.summary_ms();
        }
        phases.push((name, j));
    }
    for (name, j) in phases {
        out.set(name, j);
    }
    out.set("http_conns", json!(a.http_conns));
    if let Some(t) = churn {
        churn_stop.set(true);
        let _ = t.await;
        out.line(format!(
            "subscription churn: {} subscribes, {} errors",
            churn_stats.subscribes.get(),
            churn_stats.errors.get()
        ));
        out.set(
            "sub_churn",
            json!({"rate": a.sub_churn_rate, "subscribes": churn_stats.subscribes.get(),
                   "errors": churn_stats.errors.get()}),
        );
    }
    if let Some((task, stats)) = receiver {
        task.abort();
        out.line(format!(
            "webhook receiver: {} connection(s), {} request(s) answered",
            stats.connections.get(),
            stats.requests.get()
        ));
        out.set(
            "webhook_receiver",
            json!({"connections": stats.connections.get(), "answered": stats.requests.get()}),
        );
    }
    let rss: Vec<u64> = c
        .pids
        .iter()
        .filter_map(|p| crate::sys::rss_kb(p))
        .collect();
    if !rss.is_empty() {
        out.line(format!("server RSS at the end: {rss:?} KiB"));
        out.set("server_rss_kb", json!(rss));
    }
    if let Some(w) = w {
        w.shutdown().await;
    }
    Ok(())
}
