use super::*;

fn udp(bind: &str) -> InputSpec {
    InputSpec::Udp {
        bind: bind.parse().unwrap(),
        multicast: None,
        interface: None,
    }
}

#[tokio::test]
async fn duplicates_are_refused() {
    let reg = InputRegistry::new();
    reg.add(
        "demo",
        "a",
        InputSpec::Rtmp {
            stream_key: "k1".into(),
        },
    )
    .unwrap();
    assert!(matches!(
        reg.add("demo", "a", InputSpec::Srt { passphrase: None }),
        Err(RegistryError::DuplicateInput(_))
    ));
    let err = reg
        .add(
            "other",
            "a",
            InputSpec::Rtmp {
                stream_key: "k1".into(),
            },
        )
        .err()
        .unwrap();
    assert!(
        matches!(err, RegistryError::DuplicateStreamKey { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("demo/a"));

    reg.add("demo", "u", udp("127.0.0.1:0")).unwrap();
    let bound = reg.local_addr("demo", "u").unwrap();
    assert_ne!(bound.port(), 0);
    let err = reg
        .add("demo", "u2", udp(&bound.to_string()))
        .err()
        .unwrap();
    assert!(matches!(err, RegistryError::DuplicateBind { .. }), "{err}");

    reg.add(
        "demo",
        "t",
        InputSpec::Tcp {
            bind: "127.0.0.1:0".parse().unwrap(),
        },
    )
    .unwrap();
    let bound = reg.local_addr("demo", "t").unwrap();
    // Same address, other protocol: fine.
    reg.add("demo", "u3", udp(&bound.to_string())).unwrap();

    assert!(reg.by_stream_key("k1").is_some());
    assert!(reg.by_stream_key("nope").is_none());
    assert!(reg.srt_input("demo", "a").is_none(), "demo/a is RTMP");
}

#[tokio::test]
async fn address_in_use_is_reported_synchronously() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let reg = InputRegistry::new();
    let err = reg
        .add("demo", "t", InputSpec::Tcp { bind: addr })
        .err()
        .unwrap();
    assert!(matches!(err, RegistryError::Bind { .. }), "{err}");
    assert!(reg.port("demo", "t").is_none());
}

#[tokio::test]
async fn invalid_names_and_specs() {
    let reg = InputRegistry::new();
    assert!(
        reg.add("de/mo", "a", InputSpec::Srt { passphrase: None })
            .is_err()
    );
    assert!(
        reg.add("demo", "", InputSpec::Srt { passphrase: None })
            .is_err()
    );
    assert!(
        reg.add(
            "demo",
            "a",
            InputSpec::Srt {
                passphrase: Some("short".into())
            }
        )
        .is_err()
    );
    assert!(
        reg.add(
            "demo",
            "a",
            InputSpec::Rtmp {
                stream_key: "a/b".into()
            }
        )
        .is_err()
    );
    let (port, pass) = {
        reg.add(
            "demo",
            "a",
            InputSpec::Srt {
                passphrase: Some("0123456789".into()),
            },
        )
        .unwrap();
        reg.srt_input("demo", "a").unwrap()
    };
    assert_eq!(port.id().to_string(), "demo/a");
    assert_eq!(pass.as_deref(), Some("0123456789"));
}

#[test]
fn listener_inputs_need_a_runtime_but_shared_ones_do_not() {
    let reg = InputRegistry::new();
    assert!(matches!(
        reg.add("demo", "u", udp("127.0.0.1:0")),
        Err(RegistryError::NoRuntime)
    ));
    reg.add(
        "demo",
        "r",
        InputSpec::Rtmp {
            stream_key: "k".into(),
        },
    )
    .unwrap();
}

#[tokio::test]
async fn remove_channel_frees_keys_addresses_and_ends_sessions() {
    let reg = InputRegistry::new();
    reg.add(
        "demo",
        "a",
        InputSpec::Rtmp {
            stream_key: "k".into(),
        },
    )
    .unwrap();
    reg.add(
        "demo",
        "t",
        InputSpec::Tcp {
            bind: "127.0.0.1:0".parse().unwrap(),
        },
    )
    .unwrap();
    reg.add("keep", "a", InputSpec::Srt { passphrase: None })
        .unwrap();
    let addr = reg.local_addr("demo", "t").unwrap();
    let token = reg.lookup_stream_key("k").unwrap().removed;
    assert_eq!(reg.remove_channel("demo"), 2);
    assert!(token.is_cancelled());
    assert!(reg.port("demo", "a").is_none());
    assert!(reg.by_stream_key("k").is_none());
    assert!(reg.port("keep", "a").is_some());
    // The key and (once the aborted task released it) the address can be used again.
    reg.add(
        "demo2",
        "a",
        InputSpec::Rtmp {
            stream_key: "k".into(),
        },
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match reg.add("demo2", "t", InputSpec::Tcp { bind: addr }) {
            Ok(_) => break,
            Err(RegistryError::Bind { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn a_rotated_stream_key_opens_its_input_until_its_grace_ends() {
    let reg = InputRegistry::new();
    let rtmp = |key: &str| InputSpec::Rtmp {
        stream_key: key.into(),
    };
    reg.add("demo", "a", rtmp("old-key")).unwrap();
    reg.add("demo", "b", rtmp("b-key")).unwrap();
    let later = now_ms() + 60_000;
    reg.set_stream_keys("demo", "a", "new-key", &[("old-key".into(), later)])
        .unwrap();
    let opens = |key| {
        reg.lookup_stream_key(key)
            .map(|l| l.port.id().input.clone())
    };
    assert_eq!(opens("new-key").as_deref(), Some("a"));
    assert_eq!(opens("old-key").as_deref(), Some("a"), "within its grace");
    // Another input cannot take a key in use, retiring or not.
    for taken in ["new-key", "old-key"] {
        assert!(matches!(
            reg.set_stream_keys("demo", "b", taken, &[]),
            Err(RegistryError::DuplicateStreamKey { .. })
        ));
    }
    reg.set_stream_keys("demo", "a", "new-key", &[("old-key".into(), now_ms() - 1)])
        .unwrap();
    assert_eq!(opens("old-key"), None, "after its grace");
    assert!(matches!(
        reg.set_stream_keys("demo", "nope", "x", &[]),
        Err(RegistryError::UnknownInput(_))
    ));
    reg.remove_channel("demo");
    assert_eq!(opens("new-key"), None);
}
