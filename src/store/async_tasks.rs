//! Async invocation state: per function+qualifier configs and task records (migration 0002).
//!
//! Tasks are the durable truth of async invocations; the queue only carries pointers to them.
//! Status changes go through [`Store::transition_task`], a guarded compare-and-set that also
//! appends to the task's event history in the same statement, so the dispatcher and
//! StopAsyncTask can race without losing an event or resurrecting a stopped task.
//!
//! Portability: everything here is plain SQL except `transition_task`, which uses SQLite's JSON
//! functions (PostgreSQL: `jsonb ||`/`jsonb_array_elements_text`, MySQL: `JSON_ARRAY_APPEND`/
//! `JSON_TABLE`). Optional filters are `(? IS NULL OR col = ?)` so each query stays one
//! `&'static str`; ranges and cursors use sentinels instead, so they remain index ranges.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Store, StoreError, to_json};
use crate::model::async_task::{AsyncConfig, AsyncConfigRecord, AsyncTask, TaskEvent, TaskStatus};
use crate::model::now_iso;

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
}

macro_rules! task_columns {
    () => {
        "function_name, task_id, qualifier, request_id, status, return_payload, error_message, \
         already_retried_times, destination_status, instance_id, created_ms, started_ms, end_ms, events"
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

impl Store {
    /// Create or replace the config of `function`/`qualifier`; `createdTime` survives replacement.
    pub async fn put_async_config(
        &self,
        function: &str,
        qualifier: &str,
        cfg: &AsyncConfig,
    ) -> Result<AsyncConfigRecord, StoreError> {
        let now = now_iso();
        // Upsert and read back in one transaction so a concurrent delete cannot make us return
        // a record that is not what we wrote. (ON CONFLICT: SQLite and PostgreSQL; MySQL spells
        // it ON DUPLICATE KEY UPDATE.)
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO async_invoke_configs (function_name, qualifier, config, created_time, last_modified_time) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (function_name, qualifier) \
             DO UPDATE SET config = excluded.config, last_modified_time = excluded.last_modified_time",
        )
        .bind(function)
        .bind(qualifier)
        .bind(to_json(cfg))
        .bind(&now)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT function_name, qualifier, config, created_time, last_modified_time \
             FROM async_invoke_configs WHERE function_name = ? AND qualifier = ?",
        )
        .bind(function)
        .bind(qualifier)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        config_from_row(&row)
    }

    pub async fn get_async_config(&self, function: &str, qualifier: &str) -> Result<Option<AsyncConfigRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT function_name, qualifier, config, created_time, last_modified_time \
             FROM async_invoke_configs WHERE function_name = ? AND qualifier = ?",
        )
        .bind(function)
        .bind(qualifier)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| config_from_row(&r)).transpose()
    }

    /// True if a config was deleted.
    pub async fn delete_async_config(&self, function: &str, qualifier: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM async_invoke_configs WHERE function_name = ? AND qualifier = ?")
            .bind(function)
            .bind(qualifier)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Configs in (function, qualifier) order, after `start_after` (see
    /// [`AsyncConfigRecord::cursor`]; `""` = from the start), optionally of one function.
    pub async fn list_async_configs(
        &self,
        function: Option<&str>,
        start_after: &str,
        limit: u32,
    ) -> Result<Vec<AsyncConfigRecord>, StoreError> {
        // A cursor without NUL means "after every qualifier-less position of that function",
        // i.e. the function's rows are all still to come.
        let (after_fn, after_q) = start_after.split_once('\0').unwrap_or((start_after, ""));
        let rows = sqlx::query(
            "SELECT function_name, qualifier, config, created_time, last_modified_time \
             FROM async_invoke_configs \
             WHERE (? IS NULL OR function_name = ?) AND (function_name, qualifier) > (?, ?) \
             ORDER BY function_name, qualifier LIMIT ?",
        )
        .bind(function)
        .bind(function)
        .bind(after_fn)
        .bind(after_q)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(config_from_row).collect()
    }

    /// A task already present under (function, task id) is [`StoreError::AlreadyExists`]:
    /// that is how task-mode deduplicates by task id.
    pub async fn insert_task(&self, t: &AsyncTask) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO async_tasks (",
            task_columns!(),
            ", payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&t.function_name)
        .bind(&t.task_id)
        .bind(&t.qualifier)
        .bind(&t.request_id)
        .bind(t.status.as_str())
        .bind(t.return_payload.as_deref())
        .bind(t.error_message.as_deref())
        .bind(t.already_retried_times as i64)
        .bind(t.destination_status.as_deref())
        .bind(t.instance_id.as_deref())
        .bind(t.created_ms)
        .bind(t.started_ms)
        .bind(t.end_ms)
        .bind(to_json(&t.events))
        .bind(&t.payload)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_task(&self, function: &str, task_id: &str) -> Result<Option<AsyncTask>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            ", payload FROM async_tasks WHERE function_name = ? AND task_id = ?"
        ))
        .bind(function)
        .bind(task_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| task_from_row(&r)).transpose()
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
        let sql = if q.descending { list_tasks_sql!("<", "DESC") } else { list_tasks_sql!(">", "ASC") };
        let prefix = q.prefix.as_deref().filter(|p| !p.is_empty());
        let rows = sqlx::query(sql)
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
            .bind(prefix.map(|p| p.chars().count() as i64))
            .bind(prefix)
            .bind(q.limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Apply `change` if the task's status is in `from` (empty = any); false (nothing changed)
    /// if the task is missing or in another status. One UPDATE: the guard, the field changes and
    /// the event append (numbered from the array length it sees) are a single atomic step.
    pub async fn transition_task(
        &self,
        function: &str,
        task_id: &str,
        from: &[TaskStatus],
        change: &TaskChange,
    ) -> Result<bool, StoreError> {
        let from_json = to_json(&from.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        let new_status = change.status.map(TaskStatus::as_str);
        // SQLite-specific: json_insert(.., '$[#]', ..) appends to the array, json_each expands
        // the allowed statuses (one bound value instead of a variable-length IN list).
        let done = sqlx::query(
            "UPDATE async_tasks SET \
             status = COALESCE(?, status), \
             started_ms = COALESCE(?, started_ms), \
             end_ms = COALESCE(?, end_ms), \
             already_retried_times = COALESCE(?, already_retried_times), \
             return_payload = COALESCE(?, return_payload), \
             error_message = COALESCE(?, error_message), \
             instance_id = COALESCE(?, instance_id), \
             destination_status = COALESCE(?, destination_status), \
             events = json_insert(events, '$[#]', json_object('eventId', json_array_length(events) + 1, \
                 'status', COALESCE(?, status), 'timestamp', ?, 'eventDetail', ?)) \
             WHERE function_name = ? AND task_id = ? \
             AND (json_array_length(?) = 0 OR status IN (SELECT value FROM json_each(?)))",
        )
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
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forget a deleted function's tasks and configs (its queued messages then find no task).
    pub async fn delete_async_state_of_function(&self, function: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM async_tasks WHERE function_name = ?").bind(function).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM async_invoke_configs WHERE function_name = ?")
            .bind(function)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Task counts per status (only statuses that occur), of one function or all.
    pub async fn count_tasks_by_status(&self, function: Option<&str>) -> Result<Vec<(TaskStatus, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) FROM async_tasks WHERE (? IS NULL OR function_name = ?) \
             GROUP BY status ORDER BY status",
        )
        .bind(function)
        .bind(function)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let s: String = r.try_get(0)?;
                let status = s.parse().map_err(|_| StoreError::Corrupt(format!("task status '{s}'")))?;
                Ok((status, r.try_get(1)?))
            })
            .collect()
    }
}

fn config_from_row(r: &SqliteRow) -> Result<AsyncConfigRecord, StoreError> {
    let function_name: String = r.try_get("function_name")?;
    let qualifier: String = r.try_get("qualifier")?;
    let config = serde_json::from_str(&r.try_get::<String, _>("config")?)
        .map_err(|e| StoreError::Corrupt(format!("async config of '{function_name}/{qualifier}': {e}")))?;
    Ok(AsyncConfigRecord {
        function_name,
        qualifier,
        config,
        created_time: r.try_get("created_time")?,
        last_modified_time: r.try_get("last_modified_time")?,
    })
}

fn task_from_row(r: &SqliteRow) -> Result<AsyncTask, StoreError> {
    let function_name: String = r.try_get("function_name")?;
    let task_id: String = r.try_get("task_id")?;
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Corrupt(format!("task '{function_name}/{task_id}' {what}: {e}"))
    };
    let status: String = r.try_get("status")?;
    let status = status.parse::<TaskStatus>().map_err(|e| corrupt("status", &e))?;
    let events: Vec<TaskEvent> =
        serde_json::from_str(&r.try_get::<String, _>("events")?).map_err(|e| corrupt("events", &e))?;
    let retried: i64 = r.try_get("already_retried_times")?;
    Ok(AsyncTask {
        qualifier: r.try_get("qualifier")?,
        request_id: r.try_get("request_id")?,
        status,
        payload: r.try_get::<Option<Vec<u8>>, _>("payload")?.unwrap_or_default(),
        return_payload: r.try_get("return_payload")?,
        error_message: r.try_get("error_message")?,
        already_retried_times: u32::try_from(retried).map_err(|e| corrupt("already_retried_times", &e))?,
        destination_status: r.try_get("destination_status")?,
        instance_id: r.try_get("instance_id")?,
        created_ms: r.try_get("created_ms")?,
        started_ms: r.try_get("started_ms")?,
        end_ms: r.try_get("end_ms")?,
        events,
        function_name,
        task_id,
    })
}

#[cfg(test)]
mod tests;
