//! `cluster`: nodes of one cluster (--nodes) joined through Redis. Subscribers spread over the
//! nodes (or all on one, `--subscribers-on`), publishes spread over the nodes (or through some,
//! `--publish-via`) at a target rate or flat out. Every publish must reach every subscriber of
//! its channel exactly once, whichever node it came through: the report gives losses,
//! duplicates, publish-to-receive latency, CPU per delivery and per publish summed over the
//! nodes and node by node, Redis's CPU and Redis's bytes per publish (`INFO stats`), and
//! how many nodes listen to each channel in Redis (`PUBSUB NUMSUB`).

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::ClusterArgs;

pub(super) async fn cluster(c: &Ctx, a: &ClusterArgs, out: &mut Out) -> Res<()> {
    let n_nodes = c.nodes.len();
    if let Some(i) = a.subscribers_on
        && i >= n_nodes
    {
        return Err(format!(
            "--subscribers-on {i}: there are {n_nodes} node(s) (0-based)"
        ));
    }
    if let Some(i) = a.publish_via.iter().find(|i| **i >= c.apis.len()) {
        return Err(format!(
            "--publish-via {i}: there are {} API endpoint(s) (0-based)",
            c.apis.len()
        ));
    }
    if !c.pids.is_empty() && c.pids.len() != n_nodes {
        out.line(format!(
            "note: {} server pid(s) for {n_nodes} node(s): per-node CPU follows the pids' order",
            c.pids.len()
        ));
    }
    let apis: Vec<crate::http::Api> = if a.publish_via.is_empty() {
        c.apis.clone()
    } else {
        a.publish_via.iter().map(|i| c.apis[*i].clone()).collect()
    };
    let via: Vec<usize> = if a.publish_via.is_empty() {
        (0..apis.len()).collect()
    } else {
        a.publish_via.clone()
    };
    let s = a.subscribers;
    let nch = a.channels.max(1);
    out.line(format!(
        "cluster: {s} subscribers on {nch} channel(s) {}; publishing {} for {} s through {} over {} HTTP task(s); to {}",
        match a.subscribers_on {
            Some(i) => format!("all on node #{i}"),
            None => format!("spread over {n_nodes} node(s)"),
        },
        if a.rate > 0.0 {
            format!("at {} /s", a.rate)
        } else {
            "flat out".to_string()
        },
        a.duration_secs,
        if a.publish_via.is_empty() {
            format!("all {} API endpoint(s)", apis.len())
        } else {
            format!("node(s) {:?}", a.publish_via)
        },
        a.http_conns,
        c.target()
    ));
    let mut specs = plan(
        c,
        &Plan {
            total: s,
            stalled: 0,
            channels: nch,
            record_sub_times: false,
            churn: None,
            reserve_fds: 0,
        },
    );
    if let Some(i) = a.subscribers_on {
        for sp in &mut specs {
            sp.nodes = vec![sp.nodes[i].clone()];
        }
    }
    let mut w = Workers::spawn(&specs).await.map_err(|e| e.to_string())?;
    let (_, subs, sub_reports) = connect_subscribe(c, &mut w, s, out).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let channels: Vec<String> = (0..nch)
        .map(|i| format!("{}{}", c.g.channel_prefix, i))
        .collect();
    if let Some(addr) = c.redis {
        interest_line(c, a, addr, &channels, out);
    }
    let cfg = PubCfg {
        channels,
        events: a.events,
        interval: if a.rate > 0.0 {
            Duration::from_secs_f64(1.0 / a.rate)
        } else {
            Duration::ZERO
        },
        max_duration: Duration::from_secs(a.duration_secs),
        http_conns: a.http_conns,
        data_bytes: a.data_bytes,
    };
    let s0 = c.snap();
    let pr = publisher::publish(&apis, &cfg).await;
    let res = w.finish(&pr.published, a.drain_ms).await?;
    let s1 = c.snap();
    let worker_secs = (coord::sum(&res, "cpu_ticks") as f64
        - coord::sum(&sub_reports, "cpu_ticks") as f64)
        .max(0.0)
        / 100.0;
    super::fanout::report_publish(out, &pr);
    out.line(format!(
        "  accepted per node: {}",
        via.iter()
            .zip(&pr.per_node)
            .map(|(i, n)| format!("#{i} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let expected = coord::sum(&res, "expected");
    let received = coord::sum(&res, "received");
    let dups = coord::sum(&res, "dups");
    let lost = expected.saturating_sub(received);
    let lat = coord::hist(&res, "lat");
    let dsecs = secs(pr.t_first_send, coord::max(&res, "t_last_recv"));
    let psecs = secs(pr.t_first_send, pr.t_end);
    let closed = coord::sum(&res, "closed");
    out.line(format!(
        "delivery:  {received}/{expected} delivered, {lost} lost, {dups} duplicate/late; {:.0} deliveries/s (first publish to last receipt, {dsecs:.2} s)",
        rate(received, dsecs)
    ));
    out.line(format!("latency:   publish→receive {}", lat.line_ms()));
    if closed > 0 || coord::sum(&res, "pusher_errors") > 0 {
        out.line(format!(
            "sockets:   {closed} reader(s) closed by the server, {} pusher:error(s)",
            coord::sum(&res, "pusher_errors")
        ));
    }
    errors_line(out, &coord::errors(&res));
    cpu_fields(c, &s0, &s1, received, "delivery", out, None, worker_secs);
    let wall = secs(s0.wall_ns, s1.wall_ns);
    per_publish(c, &s0, &s1, pr.ok, wall, worker_secs, &via, a, out);
    let p99_ms = lat.quantile(0.99) as f64 / 1000.0;
    let accepted_rate = rate(pr.ok, psecs);
    let rate_met = a.rate <= 0.0 || accepted_rate >= 0.95 * a.rate;
    let clean = lost == 0 && dups == 0 && pr.failed == 0 && closed == 0 && received > 0;
    let sustained = clean && rate_met && p99_ms < a.max_p99_ms;
    out.line(format!(
        "verdict:   {}: {}; p99 {p99_ms:.1} ms {} {} ms; {accepted_rate:.0} publishes/s accepted{}",
        if sustained {
            "SUSTAINED"
        } else {
            "NOT sustained"
        },
        if clean {
            "nothing lost, duplicated, refused or closed".to_string()
        } else {
            format!(
                "{lost} lost, {dups} duplicate, {} refused publish(es), {closed} closed reader(s)",
                pr.failed
            )
        },
        if p99_ms < a.max_p99_ms { "<" } else { ">=" },
        a.max_p99_ms,
        if a.rate > 0.0 {
            format!(
                " of {} asked ({})",
                a.rate,
                if rate_met { "met" } else { "NOT met" }
            )
        } else {
            String::new()
        }
    ));
    out.set(
        "config",
        json!({"nodes": n_nodes, "subscribers": s, "channels": nch, "rate": a.rate,
               "duration_secs": a.duration_secs, "http_conns": a.http_conns,
               "subscribers_on": a.subscribers_on, "publish_via": via, "data_bytes": a.data_bytes}),
    );
    out.set("subscribed", json!(subs));
    out.set("publishes_per_sec", json!(accepted_rate));
    out.set("publishes_per_node", json!(pr.per_node));
    out.set("expected", json!(expected));
    out.set("delivered", json!(received));
    out.set("lost", json!(lost));
    out.set("duplicates", json!(dups));
    out.set("deliveries_per_sec", json!(rate(received, dsecs)));
    out.set("latency", lat.summary_ms());
    out.set("readers_closed_by_server", json!(closed));
    out.set("errors", json!(coord::errors(&res)));
    out.set("clean", json!(clean));
    out.set("rate_met", json!(rate_met));
    out.set("sustained", json!(sustained));
    w.shutdown().await;
    Ok(())
}

/// How many nodes listen to each channel in Redis (interest routing).
fn interest_line(c: &Ctx, a: &ClusterArgs, addr: SocketAddr, channels: &[String], out: &mut Out) {
    let keys: Vec<String> = channels
        .iter()
        .map(|ch| format!("{}:{}:{ch}", a.redis_prefix, c.g.app_id))
        .collect();
    let counts = keys
        .chunks(500)
        .map(|k| crate::redis::numsub(addr, k))
        .collect::<std::io::Result<Vec<_>>>();
    match counts {
        Ok(v) => {
            let v: Vec<u64> = v.into_iter().flatten().collect();
            let total: u64 = v.iter().sum();
            let (mn, mx) = (
                v.iter().min().copied().unwrap_or(0),
                v.iter().max().copied().unwrap_or(0),
            );
            out.line(format!(
                "interest:  PUBSUB NUMSUB {}:{}:…: {total} node subscriptions over {} channels (min {mn}, max {mx} nodes per channel)",
                a.redis_prefix,
                c.g.app_id,
                v.len()
            ));
            out.set(
                "redis_interest",
                json!({"node_subscriptions": total, "channels": v.len(), "min_nodes": mn, "max_nodes": mx}),
            );
        }
        Err(e) => out.line(format!("interest:  PUBSUB NUMSUB failed: {e}")),
    }
}

/// CPU and Redis traffic per accepted publish, the cores each party used, and the nodes that
/// neither hold subscribers nor take publishes (the uninterested ones, with --subscribers-on).
#[allow(clippy::too_many_arguments)]
fn per_publish(
    c: &Ctx,
    s0: &CpuSnap,
    s1: &CpuSnap,
    publishes: u64,
    wall: f64,
    client_secs_workers: f64,
    via: &[usize],
    a: &ClusterArgs,
    out: &mut Out,
) {
    let n = publishes.max(1) as f64;
    let wall = wall.max(1e-9);
    let (_, sched, machine) = cpu_delta(s0, s1);
    let client = s1.own_ticks.saturating_sub(s0.own_ticks) as f64 / 100.0 + client_secs_workers;
    let mut j = json!({"publishes": publishes, "wall_secs": round3(wall),
                       "client_cores": round3(client / wall), "machine_cores": round3(machine / wall)});
    let mut parts = Vec::new();
    if !c.pids.is_empty() {
        j["server_cpu_us_per_publish_schedstat"] = json!(round3(sched * 1e6 / n));
        j["server_cores"] = json!(round3(sched / wall));
        parts.push(format!(
            "nodes {:.2} ({:.1} µs per publish)",
            sched / wall,
            sched * 1e6 / n
        ));
    }
    if let (Some(x), Some(y)) = (s0.redis, s1.redis) {
        let rs = y.1.saturating_sub(x.1) as f64 / 1e9;
        j["redis_cpu_us_per_publish"] = json!(round3(rs * 1e6 / n));
        j["redis_cores"] = json!(round3(rs / wall));
        parts.push(format!(
            "redis {:.2} ({:.1} µs per publish)",
            rs / wall,
            rs * 1e6 / n
        ));
    }
    parts.push(format!(
        "bench {:.2} ({:.1} µs per publish)",
        client / wall,
        client * 1e6 / n
    ));
    parts.push(format!("whole machine {:.2}", machine / wall));
    out.line(format!("cores used over {wall:.2} s: {}", parts.join(", ")));
    if let Some((out_b, in_b, cmds)) = redis_traffic(s0, s1) {
        out.line(format!(
            "redis per publish: {:.1} bytes out, {:.1} bytes in, {:.2} commands",
            out_b as f64 / n,
            in_b as f64 / n,
            cmds as f64 / n
        ));
        j["redis_output_bytes_per_publish"] = json!(round3(out_b as f64 / n));
        j["redis_input_bytes_per_publish"] = json!(round3(in_b as f64 / n));
        j["redis_commands_per_publish"] = json!(round3(cmds as f64 / n));
    }
    if c.pids.len() == c.nodes.len() && c.pids.len() > 1 && via.len() < c.pids.len() {
        // The nodes that take no publish and are not --subscribers-on: with every subscriber
        // on one node they have nothing to do (interest routing); with subscribers spread,
        // the same nodes, for comparison.
        let others: Vec<usize> = (0..c.pids.len())
            .filter(|i| Some(*i) != a.subscribers_on && !via.contains(i))
            .collect();
        let secs_of = |i: usize| s1.per_pid[i].1.saturating_sub(s0.per_pid[i].1) as f64 / 1e9;
        let total: f64 = others.iter().map(|i| secs_of(*i)).sum();
        let rest: f64 = (0..c.pids.len())
            .filter(|i| !others.contains(i))
            .map(secs_of)
            .sum();
        let each = if others.is_empty() {
            0.0
        } else {
            total / others.len() as f64
        };
        out.line(format!(
            "nodes taking no publish{} ({} of {}): {total:.3} s CPU in all, {each:.3} s = {:.2} % of a core each, {:.2} µs per publish each; the other nodes: {rest:.3} s",
            if a.subscribers_on.is_some() {
                " and holding no subscriber"
            } else {
                ""
            },
            others.len(),
            c.pids.len(),
            100.0 * each / wall,
            each * 1e6 / n
        ));
        j["other_nodes"] = json!(others);
        j["other_nodes_cpu_secs"] = json!(round3(total));
        j["other_nodes_cpu_secs_each"] = json!(round3(each));
        j["other_nodes_cpu_us_per_publish_each"] = json!(round3(each * 1e6 / n));
        j["rest_nodes_cpu_secs"] = json!(round3(rest));
    }
    out.set("per_publish", j);
}
