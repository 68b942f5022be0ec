//! The Perfetto timeline against the report of the same recording: `record --timeline` and
//! `export --format perfetto` of the ndjson stream recorded in the same run, decoded back with the
//! trace's own message types, must hold exactly the report's waits and holds (count and total per
//! lock and mode), in a file that keeps the Perfetto invariants it relies on. Needs root and BTF
//! (see common::kernel_tests_can_run); `trace_processor_shell` is not needed.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

mod common;

use locktrace_report::{
    Metric, Report,
    perfetto::{
        decode,
        proto::{TYPE_INSTANT, TYPE_SLICE_BEGIN, TYPE_SLICE_END},
    },
};

/// (lock track name, mode, metric) → (count, total ns).
type Totals = BTreeMap<(String, String, String), (u64, u64)>;

fn locktrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_locktrace"))
}

fn lockload() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lockload"))
}

/// Decodes `path`, checks the invariants, and sums the slices on the lock tracks; also returns
/// the same sums from the process tracks (per mode and metric) and the number of flows.
fn read_timeline(path: &Path) -> (Totals, Totals, usize) {
    let bytes = std::fs::read(path).unwrap();
    let trace = decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut names: HashMap<u64, String> = HashMap::new();
    let mut parent: HashMap<u64, u64> = HashMap::new();
    let mut processes: HashSet<u64> = HashSet::new();
    let mut last_ts: HashMap<u32, u64> = HashMap::new();
    // Open slice per track: (begin ts, name args, category).
    let mut open: HashMap<u64, (u64, String, String)> = HashMap::new();
    let mut last_end: HashMap<u64, u64> = HashMap::new();
    let (mut on_locks, mut on_processes) = (Totals::new(), Totals::new());
    let (mut flows_out, mut flows_in) = (HashMap::new(), Vec::new());
    for (i, p) in trace.packet.iter().enumerate() {
        let seq = p
            .trusted_packet_sequence_id
            .unwrap_or_else(|| panic!("packet {i} has no trusted_packet_sequence_id"));
        assert_ne!(seq, 0, "packet {i}: sequence 0 is invalid");
        if let Some(d) = &p.track_descriptor {
            let uuid = d.uuid.expect("track uuid");
            assert_ne!(uuid, 0);
            assert!(
                names
                    .insert(uuid, d.name.clone().unwrap_or_default())
                    .is_none(),
                "track {uuid} declared twice"
            );
            if let Some(pu) = d.parent_uuid {
                assert!(
                    names.contains_key(&pu),
                    "parent {pu} declared after its child"
                );
                parent.insert(uuid, pu);
            }
            if let Some(proc_) = &d.process {
                assert!(proc_.pid.is_some_and(|p| p > 0));
                assert!(proc_.process_name.as_deref().is_some_and(|n| !n.is_empty()));
                processes.insert(uuid);
            }
            continue;
        }
        let e = p
            .track_event
            .as_ref()
            .expect("packet is a descriptor or an event");
        let ts = p.timestamp.expect("event timestamp");
        let prev = last_ts.insert(seq, ts).unwrap_or(0);
        assert!(prev <= ts, "sequence {seq} goes back in time at packet {i}");
        let track = e.track_uuid.expect("event track");
        assert!(
            names.contains_key(&track),
            "event on undeclared track {track}"
        );
        let mut root = track;
        while let Some(&up) = parent.get(&root) {
            root = up;
        }
        match e.r#type {
            Some(TYPE_SLICE_BEGIN) => {
                // A lane's slices never overlap, and are written in time order.
                assert!(last_end.get(&track).is_none_or(|&end| end < ts));
                let arg = |key: &str| {
                    e.debug_annotations
                        .iter()
                        .find(|a| a.name.as_deref() == Some(key))
                        .and_then(|a| a.string_value.clone())
                        .unwrap_or_else(|| panic!("slice without {key}"))
                };
                let metric = e.categories.first().cloned().expect("category");
                let previous = open.insert(track, (ts, arg("mode"), metric));
                assert!(previous.is_none(), "overlapping slices on track {track}");
                for f in &e.terminating_flow_ids {
                    flows_in.push((*f, ts));
                }
            }
            Some(TYPE_SLICE_END) => {
                let (begin, mode, metric) = open
                    .remove(&track)
                    .unwrap_or_else(|| panic!("SLICE_END without SLICE_BEGIN on track {track}"));
                assert!(begin <= ts);
                last_end.insert(track, ts);
                let (totals, lock) = if processes.contains(&root) {
                    (&mut on_processes, String::new())
                } else {
                    (&mut on_locks, names[&root].clone())
                };
                let t = totals.entry((lock, mode, metric)).or_default();
                t.0 += 1;
                t.1 += ts - begin;
                for f in &e.flow_ids {
                    flows_out.insert(*f, ts);
                }
            }
            Some(TYPE_INSTANT) => {
                for f in &e.flow_ids {
                    flows_out.insert(*f, ts);
                }
            }
            other => panic!("unexpected event type {other:?}"),
        }
    }
    assert!(open.is_empty(), "slices left open: {open:?}");
    for (flow, ts) in &flows_in {
        let from = flows_out
            .get(flow)
            .unwrap_or_else(|| panic!("flow {flow} ends without a start"));
        assert!(from <= ts, "flow {flow} runs back in time");
    }
    (on_locks, on_processes, flows_in.len())
}

/// The report's counts and totals, keyed like [`read_timeline`]'s lock sums (by `lock_name`).
fn report_totals(
    report: &Report,
    lock_name: impl Fn(&locktrace_report::LockKey) -> String,
) -> Totals {
    let mut totals = Totals::new();
    for lock in &report.locks {
        for (mode, m) in &lock.modes {
            for metric in Metric::ALL {
                let s = &m.metric(metric).summary;
                if s.count > 0 {
                    totals.insert(
                        (lock_name(&lock.key), mode.to_string(), metric.to_string()),
                        (s.count, s.total),
                    );
                }
            }
        }
    }
    totals
}

/// Per mode and metric, over all locks.
fn without_locks(totals: &Totals) -> Totals {
    let mut out = Totals::new();
    for ((_, mode, metric), (count, total)) in totals {
        let t = out
            .entry((String::new(), mode.clone(), metric.clone()))
            .or_default();
        t.0 += count;
        t.1 += total;
    }
    out
}

#[test]
fn the_timeline_holds_exactly_the_reports_waits_and_holds() {
    if !common::kernel_tests_can_run("timeline kernel test", &[]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lock = d.join("layers.lock");
    std::fs::write(&lock, b"").unwrap();
    let (timeline, report, events) = (d.join("t.pftrace"), d.join("r.json"), d.join("e.ndjson"));
    // One writer holds while three readers queue behind it, then hold together (overlapping
    // read holds, one flow each), twice.
    let out = locktrace()
        .arg("record")
        .arg("--path")
        .arg(&lock)
        .arg("--timeline")
        .arg(&timeline)
        .arg("-o")
        .arg(&report)
        .args(["--format", "ndjson", "--"])
        .arg(lockload())
        .args(["blockers", "--path"])
        .arg(&lock)
        .arg("--truth")
        .arg(d.join("truth.json"))
        .stdout(std::fs::File::create(&events).unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "record failed: {:?}", out.status);
    assert!(stderr.contains("timeline written to"), "{stderr}");
    let report = Report::read(&report).unwrap();
    assert_eq!(report.meta.drops.total(), 0, "{:?}", report.meta.drops);
    let expected = report_totals(&report, |k| k.path.clone().unwrap_or_default());
    let read = &expected[&(lock.display().to_string(), "read".into(), "hold".into())];
    assert_eq!(read.0, 6, "3 readers, 2 rounds: {expected:?}");

    let (on_locks, on_processes, flows) = read_timeline(&timeline);
    assert_eq!(on_locks, expected);
    assert_eq!(on_processes, without_locks(&expected));
    // Every reader waited behind the writer: one flow per granted read.
    assert_eq!(flows, 6);

    // The same recording's event stream, exported.
    let exported = d.join("e.pftrace");
    let out = locktrace()
        .arg("export")
        .arg(&events)
        .args(["--format", "perfetto", "-o"])
        .arg(&exported)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (on_locks, on_processes, flows) = read_timeline(&exported);
    // Offline, locks are named by basename.
    assert_eq!(on_locks, report_totals(&report, |k| k.name.clone()));
    assert_eq!(on_processes, without_locks(&expected));
    assert_eq!(flows, 6);
}

#[test]
fn export_perfetto_names_a_bad_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("e.ndjson");
    std::fs::write(
        &events,
        "{\"event\":\"report\",\"report\":{}}\n{\"event\":\"lock\"}\n",
    )
    .unwrap();
    let out = locktrace()
        .arg("export")
        .arg(&events)
        .args(["--format", "perfetto", "-o"])
        .arg(dir.path().join("x.pftrace"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("line 2: "), "{stderr}");
    assert!(!dir.path().join("x.pftrace").exists());
}
