//! A 3-member etcd cluster of the test's own, on loopback ports, so a member can be killed
//! without disturbing other tests.

use std::process::Stdio;
use std::time::Duration;

use super::helpers::eventually;

pub struct Etcd3 {
    pub members: Vec<Option<tokio::process::Child>>,
    pub client_ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Etcd3 {
    pub async fn start() -> Self {
        Self::start_members(3).await
    }

    pub async fn start_members(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let client_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let peer_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let initial = (0..n).map(|i| format!("m{i}=http://127.0.0.1:{}", peer_ports[i])).collect::<Vec<_>>().join(",");
        let token = format!("nubis-test-{}", uuid::Uuid::new_v4().simple());
        let members = (0..n)
            .map(|i| {
                let log = std::fs::File::create(dir.path().join(format!("m{i}.log"))).unwrap();
                let child = tokio::process::Command::new("etcd")
                    .args(["--name", &format!("m{i}"), "--unsafe-no-fsync"])
                    .arg("--data-dir")
                    .arg(dir.path().join(format!("m{i}")))
                    .args(["--listen-client-urls", &format!("http://127.0.0.1:{}", client_ports[i])])
                    .args(["--advertise-client-urls", &format!("http://127.0.0.1:{}", client_ports[i])])
                    .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", peer_ports[i])])
                    .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{}", peer_ports[i])])
                    .args(["--initial-cluster", &initial, "--initial-cluster-token", &token, "--initial-cluster-state", "new"])
                    .stdout(Stdio::null())
                    .stderr(log)
                    .kill_on_drop(true)
                    .spawn()
                    .expect("start etcd (installed by scripts/test-services.sh start etcd)");
                Some(child)
            })
            .collect();
        let e = Self { members, client_ports, _dir: dir };
        let endpoints = e.endpoints();
        eventually(Duration::from_secs(30), "the 3-member etcd answers", || {
            let endpoints = endpoints.clone();
            async move {
                let mut c = etcd_client::Client::connect(endpoints.split(',').collect::<Vec<_>>(), None).await.ok()?;
                c.put("nubis-test-probe", "1", None).await.ok().map(drop)
            }
        })
        .await;
        e
    }

    pub fn endpoints(&self) -> String {
        self.client_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// Freeze or resume every member (SIGSTOP/SIGCONT): etcd unreachable, then back, data kept.
    pub fn signal_all(&self, sig: &str) {
        for c in self.members.iter().flatten() {
            let pid = c.id().expect("etcd running").to_string();
            std::process::Command::new("kill").args([sig, &pid]).status().expect("kill");
        }
    }

    pub async fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            c.kill().await.expect("kill etcd member");
        }
    }
}
