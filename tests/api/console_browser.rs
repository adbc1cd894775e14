//! The console in a real headless Chromium, driven over WebDriver (tests/api/webdriver.rs):
//! sign in, create a function from a zip (after a bad input shows the API's error next to its
//! field), test-invoke it and see the result and logs, edit env (a secret is never shown),
//! publish a version, create an alias, see the charts render with data, sign out. Each main
//! page is saved as a PNG under <target>/console-screenshots/ (look at them: a page that
//! renders but looks broken is a failing page).

use std::path::PathBuf;

use serde_json::json;

use crate::helpers::*;
use crate::webdriver::Browser;

fn shots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"), PathBuf::from);
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const CODE: &str = "import json\ndef handler(event, context):\n    e = json.loads(event)\n    print('hello from the console test', e)\n    return json.dumps({'greeting': 'hi ' + e['name']})\n";

#[tokio::test]
async fn console_in_a_browser() {
    let app = spawn_app_with(|c| c.console.sample_interval_ms = 250).await;
    let dir = shots();
    let shot = |name: &str| dir.join(format!("{name}.png"));
    let zip = tempfile::Builder::new().suffix(".zip").tempfile().unwrap();
    std::fs::write(zip.path(), zip_of(&[("index.py", CODE)])).unwrap();
    let zip_path = zip.path().display().to_string();
    let base = app.url("");
    let b = Browser::start().await;
    b.resize(1280, 1100).await;

    // Not signed in: the console sends the browser to the sign-in page.
    b.goto(&format!("{base}/console/")).await;
    b.wait("the sign-in page", "location.pathname === '/console/login'").await;
    b.fill("#ak", &app.ak).await;
    b.fill("#sk", "not-the-secret").await;
    b.click("#signin").await;
    b.wait("the sign-in error", "document.querySelector('#login-err').innerText.includes('secret does not match')").await;
    b.screenshot(&shot("01-login-error")).await;
    b.fill("#ak", &app.ak).await;
    b.fill("#sk", &app.sk).await;
    b.click("#signin").await;
    b.find("#fn-search").await;
    b.wait("the empty list", "document.body.innerText.includes('No functions yet')").await;

    // Create: a bad memory size shows the API's words under the memory field.
    b.click("#new-function").await;
    b.fill("#create-form [name=functionName]", "hello").await;
    b.fill("#create-form [name=memorySize]", "1").await;
    b.fill("#create-form input[type=file][name=zipFile]", &zip_path).await;
    b.click("#create-submit").await;
    let err = b.wait("the memory error", "document.querySelector('[data-field=memorySize] .field-err').innerText").await;
    let api_err = app.create_function(json!({"functionName": "x", "runtime": "python3.10", "handler": "index.handler", "memorySize": 1,
        "code": {"zipFile": b64(&zip_of(&[("index.py", CODE)]))}})).await.assert_error(400, "InvalidArgument");
    assert_eq!(err.as_str().unwrap(), api_err, "the field shows the API's message");
    b.screenshot(&shot("02-create-error")).await;
    b.fill("#create-form [name=memorySize]", "128").await;
    b.click("#create-submit").await;
    b.wait("the function page", "location.hash === '#/f/hello'").await;
    b.wait("its overview", "document.body.innerText.includes('index.handler')").await;
    assert_eq!(app.get_function("hello").await.json()["memorySize"], 128);

    // Test: invoke, see the result, duration, request id and this invocation's logs.
    b.click("[data-tab=test]").await;
    b.fill("#event", r#"{"name": "nubis"}"#).await;
    b.click("#invoke").await;
    let body = b.wait("the result", "document.querySelector('#invoke-body').innerText").await;
    assert!(body.as_str().unwrap().contains("hi nubis"), "{body}");
    let rid = b.text("#invoke-rid").await;
    assert!(rid.starts_with("1-"), "{rid}");
    assert!(b.text("#invoke-duration").await.ends_with("ms"));
    b.wait("the stored logs", "document.querySelector('.invoke-log') && document.querySelector('.invoke-log').innerText.includes('FC Invoke Summary')").await;
    assert!(b.text(".invoke-log").await.contains("hello from the console test"));
    b.screenshot(&shot("03-test")).await;

    // Edit env: a plain value and a secret one; the secret never comes back into the page.
    b.goto(&format!("{base}/console/#/f/hello/overview")).await;
    b.find("#edit-form").await;
    b.js("document.querySelector('#edit-form .env-add').click()", json!([])).await;
    b.js("document.querySelector('#edit-form .env-add').click()", json!([])).await;
    b.fill("#edit-form .env-row:nth-child(1) .env-key", "GREETING").await;
    b.fill("#edit-form .env-row:nth-child(1) .env-value", "hello").await;
    b.fill("#edit-form .env-row:nth-child(2) .env-key", "API_TOKEN").await;
    b.fill("#edit-form .env-row:nth-child(2) .env-value", "s3cr3t-value").await;
    b.click("#save-config").await;
    b.wait("the saved env", "document.querySelector('#env-shown') && document.querySelector('#env-shown').innerText.includes('GREETING')").await;
    let env = app.get_function("hello").await.json()["environmentVariables"].clone();
    assert_eq!(env, json!({"GREETING": "hello", "API_TOKEN": "s3cr3t-value"}));
    let page = b.js("return document.documentElement.outerHTML + [...document.querySelectorAll('input,textarea')].map(i => i.value).join('|')", json!([])).await;
    assert!(!page.as_str().unwrap().contains("s3cr3t-value"), "a secret value was put in the page");
    assert!(b.text("#env-shown").await.contains("hidden"));
    b.screenshot(&shot("04-overview")).await;
    // Saving again without retyping the secret keeps it.
    b.click("#save-config").await;
    b.wait("the page again", "document.querySelector('#env-shown')").await;
    crate::helpers::eventually(std::time::Duration::from_secs(10), "the config saved twice", || async {
        let f = app.get_function("hello").await.json();
        (f["environmentVariables"]["API_TOKEN"] == "s3cr3t-value").then_some(())
    })
    .await;

    // Versions and aliases.
    b.goto(&format!("{base}/console/#/f/hello/versions")).await;
    b.click("#publish-form button[type=submit]").await;
    b.wait("version 1", "document.querySelector('#versions td') && document.querySelector('#versions td').innerText === '1'").await;
    b.fill("#alias-form [name=aliasName]", "prod").await;
    b.fill("#alias-form [name=versionId]", "1").await;
    b.click("#alias-form button[type=submit]").await;
    b.wait("the alias", "document.querySelector('[data-alias=prod]')").await;
    assert_eq!(app.json_request("GET", "/2023-03-30/functions/hello/aliases/prod", "", None).await.json()["versionId"], "1");
    // A bad alias: the API's error under its field.
    b.fill("#alias-form [name=aliasName]", "LATEST").await;
    b.click("#alias-form button[type=submit]").await;
    let e = b.wait("the alias error", "document.querySelector('#alias-form [data-field=aliasName] .field-err').innerText").await;
    assert!(e.as_str().unwrap().starts_with("aliasName"), "{e}");
    b.screenshot(&shot("05-versions")).await;

    // Monitoring: a few more calls, then the charts render with data.
    for _ in 0..4 {
        assert_eq!(app.invoke("hello", br#"{"name": "again"}"#, &[]).await.status, 200);
    }
    app.invoke("hello", br#"{"name": "async"}"#, &[("x-fc-invocation-type", "Async")]).await;
    b.goto(&format!("{base}/console/#/f/hello/monitoring")).await;
    b.wait("four charts", "document.querySelectorAll('#function-charts canvas').length === 4").await;
    b.wait("five calls charted", "(() => { const m = /(\\d+) invocations/.exec(document.body.innerText); return m && +m[1] >= 5; })()").await;
    b.screenshot(&shot("06-monitoring")).await;

    b.goto(&format!("{base}/console/#/f/hello/logs")).await;
    b.wait("log lines", "document.querySelectorAll('.log-line').length >= 5").await;
    b.screenshot(&shot("07-logs")).await;
    b.goto(&format!("{base}/console/#/f/hello/tasks")).await;
    b.wait("the async task", "document.querySelector('#tasks td')").await;
    b.click("#tasks td a").await;
    b.wait("its history", "document.querySelector('#task-detail') && document.querySelector('#task-detail').innerText.includes('History')").await;
    b.screenshot(&shot("08-tasks")).await;

    b.goto(&format!("{base}/console/#/nodes")).await;
    b.find("[data-node]").await;
    b.wait("cluster charts", "document.querySelectorAll('#cluster-charts canvas').length === 4").await;
    b.js("window.scrollTo(0, 0)", json!([])).await;
    b.screenshot(&shot("09-nodes")).await;
    b.goto(&format!("{base}/console/#/functions")).await;
    b.wait("the list", "document.querySelector('#fn-search') && document.body.innerText.includes('hello')").await;
    b.screenshot(&shot("10-functions")).await;

    // A phone.
    b.resize(390, 844).await;
    b.goto(&format!("{base}/console/#/f/hello/test")).await;
    b.find("#event").await;
    b.screenshot(&shot("11-phone-test")).await;
    b.goto(&format!("{base}/console/#/functions")).await;
    b.wait("the list", "document.body.innerText.includes('hello')").await;
    b.screenshot(&shot("12-phone-functions")).await;

    // Sign out: back to the sign-in page, and the console is closed to this browser.
    b.click("#signout").await;
    b.wait("the sign-in page", "location.pathname === '/console/login'").await;
    b.goto(&format!("{base}/console/")).await;
    b.wait("the sign-in page again", "location.pathname === '/console/login'").await;
    b.quit().await;
    app.shutdown().await.unwrap();
}

/// The settings tabs: replace code from a folder's files (zipped in the page), an HTTP
/// trigger, the async config, reserved concurrency, cordon and uncordon, and delete with the
/// name typed to confirm.
#[tokio::test]
async fn console_settings_in_a_browser() {
    let app = spawn_app().await;
    let dir = shots();
    let shot = |name: &str| dir.join(format!("{name}.png"));
    assert_eq!(app.create_function(python_function("conf", PY_UPPER)).await.status, 200);
    let folder = tempfile::tempdir().unwrap();
    std::fs::create_dir(folder.path().join("code")).unwrap();
    std::fs::write(folder.path().join("code/index.py"), "def handler(event, context):\n    return 'from a folder'\n").unwrap();
    let base = app.url("");
    let b = Browser::start().await;
    b.resize(1280, 1100).await;
    b.goto(&format!("{base}/console/login")).await;
    b.fill("#ak", &app.ak).await;
    b.fill("#sk", &app.sk).await;
    b.click("#signin").await;
    b.find("#fn-search").await;

    // Code from a folder: the page zips its files.
    b.goto(&format!("{base}/console/#/f/conf/code")).await;
    b.fill("#code-form input[type=file][name=folder]", &folder.path().join("code").display().to_string()).await;
    b.click("#code-form button[type=submit]").await;
    eventually(std::time::Duration::from_secs(15), "the folder's code runs", || async {
        let r = app.invoke("conf", b"x", &[]).await;
        (r.text() == "from a folder").then_some(())
    })
    .await;

    // An HTTP trigger.
    b.goto(&format!("{base}/console/#/f/conf/triggers")).await;
    b.fill("#trigger-form [name=triggerName]", "web").await;
    b.click("#trigger-form button[type=submit]").await;
    b.wait("the trigger", "document.body.innerText.includes('anonymous')").await;
    assert_eq!(app.json_request("GET", "/2023-03-30/functions/conf/triggers/web", "", None).await.status, 200);
    b.screenshot(&shot("13-triggers")).await;

    // Async config: a bad value shows the API's error under its field, a good one is stored.
    b.goto(&format!("{base}/console/#/f/conf/async")).await;
    b.fill("#async-form [name=retries]", "99").await;
    b.click("#async-form button[type=submit]").await;
    let e = b.wait("the retries error", "document.querySelector('#async-form [data-field=maxAsyncRetryAttempts] .field-err').innerText").await;
    assert!(e.as_str().unwrap().starts_with("maxAsyncRetryAttempts"), "{e}");
    b.fill("#async-form [name=retries]", "1").await;
    b.click("#async-form button[type=submit]").await;
    b.wait("the stored config", "document.body.innerText.includes('Configured.')").await;
    let c = app.json_request("GET", "/2023-03-30/functions/conf/async-invoke-config", "", None).await.json();
    assert_eq!(c["maxAsyncRetryAttempts"], 1);
    b.screenshot(&shot("14-async-config")).await;

    // Reserved concurrency.
    b.goto(&format!("{base}/console/#/f/conf/scaling")).await;
    b.fill("#concurrency-form [name=reserved]", "3").await;
    b.click("#concurrency-form button[type=submit]").await;
    b.wait("the reservation", "document.body.innerText.includes('Reserved: 3')").await;
    b.screenshot(&shot("15-scaling")).await;

    // Cordon and uncordon this node.
    b.goto(&format!("{base}/console/#/nodes")).await;
    b.click("[data-node] button").await;
    b.wait("cordoned", "document.body.innerText.includes('cordoned')").await;
    let nodes = app.json_request("GET", "/nubis/admin/v1/nodes", "", None).await.json();
    assert_eq!(nodes["nodes"][0]["cordoned"], true);
    b.click("[data-node] button").await;
    b.wait("schedulable again", "document.body.innerText.includes('schedulable')").await;

    // Delete: refused until the name is typed.
    b.goto(&format!("{base}/console/#/f/conf/overview")).await;
    b.click("#delete-confirm ~ button").await;
    b.wait("the confirm hint", "document.body.innerText.includes('to delete it')").await;
    assert_eq!(app.get_function("conf").await.status, 200);
    app.json_request("DELETE", "/2023-03-30/functions/conf/triggers/web", "", None).await;
    b.fill("#delete-confirm", "conf").await;
    b.click("#delete-confirm ~ button").await;
    b.wait("the list", "location.hash === '#/functions'").await;
    assert_eq!(app.get_function("conf").await.status, 404);
    b.quit().await;
    app.shutdown().await.unwrap();
}
