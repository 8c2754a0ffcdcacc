//! The upstream simulator over real HTTP: answers, authorization, counters, faults, control
//! API and shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use baremetal_api_sim::{Fault, FaultScope, Image, Simulator};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const ALICE: &str = "t1.alice-demo-token";
const BOB: &str = "t1.bob-demo-token";
const ALICE_FOLDER: &str = "b1galicefolder000001";
const ALICE_IMAGE: &str = "ly5alice0ready000001";
const BOB_IMAGE: &str = "ly5bob00ready0000001";
const IMAGES: &str = "/baremetal/v1alpha/images";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    /// Checks the API's error shape, with the `RequestInfo` matching `x-request-id`.
    fn assert_error(&self, status: StatusCode, code: u64) {
        assert_eq!(self.status, status, "{:?}", self.body);
        let json = self.json();
        assert_eq!(json["code"], code);
        assert!(json["message"].is_string());
        assert_eq!(
            json["details"][0]["@type"],
            "type.googleapis.com/google.rpc.RequestInfo"
        );
        assert_eq!(
            json["details"][0]["requestId"],
            self.headers["x-request-id"].to_str().unwrap()
        );
    }
}

/// A demo simulator serving on a fresh port.
async fn demo() -> (Simulator, SocketAddr) {
    let sim = Simulator::demo();
    let addr = sim.clone().spawn().await.unwrap();
    (sim, addr)
}

/// Sends the response head's future on a fresh HTTP/1.1 connection.
async fn send(
    addr: SocketAddr,
    method: Method,
    target: &str,
    token: Option<&str>,
    body: &str,
) -> hyper::Result<http::Response<Incoming>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(target)
        .header("host", addr.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    sender
        .send_request(
            request
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
}

async fn call(
    addr: SocketAddr,
    method: Method,
    target: &str,
    token: Option<&str>,
    body: &str,
) -> Answer {
    let response = send(addr, method, target, token, body).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn get(addr: SocketAddr, target: &str, token: Option<&str>) -> Answer {
    call(addr, Method::GET, target, token, "").await
}

fn image_path(id: &str) -> String {
    format!("{IMAGES}/{id}")
}

#[tokio::test]
async fn get_answers_the_image_with_the_api_headers() {
    let (sim, addr) = demo().await;
    let answer = get(addr, &image_path(ALICE_IMAGE), Some(ALICE)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["content-type"], "application/json");
    let request_id = answer.headers["x-request-id"].to_str().unwrap();
    assert_eq!(
        request_id.split('-').map(str::len).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12]
    );
    let trace_id = answer.headers["x-server-trace-id"].to_str().unwrap();
    assert!(trace_id.len() == 16 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()));
    // Compact JSON in the documented field order, byte for byte what serde makes of the image.
    let expected = serde_json::to_vec(&sim.image(ALICE_IMAGE).unwrap()).unwrap();
    assert_eq!(answer.body, expected);
    let json = answer.json();
    assert_eq!(
        (json["id"].as_str(), json["status"].as_str()),
        (Some(ALICE_IMAGE), Some("READY"))
    );
    assert_eq!(json["folderId"], ALICE_FOLDER);
    assert_eq!(json["checksum"].as_str().map(str::len), Some(32));

    let again = get(addr, &image_path(ALICE_IMAGE), Some(ALICE)).await;
    assert_ne!(
        again.headers["x-request-id"],
        answer.headers["x-request-id"]
    );
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let (sim, addr) = demo().await;
    let answer = call(
        addr,
        Method::HEAD,
        &image_path(ALICE_IMAGE),
        Some(ALICE),
        "",
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.is_empty());
    let length = serde_json::to_vec(&sim.image(ALICE_IMAGE).unwrap())
        .unwrap()
        .len();
    assert_eq!(answer.headers["content-length"], length.to_string());
    assert_eq!(sim.image_get_count(ALICE_IMAGE), 1);
}

#[tokio::test]
async fn callers_need_a_known_token() {
    let (_, addr) = demo().await;
    get(addr, &image_path(ALICE_IMAGE), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, 16);
    let unknown = get(addr, &image_path(ALICE_IMAGE), Some("t1.nobody")).await;
    unknown.assert_error(StatusCode::UNAUTHORIZED, 16);
    // The exact bytes of the documented example, field order included.
    let request_id = unknown.headers["x-request-id"].to_str().unwrap();
    let expected = format!(
        r#"{{"code":16,"message":"Token is invalid or has expired.","details":[{{"@type":"type.googleapis.com/google.rpc.RequestInfo","requestId":"{request_id}"}}]}}"#
    );
    assert_eq!(unknown.body, expected);
}

#[tokio::test]
async fn images_of_other_folders_are_forbidden_or_hidden() {
    let (sim, addr) = demo().await;
    get(addr, &image_path(BOB_IMAGE), Some(ALICE))
        .await
        .assert_error(StatusCode::FORBIDDEN, 7);
    sim.set_hide_forbidden_as_not_found(true);
    let hidden = get(addr, &image_path(BOB_IMAGE), Some(ALICE)).await;
    hidden.assert_error(StatusCode::NOT_FOUND, 5);
    assert_eq!(
        hidden.json()["message"],
        format!("Image {BOB_IMAGE} not found")
    );
    assert_eq!(
        get(addr, &image_path(BOB_IMAGE), Some(BOB)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn ids_are_validated_before_existence() {
    let (_, addr) = demo().await;
    for bad in [
        "ly5short",
        "ly5alice0ready0000011",
        "Ly5alice0ready000001",
        "1y5alice0ready000001",
    ] {
        let answer = get(addr, &image_path(bad), Some(ALICE)).await;
        answer.assert_error(StatusCode::BAD_REQUEST, 3);
        assert!(answer.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("Request validation error: image_id"));
    }
    let unknown = get(addr, &image_path("ly5nosuchimage000001"), Some(ALICE)).await;
    unknown.assert_error(StatusCode::NOT_FOUND, 5);
    assert_eq!(
        unknown.json()["message"],
        "Image ly5nosuchimage000001 not found"
    );
}

#[tokio::test]
async fn look_alike_paths_are_not_found_but_counted() {
    let (sim, addr) = demo().await;
    let targets = [
        format!("{IMAGES}/{ALICE_IMAGE}/"),
        format!("{IMAGES}/ly5alice0ready%2F00001"),
        format!("/Baremetal/v1alpha/images/{ALICE_IMAGE}"),
        format!("{IMAGES}/{ALICE_IMAGE}:reboot"),
        "/baremetal/v1alpha/servers".to_owned(),
    ];
    for target in &targets {
        let answer = get(addr, target, Some(ALICE)).await;
        answer.assert_error(StatusCode::NOT_FOUND, 5);
        assert_eq!(answer.json()["message"], "Not Found");
        assert_eq!(sim.count("GET", target), 1, "{target}");
    }
    let put = call(
        addr,
        Method::PUT,
        &image_path(ALICE_IMAGE),
        Some(ALICE),
        "{}",
    )
    .await;
    put.assert_error(StatusCode::NOT_FOUND, 5);
    assert_eq!(sim.request_count(), targets.len() as u64 + 1);
    assert_eq!(sim.image_get_count(ALICE_IMAGE), 0);
}

#[tokio::test]
async fn list_pages_through_a_folder() {
    let (_, addr) = demo().await;
    let first = get(
        addr,
        &format!("{IMAGES}?folderId={ALICE_FOLDER}&pageSize=2"),
        Some(ALICE),
    )
    .await;
    let first = first.json();
    let ids: Vec<&str> = first["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ly5alice0creating001", "ly5alice0ready000001"]);
    let token = first["nextPageToken"].as_str().unwrap();
    let target = format!("{IMAGES}?folderId={ALICE_FOLDER}&pageSize=2&pageToken={token}");
    let second = get(addr, &target, Some(ALICE)).await.json();
    assert_eq!(second["images"][0]["id"], "ly5alice0ready000002");
    assert_eq!(second["nextPageToken"], "");

    get(addr, IMAGES, Some(ALICE))
        .await
        .assert_error(StatusCode::BAD_REQUEST, 3);
    let bobs = format!("{IMAGES}?folderId=b1gbobfolder00000001");
    get(addr, &bobs, Some(ALICE))
        .await
        .assert_error(StatusCode::FORBIDDEN, 7);
}

#[tokio::test]
async fn created_images_are_creating_until_their_status_changes() {
    let (sim, addr) = demo().await;
    sim.set_ready_after(None);
    let body = format!(
        r#"{{"folderId":"{ALICE_FOLDER}","name":"fedora","uri":"https://storage.yandexcloud.net/b/f.iso"}}"#
    );
    let created = call(addr, Method::POST, IMAGES, Some(ALICE), &body).await;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.body);
    let operation = created.json();
    assert_eq!(
        (
            operation["done"].as_bool(),
            operation["description"].as_str()
        ),
        (Some(false), Some("User image create"))
    );
    assert_eq!(
        operation["metadata"]["@type"],
        "type.googleapis.com/yandex.cloud.baremetal.v1alpha.CreateImageMetadata"
    );
    let id = operation["metadata"]["imageId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("ly5") && id.len() == 20);

    let image = get(addr, &image_path(&id), Some(ALICE)).await.json();
    assert_eq!(
        (image["status"].as_str(), image["name"].as_str()),
        (Some("CREATING"), Some("fedora"))
    );
    assert!(sim.set_status(&id, "READY"));
    let image = get(addr, &image_path(&id), Some(ALICE)).await.json();
    assert_eq!(image["status"], "READY");
    assert_eq!(image["checksum"].as_str().map(str::len), Some(32));

    let operations = get(
        addr,
        &format!("{}/operations", image_path(&id)),
        Some(ALICE),
    )
    .await
    .json();
    assert_eq!(operations["operations"][0]["id"], operation["id"]);

    let missing_uri = format!(r#"{{"folderId":"{ALICE_FOLDER}"}}"#);
    call(addr, Method::POST, IMAGES, Some(ALICE), &missing_uri)
        .await
        .assert_error(StatusCode::BAD_REQUEST, 3);
    call(addr, Method::POST, IMAGES, Some(ALICE), "{not json")
        .await
        .assert_error(StatusCode::BAD_REQUEST, 3);
    let bobs = r#"{"folderId":"b1gbobfolder00000001","uri":"s3://x"}"#;
    call(addr, Method::POST, IMAGES, Some(ALICE), bobs)
        .await
        .assert_error(StatusCode::FORBIDDEN, 7);
}

#[tokio::test]
async fn created_images_turn_ready_after_the_configured_delay() {
    let (sim, addr) = demo().await;
    sim.set_ready_after(Some(Duration::ZERO));
    let body = format!(r#"{{"folderId":"{ALICE_FOLDER}","uri":"s3://x"}}"#);
    let operation = call(addr, Method::POST, IMAGES, Some(ALICE), &body)
        .await
        .json();
    let id = operation["metadata"]["imageId"].as_str().unwrap();
    assert_eq!(
        get(addr, &image_path(id), Some(ALICE)).await.json()["status"],
        "READY"
    );
}

#[tokio::test]
async fn patch_and_delete_change_the_image() {
    let (sim, addr) = demo().await;
    let path = image_path(ALICE_IMAGE);
    let patch = r#"{"updateMask":"description,labels","name":"ignored","description":"LTS","labels":{"os":"linux"}}"#;
    let updated = call(addr, Method::PATCH, &path, Some(ALICE), patch)
        .await
        .json();
    assert_eq!(updated["done"], true);
    let response = &updated["response"];
    assert_eq!(
        response["@type"],
        "type.googleapis.com/yandex.cloud.baremetal.v1alpha.Image"
    );
    assert_eq!(
        (response["name"].as_str(), response["description"].as_str()),
        (Some("ubuntu-24-04"), Some("LTS"))
    );
    assert_eq!(sim.image(ALICE_IMAGE).unwrap().labels["os"], "linux");

    call(addr, Method::DELETE, &path, Some(BOB), "")
        .await
        .assert_error(StatusCode::FORBIDDEN, 7);
    let deleted = call(addr, Method::DELETE, &path, Some(ALICE), "")
        .await
        .json();
    assert_eq!(deleted["done"], true);
    assert_eq!(
        deleted["response"]["@type"],
        "type.googleapis.com/google.protobuf.Empty"
    );
    assert_eq!(sim.image(ALICE_IMAGE), None);
    get(addr, &path, Some(ALICE))
        .await
        .assert_error(StatusCode::NOT_FOUND, 5);
}

#[tokio::test]
async fn counters_and_recordings_show_what_arrived() {
    let (sim, addr) = demo().await;
    let path = image_path(ALICE_IMAGE);
    get(addr, &path, Some(ALICE)).await;
    get(addr, &path, None).await;
    get(addr, &format!("{path}?view=full"), Some(ALICE)).await;
    call(
        addr,
        Method::PATCH,
        &path,
        Some(ALICE),
        r#"{"name":"renamed"}"#,
    )
    .await;
    get(addr, "/_sim/stats", None).await;

    assert_eq!(sim.request_count(), 4);
    assert_eq!(sim.count("GET", &path), 2);
    assert_eq!(sim.count("GET", &format!("{path}?view=full")), 1);
    assert_eq!(sim.image_get_count(ALICE_IMAGE), 2);
    let recorded = sim.recorded();
    assert_eq!(recorded.len(), 4);
    assert_eq!(
        recorded[0].headers["authorization"],
        format!("Bearer {ALICE}")
    );
    assert!(!recorded[1].headers.contains_key("authorization"));
    assert_eq!(
        (recorded[3].method.as_str(), recorded[3].body.as_ref()),
        ("PATCH", &br#"{"name":"renamed"}"#[..])
    );
    assert_eq!(recorded[3].version, http::Version::HTTP_11);

    sim.reset_counts();
    assert_eq!(
        (
            sim.request_count(),
            sim.recorded().len(),
            sim.image_get_count(ALICE_IMAGE)
        ),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn status_fault_applies_the_given_times_then_heals() {
    let (sim, addr) = demo().await;
    let fault = Fault::Status {
        status: 503,
        retry_after: Some(2),
    };
    sim.set_fault(FaultScope::Image(ALICE_IMAGE.into()), fault, Some(1));
    let path = image_path(ALICE_IMAGE);
    let failed = get(addr, &path, Some(ALICE)).await;
    failed.assert_error(StatusCode::SERVICE_UNAVAILABLE, 14);
    assert_eq!(failed.headers["retry-after"], "2");
    assert_eq!(get(addr, &path, Some(ALICE)).await.status, StatusCode::OK);
    assert_eq!(sim.image_get_count(ALICE_IMAGE), 2);
}

#[tokio::test]
async fn image_scope_wins_over_all() {
    let (sim, addr) = demo().await;
    sim.set_fault(
        FaultScope::All,
        Fault::Status {
            status: 429,
            retry_after: None,
        },
        None,
    );
    sim.set_fault(FaultScope::Image(ALICE_IMAGE.into()), Fault::Garbage, None);
    let garbage = get(addr, &image_path(ALICE_IMAGE), Some(ALICE)).await;
    assert_eq!(garbage.status, StatusCode::OK);
    assert!(serde_json::from_slice::<Value>(&garbage.body).is_err());
    assert_eq!(garbage.headers["content-type"], "application/json");
    get(addr, &image_path(BOB_IMAGE), Some(BOB))
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, 8);
    sim.clear_faults();
    assert_eq!(
        get(addr, &image_path(BOB_IMAGE), Some(BOB)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn hang_never_answers() {
    let (sim, addr) = demo().await;
    sim.set_fault(FaultScope::All, Fault::Hang, None);
    let hung = timeout(
        Duration::from_millis(300),
        send(addr, Method::GET, &image_path(ALICE_IMAGE), Some(ALICE), ""),
    )
    .await;
    assert!(hung.is_err(), "answered despite Hang");
    assert_eq!(sim.image_get_count(ALICE_IMAGE), 1);
}

#[tokio::test]
async fn wrong_id_answers_another_valid_image() {
    let (sim, addr) = demo().await;
    sim.set_fault(FaultScope::All, Fault::WrongId, Some(1));
    let image: Image =
        serde_json::from_slice(&get(addr, &image_path(ALICE_IMAGE), Some(ALICE)).await.body)
            .unwrap();
    assert_ne!(image.id, ALICE_IMAGE);
    assert_eq!(
        (
            image.id.len(),
            image.status.as_str(),
            image.folder_id.as_str()
        ),
        (20, "READY", ALICE_FOLDER)
    );
}

#[tokio::test]
async fn reset_closes_the_connection_without_an_answer() {
    let (sim, addr) = demo().await;
    sim.set_fault(FaultScope::All, Fault::Reset, Some(1));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: sim\r\n\r\n",
        image_path(ALICE_IMAGE)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let read = timeout(
        Duration::from_millis(500),
        stream.read_to_end(&mut received),
    )
    .await
    .unwrap();
    assert!(
        read.is_err() || received.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(sim.request_count(), 1);
}

#[tokio::test]
async fn reset_mid_body_sends_half_of_the_announced_length() {
    let (sim, addr) = demo().await;
    let full_length = serde_json::to_vec(&sim.image(ALICE_IMAGE).unwrap())
        .unwrap()
        .len();
    sim.set_fault(FaultScope::All, Fault::ResetMidBody, None);
    let response = send(addr, Method::GET, &image_path(ALICE_IMAGE), Some(ALICE), "")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-length"],
        full_length.to_string()
    );
    let mut body = response.into_body();
    let mut received = 0;
    let error = loop {
        match body.frame().await {
            Some(Ok(frame)) => received += frame.into_data().map_or(0, |data| data.len()),
            Some(Err(error)) => break error,
            None => panic!("the body ended cleanly after {received} bytes"),
        }
    };
    assert_eq!(received, full_length / 2, "{error}");
}

#[tokio::test]
async fn huge_body_is_valid_json_of_the_asked_size() {
    let (sim, addr) = demo().await;
    sim.set_fault(FaultScope::All, Fault::HugeBody(3 << 20), Some(1));
    let answer = get(addr, &image_path(ALICE_IMAGE), Some(ALICE)).await;
    assert_eq!(answer.body.len(), 3 << 20);
    let image: Image = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        (image.id.as_str(), image.status.as_str()),
        (ALICE_IMAGE, "READY")
    );
}

#[tokio::test]
async fn slow_drip_sends_a_byte_per_interval() {
    let (sim, addr) = demo().await;
    sim.set_fault(
        FaultScope::All,
        Fault::SlowDrip(Duration::from_millis(40)),
        None,
    );
    let response = send(addr, Method::GET, &image_path(ALICE_IMAGE), Some(ALICE), "")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = 0;
    let _ = timeout(Duration::from_millis(150), async {
        while let Some(Ok(frame)) = body.frame().await {
            received += frame.into_data().map_or(0, |data| data.len());
        }
    })
    .await;
    assert!(
        (1..=5).contains(&received),
        "received {received} bytes in 150ms"
    );
}

#[tokio::test]
async fn bodies_over_16_mib_are_refused() {
    let (sim, addr) = demo().await;
    let body = "x".repeat(16 * 1024 * 1024 + 1);
    let answer = call(
        addr,
        Method::PATCH,
        &image_path(ALICE_IMAGE),
        Some(ALICE),
        &body,
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(sim.request_count(), 1);
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let (_, addr) = demo().await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = |method: Method| {
        Request::builder()
            .method(method)
            .uri(format!("http://{addr}{}", image_path(ALICE_IMAGE)))
            .header("authorization", format!("Bearer {ALICE}"))
            .body(Full::default())
            .unwrap()
    };
    let response = client.request(request(Method::GET)).await.unwrap();
    assert_eq!(
        (response.version(), response.status()),
        (http::Version::HTTP_2, StatusCode::OK)
    );
    let length = response.headers()["content-length"].clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(length, body.len().to_string());
    // HEAD over HTTP/2 announces the length and sends no body (hyper alone would send it).
    let head = client.request(request(Method::HEAD)).await.unwrap();
    assert_eq!(head.headers()["content-length"], length);
    assert!(head
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());
}

#[tokio::test]
async fn control_api_arms_faults_sets_statuses_and_reports() {
    let (sim, addr) = demo().await;
    let fault = r#"{"scope":{"Image":"ly5alice0ready000001"},"fault":{"Status":{"status":500,"retry_after":null}},"times":1}"#;
    assert_eq!(
        call(addr, Method::POST, "/_sim/fault", None, fault)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    get(addr, &image_path(ALICE_IMAGE), Some(ALICE))
        .await
        .assert_error(StatusCode::INTERNAL_SERVER_ERROR, 13);

    let status = call(
        addr,
        Method::POST,
        "/_sim/images/ly5alice0creating001/status",
        None,
        r#"{"status":"READY"}"#,
    )
    .await;
    assert_eq!(status.status, StatusCode::NO_CONTENT);
    assert_eq!(sim.image("ly5alice0creating001").unwrap().status, "READY");

    let stats = get(addr, "/_sim/stats", None).await.json();
    assert_eq!(
        stats,
        serde_json::json!({"requests": 1, "image_get": {ALICE_IMAGE: 1}, "grpc_image_get": {}})
    );

    let bad = call(
        addr,
        Method::POST,
        "/_sim/fault",
        None,
        r#"{"scope":"All","fault":"Explode"}"#,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json()["error"].is_string());
    assert_eq!(
        call(addr, Method::POST, "/_sim/reset", None, "")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(sim.request_count(), 0);
}

#[tokio::test]
async fn serve_returns_on_shutdown_and_ends_hung_requests() {
    let sim = Simulator::demo();
    sim.set_fault(FaultScope::All, Fault::Hang, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(sim.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    let path = image_path(ALICE_IMAGE);
    let hung = tokio::spawn(async move { send(addr, Method::GET, &path, Some(ALICE), "").await });
    // Nothing to await for "the request is hanging in the simulator": poll its counter.
    timeout(Duration::from_secs(1), async {
        while sim.request_count() == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap();
    stop.send(()).unwrap();
    timeout(Duration::from_millis(500), served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(timeout(Duration::from_millis(500), hung)
        .await
        .unwrap()
        .unwrap()
        .is_err());
}
