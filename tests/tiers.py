"""The two test tiers (see tests/README.md), as pytest hooks that tests/conftest.py loads.

- `process`: the test starts another process (redis-server, the `dcr-gateway` CLI or `serve`, promtool, a
  snippet interpreter, a browser). Marked by hand, or here for every test that uses a fixture that starts one.
- `slow`: not in the fast tier (`make test-fast`, `-m "not slow"`): every `process` test, the chart tests (Helm's
  engine) and the few in-process tests that take seconds each.

The boundary is enforced, not trusted: a test that is not marked `process` cannot start a process (in either
tier). Spawning raises `ProcessOutsideItsTier`, so a new subprocess test that forgot its mark fails at once.
"""

from __future__ import annotations

import asyncio
import multiprocessing.process
import os
import subprocess
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent

PROCESS_FIXTURES = frozenset({
    "redis_server",  # tests/conftest.py: a real redis-server
    "own_redis",  # tests/conftest.py: a redis-server of the test's own
    "promtool",  # tests/observability: Prometheus' promtool
    "served",  # tests/playground: `dcr-gateway serve` as a process
})
"""Fixtures that start a process: every test using one (directly or through another fixture) is `process`."""

SLOW_DIRECTORIES = frozenset({TESTS / "helm"})
"""Directories whose every test is `slow`: tests/helm renders the chart with Helm's engine."""

# Tests that start a process themselves (subprocess.run of the CLI, a forked worker…), by file (relative to
# tests/) and function name (every parameter set). The guard below finds any that is missing here.
PROCESS_TESTS: dict[str, frozenset[str]] = {
    "config/test_settings.py": frozenset({
        "test_cli_exits_nonzero_with_one_message_and_no_traceback",
        "test_config_check_command",
    }),
    "helm/test_config_and_policies.py": frozenset({
        "test_rendered_config_passes_config_check",
        "test_rendered_policies_pass_policy_lint",
        "test_shipped_policy_tests_pass_with_the_rendered_sandbox_config",
        "test_the_checks_can_fail",
    }),
    "helm/test_dockerfile.py": frozenset({
        "test_image_default_config_passes_config_check_and_lints_the_policies",
    }),
    "helm/test_scaling.py": frozenset({
        "test_rendered_production_config_passes_config_check_only_with_the_pod_env",
    }),
    "state/test_resp.py": frozenset({
        "test_tls_redis_through_the_taken_over_transport",
    }),
    "observability/test_audit.py": frozenset({
        "test_audit_verify_cli",
    }),
    "observability/test_multiprocess.py": frozenset({
        "test_configure_multiprocess_merges_forked_workers",
    }),
    "observability/test_no_secrets.py": frozenset({
        "test_nothing_secret_in_stdout_or_stderr",
    }),
    "playground/test_api.py": frozenset({
        "test_the_flow_through_the_playground_and_its_snippets",
    }),
    "playground/test_snippets.py": frozenset({
        "test_snippet_sends_exactly_the_request",
    }),
    "policy/test_loader.py": frozenset({
        "test_policy_explain",
        "test_policy_lint_reports_file_line_errors",
        "test_policy_lint_shipped_policies",
        "test_policy_test_fails_when_an_expectation_is_wrong",
        "test_policy_test_passes_on_the_shipped_tests",
    }),
    "policy/test_ob_standard.py": frozenset({
        "test_policy_lint_and_test_pass_on_the_ob_standard_profile",
        "test_the_default_profile_does_not_read_the_subdirectory",
    }),
    "policy/test_revocation_ttl.py": frozenset({
        "test_config_check_passes_when_the_ttl_is_long_enough",
        "test_config_check_refuses_it_naming_both_keys",
        "test_config_check_reports_other_policy_errors_too",
        "test_config_check_without_the_policy_directory_checks_the_config_alone",
    }),
    "policy/test_state_order.py": frozenset({
        "test_policy_explain_shows_the_order_the_engine_runs",
    }),
    "sandbox/test_cli.py": frozenset({
        "test_cli_errors_are_one_line",
        "test_cli_walkthrough_private_key_jwt",
        "test_create_app",
        "test_mint_ssa",
        "test_sign_request_options",
        "test_tpp_key",
    }),
    "sandbox/test_examples.py": frozenset({
        "test_committed_examples_are_what_the_servers_answer",
    }),
    "sandbox/test_process.py": frozenset({
        "test_kill_9_then_restart_keeps_registration",
    }),
    "test_bench.py": frozenset({
        "test_get_scenario_smoke_run_measures_each_target_and_leaves_no_process",
        "test_the_floor_forwards_bodies_and_answers_as_the_upstream_did",
        "test_open_loop_rate_sends_exactly_rate_times_duration",
        "test_policies_scenario_loads_107_policies_and_serves",
    }),
    "test_bench_post.py": frozenset({
        "test_post_scenario_smoke_run_passes_every_check_and_reports_cpu",
        "test_registration_bodies_are_distinct_and_verify_with_the_served_keys",
        "test_the_gateway_refuses_every_body_a_second_time",
        "test_wrk_out_of_bodies_shows_as_errors",
        "test_wrk_threads_never_send_the_same_body_and_the_stream_moves_past_them",
    }),
    "test_lifecycle.py": frozenset({
        "test_admin_endpoints",
        "test_lines_logged_while_a_request_is_handled_carry_its_ids",
        "test_listener_closes_after_readiness_delay",
        "test_port_in_use_is_a_clear_error",
        "test_serve_logs_config_check_warnings_at_start",
        "test_serve_refuses_to_start_on_a_config_check_error",
        "test_sigterm_drains_in_flight_requests_and_exits_zero",
    }),
    "test_workers.py": frozenset({
        "test_unsafe_worker_setups_are_refused",
    }),
}

# In-process tests left out of the fast tier because each takes a noticeable share of its minute: property and
# fuzz tests (hundreds of generated cases), the slow-client and timeout cases of the HTTP layer (real timers of
# a few hundred ms), and tests that start the sandbox bank (key loading, scrypt). None means the whole file.
SLOW_TESTS: dict[str, frozenset[str] | None] = {
    "checks/test_claim_properties.py": None,
    "checks/test_malformed_inputs.py": frozenset({
        "test_wrongly_typed_headers_never_500",
        "test_wrongly_typed_request_claims_never_500",
        "test_wrongly_typed_ssa_claims_never_500",
    }),
    "checks/test_post_path_caches.py": frozenset({
        "test_certificate_memo_is_bounded",
    }),
    "checks/test_typed_claims.py": frozenset({
        "test_deeply_nested_request_claims_are_refused",
    }),
    "http/test_attacks.py": frozenset({
        "test_a_request_the_upstream_received_is_never_sent_again",
        "test_a_second_copy_of_a_single_valued_header_is_400",
        "test_body_on_get_head_delete_is_400",
        "test_body_over_max_body_bytes_is_413_and_never_upstream",
        "test_chunked_request_goes_upstream_de_chunked_with_content_length",
        "test_clients_behind_a_trusted_proxy_are_bounded_by_requests_in_flight",
        "test_connection_naming_an_end_to_end_field_is_400",
        "test_connections_per_client_are_bounded",
        "test_early_answer_to_a_large_body_closes_that_connection",
        "test_framing_lookalike_headers_never_reach_the_backend",
        "test_gzip_body_is_refused_and_nothing_is_smuggled",
        "test_gzip_in_gzip_cannot_pass_body_size",
        "test_idle_keepalive_connection_is_closed",
        "test_late_bytes_on_an_idle_upstream_connection_are_never_relayed",
        "test_override_headers_are_400",
        "test_oversized_heads_are_refused_as_json",
        "test_parser_level_refusals_are_json_400_or_close",
        "test_request_content_encoding_other_than_identity_is_415",
        "test_request_lines_of_other_protocols_are_refused",
        "test_request_target_forms",
        "test_silent_connection_is_closed_after_header_read_seconds",
        "test_stalled_bodies_cannot_exhaust_the_upstream_pool",
        "test_stalled_body_is_408_or_closed",
        "test_trickled_body_is_408_or_closed",
        "test_trickled_headers_are_closed",
        "test_two_spellings_of_one_header_are_400",
        "test_unfinished_head_behind_a_request_is_closed",
        "test_unfinished_headers_are_closed",
        "test_unread_body_of_a_denied_request_is_never_a_request",
        "test_upgrade_requests_are_forwarded_without_upgrade_and_nothing_after_them_is_smuggled",
    }),
    "http/test_differential.py": None,
    "http/test_harness.py": frozenset({
        "test_leftover_and_cut_bodies_are_recorded",
    }),
    "http/test_listener.py": frozenset({
        "test_100_continue_only_once_the_body_is_wanted",
        "test_an_upgrade_request_does_not_switch_the_header_timer_off",
        "test_every_listener_cuts_off_unfinished_headers",
        "test_slow_body_is_cut_at_the_total_deadline",
        "test_stalled_body_gets_408_and_holds_no_upstream_connection",
        "test_unfinished_headers_are_cut_off",
    }),
    "http/test_proxy.py": frozenset({
        "test_a_route_that_streams_forwards_the_body_as_it_arrives",
        "test_a_stalled_streamed_body_gets_408_and_the_upstream_connection_is_dropped",
        "test_request_body_is_buffered_before_the_upstream_is_contacted",
        "test_upstream_slow_is_504",
    }),
    "http/test_streaming.py": frozenset({
        "test_client_leaving_mid_stream_never_completes_a_request_upstream",
        "test_rest_of_a_streamed_body_after_the_answer_is_never_a_request",
        "test_stalled_streamed_body_is_408_and_its_upstream_connection_closed",
        "test_streamed_body_over_the_route_limit_never_reaches_the_upstream_whole",
    }),
    "http/test_upstream.py": frozenset({
        "test_a_client_that_stops_reading_does_not_hold_the_pool",
        "test_an_error_answer_to_a_request_with_a_body_is_not_followed_by_reuse",
        "test_close_delimited_body_ends_at_eof",
        "test_idle_connections_are_closed_after_keepalive",
        "test_pool_never_opens_more_than_max_connections",
        "test_trickling_upstream_hits_the_total_timeout",
    }),
    "jose/test_encoding.py": frozenset({
        "test_every_short_segment_is_judged_as_the_reference_does",
        "test_random_longer_segments_are_judged_as_the_reference_does",
    }),
    "jose/test_jwks_cache.py": frozenset({
        "test_fetch_failures",
    }),
    "observability/test_audit.py": frozenset({
        "test_one_valid_event_per_request",
    }),
    "observability/test_metrics.py": frozenset({
        "test_revocation_is_counted_once",
    }),
    "observability/test_metrics_scrape.py": frozenset({
        "test_dashboard_rules_and_docs_query_only_exported_metrics",
        "test_every_exported_metric_is_documented",
        "test_labels_come_from_closed_sets",
        "test_mixed_traffic_is_counted",
    }),
    "playground/test_api.py": frozenset({
        "test_a_refused_registration_reports_the_gateways_rfc7591_error",
        "test_a_tampered_signature_is_refused_by_the_gateway",
        "test_api_posts_must_be_json",
        "test_bad_session_requests",
        "test_bank_calls_go_through_the_gateway",
        "test_claims_must_be_an_object",
        "test_key_sessions_send_public_keys_only",
        "test_nothing_secret_is_logged",
        "test_other_host_names_and_origins_are_refused",
        "test_the_page_offers_the_bank_pages_eight_languages",
        "test_the_playground_can_be_switched_off",
        "test_the_proxy_makes_listed_calls_only",
        "test_the_proxy_sets_listed_headers_only",
    }),
    "playground/test_fuzz_playground.py": None,
    "playground/test_snippets.py": frozenset({
        "test_every_sample_renders_any_text_and_swift_keeps_it",
    }),
    "policy/test_enforcement.py": frozenset({
        "test_audit_mode_forwards_and_reports_without_side_effects",
        "test_forged_token_cannot_revoke_a_genuine_one",
        "test_invalid_tokens_are_refused",
        "test_jwks_down_serves_stale_keys_then_fails_closed",
        "test_key_rotation_new_kid_picked_up_and_removed_kid_refused",
        "test_missing_token_gets_bare_challenge",
        "test_unknown_kids_do_not_cause_fetch_storms",
        "test_unmatched_and_wrong_method",
        "test_verified_client_id_is_forwarded_and_spoofed_copies_stripped",
        "test_verified_token_cache_skips_reverification_but_not_revocation",
    }),
    "policy/test_loader.py": frozenset({
        "test_hot_reload_swaps_good_sets_and_keeps_serving_through_bad_ones",
    }),
    "policy/test_registration_cases.py": None,
    "policy/test_router.py": frozenset({
        "test_match_cost_does_not_depend_on_policy_count",
    }),
    "sandbox/test_apidocs.py": None,
    "sandbox/test_flow.py": None,
    "sandbox/test_fuzz_apidocs.py": None,
    "sandbox/test_fuzz_portal.py": None,
    "sandbox/test_fuzz_registration.py": None,
    "sandbox/test_fuzz_token_endpoint.py": None,
    "sandbox/test_portal.py": frozenset({
        "test_create_app_bad_input_is_400",
        "test_create_app_returns_credentials_once",
        "test_hosted_jwks_uri_uses_portal_url",
        "test_ssa_signs_what_it_is_given",
    }),
    "sandbox/test_postman.py": frozenset({
        "test_the_collection_runs_the_flow_against_the_gateway",
        "test_the_files_download_from_the_sandbox",
    }),
    "sandbox/test_psd2_path.py": None,
    "sandbox/test_registration_errors.py": None,
    "sandbox/test_store.py": frozenset({
        "test_concurrent_registrations",
        "test_keys_generated_once_and_reused",
        "test_loose_key_permissions_are_tightened",
        "test_restart_keeps_registrations_keys_and_revocations",
        "test_second_app_on_same_state_dir_shares_state",
        "test_secrets_are_stored_as_salted_hashes",
        "test_state_files_are_private",
    }),
    "sandbox/test_through_shipped_policies.py": frozenset({
        "test_delete_of_a_portal_app_is_405_from_the_bank",
        "test_every_call_needs_the_token_and_the_client_id_header",
        "test_the_banks_flow_through_the_shipped_policies",
        "test_the_fapi_methods_register_and_get_a_token_through_the_shipped_policies",
        "test_unknown_client_id_is_401_and_revokes_the_token",
    }),
    "sandbox/test_token_endpoint.py": None,
    "sandbox/test_token_mtls.py": None,
    "test_bench_post.py": frozenset({
        "test_group_cpu_seconds_counts_this_process_group",
    }),
}


class ProcessOutsideItsTier(AssertionError):
    """A test that is not marked `process` tried to start a process."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `process` from the fixtures a test uses, and `slow` every process test and the slow directories
    (before `-m` deselects anything)."""
    for item in items:
        path = Path(str(item.path))
        rel = path.relative_to(TESTS).as_posix() if TESTS in path.parents else ""
        name = getattr(item, "originalname", item.name)
        if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())) or name in PROCESS_TESTS.get(rel, ()):
            item.add_marker(pytest.mark.process)
        if rel in SLOW_TESTS and (SLOW_TESTS[rel] is None or name in SLOW_TESTS[rel]):  # type: ignore[operator]
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("process") is not None or any(d in path.parents for d in SLOW_DIRECTORIES):
            item.add_marker(pytest.mark.slow)


def _refuse(what: str, nodeid: str) -> Callable[..., Any]:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise ProcessOutsideItsTier(
            f"{nodeid} starts a process ({what}) but is not marked `process`: mark it (@pytest.mark.process, or "
            "list its fixture in tests/tiers.py PROCESS_FIXTURES) so that `make test-fast` leaves it out")
    return refuse


@contextmanager
def no_processes(nodeid: str) -> Iterator[None]:
    """While active, every way this suite could start a process raises ProcessOutsideItsTier."""
    targets: list[tuple[Any, str]] = [
        (subprocess.Popen, "_execute_child"),  # subprocess.run/Popen/check_output and asyncio's subprocesses
        (os, "fork"), (os, "forkpty"), (os, "posix_spawn"), (os, "posix_spawnp"), (os, "system"),
        (multiprocessing.process.BaseProcess, "start"),
        (asyncio, "create_subprocess_exec"), (asyncio, "create_subprocess_shell"),
    ]
    saved = [(owner, name, owner.__dict__[name]) for owner, name in targets if name in owner.__dict__]
    for owner, name, _ in saved:
        setattr(owner, name, _refuse(f"{getattr(owner, '__name__', owner)}.{name}", nodeid))
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """Run a test that is not marked `process` (its setup, call and teardown) with process creation refused."""
    if item.get_closest_marker("process") is not None:
        return (yield)
    with no_processes(item.nodeid):
        return (yield)
