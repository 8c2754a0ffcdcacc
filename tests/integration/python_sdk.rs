//! The official Python SDK (`yandexcloud` on PyPI, over grpcio) talks to the proxy as a
//! sidecar client would: `tests/interop/python_sdk.py` against the proxy in front of the
//! simulator. Not skippable: without python3 or the SDK the test fails and says what to
//! install (`.ci/run` installs both).

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::support::*;

/// What the script imports (the generated ImageService stub of the SDK, and grpcio).
const SDK_MODULES: &str = "import grpc, yandex.cloud.baremetal.v1alpha.image_service_pb2_grpc";

/// How long the whole script may take: eight calls of at most 10 s each, and the start of
/// Python on a loaded machine.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Fails the test, saying what to install, unless python3 can import the SDK.
async fn require_the_sdk() {
    let probe = Command::new("python3")
        .args(["-c", SDK_MODULES])
        .stdin(Stdio::null())
        .output()
        .await;
    match probe {
        Err(e) => panic!(
            "python3 cannot be run ({e}): install python3 (apt-get install python3 python3-pip) \
             and the official SDK (python3 -m pip install yandexcloud); .ci/run does both"
        ),
        Ok(output) if !output.status.success() => panic!(
            "python3 cannot import the official SDK: install it with `python3 -m pip install \
             yandexcloud` (.ci/run does); python3 said: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Ok(_) => {}
    }
}

/// The script's JSON line for `call`.
fn line<'a>(lines: &'a [Value], call: &str) -> &'a Value {
    lines
        .iter()
        .find(|line| line["call"] == call)
        .unwrap_or_else(|| panic!("no line for {call:?} in {lines:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_gets_a_miss_then_a_hit_through_the_proxy() {
    require_the_sdk().await;
    let h = Harness::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/python_sdk.py");
    let run = Command::new("python3")
        .arg(script)
        .arg(h.addr.to_string())
        .args(["--token", ALICE, "--other-token", BOB, "--image", IMG])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, run)
        .await
        .expect("python_sdk.py finishes within its calls' timeouts")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python_sdk.py exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();

    let first = line(&lines, "Get");
    assert_eq!(first["code"], "OK");
    assert_eq!(first["image"]["id"], IMG);
    assert_eq!(first["image"]["status"], "READY");
    assert_eq!(first["metadata"]["x-cache"], "MISS", "{first}");
    let again = line(&lines, "Get again");
    assert_eq!(again["metadata"]["x-cache"], "HIT", "{again}");
    assert!(
        again["metadata"]["cache-status"]
            .as_str()
            .is_some_and(|s| s.starts_with("baremetal-image-cache; hit")),
        "{again}"
    );
    let other = line(&lines, "Get as another tenant");
    assert_eq!(other["code"], "PERMISSION_DENIED", "{other}");
    assert!(
        other["request_id"].is_string(),
        "the API's details reach the SDK: {other}"
    );
    let nobody = line(&lines, "Get without a token");
    assert_eq!(nobody["code"], "UNAUTHENTICATED", "{nobody}");
    assert_eq!(nobody["metadata"]["x-cache"], "BYPASS", "{nobody}");
    let list = line(&lines, "List");
    assert_eq!(list["code"], "OK");
    assert_eq!(
        list["metadata"],
        serde_json::json!({}),
        "List is passed through"
    );
    let after_update = line(&lines, "Get after Update");
    assert_eq!(
        after_update["metadata"]["x-cache"], "MISS",
        "the Update invalidated the image: {after_update}"
    );
    assert_eq!(
        h.sim.grpc_image_get_count(IMG),
        4,
        "the repeated Get was served by the proxy"
    );
    h.stop().await;
}
