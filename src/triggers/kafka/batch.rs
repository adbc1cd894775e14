//! What a Kafka trigger's function receives, and how messages are cut into batches. Pure.
//!
//! **Events** (fc-triggers.md §3.3): each message becomes a CloudEvent
//! `{"specversion":"1.0","id","source":"acs:alikafka","type":"alikafka:Topic:Message","subject",
//! "datacontenttype","time","aliyunaccountid","data":{"topic","partition","offset","timestamp",
//! "headers":{"headers":[{"key","value"}],"isReadOnly":false},"key","value"}}`, or with
//! `eventSchema: RawData` only its `data`; a batch is the JSON array of them. `key` and `value`
//! are strings (bytes that are not UTF-8 are replaced, U+FFFD), `null` when absent; `id` is the
//! same for a message on every delivery (a UUID made from topic, partition and offset), so a
//! function can tell a re-delivery.
//!
//! **Windows** (§3.2): a batch is pushed when it holds `CountBasedWindow` messages, when
//! `TimeBasedWindow` seconds have passed since its first message (0: as soon as no more messages
//! are at hand), or when the next message would take its JSON array past the payload limit (32
//! MB sync, 128 KB async: the batch goes without it, and the message starts the next one). A
//! single message whose event alone is over the limit makes a batch of one that cannot be
//! delivered (its attempts fail; see the engine for what follows).
//!
//! **Per-key ordering**: batches are cut per key (a batch holds one key's messages, in the
//! order read), so different keys can run in parallel; see [`super::order`].

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::Digest;

use crate::model::trigger::kafka::EventSchema;

/// What batches are cut by; `None` for all when there is no per-key ordering.
pub type Group = Option<Vec<u8>>;

/// Where the events come from: the same for every message of a trigger.
#[derive(Debug, Clone)]
pub struct Source {
    pub topic: String,
    /// `acs:alikafka_<InstanceId, or "nubis">:topic:<topic>`.
    pub subject: String,
    pub account_id: String,
    pub schema: EventSchema,
}

impl Source {
    pub fn new(topic: &str, instance_id: Option<&str>, account_id: &str, schema: EventSchema) -> Self {
        let instance = instance_id.filter(|i| !i.is_empty()).unwrap_or("nubis");
        Self { topic: topic.to_string(), subject: format!("acs:alikafka_{instance}:topic:{topic}"), account_id: account_id.to_string(), schema }
    }
}

/// One consumed message, owned: what the function gets (`event`) and what a dead letter
/// carries (the raw key, value and headers).
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    /// The assignment of the partition it was read under (a revoked partition's records are
    /// not committed by this consumer).
    pub generation: u64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Epoch ms (the message's timestamp), if it has one.
    pub timestamp_ms: Option<i64>,
    /// This message's element of the batch's JSON array.
    pub event: Vec<u8>,
}

impl Record {
    /// Build the record and its event.
    pub fn new(
        src: &Source,
        partition: i32,
        offset: i64,
        generation: u64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Vec<(String, Option<Vec<u8>>)>,
        timestamp_ms: Option<i64>,
    ) -> Self {
        let event = event(src, partition, offset, key, value, &headers, timestamp_ms);
        Self { partition, offset, generation, key: key.map(<[u8]>::to_vec), value: value.map(<[u8]>::to_vec), headers, timestamp_ms, event }
    }

    /// Bytes held for it (counted against `kafka_triggers.max_unsettled_bytes`).
    pub fn cost(&self) -> usize {
        self.event.len() + self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len)
    }
}

#[derive(Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: String,
    source: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    subject: &'a str,
    datacontenttype: &'static str,
    time: String,
    aliyunaccountid: &'a str,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    headers: DataHeaders<'a>,
    key: Option<Cow<'a, str>>,
    value: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DataHeaders<'a> {
    headers: Vec<DataHeader<'a>>,
    is_read_only: bool,
}

#[derive(Serialize)]
struct DataHeader<'a> {
    key: &'a str,
    value: Option<Cow<'a, str>>,
}

/// A UUID-shaped id, the same for a message whenever it is read.
fn event_id(topic: &str, partition: i32, offset: i64) -> String {
    let digest = sha2::Sha256::digest(format!("{topic}/{partition}/{offset}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Uuid::from_bytes(bytes).to_string()
}

/// The element of the batch array for one message (fc-triggers.md §3.3).
pub fn event(
    src: &Source,
    partition: i32,
    offset: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(String, Option<Vec<u8>>)],
    timestamp_ms: Option<i64>,
) -> Vec<u8> {
    let data = Data {
        topic: &src.topic,
        partition,
        offset,
        timestamp: timestamp_ms,
        headers: DataHeaders {
            headers: headers.iter().map(|(k, v)| DataHeader { key: k, value: v.as_deref().map(String::from_utf8_lossy) }).collect(),
            is_read_only: false,
        },
        key: key.map(String::from_utf8_lossy),
        value: value.map(String::from_utf8_lossy),
    };
    if src.schema == EventSchema::RawData {
        return serde_json::to_vec(&data).expect("event serializes");
    }
    let time = timestamp_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_else(chrono::Utc::now)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let e = CloudEvent {
        specversion: "1.0",
        id: event_id(&src.topic, partition, offset),
        source: "acs:alikafka",
        kind: "alikafka:Topic:Message",
        subject: &src.subject,
        datacontenttype: "application/json; charset=utf-8",
        time,
        aliyunaccountid: &src.account_id,
        data,
    };
    serde_json::to_vec(&e).expect("event serializes")
}

/// Messages pushed to the function together, in the order read.
#[derive(Debug)]
pub struct Batch {
    pub group: Group,
    pub records: Vec<Record>,
    /// Size of the JSON array.
    pub bytes: usize,
}

impl Batch {
    fn new(group: Group) -> Self {
        Self { group, records: Vec::new(), bytes: 2 }
    }

    /// The array's size with `r` added.
    fn bytes_with(&self, r: &Record) -> usize {
        self.bytes + r.event.len() + usize::from(!self.records.is_empty())
    }

    fn push(&mut self, r: Record) {
        self.bytes = self.bytes_with(&r);
        self.records.push(r);
    }

    /// The function's event: the JSON array of the messages' events.
    pub fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes);
        out.push(b'[');
        for (i, r) in self.records.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&r.event);
        }
        out.push(b']');
        out
    }

    pub fn cost(&self) -> usize {
        self.records.iter().map(Record::cost).sum()
    }

    /// Drop the records of `partition` (revoked); returns (messages, bytes) dropped.
    pub fn drop_partition(&mut self, partition: i32) -> (usize, usize) {
        let (mut n, mut cost) = (0, 0);
        let mut kept = Batch::new(self.group.take());
        for r in std::mem::take(&mut self.records) {
            if r.partition == partition {
                n += 1;
                cost += r.cost();
            } else {
                kept.push(r);
            }
        }
        *self = kept;
        (n, cost)
    }
}

/// The three windows of a trigger.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// `CountBasedWindow`.
    pub count: usize,
    /// `TimeBasedWindow`.
    pub time: Duration,
    /// The payload limit of the delivery (sync or async).
    pub max_bytes: usize,
}

struct Open {
    batch: Batch,
    /// Tells this open batch from an earlier one of the same group in `order`.
    seq: u64,
}

/// Cuts the messages read into batches.
pub struct Batcher {
    w: Windows,
    by_key: bool,
    open: HashMap<Group, Open>,
    /// Open batches by when their first message came (earliest first; entries of batches
    /// already pushed are skipped).
    order: VecDeque<(Instant, Group, u64)>,
    seq: u64,
}

impl Batcher {
    /// `by_key`: one batch per message key (per-key ordering).
    pub fn new(w: Windows, by_key: bool) -> Self {
        Self { w, by_key, open: HashMap::new(), order: VecDeque::new(), seq: 0 }
    }

    /// Add a message read at `now`; batches it completes go to `out`.
    pub fn add(&mut self, r: Record, now: Instant, out: &mut Vec<Batch>) {
        let group = if self.by_key { Some(r.key.clone().unwrap_or_default()) } else { None };
        if let Some(o) = self.open.get(&group)
            && o.batch.bytes_with(&r) > self.w.max_bytes
        {
            out.push(self.open.remove(&group).expect("present").batch);
        }
        let o = self.open.entry(group.clone()).or_insert_with(|| {
            self.seq += 1;
            self.order.push_back((now, group.clone(), self.seq));
            Open { batch: Batch::new(group.clone()), seq: self.seq }
        });
        o.batch.push(r);
        // Full, or a single message already over the limit (pushed to fail on its own).
        if o.batch.records.len() >= self.w.count || o.batch.bytes > self.w.max_bytes {
            out.push(self.open.remove(&group).expect("present").batch);
        }
    }

    /// Batches whose time window has passed at `now` go to `out`.
    pub fn due(&mut self, now: Instant, out: &mut Vec<Batch>) {
        while let Some(deadline) = self.next_deadline() {
            if deadline > now {
                break;
            }
            let (_, group, _) = self.order.pop_front().expect("a deadline has an entry");
            out.push(self.open.remove(&group).expect("live entry").batch);
        }
    }

    /// When the earliest open batch's time window ends.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some((opened, group, seq)) = self.order.front() {
            if self.open.get(group).is_some_and(|o| o.seq == *seq) {
                return Some(*opened + self.w.time);
            }
            self.order.pop_front();
        }
        None
    }

    /// Forget the records of a revoked partition; returns (messages, bytes) dropped.
    pub fn drop_partition(&mut self, partition: i32) -> (usize, usize) {
        let (mut n, mut cost) = (0, 0);
        self.open.retain(|_, o| {
            let (dn, dc) = o.batch.drop_partition(partition);
            n += dn;
            cost += dc;
            !o.batch.records.is_empty()
        });
        (n, cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(schema: EventSchema) -> Source {
        Source::new("logs", None, "1000000000000000", schema)
    }

    fn rec(offset: i64, key: &str, value: &str) -> Record {
        Record::new(&src(EventSchema::RawData), 0, offset, 1, Some(key.as_bytes()), Some(value.as_bytes()), vec![], Some(1_655_952_591_589))
    }

    fn offsets(b: &Batch) -> Vec<i64> {
        b.records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn cloud_events_have_fcs_shape_and_raw_data_is_the_data() {
        let headers = vec![("trace".to_string(), Some(b"t1".to_vec())), ("empty".to_string(), None)];
        let e = event(&src(EventSchema::CloudEvents), 7, 25, Some(b"keytest"), Some(b"hello kafka msg"), &headers, Some(1_655_952_591_589));
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!((v["source"].as_str(), v["type"].as_str()), (Some("acs:alikafka"), Some("alikafka:Topic:Message")));
        assert_eq!(v["subject"], "acs:alikafka_nubis:topic:logs");
        assert_eq!(v["time"], "2022-06-23T02:49:51.589Z");
        assert_eq!(v["aliyunaccountid"], "1000000000000000");
        assert_eq!(v["datacontenttype"], "application/json; charset=utf-8");
        assert_eq!(v["id"].as_str().unwrap().len(), 36);
        let again = event(&src(EventSchema::CloudEvents), 7, 25, None, None, &[], None);
        let again: serde_json::Value = serde_json::from_slice(&again).unwrap();
        assert_eq!(again["id"], v["id"], "the id is the message's, whatever else");
        assert_eq!(
            v["data"],
            serde_json::json!({"topic": "logs", "partition": 7, "offset": 25, "timestamp": 1_655_952_591_589i64,
                "headers": {"headers": [{"key": "trace", "value": "t1"}, {"key": "empty", "value": null}], "isReadOnly": false},
                "key": "keytest", "value": "hello kafka msg"})
        );
        let raw = event(&src(EventSchema::RawData), 7, 25, Some(b"keytest"), Some(b"hello kafka msg"), &headers, Some(1_655_952_591_589));
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&raw).unwrap(), v["data"]);
        let subject = Source::new("t", Some("alikafka_pre-1"), "1", EventSchema::CloudEvents).subject;
        assert_eq!(subject, "acs:alikafka_alikafka_pre-1:topic:t");
    }

    #[test]
    fn batches_are_cut_by_count_and_by_time() {
        let t0 = Instant::now();
        let mut b = Batcher::new(Windows { count: 3, time: Duration::from_secs(2), max_bytes: 1 << 20 }, false);
        let mut out = Vec::new();
        for o in 0..7 {
            b.add(rec(o, "k", "v"), t0, &mut out);
        }
        assert_eq!(out.iter().map(offsets).collect::<Vec<_>>(), [vec![0, 1, 2], vec![3, 4, 5]]);
        out.clear();
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_secs(2)));
        b.due(t0 + Duration::from_millis(1999), &mut out);
        assert!(out.is_empty());
        b.due(t0 + Duration::from_secs(2), &mut out);
        assert_eq!(out.iter().map(offsets).collect::<Vec<_>>(), [vec![6]]);
        assert_eq!(b.next_deadline(), None);
        // The payload is the JSON array of the events.
        let p: serde_json::Value = serde_json::from_slice(&out[0].payload()).unwrap();
        assert_eq!(p[0]["offset"], 6);
        assert_eq!(out[0].payload().len(), out[0].bytes);
    }

    #[test]
    fn a_batch_that_would_pass_the_size_limit_is_split() {
        // FC's example: 100 messages of 2 KB, pushed async (128 KB): 64 and 36... here, sizes
        // of our own events: whatever fits, then the rest.
        let value = "x".repeat(2000);
        let one = rec(0, "k", &value).event.len();
        let max = 128 * 1024;
        let per_batch = (max - 2 + 1) / (one + 1);
        let mut b = Batcher::new(Windows { count: 10_000, time: Duration::from_secs(3), max_bytes: max }, false);
        let mut out = Vec::new();
        let t0 = Instant::now();
        for o in 0..100 {
            b.add(rec(o, "k", &value), t0, &mut out);
        }
        b.due(t0 + Duration::from_secs(3), &mut out);
        let sizes: Vec<usize> = out.iter().map(|b| b.records.len()).collect();
        assert_eq!(sizes, [per_batch, 100 - per_batch]);
        assert!(out.iter().all(|b| b.payload().len() <= max && b.payload().len() == b.bytes));
        // A message too big on its own is a batch of its own, over the limit.
        let mut b = Batcher::new(Windows { count: 10, time: Duration::from_secs(3), max_bytes: 500 }, false);
        out.clear();
        b.add(rec(0, "k", "small"), t0, &mut out);
        b.add(rec(1, "k", &value), t0, &mut out);
        assert_eq!(out.iter().map(|b| (offsets(b), b.bytes > 500)).collect::<Vec<_>>(), [(vec![0], false), (vec![1], true)]);
    }

    #[test]
    fn by_key_each_batch_holds_one_key_in_order() {
        let t0 = Instant::now();
        let mut b = Batcher::new(Windows { count: 2, time: Duration::from_secs(1), max_bytes: 1 << 20 }, true);
        let mut out = Vec::new();
        for (o, k) in ["a", "b", "a", "c", "b", "a"].iter().enumerate() {
            b.add(rec(o as i64, k, "v"), t0 + Duration::from_millis(o as u64), &mut out);
        }
        let cut = |out: &[Batch]| out.iter().map(|b| (b.group.clone().unwrap(), offsets(b))).collect::<Vec<_>>();
        assert_eq!(cut(&out), [(b"a".to_vec(), vec![0, 2]), (b"b".to_vec(), vec![1, 4])]);
        out.clear();
        b.due(t0 + Duration::from_secs(2), &mut out);
        // In the order their first messages came.
        assert_eq!(cut(&out), [(b"c".to_vec(), vec![3]), (b"a".to_vec(), vec![5])]);
    }

    #[test]
    fn a_revoked_partition_leaves_the_open_batches() {
        let t0 = Instant::now();
        let mut b = Batcher::new(Windows { count: 10, time: Duration::from_secs(1), max_bytes: 1 << 20 }, false);
        let mut out = Vec::new();
        let mut r = rec(0, "k", "v");
        r.partition = 1;
        b.add(r, t0, &mut out);
        b.add(rec(5, "k", "v"), t0, &mut out);
        assert_eq!(b.drop_partition(1).0, 1);
        b.due(t0 + Duration::from_secs(1), &mut out);
        assert_eq!(out.iter().map(offsets).collect::<Vec<_>>(), [vec![5]]);
        assert_eq!(out[0].bytes, out[0].payload().len());
    }
}
