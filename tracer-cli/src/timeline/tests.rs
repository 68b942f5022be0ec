use std::collections::HashMap;

use locktrace_report::perfetto::{
    decode,
    proto::{TYPE_INSTANT, TYPE_SLICE_BEGIN, TYPE_SLICE_END},
};

use super::*;

/// Three lines of `record --format ndjson`: pid 10 holds write 0..3990 ns; pids 20 and 21 wait
/// for read from 100 and 200 and are granted at 4000 and 4100, then hold it together.
const EVENTS: &str = r#"
{"event":"lock","start_ns":0,"end_ns":10,"pid":10,"tid":10,"comm":"w","fd":3,"cmd":7,"lock_type":1,"ret":0,"dev":2049,"ino":42,"name":"layers.lock","owner":1}
{"event":"lock","start_ns":100,"end_ns":4000,"pid":20,"tid":22,"comm":"r","fd":3,"cmd":7,"lock_type":0,"ret":0,"dev":2049,"ino":42,"name":"layers.lock","owner":2,"blocked_by":[10]}
{"event":"release_close","start_ns":3990,"end_ns":3990,"pid":10,"tid":10,"comm":"w","fd":3,"cmd":0,"lock_type":2,"ret":0,"dev":2049,"ino":42,"name":"layers.lock","owner":1}
{"event":"lock","start_ns":200,"end_ns":4100,"pid":21,"tid":21,"comm":"r","fd":3,"cmd":7,"lock_type":0,"ret":0,"dev":2049,"ino":42,"name":"layers.lock","owner":3}
{"event":"release_exit","start_ns":5000,"end_ns":5000,"pid":21,"tid":21,"comm":"r","fd":3,"cmd":0,"lock_type":2,"ret":0,"dev":2049,"ino":42,"name":"layers.lock","owner":3}
{"event":"release_exit","start_ns":6000,"end_ns":6000,"pid":20,"tid":20,"comm":"r","fd":3,"cmd":0,"lock_type":2,"ret":0,"dev":2049,"ino":42,"name":"layers.lock","owner":2}
{"event":"report","report":{}}
"#;

#[test]
fn overlapping_holds_get_lanes_and_flows_run_from_release_to_grant() {
    let (bytes, stats) = from_ndjson(EVENTS.as_bytes(), Vec::new(), None).unwrap();
    assert_eq!(stats.slices, 6);
    // Pid 21's wait started at 200, before pid 20 was granted, so 10 blocked both.
    assert_eq!((stats.flows, stats.flows_lost), (2, 0));
    let trace = decode(&bytes).unwrap();
    let mut names = HashMap::new();
    let mut parents = HashMap::new();
    for p in &trace.packet {
        if let Some(d) = &p.track_descriptor {
            names.insert(d.uuid.unwrap(), d.name.clone().unwrap_or_default());
            parents.insert(d.uuid.unwrap(), d.parent_uuid);
        }
    }
    // Every slice nests: one open slice at a time per track, ends after begins.
    let mut open: HashMap<u64, u64> = HashMap::new();
    let mut packets: Vec<_> = trace
        .packet
        .iter()
        .filter(|p| p.track_event.is_some())
        .collect();
    packets.sort_by_key(|p| p.timestamp);
    let mut read_holds = Vec::new();
    let (mut out, mut into) = (Vec::new(), Vec::new());
    for p in packets {
        let e = p.track_event.as_ref().unwrap();
        let track = e.track_uuid.unwrap();
        let ts = p.timestamp.unwrap();
        match e.r#type.unwrap() {
            TYPE_SLICE_BEGIN => {
                assert!(open.insert(track, ts).is_none(), "overlap on {track}");
                if e.name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("read hold: r"))
                {
                    read_holds.push(track);
                }
                into.extend(e.terminating_flow_ids.iter().map(|f| (*f, ts)));
            }
            TYPE_SLICE_END => assert!(open.remove(&track).unwrap() <= ts),
            TYPE_INSTANT => {}
            other => panic!("type {other}"),
        }
        // From the holder's hold itself when it was still open as the wait ended (events out of
        // order), else from a release instant on its lane.
        if matches!(e.r#type, Some(TYPE_SLICE_END | TYPE_INSTANT)) {
            out.extend(e.flow_ids.iter().map(|f| (*f, ts)));
        }
        match e.r#type.unwrap() {
            TYPE_SLICE_BEGIN | TYPE_SLICE_END | TYPE_INSTANT => {}
            other => panic!("type {other}"),
        }
    }
    assert!(open.is_empty());
    // The two read holds overlap (4100..5000): two lanes named holds under layers.lock.
    read_holds.sort();
    read_holds.dedup();
    assert_eq!(read_holds.len(), 2);
    for lane in read_holds {
        assert_eq!(names[&lane], "holds");
        assert_eq!(names[&parents[&lane].unwrap()], "layers.lock");
    }
    out.sort();
    into.sort();
    assert_eq!(out, [(1, 3990), (2, 3990)]);
    assert_eq!(into, [(1, 4000), (2, 4100)]);
}

#[test]
fn a_bad_line_is_named_by_its_number() {
    let bad = "{\"event\":\"report\"}\n{\"event\":\"lock\",\"start_ns\":1}\n";
    let e = from_ndjson(bad.as_bytes(), Vec::new(), None).unwrap_err();
    assert!(e.to_string().starts_with("line 2: "), "{e}");
    let old = EVENTS.lines().nth(1).unwrap().replace(",\"owner\":1", "");
    let e = from_ndjson(old.as_bytes(), Vec::new(), None).unwrap_err();
    assert!(e.to_string().starts_with("line 1: no \"owner\""), "{e}");
    let e = from_ndjson("[1,2]\n".as_bytes(), Vec::new(), None).unwrap_err();
    assert!(e.to_string().starts_with("line 1: no \"event\""), "{e}");
    let e = from_ndjson("{\n".as_bytes(), Vec::new(), None).unwrap_err();
    assert!(e.to_string().starts_with("line 1: not JSON"), "{e}");
}
