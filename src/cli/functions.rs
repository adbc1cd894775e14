//! `nubis functions ls|get|rm`.

use serde_json::Value;

use super::client::enc;
use super::error::CliError;
use super::output::{Format, Table, cell, fields, print_json};
use super::{ConnArgs, Ctx, print_page};

#[derive(clap::Args, Debug)]
pub struct FunctionsArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub cmd: FunctionsCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum FunctionsCmd {
    /// List functions (one page).
    #[command(alias = "list")]
    Ls {
        /// Only names starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Page size (1..=100).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// The page after this token (printed by the previous page).
        #[arg(long)]
        next_token: Option<String>,
    },
    /// Show one function's configuration.
    Get {
        function: String,
        /// A version id or an alias (default: LATEST).
        #[arg(long)]
        qualifier: Option<String>,
    },
    /// Delete a function (its versions, aliases and triggers must be deleted first).
    #[command(alias = "delete")]
    Rm { function: String },
}

pub fn functions_table(page: &Value) -> Table {
    let mut t = Table::new(&["NAME", "RUNTIME", "HANDLER", "MEMORY", "TIMEOUT", "CODE SIZE", "LAST MODIFIED"]);
    for f in page["functions"].as_array().into_iter().flatten() {
        t.row(["functionName", "runtime", "handler", "memorySize", "timeout", "codeSize", "lastModifiedTime"].iter().map(|k| cell(&f[*k])).collect());
    }
    t
}

pub fn describe(f: &Value) -> String {
    let env = f["environmentVariables"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into());
    let mut pairs: Vec<(&str, String)> = [
        ("name", "functionName"),
        ("runtime", "runtime"),
        ("handler", "handler"),
        ("memory", "memorySize"),
        ("timeout", "timeout"),
        ("codeSize", "codeSize"),
        ("checksum", "codeChecksum"),
        ("state", "state"),
        ("description", "description"),
        ("lastModified", "lastModifiedTime"),
    ]
    .iter()
    .map(|(label, k)| (*label, cell(&f[*k])))
    .collect();
    pairs.push(("env", env));
    fields(&pairs)
}

pub async fn run(ctx: &Ctx, args: FunctionsArgs) -> Result<(), CliError> {
    match args.cmd {
        FunctionsCmd::Ls { prefix, limit, next_token } => {
            let mut q = vec![("limit", limit.to_string())];
            q.extend(prefix.map(|p| ("prefix", p)));
            q.extend(next_token.map(|t| ("nextToken", t)));
            let page = ctx.client.get_json("/2023-03-30/functions", &q).await?;
            print_page(ctx, &page, functions_table);
        }
        FunctionsCmd::Get { function, qualifier } => {
            let q: Vec<(&str, String)> = qualifier.map(|v| ("qualifier", v)).into_iter().collect();
            let f = ctx.client.get_json(&format!("/2023-03-30/functions/{}", enc(&function)), &q).await?;
            match ctx.format {
                Format::Json => print_json(&f),
                Format::Text => print!("{}", describe(&f)),
            }
        }
        FunctionsCmd::Rm { function } => {
            ctx.client.delete(&format!("/2023-03-30/functions/{}", enc(&function)), &[]).await?;
            if ctx.format == Format::Text {
                println!("deleted function {function}");
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
    fn list_and_detail_render() {
        let page = json!({"functions": [
            {"functionName": "hello", "runtime": "python3.10", "handler": "index.handler", "memorySize": 128, "timeout": 10, "codeSize": 321, "lastModifiedTime": "2024-01-01T00:00:00Z"},
            {"functionName": "c", "runtime": "custom.debian12", "memorySize": 1024, "timeout": 3, "codeSize": 5, "lastModifiedTime": "2024-01-02T00:00:00Z"}
        ]});
        assert_eq!(
            functions_table(&page).render(),
            "NAME   RUNTIME          HANDLER        MEMORY  TIMEOUT  CODE SIZE  LAST MODIFIED\n\
             hello  python3.10       index.handler  128     10       321        2024-01-01T00:00:00Z\n\
             c      custom.debian12  -              1024    3        5          2024-01-02T00:00:00Z\n"
        );
        let d = describe(&json!({"functionName": "hello", "environmentVariables": {"A": "1", "B": "x"}}));
        assert!(d.starts_with("name          hello\n"), "{d}");
        assert!(d.ends_with("env           A=1 B=x\n"), "{d}");
    }
}
