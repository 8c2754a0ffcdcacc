//! A fleet for the tests: several proxies against one simulator and one real `redis-server`,
//! and what the fleet tests of both protocols wait for.

use std::sync::Arc;
use std::time::Duration;

use baremetal_api_sim::Simulator;
use baremetal_image_cache::config::{RedisConfig, Secret};
use baremetal_image_cache::Config;

use super::redis_server::RedisServer;
use super::{eventually, simulator, Harness, Scrape, P};

pub const GRANT_KEY: &str = "fleet-test-grant-key-0123456789abcdef";

pub fn fleet_config(base: Config, urls: Vec<String>, grant_key: Option<&str>) -> Config {
    Config {
        redis: Some(RedisConfig {
            urls,
            cluster: false,
            grant_key: grant_key.map(|k| Secret::new(k.to_string())),
            timeout: Duration::from_millis(250),
            lease: Duration::from_secs(3),
            prefix: "bic-test:".to_string(),
            ca_file: None,
            client_cert: None,
        }),
        ..base
    }
}

/// A `redis-server`, the test simulator and `n` proxies on `config` sharing that Redis,
/// listening to each other.
pub async fn start_fleet(
    n: usize,
    config: Config,
    grant_key: Option<&str>,
) -> (RedisServer, Simulator, Vec<Arc<Harness>>) {
    let redis = RedisServer::start().await;
    let sim = simulator();
    let instances = fleet(n, &sim, fleet_config(config, vec![redis.url()], grant_key)).await;
    until_listening(&instances).await;
    (redis, sim, instances)
}

/// `n` proxies against one simulator, sharing `redis`.
pub async fn fleet(n: usize, sim: &Simulator, config: Config) -> Vec<Arc<Harness>> {
    let upstream = sim.clone().spawn().await.expect("simulator starts");
    let mut instances = Vec::new();
    for _ in 0..n {
        instances.push(Arc::new(
            Harness::start_against(sim.clone(), &format!("http://{upstream}"), config.clone())
                .await,
        ));
    }
    instances
}

/// Waits until every instance's subscription is up: before that an instance takes no shared
/// value, and would not hear a message of the test.
pub async fn until_listening(instances: &[Arc<Harness>]) {
    for h in instances {
        until_metric(h, &format!("{P}_l2_subscribed"), 1.0).await;
    }
}

pub async fn stop_all(instances: Vec<Arc<Harness>>) {
    for h in instances {
        if let Ok(h) = Arc::try_unwrap(h) {
            h.stop().await;
        }
    }
}

/// The series of Redis commands `op` that ended in `result`.
pub fn l2_series(op: &str, result: &str) -> String {
    format!("{P}_l2_operations_total{{op=\"{op}\",result=\"{result}\"}}")
}

/// The series of local entries dropped because another instance said so.
pub fn fleet_drops() -> String {
    format!("{P}_invalidations_total{{reason=\"fleet\"}}")
}

/// Waits until `series` on `h` reaches `at_least`.
pub async fn until_metric(h: &Harness, series: &str, at_least: f64) {
    eventually(&format!("{series} reaches {at_least}"), || async move {
        let scrape = Scrape::take(h).await;
        let value = scrape.get(series);
        if value >= at_least {
            return Ok(());
        }
        let l2: Vec<_> = scrape
            .0
            .into_iter()
            .filter(|(k, v)| k.contains("_l2_") && *v != 0.0)
            .collect();
        Err(format!("{value}; the tier's non-zero series: {l2:?}"))
    })
    .await
}
