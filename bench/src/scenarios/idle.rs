//! `idle`: N connections, each subscribed, held; connect and subscribe rates and the server's
//! RSS growth per connection.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::IdleArgs;

pub(super) async fn idle(c: &Ctx, a: &IdleArgs, out: &mut Out) -> Res<()> {
    let n = a.connections;
    out.line(format!(
        "idle: {n} connections to {} ({} channel(s)), hold {} s",
        c.target(),
        a.channels,
        a.hold_secs
    ));
    let specs = plan(
        c,
        &Plan {
            total: n,
            stalled: 0,
            channels: a.channels,
            record_sub_times: false,
            churn: None,
            reserve_fds: 0,
        },
    );
    let rss0 = rss(c);
    let mut w = Workers::spawn(&specs).await.map_err(|e| e.to_string())?;
    let (conns, subs, rs) = connect_subscribe(c, &mut w, n, out).await?;
    let rss_connected = rss(c);
    tokio::time::sleep(Duration::from_secs(a.hold_secs)).await;
    let rss_held = rss(c);
    let res = w
        .cmd(json!({"cmd": "finish", "published": []}), "result", 1_000)
        .await
        .map_err(|e| e.to_string())?;
    let closed = coord::sum(&res, "closed");
    let client_rss = coord::sum(&res, "rss_kb");
    let _ = rs;
    out.line(format!(
        "hold:      {closed} connection(s) closed by the server during the hold; pings answered: {} pusher:ping, {} ws ping",
        coord::sum(&res, "pusher_pings"),
        coord::sum(&res, "ws_pings")
    ));
    errors_line(out, &coord::errors(&res));
    if let (Some(r0), Some(r1_)) = (rss0, rss_held) {
        let per = (r1_ as f64 - r0 as f64) * 1024.0 / conns.max(1) as f64;
        out.line(format!(
            "server RSS: {r0} KiB before, {} KiB connected+subscribed, {r1_} KiB after hold => {:.0} bytes per connection",
            rss_connected.unwrap_or(0),
            per
        ));
        out.set(
            "server_rss_kb",
            json!({"before": r0, "subscribed": rss_connected, "after_hold": r1_}),
        );
        out.set("server_rss_bytes_per_conn", json!(per.round()));
    } else {
        out.line("server RSS: not measured (no --server-pid)");
    }
    out.line(format!(
        "client RSS: {client_rss} KiB in {} worker(s)",
        w.len()
    ));
    out.set("connections", json!(conns));
    out.set("subscribed", json!(subs));
    out.set("closed_during_hold", json!(closed));
    out.set("client_rss_kb", json!(client_rss));
    w.shutdown().await;
    Ok(())
}
