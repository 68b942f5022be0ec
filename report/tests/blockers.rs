//! Blockers: who held a conflicting lock when a wait started (issue 14, blocked-by).

mod common;

use std::path::Path;

use common::{actor, key};
use locktrace_report::{
    Holder, Metric, Mode, Recorder, Report, ReportMeta, Source, TOP_BLOCKERS, merge, render_text,
};

fn holder(pid: u32) -> Holder {
    Holder {
        pid,
        comm: "podman".into(),
        cmdline: Some(format!("podman pull docker.io/library/image{pid}")),
        container: None,
    }
}

/// One write-mode lock whose waits (ns) were each blocked by the holders listed with them.
fn blocked(waits: &[(u64, &[Holder])], not_traced: u64) -> Report {
    let mut rec = Recorder::new();
    let k = key("layers.lock");
    for (ns, holders) in waits {
        rec.record(&k, Mode::Write, Metric::Wait, *ns, &actor(1));
        rec.record_blocked(&k, Mode::Write, holders.iter(), *ns);
    }
    for _ in 0..not_traced {
        rec.record(&k, Mode::Write, Metric::Wait, 5_000_000, &actor(1));
        rec.record_holder_not_traced(&k, Mode::Write);
    }
    rec.finish(ReportMeta::new("locktrace", Source::Kernel))
}

fn reads_back(r: &Report) -> Report {
    Report::from_slice(r.to_json().as_bytes()).unwrap()
}

#[test]
fn blockers_count_each_wait_for_every_holder_and_read_back() {
    let (a, b) = (holder(10), holder(11));
    let r = blocked(
        &[
            (1_000_000, std::slice::from_ref(&a)),
            (3_000_000, &[a.clone(), b.clone()]),
        ],
        2,
    );
    let back = reads_back(&r);
    assert_eq!(back, r);
    let m = &back.locks[0].modes[&Mode::Write];
    assert_eq!(m.holder_not_traced, 2);
    assert_eq!(m.blockers.len(), 2);
    assert_eq!(m.blockers[0].holder, a);
    assert_eq!(
        (
            m.blockers[0].waits,
            m.blockers[0].total_wait_ns,
            m.blockers[0].max_wait_ns
        ),
        (2, 4_000_000, 3_000_000)
    );
    assert_eq!(m.blockers[1].holder, b);
    assert_eq!(m.blockers[1].waits, 1);
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    let first = &json["locks"][0]["modes"]["write"]["blockers"][0];
    assert_eq!(first["pid"], 10);
    assert_eq!(first["cmdline"], "podman pull docker.io/library/image10");
    assert_eq!(first["total_wait_ns"], 4_000_000);
}

#[test]
fn blockers_show_under_their_lock_in_text() {
    let text = render_text(&blocked(&[(1_200_000_000, &[holder(1596)])], 2));
    assert!(
        text.contains(
            "blocked by: podman[1596] pull docker.io/library/image1596 1.20s ×1 (max 1.20s); holder not traced ×2"
        ),
        "{text}"
    );
}

#[test]
fn reports_without_blockers_keep_their_old_json() {
    let r = blocked(&[(1_000, &[])], 0);
    let json = r.to_json();
    assert!(!json.contains("blockers"), "{json}");
    assert!(!json.contains("holder_not_traced"), "{json}");
}

#[test]
fn past_the_top_blockers_the_rest_is_summed_not_dropped() {
    let holders: Vec<Holder> = (0..TOP_BLOCKERS as u32 + 3).map(holder).collect();
    let waits: Vec<(u64, &[Holder])> = holders
        .iter()
        .enumerate()
        .map(|(i, h)| ((i as u64 + 1) * 1_000, std::slice::from_ref(h)))
        .collect();
    let r = reads_back(&blocked(&waits, 0));
    let m = &r.locks[0].modes[&Mode::Write];
    assert_eq!(m.blockers.len(), TOP_BLOCKERS);
    assert_eq!(
        m.blockers[0].total_wait_ns,
        (TOP_BLOCKERS as u64 + 3) * 1_000
    );
    let others = m.blockers_others.expect("the three smallest summed");
    assert_eq!(
        (
            others.holders,
            others.waits,
            others.total_wait_ns,
            others.max_wait_ns
        ),
        (3, 3, 6_000, 3_000)
    );
}

#[test]
fn merge_adds_the_same_holder_and_keeps_others_apart() {
    let (a, b) = (holder(10), holder(11));
    let merged = merge(&[
        blocked(&[(1_000, std::slice::from_ref(&a))], 1),
        blocked(&[(5_000, &[a.clone(), b.clone()])], 2),
    ])
    .unwrap();
    let m = &merged.locks[0].modes[&Mode::Write];
    assert_eq!(m.holder_not_traced, 3);
    assert_eq!(m.blockers.len(), 2);
    assert_eq!(
        (
            m.blockers[0].holder.pid,
            m.blockers[0].waits,
            m.blockers[0].total_wait_ns,
            m.blockers[0].max_wait_ns
        ),
        (10, 2, 6_000, 5_000)
    );
    assert_eq!((m.blockers[1].holder.pid, m.blockers[1].waits), (11, 1));
    // Same pid, another command line: another process (a recycled pid), not added up.
    let mut c = holder(10);
    c.cmdline = Some("podman images".into());
    let merged = merge(&[
        blocked(&[(1_000, std::slice::from_ref(&a))], 0),
        blocked(&[(2_000, std::slice::from_ref(&c))], 0),
    ])
    .unwrap();
    assert_eq!(merged.locks[0].modes[&Mode::Write].blockers.len(), 2);
}

/// The error of reading `r` after `edit` changed its write mode.
fn refusal(r: &Report, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    edit(&mut json["locks"][0]["modes"]["write"]);
    let bytes = serde_json::to_vec(&json).unwrap();
    let err = Report::from_json(&bytes, Path::new("bad.json")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("bad.json: corrupt report: "), "{msg}");
    msg
}

#[test]
fn blockers_the_waits_cannot_back_are_refused_when_read() {
    let r = blocked(&[(1_000, &[holder(10)]), (3_000, &[holder(10)])], 1);
    let msg = refusal(&r, |m| m["blockers"][0]["waits"] = 4.into());
    assert!(msg.contains("caused 4 waits, but the mode has 3"), "{msg}");
    let msg = refusal(&r, |m| m["blockers"][0]["max_wait_ns"] = 9_000_000.into());
    assert!(msg.contains("longer than the mode's"), "{msg}");
    let msg = refusal(&r, |m| m["blockers"][0]["total_wait_ns"] = 7_000.into());
    assert!(msg.contains("does not fit its 2 waits"), "{msg}");
    let msg = refusal(&r, |m| m["blockers"][0]["waits"] = 0.into());
    assert!(msg.contains("caused no waits"), "{msg}");
    let msg = refusal(&r, |m| m["holder_not_traced"] = 4.into());
    assert!(msg.contains("holder not traced"), "{msg}");
    let msg = refusal(&r, |m| {
        m["blockers"][0]["container"] = "é".repeat(40).into()
    });
    assert!(msg.contains("not a 64-hex-digit ID"), "{msg}");
    let msg = refusal(&r, |m| {
        let b = m["blockers"][0].clone();
        m["blockers"].as_array_mut().unwrap().push(b);
    });
    assert!(msg.contains("listed twice"), "{msg}");
    let msg = refusal(&r, |m| {
        m["blockers_others"] =
            serde_json::json!({"holders": 0, "waits": 1, "total_wait_ns": 5, "max_wait_ns": 5});
    });
    assert!(msg.contains("no holders"), "{msg}");
}

#[test]
fn text_names_containers_and_sums_the_rest() {
    let id = "4f2c0e5d9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";
    let mut holders: Vec<Holder> = (0..TOP_BLOCKERS as u32 + 2).map(holder).collect();
    holders[TOP_BLOCKERS + 1].container = Some(id.into());
    let waits: Vec<(u64, &[Holder])> = holders
        .iter()
        .enumerate()
        .map(|(i, h)| ((100 - i as u64) * 1_000_000, std::slice::from_ref(h)))
        .collect();
    let text = render_text(&blocked(&waits, 0));
    assert!(
        text.contains("podman[0] pull docker.io/library/image0 100ms ×1 (max 100ms), "),
        "{text}"
    );
    // The text names the top five; the other eleven listed and the two summed in the report follow
    // as one entry.
    assert!(
        text.contains("image4 96.0ms ×1 (max 96.0ms), 13 others 1.16s ×13 (max 95.0ms)\n"),
        "{text}"
    );
    let mut first = holders[0].clone();
    first.container = Some(id.into());
    first.cmdline = Some(format!("podman {}", "x".repeat(60)));
    let text = render_text(&blocked(&[(1_000, &[first])], 0));
    assert!(
        text.contains(&format!(
            "podman[0] {}… (container 4f2c0e5d9a8b) 1.00µs ×1",
            "x".repeat(40)
        )),
        "{text}"
    );
}
