//! https to the search cluster: a private CA (`ca_cert_file`), the system's roots (which do not
//! know that CA: refused), and `insecure_skip_verify`. The cluster is the OpenSearch-API test
//! server (`NUBIS_TEST_OPENSEARCH_URL`) behind a TLS front run by the test on 127.0.0.1, with a
//! CA and a server certificate made by `openssl` for the run.

#[path = "api/helpers.rs"]
mod helpers;
#[path = "api/log_queries.rs"]
mod log_queries;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use helpers::{TestApp, eventually, python_function, spawn_app_with};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn os_addr() -> String {
    let url = std::env::var("NUBIS_TEST_OPENSEARCH_URL").expect(
        "NUBIS_TEST_OPENSEARCH_URL is not set: start the OpenSearch-API server with \
         `bash scripts/test-services.sh start opensearch` and eval its env",
    );
    url.trim_start_matches("http://").trim_end_matches('/').to_string()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 signed by it (`server.pem`, `server.key`).
fn make_certs(dir: &Path) {
    openssl(dir, &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=nubis test CA"]);
    openssl(dir, &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(
        dir,
        &["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf"],
    );
}

/// Terminate TLS on a free port of 127.0.0.1 and pass the bytes on to `upstream`; returns the
/// port. Stops when the test's runtime ends.
async fn tls_front(dir: &Path, upstream: String) -> u16 {
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem")).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let cfg = ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                // A client refusing our certificate ends the handshake: nothing to pass on.
                let Ok(mut tls) = acceptor.accept(conn).await else { return };
                let Ok(mut up) = TcpStream::connect(&upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    port
}

async fn app(port: u16, tweak: impl FnOnce(&mut nubis::config::OpenSearchConfig)) -> TestApp {
    let prefix = format!("nubis-test-tls-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    spawn_app_with(|c| {
        c.opensearch.enabled = true;
        c.opensearch.url = format!("https://127.0.0.1:{port}");
        c.opensearch.index_prefix = prefix;
        c.opensearch.timeout_secs = 2;
        tweak(&mut c.opensearch);
    })
    .await
}

/// Lines go out over TLS and GetFunctionLogs reads them back over TLS.
async fn ships_and_searches(app: &TestApp) {
    assert_eq!(app.create_function(python_function("tls", log_queries::TALKER)).await.status, 200);
    let rids = log_queries::talk(app, "tls").await;
    log_queries::wait_visible(app, "tls", &rids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca_without_it_and_without_verification() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let port = tls_front(dir.path(), os_addr()).await;
    let ca = dir.path().join("ca.pem").display().to_string();

    let trusting = app(port, |o| o.ca_cert_file = ca).await;
    ships_and_searches(&trusting).await;
    assert_eq!(trusting.state.metrics.log_shipping_errors.get(), 0);
    trusting.shutdown().await.unwrap();

    // The system's roots do not know the test CA: every request fails, nothing is lost locally.
    let doubting = app(port, |_| {}).await;
    assert_eq!(doubting.create_function(python_function("tls", log_queries::TALKER)).await.status, 200);
    let r = doubting.invoke("tls", b"x", &[]).await;
    assert_eq!(r.status, 200, "invocations do not depend on the cluster");
    eventually(Duration::from_secs(20), "shipping fails on the certificate", || async {
        (doubting.state.metrics.log_shipping_errors.get() > 0).then_some(())
    })
    .await;
    assert_eq!(doubting.state.metrics.log_lines_shipped.get(), 0);
    log_queries::logs(&doubting, "tls", "").await.assert_error(503, "ServiceUnavailable");
    doubting.shutdown().await.unwrap();

    let careless = app(port, |o| o.insecure_skip_verify = true).await;
    ships_and_searches(&careless).await;
    careless.shutdown().await.unwrap();
}
