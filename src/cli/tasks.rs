//! `nubis tasks <fn>` (list async tasks), `tasks get <fn> <id>`, `tasks stop <fn> <id>`.

use axum::http::Method;
use serde_json::Value;

use super::client::enc;
use super::error::CliError;
use super::output::{Format, Table, cell, fields, print_json};
use super::{ConnArgs, Ctx, print_page, ms_time};

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TasksArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub cmd: Option<TasksCmd>,
    /// `tasks <fn>` is `tasks ls <fn>`.
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[arg(required = true)]
    pub function: Option<String>,
    /// Only tasks in this status (Enqueued, Running, Succeeded, Failed, Stopped…).
    #[arg(long)]
    pub status: Option<String>,
    /// Only tasks of this qualifier.
    #[arg(long)]
    pub qualifier: Option<String>,
    /// Page size (1..=100).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    #[arg(long)]
    pub next_token: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum TasksCmd {
    /// List a function's async tasks, newest first (one page).
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show one task: status, attempts, result or error, events.
    Get {
        function: String,
        task_id: String,
        #[arg(long)]
        qualifier: Option<String>,
    },
    /// Stop a task: a waiting one at once, a running one when its attempt ends (no retry).
    Stop {
        function: String,
        task_id: String,
        #[arg(long)]
        qualifier: Option<String>,
    },
}

fn duration(t: &Value) -> String {
    t["durationMs"].as_i64().map(|d| format!("{d}ms")).unwrap_or_else(|| "-".into())
}

pub fn tasks_table(page: &Value) -> Table {
    let mut t = Table::new(&["TASK ID", "STATUS", "QUALIFIER", "STARTED", "DURATION", "RETRIES", "ERROR"]);
    for task in page["tasks"].as_array().into_iter().flatten() {
        t.row(vec![
            cell(&task["taskId"]),
            cell(&task["status"]),
            cell(&task["qualifier"]),
            ms_time(&task["startedTime"]),
            duration(task),
            cell(&task["alreadyRetriedTimes"]),
            cell(&task["taskErrorMessage"]),
        ]);
    }
    t
}

pub fn describe(t: &Value) -> String {
    let mut out = fields(&[
        ("taskId", cell(&t["taskId"])),
        ("status", cell(&t["status"])),
        ("requestId", cell(&t["requestId"])),
        ("qualifier", cell(&t["qualifier"])),
        ("started", ms_time(&t["startedTime"])),
        ("ended", ms_time(&t["endTime"])),
        ("duration", duration(t)),
        ("retries", cell(&t["alreadyRetriedTimes"])),
        ("destination", cell(&t["destinationStatus"])),
        ("error", cell(&t["taskErrorMessage"])),
        ("result", cell(&t["returnPayload"])),
    ]);
    let events = t["events"].as_array().cloned().unwrap_or_default();
    if !events.is_empty() {
        out.push_str("events:\n");
        let mut table = Table::new(&["  TIME", "STATUS", "DETAIL"]);
        for e in &events {
            table.row(vec![format!("  {}", ms_time(&e["timestamp"])), cell(&e["status"]), cell(&e["eventDetail"])]);
        }
        out.push_str(&table.render());
    }
    out
}

pub async fn run(ctx: &Ctx, args: TasksArgs) -> Result<(), CliError> {
    let base = |f: &str| format!("/2023-03-30/functions/{}/async-tasks", enc(f));
    let cmd = args.cmd.unwrap_or(TasksCmd::Ls(args.list));
    match cmd {
        TasksCmd::Ls(l) => {
            let function = l.function.ok_or_else(|| CliError::Usage("tasks: name the function".into()))?;
            let mut q = vec![("limit", l.limit.to_string())];
            q.extend(l.status.map(|v| ("status", v)));
            q.extend(l.qualifier.map(|v| ("qualifier", v)));
            q.extend(l.next_token.map(|v| ("nextToken", v)));
            let page = ctx.client.get_json(&base(&function), &q).await?;
            print_page(ctx, &page, tasks_table);
        }
        TasksCmd::Get { function, task_id, qualifier } => {
            let q: Vec<(&str, String)> = qualifier.map(|v| ("qualifier", v)).into_iter().collect();
            let t = ctx.client.get_json(&format!("{}/{}", base(&function), enc(&task_id)), &q).await?;
            match ctx.format {
                Format::Json => print_json(&t),
                Format::Text => print!("{}", describe(&t)),
            }
        }
        TasksCmd::Stop { function, task_id, qualifier } => {
            let q: Vec<(&str, String)> = qualifier.map(|v| ("qualifier", v)).into_iter().collect();
            let path = format!("{}/{}/stop", base(&function), enc(&task_id));
            ctx.client.send(Method::PUT, &path, &q, &[], vec![]).await?;
            if ctx.format == Format::Text {
                println!("stop requested for task {task_id}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn task_rows_and_detail() {
        let page = json!({"tasks": [{"taskId": "t1", "status": "Succeeded", "qualifier": "LATEST", "startedTime": 0, "durationMs": 12, "alreadyRetriedTimes": 0}]});
        assert_eq!(
            tasks_table(&page).render(),
            "TASK ID  STATUS     QUALIFIER  STARTED                   DURATION  RETRIES  ERROR\n\
             t1       Succeeded  LATEST     1970-01-01T00:00:00.000Z  12ms      0        -\n"
        );
        let d = describe(&json!({"taskId": "t1", "status": "Failed", "taskErrorMessage": "boom",
            "events": [{"timestamp": 0, "status": "Enqueued", "eventDetail": "accepted"}]}));
        assert!(d.contains("error        boom\n") && d.contains("events:\n  TIME"), "{d}");
        assert!(d.contains("  1970-01-01T00:00:00.000Z  Enqueued  accepted\n"), "{d}");
    }
}
