//! `nubis aliases ls|get|set|rm`. `set` makes the alias exactly what the flags say: it updates
//! the alias, or creates it when it does not exist; without `--weight` it removes any
//! additional version.

use std::collections::BTreeMap;

use axum::http::Method;
use serde_json::{Value, json};

use super::client::enc;
use super::error::CliError;
use super::output::{Format, Table, cell, fields, print_json};
use super::{ConnArgs, Ctx, print_page};

#[derive(clap::Args, Debug)]
pub struct AliasesArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub cmd: AliasesCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum AliasesCmd {
    /// List a function's aliases (one page).
    #[command(alias = "list")]
    Ls {
        function: String,
        /// Page size (1..=100).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        next_token: Option<String>,
    },
    /// Show one alias.
    Get { function: String, alias: String },
    /// Point an alias at a version (creating it if needed), optionally sending a share of
    /// calls to one more version.
    Set {
        function: String,
        alias: String,
        /// The version the alias names.
        #[arg(long = "version")]
        version_id: String,
        /// VERSION=WEIGHT: send this share (0..1) of calls to another version, e.g. 3=0.1.
        #[arg(long, value_name = "VERSION=WEIGHT", value_parser = parse_weight)]
        weight: Vec<(String, f64)>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete an alias.
    #[command(alias = "delete")]
    Rm { function: String, alias: String },
}

pub fn parse_weight(s: &str) -> Result<(String, f64), String> {
    let (v, w) = s.split_once('=').ok_or_else(|| format!("expected VERSION=WEIGHT, got '{s}'"))?;
    let w: f64 = w.trim().parse().map_err(|_| format!("weight '{w}' is not a number"))?;
    if v.trim().is_empty() || !w.is_finite() {
        return Err(format!("expected VERSION=WEIGHT, got '{s}'"));
    }
    Ok((v.trim().to_string(), w))
}

fn weights(a: &Value) -> String {
    a["additionalVersionWeight"]
        .as_object()
        .map(|m| m.iter().map(|(v, w)| format!("{v}={w}")).collect::<Vec<_>>().join(","))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into())
}

pub fn aliases_table(page: &Value) -> Table {
    let mut t = Table::new(&["ALIAS", "VERSION", "ADDITIONAL", "DESCRIPTION", "LAST MODIFIED"]);
    for a in page["aliases"].as_array().into_iter().flatten() {
        t.row(vec![cell(&a["aliasName"]), cell(&a["versionId"]), weights(a), cell(&a["description"]), cell(&a["lastModifiedTime"])]);
    }
    t
}

fn describe(a: &Value) -> String {
    fields(&[
        ("alias", cell(&a["aliasName"])),
        ("version", cell(&a["versionId"])),
        ("additional", weights(a)),
        ("description", cell(&a["description"])),
        ("lastModified", cell(&a["lastModifiedTime"])),
    ])
}

/// The UpdateAlias body of `set`.
pub fn set_body(version_id: &str, weight: &[(String, f64)], description: Option<&str>) -> Value {
    let w: BTreeMap<&str, f64> = weight.iter().map(|(v, w)| (v.as_str(), *w)).collect();
    let mut body = json!({"versionId": version_id, "additionalVersionWeight": w});
    if let Some(d) = description {
        body["description"] = json!(d);
    }
    body
}

pub async fn run(ctx: &Ctx, args: AliasesArgs) -> Result<(), CliError> {
    let base = |f: &str| format!("/2023-03-30/functions/{}/aliases", enc(f));
    let show = |a: &Value| match ctx.format {
        Format::Json => print_json(a),
        Format::Text => print!("{}", describe(a)),
    };
    match args.cmd {
        AliasesCmd::Ls { function, limit, next_token } => {
            let mut q = vec![("limit", limit.to_string())];
            q.extend(next_token.map(|t| ("nextToken", t)));
            let page = ctx.client.get_json(&base(&function), &q).await?;
            print_page(ctx, &page, aliases_table);
        }
        AliasesCmd::Get { function, alias } => {
            show(&ctx.client.get_json(&format!("{}/{}", base(&function), enc(&alias)), &[]).await?);
        }
        AliasesCmd::Set { function, alias, version_id, weight, description } => {
            let mut body = set_body(&version_id, &weight, description.as_deref());
            let path = format!("{}/{}", base(&function), enc(&alias));
            let a = match ctx.client.send_json(Method::PUT, &path, &[], &body).await {
                Err(e) if e.api_code() == Some("AliasNotFound") => {
                    body["aliasName"] = json!(alias);
                    ctx.client.send_json(Method::POST, &base(&function), &[], &body).await?
                }
                other => other?,
            };
            show(&a);
        }
        AliasesCmd::Rm { function, alias } => {
            ctx.client.delete(&format!("{}/{}", base(&function), enc(&alias)), &[]).await?;
            if ctx.format == Format::Text {
                println!("deleted alias {alias} of {function}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_and_render() {
        assert_eq!(parse_weight("3=0.25").unwrap(), ("3".into(), 0.25));
        for bad in ["3", "=0.1", "3=x", "3=NaN"] {
            assert!(parse_weight(bad).is_err(), "{bad}");
        }
        let body = set_body("2", &[("3".into(), 0.25)], Some("canary"));
        assert_eq!(body, json!({"versionId": "2", "additionalVersionWeight": {"3": 0.25}, "description": "canary"}));
        assert_eq!(set_body("2", &[], None), json!({"versionId": "2", "additionalVersionWeight": {}}));
        let page = json!({"aliases": [{"aliasName": "prod", "versionId": "2", "additionalVersionWeight": {"3": 0.25}, "description": "", "lastModifiedTime": "t"}]});
        assert_eq!(aliases_table(&page).render(), "ALIAS  VERSION  ADDITIONAL  DESCRIPTION  LAST MODIFIED\nprod   2        3=0.25      -            t\n");
    }
}
