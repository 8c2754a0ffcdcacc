//! The simulator over gRPC (h2c), through the crate's own client: each method, the errors
//! and their details, the field clients do not know, faults, counters and recordings, and
//! the store it shares with REST.

use std::net::SocketAddr;
use std::time::Duration;

use baremetal_api_sim::grpc::{
    self, image, protobuf::FieldMask, CreateImageRequest, GetImageRequest, Image, ImageClient,
    ImageMetadata, ListImagesRequest, OperationResult, UpdateImageRequest,
};
use baremetal_api_sim::{Fault, FaultScope, Simulator};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tonic::Code;

const ALICE: &str = "t1.alice-demo-token";
const BOB: &str = "t1.bob-demo-token";
const ALICE_FOLDER: &str = "b1galicefolder000001";
const ALICE_IMAGE: &str = "ly5alice0ready000001";
const ALICE_IMAGE_2: &str = "ly5alice0ready000002";
const ALICE_CREATING: &str = "ly5alice0creating001";
const BOB_IMAGE: &str = "ly5bob00ready0000001";

/// A demo simulator on a fresh port and a client of it.
async fn demo() -> (Simulator, SocketAddr, ImageClient) {
    let sim = Simulator::demo();
    let addr = sim.clone().spawn().await.unwrap();
    let client = ImageClient::connect(&format!("http://{addr}"))
        .await
        .unwrap();
    (sim, addr, client)
}

/// Checks a failed call's code, and that its details carry the answer's request ID.
fn assert_status(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code) -> tonic::Status {
    let status = result.expect_err("the call succeeded");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(!status.message().is_empty());
    let details = grpc::status_details(&status).expect("grpc-status-details-bin");
    assert_eq!(
        (details.code, details.message.as_str()),
        (code as i32, status.message())
    );
    let request_id = status
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(
        grpc::status_request_id(&status).as_deref(),
        Some(request_id)
    );
    status
}

/// `GET /_sim/stats` over HTTP/1.1.
async fn stats(addr: SocketAddr) -> Value {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = "GET /_sim/stats HTTP/1.1\r\nhost: sim\r\nconnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn get_answers_the_image_with_a_field_clients_do_not_know() {
    let (sim, _, mut client) = demo().await;
    let raw = client.get_raw(ALICE_IMAGE, Some(ALICE), &[]).await.unwrap();
    let headers = raw.metadata();
    assert_eq!(headers.get("content-type").unwrap(), "application/grpc");
    assert_eq!(headers.get("x-request-id").unwrap().len(), 36);
    assert_eq!(headers.get("x-server-trace-id").unwrap().len(), 16);
    // As from any gRPC server: the message prefix gives the length, no Content-Length does.
    assert!(headers.get("content-length").is_none());
    let bytes = raw.into_inner();
    let image = Image::decode(bytes.clone()).unwrap();
    let stored = sim.image(ALICE_IMAGE).unwrap();
    assert_eq!(
        (
            image.id.as_str(),
            image.folder_id.as_str(),
            image.name.as_str()
        ),
        (ALICE_IMAGE, ALICE_FOLDER, stored.name.as_str())
    );
    assert_eq!(
        (image.status(), image.checksum),
        (image::Status::Ready, stored.checksum)
    );
    assert!(image.created_at.unwrap().seconds > 1_700_000_000);
    // Field 50 is on the wire; re-encoding what a client decoded loses it.
    assert_eq!(
        grpc::sim_only_field(&bytes),
        Some(format!("sim:{ALICE_IMAGE}"))
    );
    let decoded_again = client.get(ALICE_IMAGE, Some(ALICE), &[]).await.unwrap();
    let reencoded = decoded_again.into_inner().encode_to_vec();
    assert!(reencoded.len() < bytes.len() && grpc::sim_only_field(&reencoded).is_none());
    // The same image is the same bytes every time.
    let again = client.get_raw(ALICE_IMAGE, Some(ALICE), &[]).await.unwrap();
    assert_eq!(again.into_inner(), bytes);

    assert_eq!(sim.grpc_image_get_count(ALICE_IMAGE), 3);
    assert_eq!(sim.image_get_count(ALICE_IMAGE), 0);
    assert_eq!(sim.count("POST", grpc::GET_PATH), 3);
}

#[tokio::test]
async fn errors_are_trailers_only_answers() {
    use http_body::Body;
    let (_, addr, _) = demo().await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let message = GetImageRequest {
        image_id: ALICE_IMAGE.into(),
    }
    .encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let request = http::Request::post(format!("http://{addr}{}", grpc::GET_PATH))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "16");
    assert!(response.headers().contains_key("grpc-status-details-bin"));
    // One HEADERS frame that ends the stream: no DATA frame, no trailers frame.
    assert!(response.body().is_end_stream());
    assert!(!response.headers().contains_key("content-length"));
}

#[tokio::test]
async fn callers_need_a_known_token() {
    let (sim, _, mut client) = demo().await;
    for token in [None, Some("t1.unknown")] {
        let status = assert_status(
            client.get(ALICE_IMAGE, token, &[]).await,
            Code::Unauthenticated,
        );
        assert_eq!(status.message(), "Token is invalid or has expired.");
    }
    sim.revoke_token(ALICE);
    assert_status(
        client.get(ALICE_IMAGE, Some(ALICE), &[]).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn ids_existence_and_folders_are_checked_in_the_rest_order() {
    let (sim, _, mut client) = demo().await;
    let bad_id = assert_status(
        client.get("ly5short", Some("t1.unknown"), &[]).await,
        Code::Unauthenticated,
    );
    assert!(bad_id.message().starts_with("Token"));
    let invalid = assert_status(
        client.get("ly5short", Some(ALICE), &[]).await,
        Code::InvalidArgument,
    );
    assert!(invalid
        .message()
        .starts_with("Request validation error: image_id"));
    let missing = assert_status(
        client.get("ly5nosuchimage000001", Some(ALICE), &[]).await,
        Code::NotFound,
    );
    assert_eq!(missing.message(), "Image ly5nosuchimage000001 not found");
    assert_status(
        client.get(BOB_IMAGE, Some(ALICE), &[]).await,
        Code::PermissionDenied,
    );
    sim.set_hide_forbidden_as_not_found(true);
    assert_status(
        client.get(BOB_IMAGE, Some(ALICE), &[]).await,
        Code::NotFound,
    );
    assert!(client.get(BOB_IMAGE, Some(BOB), &[]).await.is_ok());
}

#[tokio::test]
async fn list_pages_through_a_folder() {
    let (_, _, mut client) = demo().await;
    let page = |page_token: &str| ListImagesRequest {
        folder_id: ALICE_FOLDER.into(),
        page_size: 2,
        page_token: page_token.into(),
        ..ListImagesRequest::default()
    };
    let first = client
        .list(page(""), Some(ALICE), &[])
        .await
        .unwrap()
        .into_inner();
    let ids = |images: &[Image]| images.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first.images), [ALICE_CREATING, ALICE_IMAGE]);
    assert_eq!(first.images[0].status(), image::Status::Creating);
    assert_eq!(first.next_page_token, ALICE_IMAGE);
    let second = client
        .list(page(&first.next_page_token), Some(ALICE), &[])
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&second.images), [ALICE_IMAGE_2]);
    assert_eq!(second.next_page_token, "");

    assert_status(
        client.list(page(""), Some(BOB), &[]).await,
        Code::PermissionDenied,
    );
    let no_folder = ListImagesRequest::default();
    assert_status(
        client.list(no_folder, Some(ALICE), &[]).await,
        Code::InvalidArgument,
    );
    let too_big = ListImagesRequest {
        page_size: 1001,
        ..page("")
    };
    assert_status(
        client.list(too_big, Some(ALICE), &[]).await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn images_listed_carry_the_unknown_field_too() {
    let (_, _, mut client) = demo().await;
    let request = ListImagesRequest {
        folder_id: ALICE_FOLDER.into(),
        ..ListImagesRequest::default()
    };
    let raw = client
        .call_raw(
            grpc::LIST_PATH,
            request.encode_to_vec().into(),
            Some(ALICE),
            &[],
        )
        .await
        .unwrap()
        .into_inner();
    // ListImagesResponse: images are field 1; decode each one's bytes on its own.
    #[derive(Clone, PartialEq, prost::Message)]
    struct RawList {
        #[prost(bytes = "bytes", repeated, tag = "1")]
        images: Vec<Bytes>,
    }
    let list = RawList::decode(raw).unwrap();
    assert_eq!(list.images.len(), 3);
    for image in &list.images {
        let id = Image::decode(image.clone()).unwrap().id;
        assert_eq!(grpc::sim_only_field(image), Some(format!("sim:{id}")));
    }
}

#[tokio::test]
async fn create_update_delete_and_their_operations() {
    let (sim, _, mut client) = demo().await;
    let create = CreateImageRequest {
        folder_id: ALICE_FOLDER.into(),
        name: "fedora-41".into(),
        uri: "https://storage.yandexcloud.net/b/fedora.iso".into(),
        ..CreateImageRequest::default()
    };
    let created = client
        .create(create.clone(), Some(ALICE), &[])
        .await
        .unwrap()
        .into_inner();
    assert!(!created.done && created.result.is_none());
    assert_eq!(created.description, "User image create");
    let metadata = created.metadata.unwrap();
    assert_eq!(
        metadata.type_url,
        "type.googleapis.com/yandex.cloud.baremetal.v1alpha.CreateImageMetadata"
    );
    let id = ImageMetadata::decode(metadata.value.as_slice())
        .unwrap()
        .image_id;
    let new = client
        .get(&id, Some(ALICE), &[])
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (new.name.as_str(), new.status()),
        ("fedora-41", image::Status::Creating)
    );
    assert_status(
        client.create(create.clone(), Some(BOB), &[]).await,
        Code::PermissionDenied,
    );
    let no_uri = CreateImageRequest {
        uri: String::new(),
        ..create
    };
    assert_status(
        client.create(no_uri, Some(ALICE), &[]).await,
        Code::InvalidArgument,
    );

    let update = UpdateImageRequest {
        image_id: id.clone(),
        update_mask: Some(FieldMask {
            paths: vec!["description".into()],
        }),
        name: "ignored-name".into(),
        description: "Fedora 41".into(),
        ..UpdateImageRequest::default()
    };
    let updated = client
        .update(update, Some(ALICE), &[])
        .await
        .unwrap()
        .into_inner();
    assert!(updated.done);
    let Some(OperationResult::Response(response)) = updated.result else {
        panic!("no response: {:?}", updated.result);
    };
    assert_eq!(
        response.type_url,
        "type.googleapis.com/yandex.cloud.baremetal.v1alpha.Image"
    );
    assert_eq!(
        grpc::sim_only_field(&response.value),
        Some(format!("sim:{id}"))
    );
    let image = Image::decode(response.value.as_slice()).unwrap();
    assert_eq!(
        (image.name.as_str(), image.description.as_str()),
        ("fedora-41", "Fedora 41")
    );
    assert_eq!(sim.image(&id).unwrap().description, "Fedora 41");

    let operations = client
        .list_operations(&id, Some(ALICE), &[])
        .await
        .unwrap()
        .into_inner();
    let descriptions: Vec<_> = operations
        .operations
        .iter()
        .map(|o| o.description.as_str())
        .collect();
    assert_eq!(descriptions, ["User image create", "User image update"]);

    let deleted = client
        .delete(&id, Some(ALICE), &[])
        .await
        .unwrap()
        .into_inner();
    let Some(OperationResult::Response(empty)) = deleted.result else {
        panic!("no response");
    };
    assert_eq!(empty.type_url, "type.googleapis.com/google.protobuf.Empty");
    assert!(deleted.done && empty.value.is_empty());
    assert_status(client.get(&id, Some(ALICE), &[]).await, Code::NotFound);
}

#[tokio::test]
async fn rest_and_grpc_share_one_store() {
    let (sim, _, mut client) = demo().await;
    let update = UpdateImageRequest {
        image_id: ALICE_IMAGE.into(),
        description: "set over gRPC".into(),
        ..UpdateImageRequest::default()
    };
    client.update(update, Some(ALICE), &[]).await.unwrap();
    // Without a mask only the non-empty fields change.
    let image = sim.image(ALICE_IMAGE).unwrap();
    assert_eq!(
        (image.name.as_str(), image.description.as_str()),
        ("ubuntu-24-04", "set over gRPC")
    );
    sim.set_status(ALICE_IMAGE, "DELETING");
    let image = client
        .get(ALICE_IMAGE, Some(ALICE), &[])
        .await
        .unwrap()
        .into_inner();
    assert_eq!(image.status(), image::Status::Deleting);
    // A status that is no Image.Status name is STATUS_UNSPECIFIED: no field 7 at all.
    sim.set_status(ALICE_IMAGE, "MELTING");
    let image = client
        .get(ALICE_IMAGE, Some(ALICE), &[])
        .await
        .unwrap()
        .into_inner();
    assert_eq!(image.status(), image::Status::StatusUnspecified);
}

#[tokio::test]
async fn other_methods_and_broken_messages_are_refused() {
    let (sim, _, mut client) = demo().await;
    let path = "/yandex.cloud.baremetal.v1alpha.ImageService/Explode";
    assert_status(
        client.call_raw(path, Bytes::new(), Some(ALICE), &[]).await,
        Code::Unimplemented,
    );
    let other_service = "/yandex.cloud.operation.OperationService/Get";
    assert_status(
        client
            .call_raw(other_service, Bytes::new(), Some(ALICE), &[])
            .await,
        Code::Unimplemented,
    );
    // Field 1 announces 127 bytes that never come.
    let broken = Bytes::from_static(b"\x0a\x7fly5");
    assert_status(
        client
            .call_raw(grpc::GET_PATH, broken, Some(ALICE), &[])
            .await,
        Code::Internal,
    );
    assert_eq!(sim.request_count(), 3);
    assert_eq!(sim.count("POST", path), 1);
}

#[tokio::test]
async fn calls_are_counted_and_recorded_with_their_metadata_and_message() {
    let (sim, addr, mut client) = demo().await;
    client
        .get(
            ALICE_IMAGE,
            Some(ALICE),
            &[("x-client-request-id", "c-1"), ("grpc-timeout", "5S")],
        )
        .await
        .unwrap();
    // GetImageRequest with a field 77 (varint 1) it does not have.
    let mut message = GetImageRequest {
        image_id: ALICE_IMAGE_2.into(),
    }
    .encode_to_vec();
    message.extend_from_slice(&[0xe8, 0x04, 0x01]);
    let message = Bytes::from(message);
    let answer = client
        .call_raw(grpc::GET_PATH, message.clone(), Some(ALICE), &[])
        .await
        .unwrap();
    assert_eq!(
        Image::decode(answer.into_inner()).unwrap().id,
        ALICE_IMAGE_2
    );
    client.get(ALICE_IMAGE, None, &[]).await.unwrap_err();

    assert_eq!(sim.request_count(), 3);
    assert_eq!(sim.count("POST", grpc::GET_PATH), 3);
    assert_eq!(
        (
            sim.grpc_image_get_count(ALICE_IMAGE),
            sim.grpc_image_get_count(ALICE_IMAGE_2)
        ),
        (2, 1)
    );
    let recorded = sim.recorded();
    let first = &recorded[0];
    assert_eq!(
        (first.method.as_str(), first.target.as_str(), first.version),
        ("POST", grpc::GET_PATH, http::Version::HTTP_2)
    );
    assert_eq!(first.headers["authorization"], format!("Bearer {ALICE}"));
    assert_eq!(first.headers["x-client-request-id"], "c-1");
    assert_eq!(first.headers["grpc-timeout"], "5S");
    assert_eq!(first.headers["te"], "trailers");
    assert_eq!(first.headers["content-type"], "application/grpc");
    let expected = GetImageRequest {
        image_id: ALICE_IMAGE.into(),
    };
    assert_eq!(first.body, expected.encode_to_vec());
    assert!(first.unknown_fields.is_empty());
    assert_eq!(
        (recorded[1].body.clone(), recorded[1].unknown_fields.clone()),
        (message, vec![77])
    );
    assert!(!recorded[2].headers.contains_key("authorization"));

    assert_eq!(
        stats(addr).await,
        serde_json::json!({
            "requests": 3,
            "image_get": {},
            "grpc_image_get": {ALICE_IMAGE: 2, ALICE_IMAGE_2: 1},
        })
    );
    sim.reset_counts();
    assert_eq!(sim.grpc_image_get_count(ALICE_IMAGE), 0);
}

#[tokio::test]
async fn extra_headers_are_sent_as_metadata() {
    let (sim, _, mut client) = demo().await;
    sim.set_extra_headers(&[("server-timing", "db;dur=3")]);
    let ok = client.get(ALICE_IMAGE, Some(ALICE), &[]).await.unwrap();
    assert_eq!(ok.metadata().get("server-timing").unwrap(), "db;dur=3");
    // The answer's trailers are in the metadata too.
    assert_eq!(ok.metadata().get("grpc-status").unwrap(), "0");
    let failed = client.get(ALICE_IMAGE, None, &[]).await.unwrap_err();
    assert_eq!(failed.metadata().get("server-timing").unwrap(), "db;dur=3");
}

#[tokio::test]
async fn status_faults_answer_the_grpc_code_of_the_http_status() {
    let (sim, _, mut client) = demo().await;
    for (status, code) in [
        (503, Code::Unavailable),
        (500, Code::Internal),
        (429, Code::ResourceExhausted),
        (504, Code::DeadlineExceeded),
        (401, Code::Unauthenticated),
    ] {
        let fault = Fault::Status {
            status,
            retry_after: Some(2),
        };
        sim.set_fault(FaultScope::Image(ALICE_IMAGE.into()), fault, Some(1));
        let failed = assert_status(client.get(ALICE_IMAGE, Some(ALICE), &[]).await, code);
        assert_eq!(failed.metadata().get("retry-after").unwrap(), "2");
    }
    // Used up: answered normally again.
    assert!(client.get(ALICE_IMAGE, Some(ALICE), &[]).await.is_ok());
    assert_eq!(sim.grpc_image_get_count(ALICE_IMAGE), 6);
}

#[tokio::test]
async fn faults_are_scoped_by_the_image_id_of_the_message() {
    let (sim, _, mut client) = demo().await;
    sim.set_fault(FaultScope::Image(ALICE_IMAGE.into()), Fault::Garbage, None);
    let garbage = client.get_raw(ALICE_IMAGE, Some(ALICE), &[]).await.unwrap();
    assert!(Image::decode(garbage.into_inner()).is_err());
    let status = client.get(ALICE_IMAGE, Some(ALICE), &[]).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(client.get(ALICE_IMAGE_2, Some(ALICE), &[]).await.is_ok());
    // Update and Delete name the image too; ListOperations does not (as /operations in REST).
    let update = UpdateImageRequest {
        image_id: ALICE_IMAGE.into(),
        ..UpdateImageRequest::default()
    };
    assert_eq!(
        client
            .update(update, Some(ALICE), &[])
            .await
            .unwrap_err()
            .code(),
        Code::Internal
    );
    assert!(client
        .list_operations(ALICE_IMAGE, Some(ALICE), &[])
        .await
        .is_ok());
    // The All scope reaches every method; the image scope still wins for its image.
    let unavailable = Fault::Status {
        status: 503,
        retry_after: None,
    };
    sim.set_fault(FaultScope::All, unavailable, None);
    let list = ListImagesRequest {
        folder_id: ALICE_FOLDER.into(),
        ..ListImagesRequest::default()
    };
    assert_status(client.list(list, Some(ALICE), &[]).await, Code::Unavailable);
    assert!(client.get_raw(ALICE_IMAGE, Some(ALICE), &[]).await.is_ok());
}

#[tokio::test]
async fn hang_never_answers() {
    let (sim, _, mut client) = demo().await;
    sim.set_fault(FaultScope::All, Fault::Hang, Some(1));
    let hung = timeout(
        Duration::from_millis(300),
        client.get(ALICE_IMAGE, Some(ALICE), &[]),
    )
    .await;
    assert!(hung.is_err(), "answered despite Hang: {hung:?}");
    assert_eq!(sim.grpc_image_get_count(ALICE_IMAGE), 1);
    // Only that stream hangs: the connection serves the next call.
    assert!(client.get(ALICE_IMAGE, Some(ALICE), &[]).await.is_ok());
}

#[tokio::test]
async fn reset_and_reset_mid_body_end_the_call_without_a_status() {
    let (sim, _, mut client) = demo().await;
    for fault in [Fault::Reset, Fault::ResetMidBody] {
        sim.set_fault(FaultScope::All, fault.clone(), Some(1));
        let reset = client
            .get_raw(ALICE_IMAGE, Some(ALICE), &[])
            .await
            .unwrap_err();
        assert!(
            matches!(
                reset.code(),
                Code::Internal | Code::Unknown | Code::Unavailable
            ),
            "{fault:?}: {reset:?}"
        );
        assert!(reset.metadata().get("grpc-status").is_none(), "{reset:?}");
        assert!(client.get(ALICE_IMAGE, Some(ALICE), &[]).await.is_ok());
    }
    // An error answer has no message to cut: its head comes, then the reset.
    sim.set_fault(FaultScope::All, Fault::ResetMidBody, Some(1));
    let reset = client.get(ALICE_IMAGE, None, &[]).await.unwrap_err();
    assert_ne!(reset.code(), Code::Unauthenticated, "{reset:?}");
}

#[tokio::test]
async fn wrong_id_answers_another_ready_image() {
    let (sim, _, mut client) = demo().await;
    sim.set_status(ALICE_IMAGE, "CREATING");
    sim.set_fault(FaultScope::All, Fault::WrongId, Some(1));
    let raw = client
        .get_raw(ALICE_IMAGE, Some(ALICE), &[])
        .await
        .unwrap()
        .into_inner();
    let image = Image::decode(raw.clone()).unwrap();
    assert_ne!(image.id, ALICE_IMAGE);
    assert_eq!(
        (image.id.len(), image.status(), image.folder_id.as_str()),
        (20, image::Status::Ready, ALICE_FOLDER)
    );
    assert!(grpc::sim_only_field(&raw).is_some());
}

#[tokio::test]
async fn huge_body_is_a_valid_image_of_the_asked_size() {
    let (sim, _, mut client) = demo().await;
    let size = 5 * 1024 * 1024 + 3;
    sim.set_fault(FaultScope::All, Fault::HugeBody(size), Some(1));
    let raw = client
        .get_raw(ALICE_IMAGE, Some(ALICE), &[])
        .await
        .unwrap()
        .into_inner();
    assert_eq!(raw.len(), size);
    let image = Image::decode(raw.clone()).unwrap();
    assert_eq!(
        (image.id.as_str(), image.status()),
        (ALICE_IMAGE, image::Status::Ready)
    );
    assert!(image.description.len() > 5_000_000);
    assert_eq!(
        grpc::sim_only_field(&raw),
        Some(format!("sim:{ALICE_IMAGE}"))
    );
}

#[tokio::test]
async fn delay_and_slow_drip_answer_late_but_whole() {
    let (sim, _, mut client) = demo().await;
    let normal = client
        .get_raw(ALICE_IMAGE, Some(ALICE), &[])
        .await
        .unwrap()
        .into_inner();

    sim.set_fault(
        FaultScope::All,
        Fault::Delay(Duration::from_millis(200)),
        Some(1),
    );
    let start = Instant::now();
    client.get(ALICE_IMAGE, Some(ALICE), &[]).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(200));

    let interval = Duration::from_millis(2);
    sim.set_fault(FaultScope::All, Fault::SlowDrip(interval), Some(1));
    let start = Instant::now();
    let dripped = client.get_raw(ALICE_IMAGE, Some(ALICE), &[]).await.unwrap();
    // The 5-byte prefix and the message, one byte per interval.
    let framed = normal.len() as u32 + 5;
    assert!(
        start.elapsed() >= interval * (framed - 1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(dripped.into_inner(), normal);
}
