use super::*;
use crate::{BlackTrigger, SilenceTrigger};
use proptest::prelude::*;

const SLOT: u64 = 40;

const OK: Observation = Observation {
    frame: true,
    black: false,
    silent: false,
};
const NONE: Observation = Observation {
    frame: false,
    black: false,
    silent: false,
};
const BLACK: Observation = Observation {
    frame: true,
    black: true,
    silent: false,
};
const SILENT: Observation = Observation {
    frame: true,
    black: false,
    silent: true,
};

/// Feeds both inputs every slot of `[from, to)`, with a segment boundary every `every` ms,
/// and returns each switch with its time.
fn run(
    sel: &mut InputSelector,
    (from, to): (u64, u64),
    every: u64,
    feed: impl Fn(usize, u64) -> Observation,
) -> Vec<(u64, Switch)> {
    let mut switches = Vec::new();
    for t in (from..to).step_by(SLOT as usize) {
        for i in 0..2 {
            sel.observe(i, feed(i, t), t);
        }
        let selection = sel.select(t, t.is_multiple_of(every));
        assert_eq!(selection.active, sel.active());
        switches.extend(selection.switch.map(|s| (t, s)));
    }
    switches
}

fn sw(from: Option<usize>, to: Option<usize>, reason: SwitchReason) -> Switch {
    Switch { from, to, reason }
}

fn first() -> Switch {
    sw(None, Some(0), SwitchReason::FirstInput)
}

fn failed(why: FailReason) -> Switch {
    sw(Some(0), Some(1), SwitchReason::Failed(why))
}

fn restored() -> Switch {
    sw(Some(1), Some(0), SwitchReason::PrimaryRestored)
}

/// The primary is gone for `(1000, 5000)` and the backup never fails.
fn primary_gap(i: usize, t: u64) -> Observation {
    if i == 0 && t > 1000 && t < 5000 {
        NONE
    } else {
        OK
    }
}

#[test]
fn nothing_is_active_before_a_frame() {
    let mut sel = InputSelector::new(&FailoverSpec::default(), 2);
    assert_eq!(
        sel.select(0, true),
        Selection {
            active: None,
            switch: None
        }
    );
}

#[test]
fn primary_lost_switches_at_input_loss_ms_and_not_before() {
    let mut sel = InputSelector::new(&FailoverSpec::default(), 2);
    assert_eq!(run(&mut sel, (0, 2000), 2000, primary_gap), [(0, first())]);
    assert_eq!(
        sel.select(1999, false).switch,
        None,
        "last frame at 1000 is 999 ms old"
    );
    let later = run(&mut sel, (2000, 4000), 3000, primary_gap);
    assert_eq!(
        later,
        [(2000, failed(FailReason::Loss))],
        "no boundary needed"
    );
}

#[test]
fn primary_preferred_returns_after_clear_time_at_a_boundary() {
    // Back at 5000, clear for 5000 ms at 10000: the next boundary after that wins.
    for (every, back_at) in [(1000, 10_000), (3000, 12_000)] {
        let mut sel = InputSelector::new(&FailoverSpec::default(), 2);
        let switches = run(&mut sel, (0, 30_000), every, primary_gap);
        let expected = [
            (0, first()),
            (2000, failed(FailReason::Loss)),
            (back_at, restored()),
        ];
        assert_eq!(switches, expected, "boundary every {every} ms");
    }
}

#[test]
fn sticky_never_switches_back() {
    let spec = FailoverSpec {
        preference: Preference::Sticky,
        ..FailoverSpec::default()
    };
    let mut sel = InputSelector::new(&spec, 2);
    let switches = run(&mut sel, (0, 60_000), 1000, primary_gap);
    assert_eq!(switches, [(0, first()), (2000, failed(FailReason::Loss))]);
}

#[test]
fn flapping_primary_is_never_switched_back_to() {
    let spec = FailoverSpec {
        input_loss_ms: 200,
        ..FailoverSpec::default()
    };
    let flapping = |i: usize, t: u64| match (i, t) {
        (0, 1000..) if ((t - 1000) / 300).is_multiple_of(2) => NONE,
        _ => OK,
    };
    let mut sel = InputSelector::new(&spec, 2);
    let switches = run(&mut sel, (0, 59_800), 1000, flapping);
    assert_eq!(switches, [(0, first()), (1160, failed(FailReason::Loss))]);
    assert_eq!(
        sel.failing(0, 59_760),
        None,
        "it is up, just never for long"
    );
}

#[test]
fn black_primary_fails_after_black_ms() {
    let spec = FailoverSpec {
        black: Some(BlackTrigger { luma: 20, ms: 2000 }),
        ..FailoverSpec::default()
    };
    let feed = |i: usize, t: u64| if i == 0 && t >= 1000 { BLACK } else { OK };
    let mut sel = InputSelector::new(&spec, 2);
    let switches = run(&mut sel, (0, 10_000), 1000, feed);
    assert_eq!(switches, [(0, first()), (3000, failed(FailReason::Black))]);
    assert_eq!(sel.failing(0, 10_000), Some(FailReason::Black));
}

#[test]
fn silent_primary_fails_after_silence_ms() {
    let spec = FailoverSpec {
        silence: Some(SilenceTrigger {
            db: -60.0,
            ms: 1600,
        }),
        ..FailoverSpec::default()
    };
    let feed = |i: usize, t: u64| if i == 0 && t >= 1000 { SILENT } else { OK };
    let mut sel = InputSelector::new(&spec, 2);
    let switches = run(&mut sel, (0, 10_000), 1000, feed);
    assert_eq!(
        switches,
        [(0, first()), (2600, failed(FailReason::Silence))]
    );
}

#[test]
fn triggers_that_are_off_never_fail() {
    let mut sel = InputSelector::new(&FailoverSpec::default(), 2);
    let feed = |i: usize, _| if i == 0 { BLACK } else { SILENT };
    assert_eq!(run(&mut sel, (0, 20_000), 1000, feed), [(0, first())]);
}

#[test]
fn all_lost_then_recovered_then_primary_restored() {
    let feed = |i: usize, t: u64| match (i, t) {
        (_, ..=1000) | (1, 5000..) | (0, 6000..) => OK,
        _ => NONE,
    };
    let mut sel = InputSelector::new(&FailoverSpec::default(), 2);
    let switches = run(&mut sel, (0, 20_000), 1000, feed);
    let expected = [
        (0, first()),
        (2000, sw(Some(0), None, SwitchReason::AllLost)),
        (5000, sw(None, Some(1), SwitchReason::Recovered)),
        (11_000, restored()),
    ];
    assert_eq!(switches, expected);
}

#[test]
fn single_input_lost_and_recovered() {
    let feed = |_, t: u64| if (1001..4000).contains(&t) { NONE } else { OK };
    let mut sel = InputSelector::new(&FailoverSpec::default(), 1);
    let switches = run(&mut sel, (0, 10_000), 1000, feed);
    let expected = [
        (0, first()),
        (2000, sw(Some(0), None, SwitchReason::AllLost)),
        (4000, sw(None, Some(0), SwitchReason::Recovered)),
    ];
    assert_eq!(switches, expected);
}

#[test]
fn a_failing_picture_beats_fill() {
    let spec = FailoverSpec {
        black: Some(BlackTrigger { luma: 20, ms: 2000 }),
        ..FailoverSpec::default()
    };
    // Both go black at 1000; the primary then vanishes after 5000.
    let feed = |i: usize, t: u64| match (i, t) {
        (_, ..1000) => OK,
        (0, 5001..) => NONE,
        _ => BLACK,
    };
    let mut sel = InputSelector::new(&spec, 2);
    let switches = run(&mut sel, (0, 10_000), 1000, feed);
    assert_eq!(switches, [(0, first()), (6000, failed(FailReason::Loss))]);
    assert_eq!(sel.failing(1, 10_000), Some(FailReason::Black));
}

#[test]
fn a_failing_backup_returns_to_a_primary_that_is_not_yet_clear() {
    let spec = FailoverSpec {
        silence: Some(SilenceTrigger {
            db: -60.0,
            ms: 1000,
        }),
        ..FailoverSpec::default()
    };
    let feed = |i: usize, t: u64| match (i, t) {
        (0, 1001..3000) => NONE,
        (1, 5000..) => SILENT,
        _ => OK,
    };
    let mut sel = InputSelector::new(&spec, 2);
    let switches = run(&mut sel, (0, 10_000), 1000, feed);
    let back = sw(Some(1), Some(0), SwitchReason::Failed(FailReason::Silence));
    assert_eq!(
        switches,
        [(0, first()), (2000, failed(FailReason::Loss)), (6000, back)]
    );
}

#[test]
fn unknown_inputs_are_ignored_and_read_as_lost() {
    let mut sel = InputSelector::new(&FailoverSpec::default(), 2);
    sel.observe(7, OK, 0);
    assert_eq!(sel.select(0, true).active, None);
    assert_eq!(sel.failing(7, 0), Some(FailReason::Loss));
}

fn observation() -> impl Strategy<Value = Observation> {
    (prop::bool::weighted(0.8), any::<bool>(), any::<bool>()).prop_map(|(frame, black, silent)| {
        Observation {
            frame,
            black,
            silent,
        }
    })
}

fn spec() -> impl Strategy<Value = FailoverSpec> {
    (
        100u32..1000,
        100u32..2000,
        100u32..2000,
        0u32..3000,
        any::<bool>(),
    )
        .prop_map(|(loss, black, silence, clear, sticky)| FailoverSpec {
            input_loss_ms: loss,
            black: Some(BlackTrigger {
                luma: 20,
                ms: black,
            }),
            silence: Some(SilenceTrigger {
                db: -60.0,
                ms: silence,
            }),
            error_clear_ms: clear,
            preference: if sticky {
                Preference::Sticky
            } else {
                Preference::PrimaryPreferred
            },
            ..FailoverSpec::default()
        })
}

proptest! {
    #[test]
    fn selection_invariants(
        spec in spec(),
        inputs in 1usize..=2,
        steps in prop::collection::vec((observation(), observation(), any::<bool>(), 1u64..400), 1..300),
    ) {
        let mut sel = InputSelector::new(&spec, inputs);
        let mut now = 0;
        for (a, b, boundary, gap) in steps {
            now += gap;
            sel.observe(0, a, now);
            sel.observe(1, b, now);
            let before = sel.active();
            let Selection { active, switch } = sel.select(now, boundary);
            prop_assert_eq!(switch.is_some(), active != before);
            if let Some(s) = switch {
                prop_assert_eq!((s.from, s.to), (before, active));
                if s.reason == SwitchReason::PrimaryRestored {
                    prop_assert!(boundary && spec.preference == Preference::PrimaryPreferred);
                    prop_assert_eq!(active, Some(0));
                }
            }
            let healthy = (0..inputs).any(|i| sel.failing(i, now).is_none());
            let failing = active.map(|i| sel.failing(i, now));
            prop_assert!(!healthy || failing == Some(None), "a healthy input was passed over");
            prop_assert!(failing != Some(Some(FailReason::Loss)), "a lost input is active");
            let delivering = (0..inputs).any(|i| sel.failing(i, now) != Some(FailReason::Loss));
            prop_assert_eq!(active.is_some(), delivering);
        }
    }
}
