//! The human-readable text form of a report (`locktrace report`, `record`'s summary).

use std::fmt::Write;

use crate::blockers::{Blocker, BlockerOthers};
use crate::duration::human_duration;
use crate::lock_order::{LockOrder, describe_cycle};
use crate::model::{ActorStat, Collection, Metric, ModeReport, Report, Summary};
use crate::stacks::MetricStacks;

const COLUMNS: [&str; 8] = [
    "count", "p50", "p90", "p99", "p99.9", "max", "mean", "total",
];

/// The human-readable form of a report: per lock and mode, a wait/hold table, try-lock outcomes and
/// the top waiters and holders; then source and drop accounting.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let meta = &report.meta;
    let _ = write!(out, "{} report, source: {}", meta.tool, meta.source);
    if let Some(attach) = &meta.attach {
        let _ = write!(out, ", attach: {attach}");
    }
    if let Some(kernel) = &meta.kernel {
        let _ = write!(out, ", kernel: {kernel}");
    }
    if meta.collection == Some(Collection::Summary) {
        let _ = write!(out, ", collection: summary (in-kernel)");
    }
    let _ = writeln!(out, ", duration: {}", human_duration(meta.duration_ns));
    if !meta.command.is_empty() {
        let _ = writeln!(out, "command: {}", meta.command.join(" "));
    }
    for (k, v) in &meta.labels {
        let _ = writeln!(out, "label {k}={v}");
    }
    if report.locks.is_empty() {
        let _ = writeln!(out, "\nno lock activity recorded");
    }
    for lock in &report.locks {
        let _ = write!(out, "\n{}", lock.key);
        if lock.key.path.is_some() {
            let _ = write!(out, " ({})", lock.key.name);
        }
        out.push('\n');
        for (mode, mode_report) in &lock.modes {
            let _ = writeln!(out, "  {mode}");
            render_mode(&mut out, mode_report);
        }
    }
    render_lock_order(&mut out, &report.lock_order);
    let drops = &meta.drops;
    if drops.total() == 0 {
        let _ = writeln!(out, "\ndrops: none");
    } else {
        let _ = writeln!(
            out,
            "\ndrops: {} (ringbuf lost {}, map full {}, unmatched releases {}, still held at end {}, unresolved names {}) — histograms are incomplete",
            drops.total(),
            drops.ringbuf_lost,
            drops.map_full,
            drops.unmatched_releases,
            drops.still_held_at_end,
            drops.unresolved_names
        );
    }
    if drops.stacks_lost > 0 {
        let _ = writeln!(
            out,
            "stacks lost: {} (their samples are counted under [stack lost])",
            drops.stacks_lost
        );
    }
    out
}

fn render_mode(out: &mut String, mode: &ModeReport) {
    let _ = write!(out, "    {:<6}", "");
    for col in COLUMNS {
        let _ = write!(out, "{col:>9}");
    }
    out.push('\n');
    for metric in Metric::ALL {
        let s = &mode.metric(metric).summary;
        let _ = write!(out, "    {:<6}", metric.as_str());
        let _ = write!(out, "{:>9}", s.count);
        for v in time_columns(s) {
            let _ = write!(out, "{:>9}", human_duration(v));
        }
        out.push('\n');
    }
    let t = &mode.tries;
    if t.total() > 0 {
        let _ = writeln!(
            out,
            "    tries: {} acquired, {} refused, {} errors, {} interrupted",
            t.acquired, t.refused, t.errors, t.interrupted
        );
        if t.edeadlk > 0 {
            let _ = writeln!(
                out,
                "    EDEADLK: {} (the kernel refused to wait: it would have deadlocked)",
                t.edeadlk
            );
        }
    }
    render_actors(out, "top waiters", &mode.top_waiters);
    render_actors(out, "top holders", &mode.top_holders);
    render_blockers(out, mode);
    for metric in [Metric::Hold, Metric::Wait] {
        render_stacks(out, metric, mode.stacks(metric));
    }
}

/// Stacks the text shows per mode and metric, and frames per stack (leaf first).
const TEXT_STACKS: usize = 3;
const TEXT_FRAMES: usize = 12;

/// `top stacks by hold (2 of 5): 1.2 s ×8, p99 300 ms, max 310 ms` then the frames, leaf first.
fn render_stacks(out: &mut String, metric: Metric, stacks: &MetricStacks) {
    if stacks.is_empty() {
        return;
    }
    let distinct = stacks.top.len() as u64 + stacks.others.map_or(0, |o| o.stacks);
    let shown = stacks.top.len().min(TEXT_STACKS);
    let _ = writeln!(
        out,
        "    top stacks by {metric} ({shown} of {distinct}, leaf first):"
    );
    for s in &stacks.top[..shown] {
        let _ = writeln!(
            out,
            "      {} ×{}, p99 {}, max {}",
            human_duration(s.total_ns),
            s.count,
            human_duration(s.p99_ns),
            human_duration(s.max_ns)
        );
        for frame in s.frames.iter().take(TEXT_FRAMES) {
            let _ = writeln!(out, "          {frame}");
        }
        if s.frames.len() > TEXT_FRAMES {
            let _ = writeln!(out, "          … {} more", s.frames.len() - TEXT_FRAMES);
        }
    }
}

/// Arguments shown after a blocker's name before they are cut with `…`.
const CMDLINE_CHARS: usize = 40;

/// Blockers the text names; the report's others are summed into one entry.
const TEXT_BLOCKERS: usize = 5;

/// `blocked by: podman[1596] pull … 1.2 s ×8 (max 300 ms), …; holder not traced ×2`.
fn render_blockers(out: &mut String, mode: &ModeReport) {
    let shown = mode.blockers.len().min(TEXT_BLOCKERS);
    let mut parts: Vec<String> = mode.blockers[..shown].iter().map(blocker).collect();
    let rest = mode.blockers[shown..]
        .iter()
        .map(|b| BlockerOthers {
            holders: 1,
            waits: b.waits,
            total_wait_ns: b.total_wait_ns,
            max_wait_ns: b.max_wait_ns,
        })
        .chain(mode.blockers_others)
        .reduce(|a, b| BlockerOthers {
            holders: a.holders.saturating_add(b.holders),
            waits: a.waits.saturating_add(b.waits),
            total_wait_ns: a.total_wait_ns.saturating_add(b.total_wait_ns),
            max_wait_ns: a.max_wait_ns.max(b.max_wait_ns),
        });
    if let Some(o) = rest {
        parts.push(format!(
            "{} others {} ×{} (max {})",
            o.holders,
            human_duration(o.total_wait_ns),
            o.waits,
            human_duration(o.max_wait_ns)
        ));
    }
    let mut line = parts.join(", ");
    if mode.holder_not_traced > 0 {
        if !line.is_empty() {
            line.push_str("; ");
        }
        let _ = write!(line, "holder not traced ×{}", mode.holder_not_traced);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "    blocked by: {line}");
    }
}

fn blocker(b: &Blocker) -> String {
    let h = &b.holder;
    let mut s = format!("{}[{}]", h.comm, h.pid);
    // argv[0] is mostly the comm again; the arguments say what the process was doing.
    if let Some(args) = h.cmdline.as_deref().and_then(|c| c.split_once(' ')) {
        let args = args.1.trim();
        if !args.is_empty() {
            s.push(' ');
            if args.chars().count() > CMDLINE_CHARS {
                s.extend(args.chars().take(CMDLINE_CHARS));
                s.push('…');
            } else {
                s.push_str(args);
            }
        }
    }
    if let Some(id) = &h.container {
        let short: String = id.chars().take(12).collect();
        let _ = write!(s, " (container {short})");
    }
    let _ = write!(
        s,
        " {} ×{} (max {})",
        human_duration(b.total_wait_ns),
        b.waits,
        human_duration(b.max_wait_ns)
    );
    s
}

fn time_columns(s: &Summary) -> [u64; 7] {
    [s.p50, s.p90, s.p99, s.p999, s.max, s.mean, s.total]
}

fn render_actors(out: &mut String, title: &str, actors: &[ActorStat]) {
    if actors.is_empty() {
        return;
    }
    let list: Vec<String> = actors
        .iter()
        .map(|a| {
            format!(
                "{}[{}] {} ×{}",
                a.comm,
                a.pid,
                human_duration(a.total),
                a.count
            )
        })
        .collect();
    let _ = writeln!(out, "    {title}: {}", list.join(", "));
}

/// Frames of each example stack a lock-order edge shows, leaf first.
const ORDER_FRAMES: usize = 6;

/// Edges with counts and first example, then one `potential deadlock` line per cycle naming the
/// first process that took each of its edges.
fn render_lock_order(out: &mut String, order: &LockOrder) {
    if order.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nlock order (held → taken)");
    for e in &order.edges {
        let x = &e.example;
        let _ = writeln!(
            out,
            "  {} → {} ×{} (first: {}[{}], {} then {})",
            e.held, e.taken, e.count, x.comm, x.pid, x.held_mode, x.taken_mode
        );
        for (what, stack) in [("held", &x.held_stack), ("taken", &x.taken_stack)] {
            if let Some(frames) = stack {
                let _ = writeln!(
                    out,
                    "    {what} from: {}",
                    frames
                        .iter()
                        .take(ORDER_FRAMES)
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(" ← ")
                );
            }
        }
    }
    if order.edges_dropped > 0 {
        let _ = writeln!(
            out,
            "  {} more nestings past the edge limit not shown: cycles through them are missed",
            order.edges_dropped
        );
    }
    for cycle in &order.cycles {
        let _ = writeln!(
            out,
            "  potential deadlock: {}",
            describe_cycle(order, cycle)
        );
    }
}
