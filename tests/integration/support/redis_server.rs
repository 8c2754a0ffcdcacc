//! A real `redis-server` (Debian's package; `.ci/run` installs it) on a free loopback port,
//! killed when dropped.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{eventually, try_eventually};

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
    /// With TLS: the CA file that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// With TLS that checks clients: a client certificate and key the server accepts.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A free port whose cluster bus port (port + 10000) is a port too, and free as well.
fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = 20_000 + (rand::random::<u16>() % 35_000);
        let free = |p: u16| StdListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free port pair for a cluster node");
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        RedisServer::start_with(&[]).await
    }

    /// A server with extra `redis-server` arguments (e.g. cluster mode).
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        // A free port can be taken by someone else before redis-server binds it: then it
        // exits at once, and the next attempt takes another port.
        for _ in 0..5 {
            let port = if extra.contains(&"--cluster-enabled") {
                free_cluster_port()
            } else {
                free_port()
            };
            let dir = std::env::temp_dir().join(format!("bic-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("redis work dir");
            let mut server = RedisServer {
                port,
                dir,
                child: None,
                extra: extra.iter().map(|s| s.to_string()).collect(),
                ca_file: None,
                client_cert: None,
            };
            if server.spawn().await.is_ok() {
                return server;
            }
        }
        panic!("redis-server exited at start five times (ports taken?)");
    }

    /// A server that speaks only TLS, with a certificate for `localhost` and 127.0.0.1
    /// signed by a CA made here with `openssl` (see [`RedisServer::ca_file`]).
    pub async fn start_tls() -> RedisServer {
        RedisServer::start_tls_checking(false).await
    }

    /// [`RedisServer::start_tls`] that accepts only clients with a certificate of its CA
    /// (`tls-auth-clients yes`); one is made for the tests ([`RedisServer::client_cert`]).
    pub async fn start_tls_checking_clients() -> RedisServer {
        RedisServer::start_tls_checking(true).await
    }

    async fn start_tls_checking(check_clients: bool) -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("bic-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis work dir");
        let openssl = |args: &[&str]| {
            let ok = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl runs")
                .success();
            assert!(ok, "openssl {args:?}");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        // `name.crt` and `name.key` for `cn`, signed by the CA, with the X.509 v3 extensions
        // `extensions` (rustls takes v3 certificates only).
        let signed = |name: &str, cn: &str, extensions: &str| {
            let file = |ext: &str| format!("{name}.{ext}");
            std::fs::write(dir.join(file("cnf")), extensions).expect("write extensions");
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &file("key"),
                "-out",
                &file("csr"),
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &file("csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &file("cnf"),
                "-out",
                &file("crt"),
            ]);
        };
        signed(
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        );
        if check_clients {
            signed(
                "client",
                "baremetal-image-cache",
                "extendedKeyUsage=clientAuth\n",
            );
        }
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let extra = vec![
            "--port".to_string(),
            "0".to_string(),
            "--tls-port".to_string(),
            port.to_string(),
            "--tls-cert-file".to_string(),
            path("server.crt"),
            "--tls-key-file".to_string(),
            path("server.key"),
            "--tls-ca-cert-file".to_string(),
            path("ca.crt"),
            "--tls-auth-clients".to_string(),
            if check_clients { "yes" } else { "no" }.to_string(),
        ];
        let mut server = RedisServer {
            port,
            ca_file: Some(dir.join("ca.crt")),
            client_cert: check_clients.then(|| (dir.join("client.crt"), dir.join("client.key"))),
            dir,
            child: None,
            extra,
        };
        server
            .spawn()
            .await
            .unwrap_or_else(|e| panic!("TLS redis-server: {e}"));
        server
    }

    fn client(&self) -> redis::Client {
        match &self.ca_file {
            None => redis::Client::open(self.url()).expect("redis URL"),
            Some(ca) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: self.client_cert.as_ref().map(|(cert, key)| {
                        redis::ClientTlsConfig {
                            client_cert: std::fs::read(cert).expect("client certificate"),
                            client_key: std::fs::read(key).expect("client key"),
                        }
                    }),
                    root_cert: Some(std::fs::read(ca).expect("CA file")),
                },
            )
            .expect("rediss URL"),
        }
    }

    pub fn url(&self) -> String {
        match self.ca_file {
            None => format!("redis://127.0.0.1:{}/", self.port),
            Some(_) => format!("rediss://localhost:{}/", self.port),
        }
    }

    /// Starts `redis-server` and waits until it answers as this server.
    async fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        self.child = Some(child);
        let port = self.port;
        let client = self.client();
        let ours = self.dir.canonicalize().unwrap_or_else(|_| self.dir.clone());
        let child = &mut self.child;
        // Ok(Err(..)): it will not come up as ours, so waiting longer is no use.
        let up = try_eventually(|| {
            let exited = match child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => {
                    *child = None;
                    Some(status)
                }
                _ => None,
            };
            let (client, ours) = (client.clone(), ours.clone());
            async move {
                if let Some(status) = exited {
                    return Ok(Err(format!("redis-server on port {port} exited: {status}")));
                }
                let mut c = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| format!("no connection: {e}"))?;
                // Ours, not another test's server that took the port: it works in our dir.
                let dir: Vec<String> = redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("dir")
                    .query_async(&mut c)
                    .await
                    .map_err(|e| format!("CONFIG GET dir: {e}"))?;
                if dir.get(1).map(std::path::Path::new) == Some(ours.as_path()) {
                    return Ok(Ok(()));
                }
                Ok(Err(format!("port {port} answers from {dir:?}")))
            }
        })
        .await;
        up.unwrap_or_else(|last| {
            Err(format!(
                "redis-server on port {port} did not come up: {last}"
            ))
        })
    }

    /// Kills the server at once (no shutdown courtesy), like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn()
            .await
            .unwrap_or_else(|e| panic!("restarting redis-server: {e}"));
    }

    /// A connection for the test's own commands.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A three-primary Redis Cluster on loopback, made with `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
                .await,
            );
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs (apt-get install redis-tools)");
        assert!(created.success(), "redis-cli --cluster create failed");
        // Every node must agree that all slots are served before the test starts.
        for node in &nodes {
            let connection = node.connection().await;
            eventually("the cluster becomes ok", || {
                let mut connection = connection.clone();
                async move {
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut connection)
                        .await
                        .unwrap_or_default();
                    info.contains("cluster_state:ok").then_some(())
                }
            })
            .await;
        }
        RedisCluster { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
