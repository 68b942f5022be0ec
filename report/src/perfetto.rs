//! Perfetto's protobuf trace format (`.pftrace`, opened by https://ui.perfetto.dev and
//! `trace_processor_shell`): the few messages a lock timeline needs, derived by hand with `prost`
//! (no protoc; field numbers as in perfetto's protos/perfetto/trace/trace_packet.proto and
//! track_event/{track_event,track_descriptor,process_descriptor,debug_annotation}.proto), and a
//! writer that streams packets as they are made.
//!
//! Why protobuf rather than Chrome's JSON trace format: a trace of a long recording is several
//! times smaller and can be appended to packet by packet (a file cut short after any whole packet
//! is still a valid trace, as a JSON array is not); tracks are explicit objects with parents, so a
//! lock file's concurrent holds get child tracks of the lock's track instead of being forced onto
//! one thread-like row (JSON "B"/"E" slices must nest per thread, and async slices are grouped by
//! name and id only); and flows (`flow_ids` / `terminating_flow_ids`) link any two slices on any
//! tracks. Perfetto's JSON support is also documented as legacy, kept for compatibility.
//!
//! The invariants relied on, which [`TraceWriter`] keeps whatever order events come in:
//! - a track's descriptor comes before any event on it;
//! - every packet carries `trusted_packet_sequence_id`, and timestamps never go backwards within a
//!   sequence: each group of events goes to a sequence whose last timestamp is not later than the
//!   group's first (a new sequence when none fits), descriptors to a sequence of their own;
//! - slices on one track nest: that is the caller's to keep (one slice at a time per track).

use std::io::{self, Write};

/// The subset of perfetto's trace protos written here.
pub mod proto {
    /// A whole trace: the file is this message, one packet after another (field 1, repeated).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Trace {
        #[prost(message, repeated, tag = "1")]
        pub packet: Vec<TracePacket>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TracePacket {
        #[prost(uint64, optional, tag = "8")]
        pub timestamp: Option<u64>,
        #[prost(uint32, optional, tag = "10")]
        pub trusted_packet_sequence_id: Option<u32>,
        #[prost(message, optional, tag = "11")]
        pub track_event: Option<TrackEvent>,
        #[prost(uint32, optional, tag = "13")]
        pub sequence_flags: Option<u32>,
        #[prost(message, optional, tag = "60")]
        pub track_descriptor: Option<TrackDescriptor>,
        #[prost(bool, optional, tag = "87")]
        pub first_packet_on_sequence: Option<bool>,
    }

    /// `TracePacket.SequenceFlags.SEQ_INCREMENTAL_STATE_CLEARED`.
    pub const SEQ_INCREMENTAL_STATE_CLEARED: u32 = 1;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TrackDescriptor {
        #[prost(uint64, optional, tag = "1")]
        pub uuid: Option<u64>,
        #[prost(string, optional, tag = "2")]
        pub name: Option<String>,
        #[prost(message, optional, tag = "3")]
        pub process: Option<ProcessDescriptor>,
        #[prost(uint64, optional, tag = "5")]
        pub parent_uuid: Option<u64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProcessDescriptor {
        #[prost(int32, optional, tag = "1")]
        pub pid: Option<i32>,
        #[prost(string, optional, tag = "6")]
        pub process_name: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TrackEvent {
        #[prost(message, repeated, tag = "4")]
        pub debug_annotations: Vec<DebugAnnotation>,
        /// One of the `TYPE_*` constants.
        #[prost(int32, optional, tag = "9")]
        pub r#type: Option<i32>,
        #[prost(uint64, optional, tag = "11")]
        pub track_uuid: Option<u64>,
        #[prost(string, repeated, tag = "22")]
        pub categories: Vec<String>,
        #[prost(string, optional, tag = "23")]
        pub name: Option<String>,
        #[prost(fixed64, repeated, packed = "false", tag = "47")]
        pub flow_ids: Vec<u64>,
        #[prost(fixed64, repeated, packed = "false", tag = "48")]
        pub terminating_flow_ids: Vec<u64>,
    }

    /// `TrackEvent.Type` values.
    pub const TYPE_SLICE_BEGIN: i32 = 1;
    pub const TYPE_SLICE_END: i32 = 2;
    pub const TYPE_INSTANT: i32 = 3;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DebugAnnotation {
        #[prost(uint64, optional, tag = "3")]
        pub uint_value: Option<u64>,
        #[prost(string, optional, tag = "6")]
        pub string_value: Option<String>,
        #[prost(string, optional, tag = "10")]
        pub name: Option<String>,
    }

    impl DebugAnnotation {
        pub fn uint(name: &str, value: u64) -> Self {
            DebugAnnotation {
                name: Some(name.to_owned()),
                uint_value: Some(value),
                string_value: None,
            }
        }

        pub fn string(name: &str, value: &str) -> Self {
            DebugAnnotation {
                name: Some(name.to_owned()),
                uint_value: None,
                string_value: Some(value.to_owned()),
            }
        }
    }
}

use proto::{TracePacket, TrackDescriptor, TrackEvent};

/// The sequence that carries the track descriptors (which have no timestamp).
const DESCRIPTOR_SEQUENCE: u32 = 1;

/// Writes a trace packet by packet: each packet is written whole, as field 1 of [`proto::Trace`],
/// so whatever prefix of packets reached the file is a valid trace.
pub struct TraceWriter<W: Write> {
    out: W,
    /// Event sequences: (id, last timestamp written on it).
    sequences: Vec<(u32, u64)>,
    descriptors_started: bool,
    packets: u64,
}

impl<W: Write> TraceWriter<W> {
    pub fn new(out: W) -> Self {
        TraceWriter {
            out,
            sequences: Vec::new(),
            descriptors_started: false,
            packets: 0,
        }
    }

    /// Declares a track; call before the first event on it.
    pub fn track(&mut self, descriptor: TrackDescriptor) -> io::Result<()> {
        let first = !std::mem::replace(&mut self.descriptors_started, true);
        self.packet(TracePacket {
            trusted_packet_sequence_id: Some(DESCRIPTOR_SEQUENCE),
            track_descriptor: Some(descriptor),
            ..first_on_sequence(first)
        })
    }

    /// Writes events in the given order, which must not go back in time (a slice's begin and end,
    /// say); they share one sequence.
    pub fn events(&mut self, events: Vec<(u64, TrackEvent)>) -> io::Result<()> {
        let Some((first_ts, _)) = events.first() else {
            return Ok(());
        };
        let last_ts = events.iter().map(|(ts, _)| *ts).max().unwrap_or(*first_ts);
        // The sequence that last wrote the latest timestamp not after this group: keeps the
        // number of sequences at the disorder of the input, usually one or two.
        let fit = self
            .sequences
            .iter()
            .enumerate()
            .filter(|(_, (_, last))| *last <= *first_ts)
            .max_by_key(|(_, (_, last))| *last)
            .map(|(i, _)| i);
        let (index, first) = match fit {
            Some(i) => (i, false),
            None => {
                let id = DESCRIPTOR_SEQUENCE + 1 + self.sequences.len() as u32;
                self.sequences.push((id, 0));
                (self.sequences.len() - 1, true)
            }
        };
        let id = self.sequences[index].0;
        self.sequences[index].1 = last_ts;
        for (i, (ts, event)) in events.into_iter().enumerate() {
            self.packet(TracePacket {
                timestamp: Some(ts),
                trusted_packet_sequence_id: Some(id),
                track_event: Some(event),
                ..first_on_sequence(first && i == 0)
            })?;
        }
        Ok(())
    }

    fn packet(&mut self, packet: TracePacket) -> io::Result<()> {
        let body = prost::Message::encode_to_vec(&packet);
        let mut bytes = Vec::with_capacity(body.len() + 11);
        // Trace.packet: field 1, length-delimited.
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut bytes);
        prost::encoding::encode_varint(body.len() as u64, &mut bytes);
        bytes.extend_from_slice(&body);
        self.out.write_all(&bytes)?;
        self.packets += 1;
        Ok(())
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Event sequences opened so far.
    pub fn sequences(&self) -> usize {
        self.sequences.len()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and hands back the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a whole trace back (tests, and anyone checking a file without Perfetto's tools).
pub fn decode(bytes: &[u8]) -> Result<proto::Trace, prost::DecodeError> {
    prost::Message::decode(bytes)
}

fn first_on_sequence(first: bool) -> TracePacket {
    TracePacket {
        first_packet_on_sequence: first.then_some(true),
        sequence_flags: first.then_some(proto::SEQ_INCREMENTAL_STATE_CLEARED),
        ..TracePacket::default()
    }
}

#[cfg(test)]
mod tests {
    use super::proto::*;
    use super::*;

    fn slice(track: u64) -> TrackEvent {
        TrackEvent {
            r#type: Some(TYPE_SLICE_BEGIN),
            track_uuid: Some(track),
            name: Some("s".into()),
            ..TrackEvent::default()
        }
    }

    #[test]
    fn packets_decode_as_one_trace_and_sequences_never_go_back_in_time() {
        let mut w = TraceWriter::new(Vec::new());
        w.track(TrackDescriptor {
            uuid: Some(7),
            name: Some("t".into()),
            ..Default::default()
        })
        .unwrap();
        w.events(vec![(100, slice(7)), (200, slice(7))]).unwrap();
        // Earlier than the first sequence's last: a second sequence.
        w.events(vec![(150, slice(7))]).unwrap();
        w.events(vec![(250, slice(7))]).unwrap();
        assert_eq!(w.sequences(), 2);
        let bytes = w.finish().unwrap();
        let trace = decode(&bytes).unwrap();
        assert_eq!(trace.packet.len(), 5);
        let mut last = std::collections::HashMap::new();
        for p in &trace.packet {
            let seq = p.trusted_packet_sequence_id.unwrap();
            if let Some(ts) = p.timestamp {
                let prev = last.insert(seq, ts).unwrap_or(0);
                assert!(prev <= ts, "sequence {seq} went back: {prev} > {ts}");
            }
        }
        assert_eq!(trace.packet[0].first_packet_on_sequence, Some(true));
    }
}
