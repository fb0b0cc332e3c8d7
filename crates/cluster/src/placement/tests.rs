use super::*;

const GRACE: u64 = 3_000;

fn peers(ids: &[&str]) -> Vec<Peer> {
    ids.iter()
        .map(|id| Peer {
            id: id.to_string(),
            available: true,
        })
        .collect()
}

/// A held slot delivers, unless made with [`starting`].
fn slot(channel: &str, feed: Feed, holder: Option<&str>, free_for_ms: u64) -> Slot {
    Slot {
        channel: channel.into(),
        feed,
        holder: holder.map(String::from),
        free_for_ms,
        ready: holder.is_some(),
    }
}

/// A slot whose holder's pipeline does not deliver yet.
fn starting(channel: &str, feed: Feed, holder: &str) -> Slot {
    Slot {
        ready: false,
        ..slot(channel, feed, Some(holder), 0)
    }
}

fn claims(plan: &Plan) -> Vec<(&str, Feed)> {
    plan.claim.iter().map(|(c, f)| (c.as_str(), *f)).collect()
}

#[test]
fn a_lone_node_runs_both_pipelines_at_once() {
    let slots = [slot("c", Feed::A, None, 0), slot("c", Feed::B, None, 0)];
    let plan = plan("n1", false, &peers(&["n1"]), &slots, GRACE);
    assert_eq!(claims(&plan), [("c", Feed::A), ("c", Feed::B)]);
    assert!(plan.release.is_empty());
}

#[test]
fn a_and_b_go_to_different_nodes_while_another_is_free() {
    let slots = [slot("c", Feed::A, None, 0), slot("c", Feed::B, None, 0)];
    let plan = plan("n1", false, &peers(&["n1", "n2"]), &slots, GRACE);
    assert_eq!(claims(&plan), [("c", Feed::A)]);
    // n2 sees a taken and b free: it takes b.
    let slots = [
        slot("c", Feed::A, Some("n1"), 0),
        slot("c", Feed::B, None, 500),
    ];
    assert_eq!(
        claims(&plan_of("n2", &slots, &["n1", "n2"])),
        [("c", Feed::B)]
    );
    // n1 leaves b to n2 for the grace time, then takes it (n2 may be unable to).
    assert!(plan_of("n1", &slots, &["n1", "n2"]).claim.is_empty());
    let late = [
        slot("c", Feed::A, Some("n1"), 0),
        slot("c", Feed::B, None, GRACE),
    ];
    assert_eq!(
        claims(&plan_of("n1", &late, &["n1", "n2"])),
        [("c", Feed::B)]
    );
}

fn plan_of(me: &str, slots: &[Slot], ids: &[&str]) -> Plan {
    plan(me, false, &peers(ids), slots, GRACE)
}

#[test]
fn a_dead_holders_lease_goes_to_the_survivor_after_grace_when_no_one_else_is_free() {
    // n1 died: its lease expired; n2 runs b, n3 is down (not available).
    let mut all = peers(&["n1", "n2", "n3"]);
    all[0].available = false;
    all[2].available = false;
    let slots = [
        slot("c", Feed::A, None, 100),
        slot("c", Feed::B, Some("n2"), 0),
    ];
    let alone = plan("n2", false, &all, &slots, GRACE);
    assert_eq!(claims(&alone), [("c", Feed::A)], "no better home is up");
    // With n3 up and free, n3 takes it and n2 waits.
    all[2].available = true;
    assert!(plan("n2", false, &all, &slots, GRACE).claim.is_empty());
    assert_eq!(
        claims(&super::plan("n3", false, &all, &slots, GRACE)),
        [("c", Feed::A)]
    );
}

#[test]
fn leases_spread_over_nodes_by_count() {
    // n1 already runs a of c1 and c2; n2 runs nothing: n2 is the better home for c3's a.
    let slots = [
        slot("c1", Feed::A, Some("n1"), 0),
        slot("c2", Feed::A, Some("n1"), 0),
        slot("c3", Feed::A, None, 0),
    ];
    assert!(plan_of("n1", &slots, &["n1", "n2"]).claim.is_empty());
    assert_eq!(
        claims(&plan_of("n2", &slots, &["n1", "n2"])),
        [("c3", Feed::A)]
    );
}

#[test]
fn a_node_running_both_gives_one_to_a_free_newcomer() {
    let slots = [
        slot("c", Feed::A, Some("n1"), 0),
        slot("c", Feed::B, Some("n1"), 0),
    ];
    let alone = plan_of("n1", &slots, &["n1"]);
    assert!(alone.release.is_empty());
    let joined = plan_of("n1", &slots, &["n1", "n2"]);
    assert_eq!(joined.release, [("c".to_string(), Feed::B)]);
    // Not while a, which would cover, is still starting.
    let a_starting = [
        starting("c", Feed::A, "n1"),
        slot("c", Feed::B, Some("n1"), 0),
    ];
    assert!(plan_of("n1", &a_starting, &["n1", "n2"]).release.is_empty());
    // The newcomer may not take the one n1 still runs.
    assert!(plan_of("n2", &slots, &["n1", "n2"]).claim.is_empty());
}

#[test]
fn a_draining_node_gives_leases_up_one_at_a_time_and_never_both_of_a_channel() {
    let slots = [
        slot("c1", Feed::A, Some("n1"), 0),
        slot("c1", Feed::B, Some("n2"), 0),
        slot("c2", Feed::A, Some("n1"), 0),
        slot("c2", Feed::B, Some("n1"), 0),
        slot("c3", Feed::A, None, GRACE * 10),
    ];
    let plan = plan("n1", true, &peers(&["n1", "n2"]), &slots, GRACE);
    assert!(plan.claim.is_empty(), "a draining node claims nothing");
    assert_eq!(plan.release, [("c1".to_string(), Feed::A)]);
    // Once c1 is gone, one of c2's, then (once that one is taken) the other.
    let slots = [
        slot("c1", Feed::A, Some("n2"), 0),
        slot("c2", Feed::A, Some("n1"), 0),
        slot("c2", Feed::B, Some("n1"), 0),
    ];
    let plan = super::plan("n1", true, &peers(&["n1", "n2"]), &slots, GRACE);
    assert_eq!(plan.release, [("c2".to_string(), Feed::B)]);
    let waiting = [
        slot("c2", Feed::A, Some("n1"), 0),
        slot("c2", Feed::B, None, 100),
    ];
    let plan = super::plan("n1", true, &peers(&["n1", "n2"]), &waiting, GRACE);
    assert!(plan.release.is_empty(), "the last pipeline of c2 stays");
    let taken = [
        slot("c2", Feed::A, Some("n1"), 0),
        starting("c2", Feed::B, "n2"),
    ];
    let plan = super::plan("n1", true, &peers(&["n1", "n2"]), &taken, GRACE);
    assert!(
        plan.release.is_empty(),
        "not until the new holder of b delivers"
    );
}

#[test]
fn unavailable_peers_are_never_waited_for() {
    let mut all = peers(&["n1", "n2"]);
    all[1].available = false;
    let slots = [slot("c", Feed::A, None, 0), slot("c", Feed::B, None, 0)];
    let plan = plan("n1", false, &all, &slots, GRACE);
    assert_eq!(claims(&plan), [("c", Feed::A), ("c", Feed::B)]);
}
