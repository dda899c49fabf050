//! TLS with client certificates, health checking, metrics and request-size limits.

use crate::common;

use std::io::{Read, Write};

use common::*;
use holdfast_client::{pb, ClientConfig, HoldfastClient, TlsOptions};

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_client_certificates() {
    let pki = make_pki();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca = write("ca.pem", &pki.ca);
    let server_cert = write("server.pem", &pki.server_cert);
    let server_key = write("server.key", &pki.server_key);
    let client_cert = write("client.pem", &pki.client_cert);
    let client_key = write("client.key", &pki.client_key);
    let config = format!(
        "{}\n[tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\n",
        default_config(),
        server_cert,
        server_key,
        ca
    );
    let server = TestServer::start_with_config(config).await;
    let https = format!("https://127.0.0.1:{}", server.port);
    let tls = |with_client_cert: bool| TlsOptions {
        ca_file: Some(ca.clone()),
        domain: Some("localhost".into()),
        client_cert_file: with_client_cert.then(|| client_cert.clone()),
        client_key_file: with_client_cert.then(|| client_key.clone()),
    };

    let client = HoldfastClient::connect(ClientConfig {
        addr: https.clone(),
        token: INGEST_TOKEN.into(),
        tls: Some(tls(true)),
    })
    .await
    .unwrap();
    let result = client
        .ingest(vec![item("tls@contoso.com", "k")])
        .await
        .unwrap();
    assert_eq!(status_of(&result.results[0]), pb::IngestStatus::Created);

    // No client certificate: the handshake is refused.
    let refused = match HoldfastClient::connect(ClientConfig {
        addr: https.clone(),
        token: INGEST_TOKEN.into(),
        tls: Some(tls(false)),
    })
    .await
    {
        Err(error) => Some(error.to_string()),
        Ok(client) => client
            .ingest(vec![item("tls@contoso.com", "k2")])
            .await
            .err()
            .map(|e| e.to_string()),
    };
    assert!(
        refused.is_some(),
        "a client without a certificate got through"
    );

    // Plain text against a TLS port fails.
    let plain = match HoldfastClient::connect(ClientConfig {
        addr: format!("http://127.0.0.1:{}", server.port),
        token: INGEST_TOKEN.into(),
        tls: None,
    })
    .await
    {
        Err(_) => true,
        Ok(client) => client
            .ingest(vec![item("tls@contoso.com", "k3")])
            .await
            .is_err(),
    };
    assert!(plain);

    // The CLI speaks TLS too.
    let output = run_cli(
        &[
            "--addr",
            &https,
            "--tls-ca",
            ca.to_str().unwrap(),
            "--tls-domain",
            "localhost",
            "--tls-cert",
            client_cert.to_str().unwrap(),
            "--tls-key",
            client_key.to_str().unwrap(),
            "list",
            "--mailbox",
            "tls@contoso.com",
        ],
        &[("HOLDFAST_TOKEN", INGEST_TOKEN)],
        None,
    );
    assert_eq!(output.code, 0, "{}", output.stderr);
    assert!(output.stdout.contains("prompt of k"), "{}", output.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_public_address_without_tls_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(SERVER_BIN)
        .args([
            "--listen",
            "0.0.0.0:0",
            "--metrics-listen",
            "off",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not loopback"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_config_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("holdfast.toml");
    std::fs::write(&config, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let output = std::process::Command::new(SERVER_BIN)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("lisen"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_metrics_and_the_request_size_limit() {
    let metrics_port = free_port();
    let server = TestServer::start_with_config(config_with_metrics_port(metrics_port)).await;

    let channel = tonic::transport::Endpoint::from_shared(server.addr())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "holdfast.v1.InteractionService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let client = server.client(INGEST_TOKEN).await;
    client
        .ingest(vec![item("ops@contoso.com", "k")])
        .await
        .unwrap();

    // More than 16 MiB in one request is refused whole, and nothing is stored.
    let big: Vec<_> = (0..17)
        .map(|n| {
            let mut i = item("ops@contoso.com", &format!("big{n}"));
            i.prompt = "x".repeat(1 << 20);
            i
        })
        .collect();
    let error = client.ingest(big).await.unwrap_err();
    assert!(
        matches!(
            error.code(),
            Some(tonic::Code::OutOfRange | tonic::Code::ResourceExhausted)
        ),
        "{error}"
    );
    assert_eq!(list_all(&client, "ops@contoso.com").await.len(), 1);

    let mut stream = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    assert!(
        body.contains("holdfast_ingest_items_total{status=\"created\"} 1"),
        "{body}"
    );
    assert!(body.contains("holdfast_store_syncs_total"), "{body}");
    assert!(
        body.contains("holdfast_group_commit_items_bucket"),
        "{body}"
    );
}

/// The services a reflection client must find.
const REFLECTED: [&str; 4] = [
    "holdfast.v1.InteractionService",
    "holdfast.v1.AdminService",
    "holdfast.v1.AuditService",
    "grpc.health.v1.Health",
];

#[tokio::test(flavor = "multi_thread")]
async fn reflection_lists_the_services_for_grpcurl() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let server = TestServer::start().await;
    let channel = tonic::transport::Endpoint::from_shared(server.addr())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in REFLECTED {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

/// Python's grpcio-reflection and older tools ask `grpc.reflection.v1alpha`: they find the
/// same services and can fetch a service's descriptor.
#[tokio::test(flavor = "multi_thread")]
async fn reflection_answers_v1alpha_clients_too() {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;

    let server = TestServer::start().await;
    let channel = tonic::transport::Endpoint::from_shared(server.addr())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "holdfast.v1.InteractionService".into(),
            )),
        },
    ];
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let listed = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("unexpected reflection answer: {listed:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in REFLECTED {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }
    let file = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = file.message_response else {
        panic!("unexpected reflection answer: {file:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}
