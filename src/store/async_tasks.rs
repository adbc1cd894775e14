//! Async task records (migration 0002); the configs are in `async_configs.rs`.
//!
//! Tasks are the durable truth of async invocations; the queue only carries pointers to them.
//! Status changes go through [`Store::transition_task`], a guarded compare-and-set that also
//! appends to the task's event history in the same statement, so the dispatcher and
//! StopAsyncTask can race without losing an event or resurrecting a stopped task.
//!
//! Portability: the SQL is shared by the engines except `transition_task`'s JSON append (one
//! statement per engine, each with the same guard and bind order). Optional filters are
//! `(? IS NULL OR col = ?)` so each query stays one `&'static str`; ranges and cursors use
//! sentinels instead, so they remain index ranges.

use super::sql::{Engine, sql, sql_per_engine};
use super::{Db, Store, StoreError, on_db, to_json};
use crate::model::async_task::{AsyncTask, TaskEvent, TaskStatus};

/// ListAsyncTasks filters and page position.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    pub function: String,
    pub qualifier: Option<String>,
    pub status: Option<TaskStatus>,
    /// Task id prefix: exact, case-sensitive, no wildcards.
    pub prefix: Option<String>,
    /// Inclusive range on `created_ms`.
    pub started_from_ms: Option<i64>,
    pub started_to_ms: Option<i64>,
    pub limit: u32,
    /// `(created_ms, task_id)` of the last row of the previous page.
    pub after: Option<(i64, String)>,
    pub descending: bool,
    /// When false, `payload` comes back empty (it can be large and List rarely shows it).
    pub include_payload: bool,
}

/// One status change; `None` fields are left as they are.
#[derive(Debug, Clone, Default)]
pub struct TaskChange {
    /// The new status (also the status of the appended event). `None` keeps the current one.
    pub status: Option<TaskStatus>,
    pub event_detail: String,
    /// The event's timestamp, epoch ms.
    pub at_ms: i64,
    pub started_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub already_retried_times: Option<u32>,
    pub return_payload: Option<Vec<u8>>,
    pub error_message: Option<String>,
    pub instance_id: Option<String>,
    pub destination_status: Option<String>,
    /// A second guard: the task must still have exactly this many events. Two contenders that
    /// read the same snapshot cannot then both win (each change appends an event).
    pub expected_events: Option<u32>,
}

#[derive(sqlx::FromRow)]
struct TaskRow {
    function_name: String,
    task_id: String,
    qualifier: String,
    request_id: String,
    status: String,
    return_payload: Option<Vec<u8>>,
    error_message: Option<String>,
    already_retried_times: i64,
    destination_status: Option<String>,
    instance_id: Option<String>,
    created_ms: i64,
    started_ms: Option<i64>,
    end_ms: Option<i64>,
    events: String,
    ordering_key: Option<String>,
    /// NULL when the listing did not ask for payloads.
    payload: Option<Vec<u8>>,
}

macro_rules! task_columns {
    () => {
        "function_name, task_id, qualifier, request_id, status, return_payload, error_message, \
         already_retried_times, destination_status, instance_id, created_ms, started_ms, end_ms, events, ordering_key"
    };
}

/// ListAsyncTasks in one direction; `$cmp` is the cursor comparison matching `$dir`.
/// The leading `?` chooses whether the payload is read at all.
macro_rules! list_tasks_sql {
    ($cmp:literal, $dir:literal) => {
        concat!(
            "SELECT ",
            task_columns!(),
            ", CASE WHEN ? THEN payload ELSE NULL END AS payload FROM async_tasks \
             WHERE function_name = ? AND created_ms >= ? AND created_ms <= ? \
             AND (created_ms, task_id) ",
            $cmp,
            " (?, ?) \
             AND (? IS NULL OR qualifier = ?) AND (? IS NULL OR status = ?) \
             AND (? IS NULL OR substr(task_id, 1, ?) = ?) \
             ORDER BY created_ms ",
            $dir,
            ", task_id ",
            $dir,
            " LIMIT ?"
        )
    };
}

/// The field changes of `transition_task`, the same on every engine; `events = ...` follows.
macro_rules! transition_set {
    () => {
        "UPDATE async_tasks SET \
         status = COALESCE(?, status), \
         started_ms = COALESCE(?, started_ms), \
         end_ms = COALESCE(?, end_ms), \
         already_retried_times = COALESCE(?, already_retried_times), \
         return_payload = COALESCE(?, return_payload), \
         error_message = COALESCE(?, error_message), \
         instance_id = COALESCE(?, instance_id), \
         destination_status = COALESCE(?, destination_status), "
    };
}

impl Store {
    /// A task already present under (function, task id) is [`StoreError::AlreadyExists`]:
    /// that is how task-mode deduplicates by task id.
    pub async fn insert_task(&self, t: &AsyncTask) -> Result<(), StoreError> {
        let events = to_json(&t.events);
        on_db!(self, |pool, e| {
            sqlx::query(
                sql!("INSERT INTO async_tasks (", task_columns!(), ", payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
                    .of(e),
            )
            .bind(&t.function_name)
            .bind(&t.task_id)
            .bind(&t.qualifier)
            .bind(&t.request_id)
            .bind(t.status.as_str())
            .bind(t.return_payload.as_deref())
            .bind(t.error_message.as_deref())
            .bind(i64::from(t.already_retried_times))
            .bind(t.destination_status.as_deref())
            .bind(t.instance_id.as_deref())
            .bind(t.created_ms)
            .bind(t.started_ms)
            .bind(t.end_ms)
            .bind(&events)
            .bind(t.ordering_key.as_deref())
            .bind(&t.payload)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    pub async fn get_task(&self, function: &str, task_id: &str) -> Result<Option<AsyncTask>, StoreError> {
        let row = on_db!(self, |pool, e| {
            sqlx::query_as::<_, TaskRow>(
                sql!("SELECT ", task_columns!(), ", payload FROM async_tasks WHERE function_name = ? AND task_id = ?").of(e),
            )
            .bind(function)
            .bind(task_id)
            .fetch_optional(pool)
            .await
        })?;
        row.map(TaskRow::into_task).transpose()
    }

    /// One page of a function's tasks in (created_ms, task_id) order, ascending or descending.
    pub async fn list_tasks(&self, q: &TaskQuery) -> Result<Vec<AsyncTask>, StoreError> {
        // Sentinels instead of NULL checks keep the time range and the cursor index ranges
        // on async_tasks_by_time. A first page starts before every row in either direction.
        let (after_ms, after_id) = match &q.after {
            Some((ms, id)) => (*ms, id.as_str()),
            None if q.descending => (i64::MAX, ""),
            None => (i64::MIN, ""),
        };
        let sql = if q.descending { sql!(list_tasks_sql!("<", "DESC")) } else { sql!(list_tasks_sql!(">", "ASC")) };
        let prefix = q.prefix.as_deref().filter(|p| !p.is_empty());
        let prefix_chars = prefix.map(|p| i32::try_from(p.chars().count()).unwrap_or(i32::MAX));
        let rows = on_db!(self, |pool, e| {
            sqlx::query_as::<_, TaskRow>(sql.of(e))
                .bind(q.include_payload)
                .bind(&q.function)
                .bind(q.started_from_ms.unwrap_or(i64::MIN))
                .bind(q.started_to_ms.unwrap_or(i64::MAX))
                .bind(after_ms)
                .bind(after_id)
                .bind(q.qualifier.as_deref())
                .bind(q.qualifier.as_deref())
                .bind(q.status.map(TaskStatus::as_str))
                .bind(q.status.map(TaskStatus::as_str))
                .bind(prefix)
                .bind(prefix_chars)
                .bind(prefix)
                .bind(i64::from(q.limit))
                .fetch_all(pool)
                .await
        })?;
        rows.into_iter().map(TaskRow::into_task).collect()
    }

    /// Apply `change` if the task's status is in `from` (empty = any) and, when
    /// `change.expected_events` is set, it has exactly that many events; false (nothing changed)
    /// if the task is missing or in another status. One UPDATE: the guard, the field changes and
    /// the event append (numbered from the array length it sees) are a single atomic step (on
    /// PostgreSQL and MySQL a concurrent UPDATE of the row waits for ours and then re-reads it,
    /// so it re-checks the guard and appends after our event).
    pub async fn transition_task(
        &self,
        function: &str,
        task_id: &str,
        from: &[TaskStatus],
        change: &TaskChange,
    ) -> Result<bool, StoreError> {
        let from_json = to_json(&from.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        let new_status = change.status.map(TaskStatus::as_str);
        // The allowed statuses travel as one JSON array (one bound value instead of a
        // variable-length IN list); each engine appends the event with its own JSON functions.
        let transition = sql_per_engine!(
            sqlite: concat!(
                transition_set!(),
                "events = json_insert(events, '$[#]', json_object('eventId', json_array_length(events) + 1, \
                    'status', COALESCE(?, status), 'timestamp', ?, 'eventDetail', ?)) \
                 WHERE function_name = ? AND task_id = ? \
                 AND (json_array_length(?) = 0 OR status IN (SELECT value FROM json_each(?))) \
                 AND (? IS NULL OR json_array_length(events) = ?)"
            ),
            postgres: concat!(
                transition_set!(),
                "events = (events::jsonb || jsonb_build_array(jsonb_build_object( \
                    'eventId', jsonb_array_length(events::jsonb) + 1, 'status', COALESCE(?, status), \
                    'timestamp', ?::bigint, 'eventDetail', ?::text)))::text \
                 WHERE function_name = ? AND task_id = ? \
                 AND (jsonb_array_length(?::jsonb) = 0 OR status IN (SELECT jsonb_array_elements_text(?::jsonb))) \
                 AND (?::bigint IS NULL OR jsonb_array_length(events::jsonb) = ?::bigint)"
            ),
            // MySQL assigns left to right, so `status` below is already the new one; with
            // COALESCE(new, status) that is the same value.
            mysql: concat!(
                transition_set!(),
                "events = JSON_ARRAY_APPEND(events, '$', JSON_OBJECT('eventId', JSON_LENGTH(events) + 1, \
                    'status', COALESCE(?, status), 'timestamp', ?, 'eventDetail', ?)) \
                 WHERE function_name = ? AND task_id = ? \
                 AND (JSON_LENGTH(?) = 0 OR JSON_CONTAINS(?, JSON_QUOTE(status))) \
                 AND (? IS NULL OR JSON_LENGTH(events) = ?)"
            ),
        );
        let updated = on_db!(self, |pool, e| {
            sqlx::query(transition.of(e))
                .bind(new_status)
                .bind(change.started_ms)
                .bind(change.end_ms)
                .bind(change.already_retried_times.map(i64::from))
                .bind(change.return_payload.as_deref())
                .bind(change.error_message.as_deref())
                .bind(change.instance_id.as_deref())
                .bind(change.destination_status.as_deref())
                .bind(new_status)
                .bind(change.at_ms)
                .bind(&change.event_detail)
                .bind(function)
                .bind(task_id)
                .bind(&from_json)
                .bind(&from_json)
                .bind(change.expected_events.map(i64::from))
                .bind(change.expected_events.map(i64::from))
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(updated == 1)
    }

    /// Forget a deleted function's tasks and configs (its queued messages then find no task).
    pub async fn delete_async_state_of_function(&self, function: &str) -> Result<(), StoreError> {
        on_db!(self, |pool, e| {
            let mut tx = pool.begin().await?;
            sqlx::query(sql!("DELETE FROM async_tasks WHERE function_name = ?").of(e))
                .bind(function)
                .execute(&mut *tx)
                .await?;
            sqlx::query(sql!("DELETE FROM async_invoke_configs WHERE function_name = ?").of(e))
                .bind(function)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })
    }

    /// Task counts per status (only statuses that occur), of one function or all.
    pub async fn count_tasks_by_status(&self, function: Option<&str>) -> Result<Vec<(TaskStatus, i64)>, StoreError> {
        let rows = on_db!(self, |pool, e| {
            sqlx::query_as::<_, (String, i64)>(
                sql!(
                    "SELECT status, COUNT(*) FROM async_tasks WHERE (? IS NULL OR function_name = ?) \
                     GROUP BY status ORDER BY status"
                )
                .of(e),
            )
            .bind(function)
            .bind(function)
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter()
            .map(|(s, n)| {
                let status = s.parse().map_err(|_| StoreError::Corrupt(format!("task status '{s}'")))?;
                Ok((status, n))
            })
            .collect()
    }
}

impl TaskRow {
    fn into_task(self) -> Result<AsyncTask, StoreError> {
        let (function_name, task_id) = (self.function_name, self.task_id);
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("task '{function_name}/{task_id}' {what}: {e}"))
        };
        let status = self.status.parse::<TaskStatus>().map_err(|e| corrupt("status", &e))?;
        let events: Vec<TaskEvent> = serde_json::from_str(&self.events).map_err(|e| corrupt("events", &e))?;
        let already_retried_times =
            u32::try_from(self.already_retried_times).map_err(|e| corrupt("already_retried_times", &e))?;
        Ok(AsyncTask {
            qualifier: self.qualifier,
            request_id: self.request_id,
            status,
            payload: self.payload.unwrap_or_default(),
            return_payload: self.return_payload,
            error_message: self.error_message,
            already_retried_times,
            destination_status: self.destination_status,
            instance_id: self.instance_id,
            created_ms: self.created_ms,
            started_ms: self.started_ms,
            end_ms: self.end_ms,
            events,
            ordering_key: self.ordering_key,
            function_name,
            task_id,
        })
    }
}

