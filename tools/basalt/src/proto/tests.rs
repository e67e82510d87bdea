use super::*;

#[test]
fn requests_round_trip_one_line_each() {
    for op in [
        Op::Define {
            file: "/tmp/a.toml".into(),
            toml: "name = \"a\"\nmemory = 16\n".into(),
            start: true,
        },
        Op::Start { name: "a".into() },
        Op::Shutdown {
            name: "a".into(),
            wait_s: 20,
        },
        Op::Destroy { name: "a".into() },
        Op::List,
        Op::Undefine { name: "a".into() },
    ] {
        let request = Request { v: VERSION, op };
        let line = encode(&request);
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert_eq!(decode_request(&line), Ok(request));
    }
}

#[test]
fn the_wire_format_is_the_documented_one() {
    let line = encode(&Request {
        v: 1,
        op: Op::Start { name: "a".into() },
    });
    assert_eq!(line, "{\"v\":1,\"op\":\"start\",\"name\":\"a\"}\n");
    assert_eq!(
        decode_request("{\"v\":1,\"op\":\"list\"}"),
        Ok(Request { v: 1, op: Op::List })
    );
    let line = encode(&Reply::new(Err("no VM named x".into())));
    assert_eq!(line, "{\"v\":1,\"err\":{\"message\":\"no VM named x\"}}\n");
}

#[test]
fn replies_round_trip() {
    let answer = Answer {
        message: "domain 3 (a): started".into(),
        vms: vec![
            Vm {
                name: "a".into(),
                domain: Some(3),
            },
            Vm {
                name: "b".into(),
                domain: None,
            },
        ],
    };
    let reply = decode_reply(&encode(&Reply::new(Ok(answer.clone())))).expect("decodes");
    assert_eq!(reply.result(), Ok(answer));
    let reply = decode_reply(&encode(&Reply::new(Err("refused".into())))).expect("decodes");
    assert_eq!(reply.result(), Err("refused".into()));
}

#[test]
fn bad_lines_are_refused_plainly() {
    let e = decode_request("{\"v\":2,\"op\":\"list\"}").expect_err("version 2");
    assert!(e.contains("protocol version 2"), "{e}");
    let e = decode_request("{\"op\":\"list\"}").expect_err("no version");
    assert!(e.contains("no protocol version"), "{e}");
    let e = decode_request("{\"v\":1,\"op\":\"frob\"}").expect_err("unknown op");
    assert!(e.contains("malformed request"), "{e}");
    let e = decode_request("{\"v\":1,\"op\":\"start\"}").expect_err("no name");
    assert!(e.contains("malformed request"), "{e}");
    let e = decode_request("list").expect_err("not JSON");
    assert!(e.contains("not a JSON object"), "{e}");
    let e = decode_reply("{\"v\":1}").map(Reply::result);
    assert_eq!(
        e,
        Ok(Err("basaltd's reply holds neither ok nor err".into()))
    );
}
