"""The HTTP harness of issue 13: black-box tests of the gateway's HTTP layer over raw sockets on 127.0.0.1.

- rawupstream.py: a recording upstream with its own strict HTTP/1.1 parser and scripted misbehaviours;
- rawclient.py: send exact bytes to the gateway, read exactly what comes back;
- asserts.py: the shared verdicts (a JSON refusal, a client's own answer, nothing upstream, gateway framing);
- test_attacks.py: the attack table (one test per finding, and the contract around it);
- test_differential.py: Hypothesis-generated framing edge cases, client bytes against upstream bytes;
- test_streaming.py: routes that stream their body (`stream_body`) or allow one on DELETE (`allow_body_on`);
- test_harness.py: the two tools above checked directly (a lenient tool would make the rest unable to fail).
"""
