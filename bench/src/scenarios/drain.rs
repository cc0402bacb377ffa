//! `drain`: N connections, then SIGTERM to the server (--server-pid); when each one is closed,
//! counted per 100 ms from the signal, so a paced drain shows as a spread curve and an
//! all-at-once shutdown as one spike.

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;

use super::*;
use crate::DrainArgs;
use crate::ws::{self, In};

#[derive(Default)]
struct Seen {
    /// Milliseconds from the signal to each close, and the close code (None: no close frame).
    closes: Vec<(f64, Option<u16>)>,
    failed: usize,
}

pub(super) async fn drain(c: &Ctx, a: &DrainArgs, out: &mut Out) -> Res<()> {
    let pid = c
        .pids
        .first()
        .ok_or("drain needs --server-pid: the bench sends the server SIGTERM")?
        .clone();
    let n = a.connections;
    out.line(format!(
        "drain: {n} connections to {}, then SIGTERM to {pid}",
        c.target()
    ));
    let seen = Rc::new(RefCell::new(Seen::default()));
    let signalled: Rc<RefCell<Option<Instant>>> = Rc::new(RefCell::new(None));
    let ready = Rc::new(Semaphore::new(0));
    let gate = Rc::new(Semaphore::new(c.g.connect_concurrency.max(1)));
    let base = u32::from(c.src_base);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let target = c.nodes[i % c.nodes.len()].clone();
        let src = Ipv4Addr::from(base + (i / c.g.conns_per_addr.max(1)) as u32);
        let (seen, signalled, ready, gate) =
            (seen.clone(), signalled.clone(), ready.clone(), gate.clone());
        let channel = format!("{}drain-{}", c.g.channel_prefix, i % a.channels.max(1));
        tasks.push(tokio::task::spawn_local(async move {
            let mut code: Option<u16> = None;
            let mut on = |m: In<'_>| {
                if let In::Close(c) = m {
                    code = c;
                }
            };
            let permit = gate.acquire().await;
            let conn = ws::open(&target, src, None, &mut on).await;
            let mut conn = match conn {
                Ok(conn) => conn,
                Err(_) => {
                    seen.borrow_mut().failed += 1;
                    ready.add_permits(1);
                    return;
                }
            };
            let sub = format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}"}}}}"#);
            let _ = conn.send_text(sub.as_bytes()).await;
            drop(permit);
            ready.add_permits(1);
            let mut closed_code: Option<u16> = None;
            let mut got_close = false;
            loop {
                let mut on = |m: In<'_>| {
                    if let In::Close(c) = m {
                        closed_code = c;
                        got_close = true;
                    }
                };
                match conn.read_some(&mut on).await {
                    Ok(false) if !got_close => continue,
                    _ => break,
                }
            }
            if let Some(t0) = *signalled.borrow() {
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                seen.borrow_mut().closes.push((ms, closed_code.or(code)));
            }
        }));
    }
    let _ = ready
        .acquire_many(n as u32)
        .await
        .map_err(|e| e.to_string())?;
    let failed = seen.borrow().failed;
    out.line(format!(
        "connected: {} of {n} in {:.2} s ({failed} failed)",
        n - failed,
        started.elapsed().as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    *signalled.borrow_mut() = Some(Instant::now());
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .map_err(|e| format!("kill -TERM {pid}: {e}"))?;
    if !status.success() {
        return Err(format!("kill -TERM {pid} failed"));
    }
    let wait = Duration::from_secs(a.wait_secs);
    let _ = tokio::time::timeout(wait, async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;
    let seen = seen.borrow();
    let slot = a.bucket_ms.max(1) as f64;
    let last = seen.closes.iter().map(|(ms, _)| *ms).fold(0.0, f64::max);
    let mut curve = vec![0u64; (last / slot) as usize + 1];
    let mut codes = std::collections::BTreeMap::new();
    for (ms, code) in &seen.closes {
        curve[(*ms / slot) as usize] += 1;
        *codes
            .entry(code.map_or("none".to_string(), |c| c.to_string()))
            .or_insert(0u64) += 1;
    }
    let first = seen
        .closes
        .iter()
        .map(|(ms, _)| *ms)
        .fold(f64::MAX, f64::min);
    let peak = curve.iter().copied().max().unwrap_or(0);
    out.line(format!(
        "closed: {} of {} by the server; codes {codes:?}; first {first:.0} ms, last {last:.0} ms after SIGTERM; at most {peak} per {slot} ms",
        seen.closes.len(),
        n - failed
    ));
    let per_second: Vec<u64> = curve
        .chunks((1000.0 / slot).max(1.0) as usize)
        .map(|c| c.iter().sum())
        .collect();
    out.line(format!("closes per second: {per_second:?}"));
    out.line(format!("closes per {slot} ms: {curve:?}"));
    out.set("connections", json!(n - failed));
    out.set("closed", json!(seen.closes.len()));
    out.set("codes", json!(codes));
    out.set("first_close_ms", json!(first.round()));
    out.set("last_close_ms", json!(last.round()));
    out.set("max_per_bucket", json!(peak));
    out.set("bucket_ms", json!(a.bucket_ms));
    out.set("closes_per_bucket", json!(curve));
    out.set("closes_per_second", json!(per_second));
    Ok(())
}
