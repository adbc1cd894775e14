//! Logs in a cluster: the agent captures and ships its instances' lines (and the summaries the
//! controller hands it) to OpenSearch; GetFunctionLogs on the controller finds them there.

use std::time::Duration;

use super::helpers::eventually;
use super::*;

#[tokio::test]
async fn an_agents_log_lines_and_summaries_are_found_through_the_controller() {
    let os = std::env::var("NUBIS_TEST_OPENSEARCH_URL")
        .expect("NUBIS_TEST_OPENSEARCH_URL is not set: start it with `bash scripts/test-services.sh start opensearch` and eval its env");
    let prefix = format!("nubis-test-cluster-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let cluster = Cluster::new();
    let shipping = [("NUBIS_OPENSEARCH__ENABLED", "true"), ("NUBIS_OPENSEARCH__URL", os.as_str()), ("NUBIS_OPENSEARCH__INDEX_PREFIX", prefix.as_str())]
        .map(|(k, v)| (k.to_string(), v.to_string()));
    let a = cluster.agent_on("a", "127.0.0.1", &shipping);
    let (os2, prefix2) = (os.clone(), prefix.clone());
    let app = cluster
        .controller_with(move |c| {
            c.opensearch.enabled = true;
            c.opensearch.url = os2;
            c.opensearch.index_prefix = prefix2;
        })
        .await;
    wait_for_nodes(&app.api, &[&a.node_id], Duration::from_secs(30)).await;
    assert_eq!(app.api.create_function(echo_function("talker")).await.status, 200);
    let r = app.api.invoke("talker", b"hi", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rid = r.header("x-fc-request-id").unwrap().to_string();

    let page = eventually(Duration::from_secs(30), "the agent's lines searchable through the controller", || async {
        let r = app.api.request("GET", "/2023-03-30/functions/talker/logs", &format!("requestId={rid}"), &[], vec![]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        let lines = j["logs"].as_array().cloned().unwrap_or_default();
        let printed = lines.iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains(&format!("echo-container got {rid}"))));
        let summary = lines.iter().any(|l| l["stream"] == "platform");
        (printed && summary).then_some(lines)
    })
    .await;
    for l in &page {
        assert_eq!(l["requestId"], rid.as_str(), "{l}");
    }
    let summary = page.iter().find(|l| l["stream"] == "platform").unwrap();
    // The agent stored the summary: it names the agent's node and the instance that ran it.
    assert!(summary.to_string().contains(&a.node_id), "{summary}");
    assert_eq!(summary["instanceId"], r.header("x-fc-instance-id").unwrap(), "{summary}");
    app.shutdown().await.unwrap();
}
