//! A real HTTP client (`ureq`) against the built-in app.

use std::io::Read;

use crate::support::start_app;

#[test]
fn healthz_through_ureq() {
    let srv = start_app(|_| {});
    let resp = ureq::get(&format!("http://{}/healthz", srv.addr))
        .call()
        .expect("GET /healthz");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_string().unwrap(), "ok\n");
}

#[test]
fn echo_round_trip_of_200_kib() {
    let srv = start_app(|_| {});
    let body: Vec<u8> = (0..200 * 1024u32).map(|i| (i * 7 % 256) as u8).collect();
    let agent = ureq::agent();
    for _ in 0..2 {
        let resp = agent
            .post(&format!("http://{}/echo", srv.addr))
            .set("Content-Type", "application/x-test")
            .send_bytes(&body)
            .expect("POST /echo");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.header("content-type"), Some("application/x-test"));
        let mut got = Vec::new();
        resp.into_reader()
            .take(1 << 20)
            .read_to_end(&mut got)
            .unwrap();
        assert!(got == body, "echoed body differs ({} bytes)", got.len());
    }
    // The agent reused one connection for both.
    assert_eq!(
        srv.metric(|m| &m.connections_accepted),
        1,
        "keep-alive through ureq"
    );
}

#[test]
fn body_over_the_limit_is_413() {
    // Small sizes, so the whole request fits in socket buffers and the
    // client reads the 413 instead of failing mid-write.
    let srv = start_app(|c| c.max_body_bytes = 1024);
    let err = ureq::post(&format!("http://{}/echo", srv.addr))
        .send_bytes(&[b'x'; 4096])
        .expect_err("413 is an error status");
    match err {
        ureq::Error::Status(code, resp) => {
            assert_eq!(code, 413);
            assert!(resp.into_string().unwrap().starts_with("413"));
        }
        other => panic!("expected a 413 status, got {other}"),
    }
}
