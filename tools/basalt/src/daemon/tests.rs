use super::*;

fn domain(id: u32, name: &str, state: dc::DomainState) -> DomainInfo {
    DomainInfo {
        id,
        state,
        flags: 0,
        vcpus: 1,
        memory: 16 << 20,
        cpu_time_ns: 0,
        weight: 256,
        cap: 0,
        exit_code: 0,
        affinity: 0,
        name: dc::Name::new(name).expect("short"),
    }
}

#[test]
fn a_vm_runs_only_while_its_domain_of_that_id_and_name_lives() {
    let domains = [
        domain(0, "Domain-0", dc::DomainState::Running),
        domain(3, "web1", dc::DomainState::Paused),
        domain(4, "web2", dc::DomainState::Dying),
    ];
    assert!(live(&domains, "web1", 3), "paused still runs");
    assert!(!live(&domains, "web1", 2), "another id: its domain is gone");
    assert!(!live(&domains, "hello", 3), "id 3 is someone else");
    assert!(!live(&domains, "web2", 4), "dying counts as stopped");
    assert!(!live(&[], "web1", 3));
}

#[test]
fn names_from_the_socket_cannot_leave_the_store() {
    assert_eq!(vm_name("web-1.a_b"), Ok("web-1.a_b"));
    for bad in ["", "../etc/passwd", "a/b", "a b", &"x".repeat(32)] {
        let e = vm_name(bad).expect_err(bad);
        assert!(e.contains("is not a VM name"), "{e}");
    }
}
