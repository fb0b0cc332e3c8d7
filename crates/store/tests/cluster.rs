//! The catalog's cluster tables on both databases: node heartbeats, pipeline leases judged by
//! the database's clock, and listings fenced by the lease epoch. On PostgreSQL, nodes race for
//! real: concurrent claims, concurrent listings, and a claim that commits while a stale
//! listing is under way.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use sqlx::Connection;
use store::{Catalog, FencedListing, NodeInfo, SegmentRow};
use test_servers::Postgres;
use timeline::Feed;

#[tokio::test]
async fn leases_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display());
    let catalog = Catalog::open(&url).await.unwrap();
    assert!(catalog.listen_listings().await.unwrap().is_none());
    lease_suite(&catalog).await;
}

#[tokio::test]
async fn leases_on_postgres() {
    let pg = Postgres::start().await;
    let catalog = Catalog::open(&pg.url).await.unwrap();
    let mut listener = catalog.listen_listings().await.unwrap().unwrap();
    lease_suite(&catalog).await;
    // The one listing the suite made woke the listener, naming its channel.
    assert_eq!(listener.next().await.unwrap().as_deref(), Some("c2"));
    nodes_racing_for_one_lease_get_it_once(&catalog).await;
    packagers_racing_to_list_one_segment_list_it_once(&catalog).await;
    a_claim_during_a_stale_listing_refuses_it(&catalog, &pg.url).await;
}

async fn lease_suite(catalog: &Catalog) {
    nodes_register_and_drain(catalog).await;
    a_lease_is_held_renewed_and_released(catalog).await;
    an_expired_lease_goes_to_the_next_claimant(catalog).await;
    listings_are_fenced_by_the_epoch(catalog).await;
}

fn node(id: &str, roles: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        roles: roles.into(),
        url: format!("http://{id}:8080"),
        version: "0.1.0".into(),
        pid: 42,
        started_ms: 1_764_000_000_000,
    }
}

async fn nodes_register_and_drain(catalog: &Catalog) {
    let publishing = ["news/main".to_string(), "news/backup".to_string()];
    catalog.heartbeat(&node("n2", "origin"), &[]).await.unwrap();
    catalog
        .heartbeat(&node("n1", "pipeline,packager"), &publishing[..1])
        .await
        .unwrap();
    assert!(catalog.set_draining("n1", true).await.unwrap());
    // A heartbeat renews the node but leaves its drain mark.
    catalog
        .heartbeat(&node("n1", "pipeline"), &publishing)
        .await
        .unwrap();
    let nodes = catalog.nodes().await.unwrap();
    assert_eq!(
        nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["n1", "n2"]
    );
    assert_eq!(nodes[0].roles, ["pipeline"]);
    assert!(nodes[0].has_role("pipeline") && !nodes[0].has_role("origin"));
    assert!(nodes[0].draining && !nodes[1].draining);
    assert_eq!(nodes[0].publishing, publishing);
    assert!(nodes[1].publishing.is_empty());
    assert!(nodes[0].seen_ago_ms < 5_000, "{nodes:?}");
    assert!(!catalog.set_draining("nobody", true).await.unwrap());
}

async fn a_lease_is_held_renewed_and_released(catalog: &Catalog) {
    assert_eq!(
        catalog
            .claim_lease("c1", Feed::A, "n1", 60_000)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        catalog
            .claim_lease("c1", Feed::A, "n2", 60_000)
            .await
            .unwrap(),
        None
    );
    assert!(
        catalog
            .renew_lease("c1", Feed::A, "n1", 1, 60_000, true)
            .await
            .unwrap()
    );
    assert!(catalog.leases().await.unwrap()[0].ready);
    assert!(
        !catalog
            .renew_lease("c1", Feed::A, "n2", 1, 60_000, true)
            .await
            .unwrap()
    );
    // A restarted holder takes its own lease back at once, with a new epoch.
    assert_eq!(
        catalog
            .claim_lease("c1", Feed::A, "n1", 60_000)
            .await
            .unwrap(),
        Some(2)
    );
    assert!(
        !catalog.leases().await.unwrap()[0].ready,
        "a new claim is not ready"
    );
    assert!(
        !catalog
            .renew_lease("c1", Feed::A, "n1", 1, 60_000, false)
            .await
            .unwrap()
    );
    assert!(catalog.release_lease("c1", Feed::A, "n1", 2).await.unwrap());
    let lease = &catalog.leases().await.unwrap()[0];
    assert!(lease.is_free() && lease.holder.is_none() && lease.epoch == 2);
    assert_eq!(
        catalog
            .claim_lease("c1", Feed::A, "n2", 60_000)
            .await
            .unwrap(),
        Some(3)
    );
    assert_eq!(catalog.lease_epoch("c1", Feed::A).await.unwrap(), Some(3));
    assert_eq!(catalog.lease_epoch("c1", Feed::B).await.unwrap(), None);
}

async fn an_expired_lease_goes_to_the_next_claimant(catalog: &Catalog) {
    let epoch = catalog.claim_lease("c2", Feed::B, "n1", 300).await.unwrap();
    assert_eq!(epoch, Some(1));
    assert_eq!(
        catalog.claim_lease("c2", Feed::B, "n2", 300).await.unwrap(),
        None
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lease_of(catalog, "c2").await.is_free() {
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Expired, and taken by nobody yet: still its holder's to renew (a catalog outage
    // longer than the TTL must not stop every pipeline when it ends).
    assert!(
        catalog
            .renew_lease("c2", Feed::B, "n1", 1, 300, false)
            .await
            .unwrap()
    );
    while !lease_of(catalog, "c2").await.is_free() {
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Taken by another node: its old holder may no longer renew it.
    assert_eq!(
        catalog
            .claim_lease("c2", Feed::B, "n2", 60_000)
            .await
            .unwrap(),
        Some(2)
    );
    assert!(
        !catalog
            .renew_lease("c2", Feed::B, "n1", 1, 60_000, false)
            .await
            .unwrap()
    );
    let lease = lease_of(catalog, "c2").await;
    assert_eq!(lease.holder.as_deref(), Some("n2"));
    assert!(lease.remaining_ms > 50_000, "{lease:?}");
}

async fn lease_of(catalog: &Catalog, channel: &str) -> store::LeaseRow {
    let leases = catalog.leases().await.unwrap();
    leases.into_iter().find(|l| l.channel == channel).unwrap()
}

fn segment(channel: &str, n: u64, feed: Feed, epoch: u64) -> SegmentRow {
    SegmentRow {
        channel: channel.into(),
        rendition: "360p".into(),
        n,
        feed,
        start: n * 180_000,
        duration: 180_000,
        timescale: 90_000,
        byte_len: 1000,
        blob_key: format!("live/{channel}/360p/{n}-{feed}{epoch}.m4s"),
        quality: Some(100),
        header: Some("00000000000000ab".into()),
        disc: 0,
        listed_ms: 1_764_000_000_000 + n,
    }
}

/// c2's feed b is at epoch 2 (held by n2) after the test before.
async fn listings_are_fenced_by_the_epoch(catalog: &Catalog) {
    let stale = catalog
        .insert_segment_fenced(&segment("c2", 7, Feed::B, 1), 1)
        .await
        .unwrap();
    assert_eq!(stale, FencedListing::Stale { current: Some(2) });
    assert_eq!(catalog.segment("c2", "360p", 7).await.unwrap(), None);
    let no_lease = catalog
        .insert_segment_fenced(&segment("c2", 7, Feed::A, 1), 1)
        .await
        .unwrap();
    assert_eq!(no_lease, FencedListing::Stale { current: None });
    let row = segment("c2", 7, Feed::B, 2);
    let listed = catalog.insert_segment_fenced(&row, 2).await.unwrap();
    assert_eq!(listed, FencedListing::Listed);
    let again = catalog
        .insert_segment_fenced(&segment("c2", 7, Feed::B, 2), 2)
        .await
        .unwrap();
    assert_eq!(again, FencedListing::Duplicate);
    assert_eq!(catalog.segment("c2", "360p", 7).await.unwrap(), Some(row));
}

async fn nodes_racing_for_one_lease_get_it_once(catalog: &Catalog) {
    let claims = (0..8).map(|i| {
        let catalog = catalog.clone();
        tokio::spawn(async move {
            catalog
                .claim_lease("race", Feed::A, &format!("n{i}"), 60_000)
                .await
                .unwrap()
        })
    });
    let won: Vec<_> = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .filter_map(|r| r.unwrap())
        .collect();
    assert_eq!(won, [1], "exactly one claim wins, at epoch 1");
}

async fn packagers_racing_to_list_one_segment_list_it_once(catalog: &Catalog) {
    let epoch_a = catalog
        .claim_lease("dup", Feed::A, "n1", 60_000)
        .await
        .unwrap()
        .unwrap();
    let epoch_b = catalog
        .claim_lease("dup", Feed::B, "n2", 60_000)
        .await
        .unwrap()
        .unwrap();
    for n in 0..20 {
        // Two packagers, each with its own copy of N (one per feed), and each copy sent to
        // both: four listings race.
        let offers = [
            (Feed::A, epoch_a),
            (Feed::B, epoch_b),
            (Feed::A, epoch_a),
            (Feed::B, epoch_b),
        ];
        let listings = offers.map(|(feed, epoch)| {
            let catalog = catalog.clone();
            tokio::spawn(async move {
                catalog
                    .insert_segment_fenced(&segment("dup", n, feed, epoch), epoch)
                    .await
                    .unwrap()
            })
        });
        let results: Vec<_> = futures_util::future::join_all(listings)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let listed = results
            .iter()
            .filter(|r| **r == FencedListing::Listed)
            .count();
        assert_eq!(listed, 1, "segment {n}: {results:?}");
        assert!(
            results
                .iter()
                .all(|r| *r != FencedListing::Stale { current: None })
        );
    }
}

/// The fence holds between its check and its insert: a claim that bumps the epoch while a
/// listing with the old one is under way makes that listing fail, never slip in.
async fn a_claim_during_a_stale_listing_refuses_it(catalog: &Catalog, url: &str) {
    let epoch = catalog
        .claim_lease("fence", Feed::A, "old", 60_000)
        .await
        .unwrap()
        .unwrap();
    // A takeover under way: the new holder's claim has updated the row, not yet committed.
    let mut takeover = sqlx::PgConnection::connect(url).await.unwrap();
    let mut tx = takeover.begin().await.unwrap();
    sqlx::query(
        "UPDATE leases SET holder = 'new', epoch = epoch + 1 WHERE channel = 'fence' AND feed = 'a'",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let listing = {
        let catalog = catalog.clone();
        tokio::spawn(async move {
            catalog
                .insert_segment_fenced(&segment("fence", 1, Feed::A, epoch), epoch)
                .await
                .unwrap()
        })
    };
    // The listing waits for the takeover (it share-locks the lease row)...
    let mut watcher = sqlx::PgConnection::connect(url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            !listing.is_finished(),
            "the listing did not wait for the claim"
        );
        assert!(
            Instant::now() < deadline,
            "the listing never waited on the lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.commit().await.unwrap();
    // ...and then sees the new epoch.
    let result = listing.await.unwrap();
    assert_eq!(
        result,
        FencedListing::Stale {
            current: Some(epoch + 1)
        }
    );
    assert_eq!(catalog.segment("fence", "360p", 1).await.unwrap(), None);
}
