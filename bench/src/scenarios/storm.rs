//! `subscribe-storm`: S sockets subscribe to one channel in batches; the subscribe rate of each
//! batch as the channel grows shows whether a subscribe costs O(1) or O(channel size).
//!
//! With `--rounds R` the same sockets run the storm R times, each round on a fresh (empty)
//! channel, so batch i of every round meets the same channel size; the curve reported is the
//! median of the rounds batch by batch, which takes out most of the scheduler noise one batch
//! of a few tens of milliseconds carries.

use serde_json::{Value, json};

use super::*;
use crate::StormArgs;
use crate::hist::Hist;

pub(super) async fn storm(c: &Ctx, a: &StormArgs, out: &mut Out) -> Res<()> {
    let s = a.subscribers;
    let b = a.bucket.max(1);
    let n_rounds = a.rounds.max(1);
    out.line(format!(
        "subscribe-storm: {s} sockets subscribe to one channel, {b} at a time (all {b} at once, next batch when all are acknowledged), on {}{}",
        c.target(),
        if n_rounds > 1 {
            format!(
                "; {n_rounds} rounds on the same sockets, each on a fresh channel ({})",
                channel_name(c, n_rounds, 0)
            )
        } else {
            String::new()
        }
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
    let mut rounds = Vec::new();
    for r in 0..n_rounds {
        rounds.push(run_round(c, &mut w, s, b, r, &suffix(n_rounds, r)).await?);
    }
    let sum = Summary::of(&rounds);
    report(c, &rounds, &sum, b, connected, out);
    out.set("subscribers", json!(s));
    out.set("bucket", json!(b));
    out.set("rounds", json!(n_rounds));
    sum.to_json(&rounds, out);
    w.shutdown().await;
    Ok(())
}

/// Channel-name suffix of round `r`: none for a single round (the channel is PREFIX0, as it
/// always was), `-rR` otherwise.
fn suffix(n_rounds: usize, r: usize) -> String {
    if n_rounds > 1 {
        format!("-r{r}")
    } else {
        String::new()
    }
}

fn channel_name(c: &Ctx, n_rounds: usize, r: usize) -> String {
    format!("{}0{}", c.g.channel_prefix, suffix(n_rounds, r))
}

/// One storm: per batch, the subscribes acknowledged, the seconds they took and the rate.
struct Round {
    curve: Vec<f64>,
    counts: Vec<f64>,
    secs: Vec<f64>,
    ok: u64,
    failed: u64,
    lat: Hist,
}

impl Round {
    fn new() -> Self {
        Round {
            curve: Vec::new(),
            counts: Vec::new(),
            secs: Vec::new(),
            ok: 0,
            failed: 0,
            lat: Hist::new(),
        }
    }

    /// Adds one batch from the workers' `subscribed` reports (their counts are per round).
    fn add_batch(&mut self, rs: &[Value]) {
        let ok = coord::sum(rs, "ok");
        self.failed = coord::sum(rs, "failed");
        let t0 = coord::min_nz(rs, "t_cmd");
        let t1 = last_ack(rs).unwrap_or(t0);
        let n = ok.saturating_sub(self.ok);
        self.ok = ok;
        let bs = secs(t0, t1);
        self.counts.push(n as f64);
        self.secs.push(bs);
        self.curve.push(rate(n, bs));
        self.lat = coord::hist(rs, "hist");
    }

    fn total_secs(&self) -> f64 {
        self.secs.iter().sum()
    }
}

/// The latest subscribe acknowledgement of a batch, over all workers.
fn last_ack(rs: &[Value]) -> Option<u64> {
    rs.iter()
        .flat_map(|r| r["times"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_u64())
        .max()
}

/// Subscribes all `s` sockets in batches of `b` to this round's channel.
async fn run_round(
    c: &Ctx,
    w: &mut Workers,
    s: usize,
    b: usize,
    r: usize,
    suffix: &str,
) -> Res<Round> {
    let mut rd = Round::new();
    let mut upto = 0usize;
    while upto < s {
        upto = (upto + b).min(s);
        let rs = w
            .cmd(
                json!({"cmd": "subscribe", "upto": upto, "round": r, "channel_suffix": suffix}),
                "subscribed",
                c.g.connect_timeout_ms + 60_000,
            )
            .await
            .map_err(|e| e.to_string())?;
        rd.add_batch(&rs);
    }
    Ok(rd)
}

/// Figures of the median curve, and totals over the rounds.
struct Summary {
    curve: Vec<f64>,
    overall: f64,
    mn: f64,
    mx: f64,
    last_vs_first: f64,
    trend: f64,
    max_dev_pct: f64,
    ok: u64,
    failed: u64,
    secs: f64,
    lat: Hist,
}

impl Summary {
    fn of(rounds: &[Round]) -> Self {
        let pick = |f: fn(&Round) -> &Vec<f64>| {
            median_curve(&rounds.iter().map(|r| f(r).clone()).collect::<Vec<_>>())
        };
        let curve: Vec<f64> = pick(|r| &r.curve).iter().map(|v| v.round()).collect();
        // The median batch's size over its median duration, summed: for one round, exactly the
        // subscribes over the seconds of all batches.
        let n: f64 = pick(|r| &r.counts).iter().sum();
        let t: f64 = pick(|r| &r.secs).iter().sum();
        let (mn, mx) = min_max(&curve);
        let mut lat = Hist::new();
        for r in rounds {
            lat.merge(&r.lat);
        }
        Summary {
            overall: rate(n.round() as u64, t),
            mn,
            mx,
            last_vs_first: last_vs_first(&curve),
            trend: trend(&curve),
            max_dev_pct: max_dev_from_median_pct(&curve),
            ok: rounds.iter().map(|r| r.ok).sum(),
            failed: rounds.iter().map(|r| r.failed).sum(),
            secs: rounds.iter().map(Round::total_secs).sum(),
            lat,
            curve,
        }
    }

    fn to_json(&self, rounds: &[Round], out: &mut Out) {
        out.set("subscribed", json!(self.ok));
        out.set("failed", json!(self.failed));
        out.set("curve_per_sec", json!(self.curve));
        let per_round: Vec<&Vec<f64>> = rounds.iter().map(|r| &r.curve).collect();
        out.set("curve_per_round", json!(per_round));
        out.set("overall_per_sec", json!(self.overall));
        out.set("min_bucket_per_sec", json!(self.mn));
        out.set("max_bucket_per_sec", json!(self.mx));
        out.set("last_vs_first", json!(round3(self.last_vs_first)));
        out.set("trend_end_vs_start", json!(round3(self.trend)));
        out.set("max_dev_from_median_pct", json!(round3(self.max_dev_pct)));
        out.set("subscribe_latency", self.lat.summary_ms());
    }
}

fn curve_line(curve: &[f64]) -> String {
    curve
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The human summary: one curve line per round, the median curve and its figures.
fn report(c: &Ctx, rounds: &[Round], sum: &Summary, b: usize, connected: u64, out: &Out) {
    let n = rounds.len();
    let (head, per) = if n == 1 {
        out.line(format!(
            "curve (subscribes/s for each batch of {b}, channel growing): {}",
            curve_line(&sum.curve)
        ));
        (format!("subscribed {}/{connected}", sum.ok), " =")
    } else {
        for (r, rd) in rounds.iter().enumerate() {
            out.line(format!(
                "round {}/{n}, {}: {}/{connected} subscribed ({} failed), {:.0} sub/s; curve: {}",
                r + 1,
                channel_name(c, n, r),
                rd.ok,
                rd.failed,
                rate(rd.ok, rd.total_secs()),
                curve_line(&rd.curve)
            ));
        }
        out.line(format!(
            "median curve (subscribes/s for each batch of {b}, median of {n} rounds): {}",
            curve_line(&sum.curve)
        ));
        (
            format!(
                "subscribed {}/{} over {n} rounds",
                sum.ok,
                connected * n as u64
            ),
            "; median curve",
        )
    };
    out.line(format!(
        "{head} ({} failed) in {:.2} s of batches{per} {:.0} sub/s; min batch {:.0}/s, max {:.0}/s; last/first = {:.2}, fitted line end/start = {:.2} (flat within 10% = 0.90..1.10); max deviation from the median batch {:.1}%",
        sum.failed,
        sum.secs,
        sum.overall,
        sum.mn,
        sum.mx,
        sum.last_vs_first,
        sum.trend,
        sum.max_dev_pct
    ));
    out.line(format!(
        "subscribe latency (send → subscription_succeeded): {}",
        sum.lat.line_ms()
    ));
}

/// Median of `v` (the mean of the two middle values for an even count); 0 when empty.
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[m],
        _ => (s[m - 1] + s[m]) / 2.0,
    }
}

/// Batch by batch, the median over the rounds that have that batch.
fn median_curve(rounds: &[Vec<f64>]) -> Vec<f64> {
    let len = rounds.iter().map(Vec::len).max().unwrap_or(0);
    (0..len)
        .map(|i| {
            median(
                &rounds
                    .iter()
                    .filter_map(|r| r.get(i).copied())
                    .collect::<Vec<_>>(),
            )
        })
        .collect()
}

fn min_max(curve: &[f64]) -> (f64, f64) {
    let (mn, mx) = curve
        .iter()
        .fold((f64::MAX, 0.0f64), |(a, b), v| (a.min(*v), b.max(*v)));
    (if mn == f64::MAX { 0.0 } else { mn }, mx)
}

/// Flatness: the last bucket against the median of the first three (the upper middle of two).
fn last_vs_first(curve: &[f64]) -> f64 {
    let mut f: Vec<f64> = curve.iter().take(3).cloned().collect();
    f.sort_by(f64::total_cmp);
    let first = f.get(f.len() / 2).cloned().unwrap_or(0.0);
    let last = curve.last().cloned().unwrap_or(0.0);
    if first > 0.0 { last / first } else { 0.0 }
}

/// Least-squares line through the curve, end over start: less sensitive to one noisy batch.
fn trend(curve: &[f64]) -> f64 {
    let n = curve.len() as f64;
    let mx = (n - 1.0) / 2.0;
    let my = curve.iter().sum::<f64>() / n.max(1.0);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, y) in curve.iter().enumerate() {
        sxy += (i as f64 - mx) * (y - my);
        sxx += (i as f64 - mx) * (i as f64 - mx);
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let at0 = my - slope * mx;
    let at_end = my + slope * mx;
    if at0 > 0.0 { at_end / at0 } else { 0.0 }
}

/// The largest distance of a batch from the median batch, in percent of the median.
fn max_dev_from_median_pct(curve: &[f64]) -> f64 {
    let m = median(curve);
    if m <= 0.0 {
        return 0.0;
    }
    curve
        .iter()
        .map(|v| (v / m - 1.0).abs() * 100.0)
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_across_rounds() {
        let rounds = vec![
            vec![10.0, 20.0, 30.0],
            vec![30.0, 10.0, 31.0],
            vec![20.0, 40.0, 29.0],
        ];
        assert_eq!(median_curve(&rounds), vec![20.0, 20.0, 30.0]);
        // Even count: mean of the two middle values; one round is the curve itself.
        let two = vec![vec![10.0, 5.0], vec![20.0, 5.0]];
        assert_eq!(median_curve(&two), vec![15.0, 5.0]);
        assert_eq!(median_curve(&rounds[..1]), rounds[0]);
        // A round short of a batch leaves that batch to the others.
        let ragged = vec![vec![1.0, 2.0], vec![3.0]];
        assert_eq!(median_curve(&ragged), vec![2.0, 2.0]);
        assert!(median_curve(&[]).is_empty());
    }

    #[test]
    fn flatness_figures() {
        assert!((max_dev_from_median_pct(&[100.0, 110.0, 95.0, 100.0]) - 10.0).abs() < 1e-9);
        assert!((max_dev_from_median_pct(&[100.0, 70.0, 100.0]) - 30.0).abs() < 1e-9);
        assert_eq!(max_dev_from_median_pct(&[]), 0.0);
        assert!((trend(&[10.0, 10.0, 10.0]) - 1.0).abs() < 1e-12);
        assert!((trend(&[10.0, 15.0, 20.0]) - 2.0).abs() < 1e-12);
        assert_eq!(last_vs_first(&[10.0, 30.0, 20.0, 40.0]), 2.0);
        assert_eq!(min_max(&[]), (0.0, 0.0));
    }
}
