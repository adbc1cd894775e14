//! What GetFunctionLogs must answer, whichever source serves it: the local store (tests/api
//! logs.rs) or the search cluster (tests/opensearch.rs). Filters, the invocation summaries,
//! newest-first paging, errors.

#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

pub const TALKER: &str = "def handler(event, context):\n    print('line A ' + event.decode())\n    print('line B')\n    return 'ok'\n";

pub async fn logs(app: &ApiClient, name: &str, query: &str) -> Resp {
    app.request("GET", &format!("/2023-03-30/functions/{name}/logs"), query, &[], vec![]).await
}

/// The function's own lines of a page (the platform's summaries left out).
pub fn messages(page: &Value) -> Vec<String> {
    lines(page).iter().filter(|l| l["stream"] != "platform").map(|l| l["message"].as_str().unwrap().to_string()).collect()
}

pub fn lines(page: &Value) -> Vec<Value> {
    page["logs"].as_array().unwrap_or_else(|| panic!("not a logs page: {page}")).clone()
}

/// Invoke `name` (TALKER) with "first", "second", "third"; (request id, instance id) of each.
pub async fn talk(app: &ApiClient, name: &str) -> Vec<(String, String)> {
    let mut rids = Vec::new();
    for word in ["first", "second", "third"] {
        let r = app.invoke(name, word.as_bytes(), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        rids.push((r.header("x-fc-request-id").unwrap().to_string(), r.header("x-fc-instance-id").unwrap().to_string()));
    }
    rids
}

/// Wait until the source shows every invocation's End line and summary.
pub async fn wait_visible(app: &ApiClient, name: &str, rids: &[(String, String)]) {
    for (rid, _) in rids {
        eventually(Duration::from_secs(30), "the invocation's lines and summary are visible", || async {
            let page = logs(app, name, &format!("requestId={rid}")).await.json();
            let end = messages(&page).iter().any(|m| m.starts_with("FC Invoke End"));
            let summary = lines(&page).iter().any(|l| l["stream"] == "platform");
            (end && summary).then_some(())
        })
        .await;
    }
}

/// Every query GetFunctionLogs supports, on the lines of `talk` (invoked after `before`, epoch ms).
pub async fn check(app: &ApiClient, name: &str, rids: &[(String, String)], before: i64) {
    let (rid, instance) = rids[1].clone();
    let page = logs(app, name, &format!("requestId={rid}")).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let page = page.json();
    assert_eq!(
        messages(&page),
        [format!("FC Invoke End RequestId: {rid}"), "line B".into(), "line A second".into(), format!("FC Invoke Start RequestId: {rid}")],
        "this request's lines, newest first"
    );
    let platform: Vec<_> = lines(&page).into_iter().filter(|l| l["stream"] == "platform").collect();
    assert_eq!(platform.len(), 1, "one summary per invocation: {platform:?}");
    let s = &platform[0]["summary"];
    assert_eq!((s["requestId"].as_str(), s["instanceId"].as_str(), s["outcome"].as_str()), (Some(rid.as_str()), Some(instance.as_str()), Some("success")));
    assert!(platform[0]["message"].as_str().unwrap().starts_with(&format!("FC Invoke Summary RequestId: {rid}, Outcome: success")));
    let l = &lines(&page)[0];
    assert_eq!((l["functionName"].as_str(), l["instanceId"].as_str()), (Some(name), Some(instance.as_str())));
    assert!(l["timestamp"].as_i64().unwrap() >= before && l["time"].as_str().unwrap().ends_with('Z'));

    assert_eq!(messages(&logs(app, name, "query=line%20A%20third").await.json()), ["line A third"]);
    assert_eq!(messages(&logs(app, name, "query=LINE").await.json()).len(), 0, "case-sensitive");
    assert_eq!(messages(&logs(app, name, "query=line%20*").await.json()).len(), 0, "a literal, not a pattern");
    let future = chrono::Utc::now().timestamp_millis() + 60_000;
    assert!(lines(&logs(app, name, &format!("startTime={future}")).await.json()).is_empty());
    assert!(lines(&logs(app, name, &format!("endTime={}", before - 60_000)).await.json()).is_empty());
    assert_eq!(messages(&logs(app, name, &format!("query=line%20B&startTime={before}&endTime={future}")).await.json()).len(), 3);
    assert_eq!(messages(&logs(app, name, &format!("instanceId={instance}&query=line%20A")).await.json()).len(), 3);
    let summaries = logs(app, name, "query=FC%20Invoke%20Summary").await.json();
    assert_eq!(lines(&summaries).len(), 3, "one summary per invocation");

    // Paging: every line of the function once, newest first.
    let all_at_once = lines(&logs(app, name, "limit=1000").await.json());
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let q = if token.is_empty() { "limit=5".to_string() } else { format!("limit=5&nextToken={token}") };
        let page = logs(app, name, &q).await.json();
        let ts: Vec<i64> = lines(&page).iter().map(|l| l["timestamp"].as_i64().unwrap()).collect();
        assert!(ts.windows(2).all(|w| w[0] >= w[1]), "newest first: {ts:?}");
        assert!(ts.len() <= 5);
        all.extend(lines(&page));
        match page["nextToken"].as_str() {
            Some(t) => token = t.to_string(),
            None => break,
        }
    }
    assert_eq!(all, all_at_once, "pages of 5 chain into the whole list, in order, each line once");
    let msgs: Vec<&str> = all.iter().map(|l| l["message"].as_str().unwrap()).collect();
    assert_eq!(msgs.iter().filter(|m| m.starts_with("line A ")).count(), 3);
    assert_eq!(msgs.iter().filter(|m| m.starts_with("FC Invoke Start")).count(), 3);

    logs(app, "nope", "").await.assert_error(404, "FunctionNotFound");
    logs(app, name, "limit=0").await.assert_error(400, "InvalidArgument");
    logs(app, name, "nextToken=%21%21").await.assert_error(400, "InvalidArgument");
    logs(app, name, "nextToken=bm90LWEtY3Vyc29y").await.assert_error(400, "InvalidArgument");
}
