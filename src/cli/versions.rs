//! `nubis versions ls|publish|rm`.

use axum::http::Method;
use serde_json::{Value, json};

use super::client::enc;
use super::error::CliError;
use super::output::{Format, Table, cell, print_json};
use super::{ConnArgs, Ctx, print_page};

#[derive(clap::Args, Debug)]
pub struct VersionsArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub cmd: VersionsCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum VersionsCmd {
    /// List a function's versions, newest first (one page).
    #[command(alias = "list")]
    Ls {
        function: String,
        /// Page size (1..=100).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        next_token: Option<String>,
    },
    /// Freeze the function's current code and configuration as a new version.
    Publish {
        function: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a version (no alias may point at it).
    #[command(alias = "delete")]
    Rm { function: String, version_id: String },
}

pub fn versions_table(page: &Value) -> Table {
    let mut t = Table::new(&["VERSION", "DESCRIPTION", "CREATED"]);
    for v in page["versions"].as_array().into_iter().flatten() {
        t.row(vec![cell(&v["versionId"]), cell(&v["description"]), cell(&v["createdTime"])]);
    }
    t
}

pub async fn run(ctx: &Ctx, args: VersionsArgs) -> Result<(), CliError> {
    match args.cmd {
        VersionsCmd::Ls { function, limit, next_token } => {
            let mut q = vec![("limit", limit.to_string())];
            q.extend(next_token.map(|t| ("nextToken", t)));
            let page = ctx.client.get_json(&format!("/2023-03-30/functions/{}/versions", enc(&function)), &q).await?;
            print_page(ctx, &page, versions_table);
        }
        VersionsCmd::Publish { function, description } => {
            let body = match description {
                Some(d) => json!({"description": d}),
                None => json!({}),
            };
            let path = format!("/2023-03-30/functions/{}/versions", enc(&function));
            let v = ctx.client.send_json(Method::POST, &path, &[], &body).await?;
            match ctx.format {
                Format::Json => print_json(&v),
                Format::Text => println!("published version {} of {function}", cell(&v["versionId"])),
            }
        }
        VersionsCmd::Rm { function, version_id } => {
            ctx.client.delete(&format!("/2023-03-30/functions/{}/versions/{}", enc(&function), enc(&version_id)), &[]).await?;
            if ctx.format == Format::Text {
                println!("deleted version {version_id} of {function}");
            }
        }
    }
    Ok(())
}
