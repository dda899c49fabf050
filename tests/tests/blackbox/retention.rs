//! Retention policies, the preservation lock, litigation and delay holds, and
//! `ExplainRetention`, through the real server.

use crate::common;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use common::*;
use holdfast_client::{pb, HoldfastClient, InteractionBuilder};

fn created() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap()
}

fn spec(name: &str, include: &[&str], action: pb::PolicyAction, years: u32) -> pb::PolicySpec {
    pb::PolicySpec {
        name: name.into(),
        org_wide: include.is_empty(),
        include: include.iter().map(|m| m.to_string()).collect(),
        action: action as i32,
        days: years * 365,
        enabled: true,
        ..Default::default()
    }
}

async fn create(admin: &HoldfastClient, spec: pb::PolicySpec) -> pb::RetentionPolicy {
    admin
        .create_policy(pb::CreatePolicyRequest { spec: Some(spec) })
        .await
        .unwrap()
}

async fn store(server: &TestServer, mailbox: &str) -> String {
    let backend = server.client(INGEST_TOKEN).await;
    let item = InteractionBuilder::new(mailbox, "k")
        .app("Word")
        .created_at(created())
        .prompt("p")
        .build();
    backend.ingest(vec![item]).await.unwrap().results[0]
        .id
        .clone()
}

async fn explain(server: &TestServer, id: &str) -> pb::ExplainRetentionResponse {
    server
        .client(RETENTION_ADMIN_TOKEN)
        .await
        .explain_retention(pb::ExplainRetentionRequest { id: id.into() })
        .await
        .unwrap()
}

fn after_days(days: i64) -> Option<prost_types::Timestamp> {
    let t = created() + TimeDelta::days(days);
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

const ALICE: &str = "alice@contoso.com";
const BOB: &str = "bob@contoso.com";

#[tokio::test(flavor = "multi_thread")]
async fn the_spec_table_through_explain_retention() {
    use pb::PolicyAction::{DeleteOnly, RetainOnly, RetainThenDelete};
    // Row 1: delete-only 3y; retain-then-delete 5y.
    let server = TestServer::start().await;
    let admin = server.client(RETENTION_ADMIN_TOKEN).await;
    create(&admin, spec("d3", &[], DeleteOnly, 3)).await;
    create(&admin, spec("rd5", &[], RetainThenDelete, 5)).await;
    let explained = explain(&server, &store(&server, ALICE).await).await;
    assert_eq!(explained.delete_at, after_days(3 * 365));
    assert_eq!(explained.retain_until, after_days(5 * 365));
    assert!(!explained.destroyable);
    drop(server);

    // Row 2: retain-only 5y org-wide; retain-only 10y for alice: never moved by retention.
    let server = TestServer::start().await;
    let admin = server.client(RETENTION_ADMIN_TOKEN).await;
    create(&admin, spec("r5", &[], RetainOnly, 5)).await;
    create(&admin, spec("r10", &[ALICE], RetainOnly, 10)).await;
    let explained = explain(&server, &store(&server, ALICE).await).await;
    assert_eq!(explained.delete_at, None);
    assert_eq!(explained.retain_until, after_days(10 * 365));
    drop(server);

    // Row 3: delete-only 10y org-wide; delete-only 5y for alice; bob keeps 10y.
    let server = TestServer::start().await;
    let admin = server.client(RETENTION_ADMIN_TOKEN).await;
    create(&admin, spec("d10", &[], DeleteOnly, 10)).await;
    create(&admin, spec("d5", &[ALICE], DeleteOnly, 5)).await;
    assert_eq!(
        explain(&server, &store(&server, ALICE).await)
            .await
            .delete_at,
        after_days(5 * 365)
    );
    assert_eq!(
        explain(&server, &store(&server, BOB).await).await.delete_at,
        after_days(10 * 365)
    );
    drop(server);

    // Row 4: delete-only 10y and 7y, both for alice.
    let server = TestServer::start().await;
    let admin = server.client(RETENTION_ADMIN_TOKEN).await;
    create(&admin, spec("d10", &[ALICE], DeleteOnly, 10)).await;
    let d7 = create(&admin, spec("d7", &[ALICE], DeleteOnly, 7)).await;
    let explained = explain(&server, &store(&server, ALICE).await).await;
    assert_eq!(explained.delete_at, after_days(7 * 365));
    assert_eq!(explained.reasons.len(), 1, "{:?}", explained.reasons);
    assert!(
        explained.reasons[0].contains(&d7.id),
        "{:?}",
        explained.reasons
    );
    drop(server);

    // Row 5: nothing applies: kept forever.
    let server = TestServer::start().await;
    let explained = explain(&server, &store(&server, ALICE).await).await;
    assert_eq!(explained.delete_at, None);
    assert_eq!(explained.retain_until, None);
    assert!(!explained.retained_forever && !explained.destroyable);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_preservation_lock_refuses_and_audits() {
    use pb::PolicyAction::RetainThenDelete;
    let server = TestServer::start().await;
    let admin = server.client(RETENTION_ADMIN_TOKEN).await;
    let retention = admin.clone();
    let policy = create(&admin, spec("legal", &[ALICE], RetainThenDelete, 7)).await;
    let locked = retention
        .lock_policy(pb::PolicyRef {
            id: policy.id.clone(),
        })
        .await
        .unwrap();
    assert!(locked.locked);
    let update = |spec: pb::PolicySpec| pb::UpdatePolicyRequest {
        id: policy.id.clone(),
        spec: Some(spec),
    };

    let mut disabled = spec("legal", &[ALICE], RetainThenDelete, 7);
    disabled.enabled = false;
    let shorter = spec("legal", &[ALICE], RetainThenDelete, 5);
    let other_mailbox = spec("legal", &[BOB], RetainThenDelete, 7);
    for refused in [disabled, shorter, other_mailbox] {
        let status = retention.update_policy(update(refused)).await.unwrap_err();
        assert_eq!(
            status.code(),
            Some(tonic::Code::FailedPrecondition),
            "{status:?}"
        );
        assert!(
            status.message().contains("preservation lock"),
            "{}",
            status.message()
        );
    }
    let status = retention
        .delete_policy(pb::PolicyRef {
            id: policy.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Some(tonic::Code::FailedPrecondition));
    // Allowed: a longer period, more mailboxes.
    let longer = retention
        .update_policy(update(spec("legal", &[ALICE, BOB], RetainThenDelete, 10)))
        .await
        .unwrap();
    assert_eq!(longer.spec.unwrap().days, 3650);
    // An include list never loses its last mailbox (the reference would widen it to all).
    let unlocked = create(
        &admin,
        spec("other", &[ALICE], pb::PolicyAction::DeleteOnly, 1),
    )
    .await;
    let status = retention
        .update_policy(pb::UpdatePolicyRequest {
            id: unlocked.id.clone(),
            spec: Some(pb::PolicySpec {
                include: vec![],
                ..spec("other", &[ALICE], pb::PolicyAction::DeleteOnly, 1)
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Some(tonic::Code::InvalidArgument),
        "{status:?}"
    );
    // Wrong role.
    let backend = server.client(INGEST_TOKEN).await;
    let status = backend
        .list_policies(pb::ListPoliciesRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Some(tonic::Code::PermissionDenied));

    let auditor = server.client(AUDITOR_TOKEN).await;
    let entries = auditor
        .query_audit_log(pb::QueryAuditLogRequest {
            actor: "retention-admin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .entries;
    let refused = entries
        .iter()
        .filter(|e| e.result.starts_with("refused"))
        .count();
    assert_eq!(
        refused, 5,
        "three updates, one delete and the emptied include list"
    );
    assert!(entries
        .iter()
        .any(|e| e.action == "LockPolicy" && e.result == "ok"));
}

#[tokio::test(flavor = "multi_thread")]
async fn litigation_hold_blocks_destruction_and_its_release_starts_a_delay_hold() {
    let config = default_config().replace(
        "[index]",
        "[retention]\nholds_area_minimum_age_hours = 0\ndelay_hold_days = 30\n\n[index]",
    );
    let server = TestServer::start_with_config(config).await;
    let id = store(&server, ALICE).await;
    server
        .client(INGEST_TOKEN)
        .await
        .delete_history(pb::DeleteHistoryRequest {
            mailbox_id: ALICE.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let explained = explain(&server, &id).await;
    assert_eq!(explained.location, pb::Location::HoldsArea as i32);
    assert!(
        explained.destroyable,
        "user-deleted, nothing retains or holds it"
    );

    let admin = server.client(RETENTION_ADMIN_TOKEN).await;
    let retention = admin.clone();
    let hold = retention
        .place_litigation_hold(pb::PlaceLitigationHoldRequest {
            mailbox_id: "Alice@Contoso.com".into(),
            days: 0,
        })
        .await
        .unwrap();
    let explained = explain(&server, &id).await;
    assert!(!explained.destroyable);
    assert!(
        explained.reasons.iter().any(|r| r.contains(&hold.id)),
        "{:?}",
        explained.reasons
    );

    retention
        .release_hold(pb::HoldRef {
            id: hold.id.clone(),
        })
        .await
        .unwrap();
    let holds = retention
        .list_holds(pb::ListHoldsRequest {
            mailbox_id: ALICE.into(),
            include_released: false,
        })
        .await
        .unwrap()
        .holds;
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].kind, pb::HoldKind::Delay as i32);
    let until = holds[0].until.unwrap();
    assert!(until.seconds - Utc::now().timestamp() > 29 * 86_400);
    assert!(
        !explain(&server, &id).await.destroyable,
        "the delay hold protects it"
    );

    let status = retention
        .release_hold(pb::HoldRef {
            id: hold.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Some(tonic::Code::FailedPrecondition));
    retention
        .clear_delay_hold(pb::HoldRef {
            id: holds[0].id.clone(),
        })
        .await
        .unwrap();
    assert!(explain(&server, &id).await.destroyable);

    let auditor = server.client(AUDITOR_TOKEN).await;
    let actions: Vec<String> = auditor
        .query_audit_log(pb::QueryAuditLogRequest {
            actor: "retention-admin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| {
            format!(
                "{} {}",
                e.action,
                e.result.split(':').next().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            "PlaceLitigationHold ok",
            "ReleaseHold ok",
            "ReleaseHold refused",
            "ClearDelayHold ok"
        ]
    );
}
