//! Fresh databases on the shared PostgreSQL and MariaDB test servers
//! (`scripts/test-services.sh start postgres mariadb`), one per test, so tests never share
//! state and can run in parallel.

#![allow(dead_code)]

use nubis::store::Engine;
use sqlx::{AssertSqlSafe, Connection};

/// The server URL for `engine` from the environment; a missing one fails the test (as the Kafka
/// tests do), so a run without the services cannot pass by testing nothing.
pub fn server_url(engine: Engine) -> String {
    let var = match engine {
        Engine::Postgres => "NUBIS_TEST_POSTGRES_URL",
        Engine::MySql => "NUBIS_TEST_MYSQL_URL",
        Engine::Sqlite => unreachable!("SQLite needs no server"),
    };
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: start the servers with `bash scripts/test-services.sh start postgres mariadb` \
             and `eval \"$(bash scripts/test-services.sh env)\"`"
        )
    })
}

/// A new, empty database on `engine`'s server: its URL and name.
pub async fn create_database(engine: Engine) -> (String, String) {
    // MariaDB's test user may create databases named nubis* (see test-services.sh).
    let name = format!("nubis_t_{}", uuid::Uuid::new_v4().simple());
    let server = server_url(engine);
    execute(engine, &server, format!("CREATE DATABASE {name}")).await;
    let mut url = url::Url::parse(&server).expect("server URL parses");
    url.set_path(&format!("/{name}"));
    (url.to_string(), name)
}

/// Remove a database made by [`create_database`] (connections still open are cut).
pub async fn drop_database(engine: Engine, name: &str) {
    let sql = match engine {
        Engine::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        _ => format!("DROP DATABASE IF EXISTS {name}"),
    };
    execute(engine, &server_url(engine), sql).await;
}

/// One statement on a connection of its own. The SQL is built from our own generated names.
async fn execute(engine: Engine, url: &str, sql: String) {
    match engine {
        Engine::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.expect("connect to PostgreSQL");
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut c).await.expect("statement on PostgreSQL");
        }
        Engine::MySql => {
            let mut c = sqlx::MySqlConnection::connect(url).await.expect("connect to MariaDB");
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut c).await.expect("statement on MariaDB");
        }
        Engine::Sqlite => unreachable!("SQLite needs no server"),
    }
}

/// The host:port of a server URL (for a forwarder in front of it).
pub fn socket_of(url: &str) -> std::net::SocketAddr {
    let u = url::Url::parse(url).expect("URL parses");
    let host = u.host_str().expect("URL has a host");
    format!("{host}:{}", u.port_or_known_default().expect("URL has a port")).parse().expect("host is an IP")
}

/// `url` pointing at another host:port (a forwarder), everything else unchanged.
pub fn via(url: &str, addr: std::net::SocketAddr) -> String {
    let mut u = url::Url::parse(url).expect("URL parses");
    u.set_ip_host(addr.ip()).expect("URL can take an IP host");
    u.set_port(Some(addr.port())).expect("URL can take a port");
    u.to_string()
}
