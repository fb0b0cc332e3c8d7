use super::*;

fn parse(toml_text: &str) -> ChannelSpec {
    toml::from_str(toml_text).unwrap()
}

#[test]
fn minimal_channel_gets_defaults() {
    let spec = parse(
        r#"
        id = "news"
        [inputs.main]
        type = "rtmp"
        stream_key = "k1"
        "#,
    );
    assert_eq!(spec.validate(), Ok(()));
    assert_eq!(spec.ladder.len(), 3);
    assert_eq!(spec.grid().unwrap().frames(), 60);
    assert_eq!(spec.inputs_of(Feed::A), vec!["main"]);
    assert_eq!(spec.inputs_of(Feed::B), vec!["main"]);
}

#[test]
fn two_inputs_named_a_and_b_map_to_pipelines() {
    let spec = parse(
        r#"
        id = "news"
        frame_rate = "30000/1001"
        [inputs.a]
        type = "srt"
        [inputs.b]
        type = "udp"
        bind = "127.0.0.1:5000"
        "#,
    );
    assert_eq!(spec.validate(), Ok(()));
    assert_eq!(spec.inputs_of(Feed::A), vec!["a"]);
    assert_eq!(spec.inputs_of(Feed::B), vec!["b"]);
    assert!((spec.grid().unwrap().duration_secs() - 2.002).abs() < 1e-9);
}

#[test]
fn every_problem_is_named() {
    let spec = parse(
        r#"
        id = "Bad Id"
        segment_seconds = 0.01
        preset = "warp"
        live_window_seconds = 1
        startover_window_seconds = 0
        [inputs.x]
        type = "tcp"
        bind = "127.0.0.1:5000"
        [inputs.y]
        type = "tcp"
        bind = "127.0.0.1:5001"
        [[ladder]]
        name = "audio"
        width = 641
        height = 360
        bitrate_kbps = 5
        "#,
    );
    let errors = spec.validate().unwrap_err();
    let joined = errors.join("\n");
    for needle in [
        "id `Bad Id`",
        "segment_seconds",
        "pipelines.a",
        "pipelines.b",
        "ladder[0].name",
        "641x360",
        "bitrate_kbps",
        "preset `warp`",
        "live_window_seconds: give 6",
        "startover_window_seconds",
    ] {
        assert!(joined.contains(needle), "missing {needle} in:\n{joined}");
    }
}

#[test]
fn unknown_fields_and_input_types_are_refused() {
    let err = toml::from_str::<ChannelSpec>(
        "id = \"a\"\nladdr = []\n[inputs.m]\ntype = \"rtmp\"\nstream_key = \"k\"",
    )
    .unwrap_err();
    assert!(err.to_string().contains("laddr"), "{err}");
    let err =
        toml::from_str::<ChannelSpec>("id = \"a\"\n[inputs.m]\ntype = \"webrtc\"").unwrap_err();
    assert!(err.to_string().contains("webrtc"), "{err}");
}

#[test]
fn json_round_trip() {
    let spec = parse(
        r#"
        id = "demo"
        [inputs.pattern]
        type = "test-pattern"
        "#,
    );
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(serde_json::from_str::<ChannelSpec>(&json).unwrap(), spec);
}

#[test]
fn pipelines_take_a_primary_and_a_backup() {
    let spec = parse(
        r#"
        id = "two"
        [inputs.main]
        type = "rtmp"
        stream_key = "m"
        [inputs.spare]
        type = "srt"
        [pipelines]
        a = { primary = "main", backup = "spare" }
        b = "spare"
        [failover]
        input_loss_ms = 500
        preference = "sticky"
        on_input_loss = "pause"
        black = { luma = 24, ms = 2000 }
        "#,
    );
    assert_eq!(spec.inputs_of(Feed::A), vec!["main", "spare"]);
    assert_eq!(spec.inputs_of(Feed::B), vec!["spare"]);
    assert_eq!(spec.failover.input_loss_ms, 500);
    assert_eq!(spec.failover.preference, failover::Preference::Sticky);
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(serde_json::from_str::<ChannelSpec>(&json).unwrap(), spec);
}

#[test]
fn a_backup_must_exist_and_differ_from_the_primary() {
    let spec = parse(
        r#"
        id = "two"
        [inputs.main]
        type = "srt"
        [pipelines]
        a = { primary = "main", backup = "main" }
        b = { primary = "main", backup = "gone" }
        [failover]
        input_loss_ms = 5
        "#,
    );
    let joined = spec.validate().unwrap_err().join("\n");
    for needle in [
        "pipelines.a: the backup must be another input",
        "pipelines.b: no input named `gone`",
        "failover.input_loss_ms",
    ] {
        assert!(joined.contains(needle), "missing {needle} in:\n{joined}");
    }
}

#[test]
fn a_redacted_definition_keeps_no_secret() {
    let mut spec = parse(
        "id = \"x\"\n[inputs.a]\ntype = \"rtmp\"\nstream_key = \"key-1\"\n\
         [inputs.b]\ntype = \"srt\"\npassphrase = \"pass-0123456789\"\n",
    );
    spec.ingest_credential = Some("credential-1".into());
    let shown = format!("{:?}", spec.redacted());
    for secret in ["key-1", "pass-0123456789", "credential-1"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert_eq!(spec.redacted().inputs.len(), 2);
}

#[test]
fn allowed_sources_name_inputs_and_networks() {
    let mut spec = parse(
        "id = \"x\"\n[inputs.main]\ntype = \"rtmp\"\nstream_key = \"k\"\n\
         [allowed_sources]\nmain = [\"203.0.113.0/24\", \"2001:db8::/32\"]\n",
    );
    assert!(spec.validate().is_ok());
    assert_eq!(spec.allowed_sources_of("main").len(), 2);
    assert!(spec.allowed_sources_of("other").is_empty());
    spec.allowed_sources.insert("nope".into(), Vec::new());
    let errors = spec.validate().unwrap_err().join("\n");
    assert!(
        errors.contains("allowed_sources.nope: no input named `nope`"),
        "{errors}"
    );
    assert!(errors.contains("give 1 to 64 networks"), "{errors}");
    let bad =
        "id = \"x\"\n[inputs.main]\ntype = \"srt\"\n[allowed_sources]\nmain = [\"10.0.0.0/33\"]\n";
    let refused = toml::from_str::<ChannelSpec>(bad).unwrap_err().to_string();
    assert!(refused.contains("10.0.0.0/33"), "{refused}");
}
