//! The embedded queue: table `queue_messages` in the metadata SQLite database (migration 0002),
//! for single-node installs with nothing else to run.
//!
//! A lease is a timestamp, not a lock: receiving pushes `visible_at_ms` out by the lease and
//! stamps a fresh `lease_token`; an expired lease simply makes the row visible again, so no
//! sweeper is needed and a crashed receiver loses nothing. Every later operation on a delivery
//! matches `id AND lease_token`, so a receiver whose message went to someone else after its
//! lease ran out gets [`QueueError::LeaseLost`] instead of acting on a message it no longer owns.
//!
//! Ordering groups (migration 0008): a message enqueued while its group already has one is
//! *parked* (`visible_at_ms` = [`PARKED`]), so receive never sees it; acking a group's head
//! deletes it and, in the same transaction, makes the group's next message (lowest id) visible.
//! So exactly one message per group, its oldest, is ever visible or leased, and ids (never
//! reused, AUTOINCREMENT) are the enqueue order. Retries and lease expiry move only the head's
//! `visible_at_ms`, never its place. Receive itself is unchanged: a parked row is just one that
//! is not visible yet.
//!
//! SQLite-specific: `UPDATE .. RETURNING`, `AS MATERIALIZED` and the unary-`+` planner hint in
//! receive (SQLite ≥ 3.35; sqlx bundles 3.51). Receive is one statement, and SQLite runs writing
//! statements one at a time, so two receivers can never lease the same row.
//!
//! Why it is not ported to PostgreSQL/MySQL: that exclusion comes from SQLite's single writer.
//! Under PostgreSQL's READ COMMITTED two receivers could pick the same rows from their snapshots
//! (it needs `FOR UPDATE SKIP LOCKED`, which refuses the window function the fairness rests on),
//! and MySQL has no `UPDATE .. RETURNING` at all: each would be a new queue, with its own
//! proofs, not a port. Several controllers share a queue through Kafka instead, so
//! `dispatcher.queue = "embedded"` is refused at start unless the database is SQLite.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Row, SqlitePool};

use super::{Delivery, Queue, QueueError, QueueMessage, now_ms};
use crate::store::Store;

/// Epoch-ms source; tests substitute a hand-driven clock to expire leases without sleeping.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

#[derive(Clone)]
pub struct EmbeddedQueue {
    pool: SqlitePool,
    clock: Clock,
}

impl EmbeddedQueue {
    /// A queue in `store`'s database, on the system clock; the database must be SQLite.
    pub fn new(store: &Store) -> Result<Self, QueueError> {
        Self::with_clock(store, Arc::new(now_ms))
    }

    pub fn with_clock(store: &Store, clock: Clock) -> Result<Self, QueueError> {
        match store.sqlite_pool() {
            Some(pool) => Ok(Self { pool: pool.clone(), clock }),
            None => Err(QueueError::NeedsSqlite(store.engine().name())),
        }
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }
}

/// `visible_at_ms` of a message waiting behind its group's head: later than any clock.
pub const PARKED: i64 = i64::MAX;

fn unavailable(e: sqlx::Error) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Delivery ids are `<row id>.<lease token>`: they name one lease of one message.
fn delivery_id(id: i64, token: &str) -> String {
    format!("{id}.{token}")
}

/// The row id and lease token of a delivery id. A malformed id cannot hold a lease.
fn parse_delivery_id(d: &Delivery) -> Result<(i64, &str), QueueError> {
    d.id.split_once('.')
        .and_then(|(id, token)| Some((id.parse().ok()?, token)))
        .ok_or_else(|| QueueError::LeaseLost(d.id.clone()))
}

#[async_trait::async_trait]
impl Queue for EmbeddedQueue {
    async fn enqueue(&self, msg: QueueMessage) -> Result<(), QueueError> {
        let now = self.now();
        // WAL with synchronous=NORMAL (see Store::open_sqlite): committed means it survives a
        // process crash; an OS crash may lose the last moments, as for all metadata.
        let Some(group) = &msg.group else {
            return sqlx::query(
                "INSERT INTO queue_messages (msg_key, body, visible_at_ms, deliveries, lease_token, enqueued_ms) \
                 VALUES (?, ?, ?, 0, NULL, ?)",
            )
            .bind(&msg.key)
            .bind(&msg.body)
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable);
        };
        // One statement, so "does the group have a message?" and the insert cannot be split by
        // another writer (SQLite runs writes one at a time): the first message of a group is
        // visible, every later one parked.
        sqlx::query(
            "INSERT INTO queue_messages (msg_key, body, visible_at_ms, deliveries, lease_token, enqueued_ms, order_group) \
             VALUES (?, ?, CASE WHEN EXISTS (SELECT 1 FROM queue_messages WHERE order_group = ?) THEN ? ELSE ? END, 0, NULL, ?, ?)",
        )
        .bind(&msg.key)
        .bind(&msg.body)
        .bind(group)
        .bind(PARKED)
        .bind(now)
        .bind(now)
        .bind(group)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn receive(&self, max: usize, lease: Duration) -> Result<Vec<Delivery>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now = self.now();
        let token = uuid::Uuid::new_v4().simple().to_string();
        // Fairness: allow each key with visible messages ceil(max / keys) of them, oldest first,
        // and fill the batch layer by layer (every key's first, then second, ...) so that when
        // keys outnumber `max` the oldest heads win.
        //
        // Shaped so the cost follows the number of keys, not the backlog (a flat ROW_NUMBER over
        // every visible row took ~300 ms at 100k messages, holding SQLite's write lock):
        // - keys: distinct keys by an index skip (recursive MIN(msg_key) > previous);
        // - live: those with a visible message (index probe on (msg_key, visible_at_ms));
        // - cut: per live key, the id of its per_key-th visible message (NULL if it has fewer),
        //   MATERIALIZED so it runs once per key, not once per joined row;
        // - picked: the key's visible rows up to that id.
        // In cut and picked the unary `+` keeps the planner off the visibility index: it would
        // read (and sort) every visible row of the key instead of walking (msg_key, id) in order.
        let rows = sqlx::query(
            "UPDATE queue_messages \
             SET visible_at_ms = ?, deliveries = deliveries + 1, lease_token = ? \
             WHERE id IN ( \
               WITH RECURSIVE \
               keys(k) AS ( \
                 SELECT MIN(msg_key) FROM queue_messages \
                 UNION ALL \
                 SELECT (SELECT MIN(msg_key) FROM queue_messages WHERE msg_key > keys.k) FROM keys WHERE keys.k IS NOT NULL), \
               live(k, now) AS ( \
                 SELECT keys.k, params.now FROM keys, (SELECT ? AS now) AS params WHERE keys.k IS NOT NULL \
                 AND EXISTS (SELECT 1 FROM queue_messages WHERE msg_key = keys.k AND visible_at_ms <= params.now)), \
               share(per_key) AS (SELECT (? + COUNT(*) - 1) / COUNT(*) FROM live), \
               cut(k, now, last_id) AS MATERIALIZED ( \
                 SELECT live.k, live.now, (SELECT id FROM queue_messages \
                   WHERE msg_key = live.k AND +visible_at_ms <= live.now ORDER BY id \
                   LIMIT 1 OFFSET (SELECT per_key FROM share) - 1) \
                 FROM live), \
               picked(id, rn) AS ( \
                 SELECT q.id, ROW_NUMBER() OVER (PARTITION BY q.msg_key ORDER BY q.id) \
                 FROM cut JOIN queue_messages q ON q.msg_key = cut.k AND +q.visible_at_ms <= cut.now \
                 AND q.id <= COALESCE(cut.last_id, 9223372036854775807)) \
               SELECT id FROM picked ORDER BY rn, id LIMIT ? \
             ) \
             RETURNING id, msg_key, body, deliveries, enqueued_ms, order_group",
        )
        .bind(now.saturating_add(millis(lease)))
        .bind(&token)
        .bind(now)
        .bind(max as i64)
        .bind(max as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut out = rows
            .iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                let d = Delivery {
                    id: delivery_id(id, &token),
                    key: r.try_get("msg_key")?,
                    body: r.try_get("body")?,
                    deliveries: r.try_get::<i64, _>("deliveries")?.try_into().unwrap_or(u32::MAX),
                    enqueued_ms: r.try_get("enqueued_ms")?,
                    group: r.try_get("order_group")?,
                };
                Ok((id, d))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(unavailable)?;
        // RETURNING order is unspecified; hand them out oldest (lowest id) first.
        out.sort_by_key(|(id, _)| *id);
        Ok(out.into_iter().map(|(_, d)| d).collect())
    }

    async fn ack(&self, d: &Delivery) -> Result<(), QueueError> {
        let (id, token) = parse_delivery_id(d)?;
        let Some(group) = &d.group else {
            let done = sqlx::query("DELETE FROM queue_messages WHERE id = ? AND lease_token = ?")
                .bind(id)
                .bind(token)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
            return if done.rows_affected() == 1 { Ok(()) } else { Err(QueueError::LeaseLost(d.id.clone())) };
        };
        // The head goes and the group's next message becomes visible in one transaction: a crash
        // can leave neither a group with no visible head nor one with two. The DELETE comes
        // first, so the transaction holds the write lock from its first statement.
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let done = sqlx::query("DELETE FROM queue_messages WHERE id = ? AND lease_token = ?")
            .bind(id)
            .bind(token)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        if done.rows_affected() != 1 {
            return Err(QueueError::LeaseLost(d.id.clone()));
        }
        sqlx::query(
            "UPDATE queue_messages SET visible_at_ms = ? \
             WHERE id = (SELECT MIN(id) FROM queue_messages WHERE order_group = ?) AND visible_at_ms = ?",
        )
        .bind(self.now())
        .bind(group)
        .bind(PARKED)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn retry_after(&self, d: &Delivery, delay: Duration) -> Result<(), QueueError> {
        let (id, token) = parse_delivery_id(d)?;
        // Clearing the token ends this lease: the old delivery can no longer ack or extend.
        let done = sqlx::query(
            "UPDATE queue_messages SET visible_at_ms = ?, lease_token = NULL WHERE id = ? AND lease_token = ?",
        )
        .bind(self.now().saturating_add(millis(delay)))
        .bind(id)
        .bind(token)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(QueueError::LeaseLost(d.id.clone())) }
    }

    async fn extend(&self, d: &Delivery, lease: Duration) -> Result<(), QueueError> {
        let (id, token) = parse_delivery_id(d)?;
        // Also succeeds on an expired lease nobody has taken over yet: the work is still ours.
        let done = sqlx::query("UPDATE queue_messages SET visible_at_ms = ? WHERE id = ? AND lease_token = ?")
            .bind(self.now().saturating_add(millis(lease)))
            .bind(id)
            .bind(token)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(QueueError::LeaseLost(d.id.clone())) }
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        let row = sqlx::query("SELECT COUNT(*) FROM queue_messages")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        let n: i64 = row.try_get(0).map_err(unavailable)?;
        Ok(n as u64)
    }

    async fn oldest_enqueued_ms(&self) -> Result<Option<i64>, QueueError> {
        let row = sqlx::query("SELECT MIN(enqueued_ms) FROM queue_messages")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        row.try_get::<Option<i64>, _>(0).map_err(unavailable)
    }
}


#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    const LEASE: Duration = Duration::from_secs(30);

    /// A queue on a fresh database with a hand-driven clock (starts at 1_000_000 ms).
    async fn queue() -> (EmbeddedQueue, Arc<AtomicI64>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("meta.db")).await.unwrap();
        let now = Arc::new(AtomicI64::new(1_000_000));
        let clock = now.clone();
        (EmbeddedQueue::with_clock(&store, Arc::new(move || clock.load(Ordering::SeqCst))).unwrap(), now, dir)
    }

    async fn put(q: &EmbeddedQueue, key: &str, body: &str) {
        q.enqueue(QueueMessage::new(key, body.as_bytes().to_vec())).await.unwrap();
    }

    async fn put_in(q: &EmbeddedQueue, key: &str, group: &str, body: &str) {
        q.enqueue(QueueMessage { group: Some(group.into()), ..QueueMessage::new(key, body.as_bytes().to_vec()) }).await.unwrap();
    }

    fn bodies(ds: &[Delivery]) -> Vec<String> {
        ds.iter().map(|d| String::from_utf8(d.body.clone()).unwrap()).collect()
    }

    #[tokio::test]
    async fn enqueue_receive_ack() {
        let (q, _, _dir) = queue().await;
        put(&q, "f", "a").await;
        put(&q, "f", "b").await;
        assert_eq!(q.depth().await.unwrap(), 2);
        let got = q.receive(10, LEASE).await.unwrap();
        assert_eq!(bodies(&got), ["a", "b"]);
        assert!(got.iter().all(|d| d.deliveries == 1 && d.key == "f" && d.enqueued_ms == 1_000_000));
        // Leased: invisible, but still counted.
        assert!(q.receive(10, LEASE).await.unwrap().is_empty());
        assert_eq!(q.depth().await.unwrap(), 2);
        for d in &got {
            q.ack(d).await.unwrap();
        }
        assert_eq!(q.depth().await.unwrap(), 0);
        assert!(matches!(q.ack(&got[0]).await, Err(QueueError::LeaseLost(_))));
        assert!(q.receive(0, LEASE).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn expired_lease_redelivers_and_the_stale_receiver_loses_it() {
        let (q, now, _dir) = queue().await;
        put(&q, "f", "a").await;
        let first = q.receive(1, Duration::from_millis(100)).await.unwrap().remove(0);
        now.fetch_add(99, Ordering::SeqCst);
        assert!(q.receive(1, LEASE).await.unwrap().is_empty(), "lease still valid");
        // Extending an expired lease nobody took over yet still works...
        now.fetch_add(50, Ordering::SeqCst);
        q.extend(&first, Duration::from_millis(100)).await.unwrap();
        assert!(q.receive(1, LEASE).await.unwrap().is_empty());
        // ...but once it is redelivered, the old delivery is dead for every operation.
        now.fetch_add(100, Ordering::SeqCst);
        let second = q.receive(1, LEASE).await.unwrap().remove(0);
        assert_eq!((second.deliveries, second.body.as_slice()), (2, &b"a"[..]));
        assert_ne!(first.id, second.id);
        assert!(matches!(q.ack(&first).await, Err(QueueError::LeaseLost(_))));
        assert!(matches!(q.retry_after(&first, Duration::ZERO).await, Err(QueueError::LeaseLost(_))));
        assert!(matches!(q.extend(&first, LEASE).await, Err(QueueError::LeaseLost(_))));
        q.ack(&second).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), 0);
        let bogus = Delivery { id: "nope".into(), ..second };
        assert!(matches!(q.ack(&bogus).await, Err(QueueError::LeaseLost(_))));
    }

    #[tokio::test]
    async fn retry_after_hides_then_shows() {
        let (q, now, _dir) = queue().await;
        put(&q, "f", "a").await;
        let d = q.receive(1, LEASE).await.unwrap().remove(0);
        q.retry_after(&d, Duration::from_secs(5)).await.unwrap();
        // The retried delivery's lease is over.
        assert!(matches!(q.ack(&d).await, Err(QueueError::LeaseLost(_))));
        now.fetch_add(4_999, Ordering::SeqCst);
        assert!(q.receive(1, LEASE).await.unwrap().is_empty());
        now.fetch_add(1, Ordering::SeqCst);
        let again = q.receive(1, LEASE).await.unwrap().remove(0);
        assert_eq!(again.deliveries, 2);
        q.retry_after(&again, Duration::ZERO).await.unwrap();
        assert_eq!(q.receive(1, LEASE).await.unwrap()[0].deliveries, 3);
    }

    #[tokio::test]
    async fn receive_is_fair_across_keys() {
        let (q, _, _dir) = queue().await;
        for i in 0..1000 {
            put(&q, "hot", &format!("hot{i}")).await;
        }
        for i in 0..3 {
            put(&q, "cold", &format!("cold{i}")).await;
        }
        // Two keys, max 10: at most 5 per key, oldest first within each.
        let got = bodies(&q.receive(10, LEASE).await.unwrap());
        assert_eq!(got, ["hot0", "hot1", "hot2", "hot3", "hot4", "cold0", "cold1", "cold2"]);
        // Only one key left with visible messages: it may fill the batch.
        assert_eq!(q.receive(10, LEASE).await.unwrap().len(), 10);
        // More keys than max: one each, the oldest heads first.
        for k in ["k1", "k2", "k3"] {
            put(&q, k, k).await;
        }
        let got = bodies(&q.receive(2, LEASE).await.unwrap());
        assert_eq!(got, ["hot15", "k1"]);
    }

    #[tokio::test]
    async fn receive_takes_the_oldest_visible_of_a_key() {
        let (q, _, _dir) = queue().await;
        for b in ["a1", "a2", "a3", "a4"] {
            put(&q, "a", b).await;
        }
        let a1 = q.receive(1, LEASE).await.unwrap();
        assert_eq!(bodies(&a1), ["a1"]);
        // The leased head is skipped, not counted against the key's share.
        assert_eq!(bodies(&q.receive(2, LEASE).await.unwrap()), ["a2", "a3"]);
        // A message put back keeps its place: older than what was enqueued after it.
        q.retry_after(&a1[0], Duration::ZERO).await.unwrap();
        assert_eq!(bodies(&q.receive(10, LEASE).await.unwrap()), ["a1", "a4"]);
        assert!(q.receive(10, LEASE).await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_receivers_get_disjoint_messages_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("meta.db")).await.unwrap();
        let q = EmbeddedQueue::new(&store).unwrap();
        for i in 0..500 {
            put(&q, &format!("f{}", i % 7), &i.to_string()).await;
        }
        let receivers: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let got = q.receive(10, LEASE).await.unwrap();
                        if got.is_empty() {
                            return mine;
                        }
                        for d in got {
                            q.ack(&d).await.unwrap();
                            mine.push(String::from_utf8(d.body).unwrap());
                        }
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for r in receivers {
            all.extend(r.await.unwrap());
        }
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!((all.len(), unique.len()), (500, 500));
        assert_eq!(q.depth().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_group_hands_out_its_oldest_message_only_and_the_next_after_the_ack() {
        let (q, now, _dir) = queue().await;
        put_in(&q, "f", "f/k", "k1").await;
        put(&q, "f", "free1").await;
        put_in(&q, "f", "f/k", "k2").await;
        put_in(&q, "f", "f/j", "j1").await;
        put_in(&q, "f", "f/k", "k3").await;
        put(&q, "f", "free2").await;
        assert_eq!(q.depth().await.unwrap(), 6, "parked messages count");
        let got = q.receive(10, LEASE).await.unwrap();
        assert_eq!(bodies(&got), ["k1", "free1", "j1", "free2"]);
        assert_eq!((got[0].group.as_deref(), got[1].group.as_deref()), (Some("f/k"), None));
        let (k1, j1) = (got[0].clone(), got[2].clone());
        assert!(q.receive(10, LEASE).await.unwrap().is_empty(), "k2 waits behind k1");
        // A retry keeps the head in place: k1 comes back, k2 still waits.
        q.retry_after(&k1, Duration::from_secs(5)).await.unwrap();
        now.fetch_add(5_000, Ordering::SeqCst);
        let k1b = q.receive(10, LEASE).await.unwrap();
        assert_eq!((bodies(&k1b), k1b[0].deliveries), (vec!["k1".to_string()], 2));
        // So does an expired lease.
        now.fetch_add(LEASE.as_millis() as i64, Ordering::SeqCst);
        // (Every other lease of the first receive has run out too: they all come back.)
        let again = q.receive(10, LEASE).await.unwrap();
        assert_eq!(bodies(&again), ["k1", "free1", "j1", "free2"]);
        let k1c = &again[..1];
        assert_eq!(k1c[0].deliveries, 3);
        // A stale lease of the head can neither ack it nor release the next.
        assert!(matches!(q.ack(&k1b[0]).await, Err(QueueError::LeaseLost(_))));
        assert!(q.receive(10, LEASE).await.unwrap().iter().all(|d| d.body != b"k2"));
        // Acked: the group's next message is visible at once.
        q.ack(&k1c[0]).await.unwrap();
        let k2 = q.receive(10, LEASE).await.unwrap();
        assert_eq!(bodies(&k2), ["k2"]);
        // Enqueued while the group has a leased head: parked behind it.
        put_in(&q, "f", "f/k", "k4").await;
        q.ack(&k2[0]).await.unwrap();
        let k3 = q.receive(10, LEASE).await.unwrap();
        assert_eq!(bodies(&k3), ["k3"]);
        q.ack(&k3[0]).await.unwrap();
        let k4 = q.receive(10, LEASE).await.unwrap();
        assert_eq!(bodies(&k4), ["k4"]);
        q.ack(&k4[0]).await.unwrap();
        // An emptied group starts over: its next message is visible at once.
        put_in(&q, "f", "f/k", "k5").await;
        assert_eq!(bodies(&q.receive(10, LEASE).await.unwrap()), ["k5"]);
        // j1's first lease ended when it was delivered again.
        assert!(matches!(q.ack(&j1).await, Err(QueueError::LeaseLost(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_receivers_take_each_group_in_order_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("meta.db")).await.unwrap();
        let q = EmbeddedQueue::new(&store).unwrap();
        for i in 0..200 {
            put_in(&q, &format!("f{}", i % 3), &format!("g{}", i % 5), &format!("{}:{i}", i % 5)).await;
        }
        // Per group: is a message out, and the order in which they were acked.
        let out = Arc::new(std::sync::Mutex::new(HashSet::new()));
        let acked = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, Vec<usize>>::new()));
        let receivers: Vec<_> = (0..4)
            .map(|_| {
                let (q, out, acked) = (q.clone(), out.clone(), acked.clone());
                tokio::spawn(async move {
                    let mut idle = 0;
                    while idle < 20 {
                        let got = q.receive(10, LEASE).await.unwrap();
                        if got.is_empty() {
                            idle += 1;
                            tokio::task::yield_now().await;
                            continue;
                        }
                        idle = 0;
                        for d in got {
                            let g = d.group.clone().unwrap();
                            assert!(out.lock().unwrap().insert(g.clone()), "two messages of {g} out at once");
                            tokio::task::yield_now().await;
                            let n: usize = String::from_utf8(d.body.clone()).unwrap().split(':').nth(1).unwrap().parse().unwrap();
                            acked.lock().unwrap().entry(g.clone()).or_default().push(n);
                            out.lock().unwrap().remove(&g);
                            q.ack(&d).await.unwrap();
                        }
                    }
                })
            })
            .collect();
        for r in receivers {
            r.await.unwrap();
        }
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        for g in 0..5 {
            let want: Vec<usize> = (0..200).filter(|i| i % 5 == g).collect();
            assert_eq!(acked[&format!("g{g}")], want, "group g{g} in enqueue order");
        }
        assert_eq!(q.depth().await.unwrap(), 0);
    }
}
