"""One request on the public listener: `PublicHandler`, its one entry (ids, timing, metrics, the decision event,
errors as JSON), asks the policy engine for a decision and applies it (deny with a spec-shaped answer, or forward
with what the decision says).

The handler knows no check and no fact by name: the `Decision` carries the headers to forward, the fields to add
to the response and (through the request's facts) the decision event's fields.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from ..addresses import ProxyTrust
from ..errors import GatewayError, error_response, refused, server_error_response
from ..observability.audit import AuditLog
from ..observability.logging import REQUEST_IDS, get_logger
from ..observability.metrics import Metrics
from ..policy import (
    BodyLimits,
    CompiledPolicy,
    Decision,
    Denial,
    FactAssertion,
    FactHeaders,
    PolicyHolder,
    RequestView,
    denial_for,
)
from ..reasons import BodyRefusals, HttpRefusals
from .context import RequestContext
from .inbound import InboundRules, content_codings, encoding_refusal
from .listener import ClientSlots
from .proxy import INTERACTION_ID, Forwarder, body_chunks, read_body
from .server import PublicRequest, Reply

log = get_logger("server")

NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
"""Methods whose requests carry no body unless their policy's `allow_body_on` names them."""


def interaction_id_of(request: web.BaseRequest | PublicRequest, random: bytes | None = None) -> str:
    """Keep the TPP's x-fapi-interaction-id when it is a UUID (FAPI 1.0 Part 1 §6.2.1), else make one (from the
    16 bytes `random` when given, else from fresh ones)."""
    raw = request.headers.get(INTERACTION_ID)
    if raw and len(raw) == 36:
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            pass
    return new_uuid4(random)


def new_uuid4(random: bytes | None = None) -> str:
    """A random (version 4) UUID string, as `str(uuid.uuid4())` makes it at a third of the cost; `random`: 16
    bytes from `os.urandom` to make it from (the caller's, drawn with others in one call), else fresh ones."""
    b = bytearray(os.urandom(16) if random is None else random)
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class PublicHandler:
    """The public listener's one entry: every request, whatever its target, served by the gateway's own server
    (`server.PublicServer`, for an app carrying `listener.ENTRY`): no router, middleware chain or framework response
    objects in between. Ids bound to logs, timing, metrics, the canonical log line and the decision event; errors
    become JSON; every answer carries the interaction id."""

    __slots__ = ("assertion", "audit", "body_limits", "client_requests", "fact_headers", "forwarder", "inbound",
                 "metrics", "policies", "proxies")

    def __init__(self, *, metrics: Metrics, policies: PolicyHolder, forwarder: Forwarder, inbound: InboundRules,
                 proxies: ProxyTrust, body_limits: BodyLimits, fact_headers: FactHeaders,
                 client_requests: ClientSlots, audit: AuditLog | None = None,
                 assertion: FactAssertion | None = None) -> None:
        self.metrics = metrics
        self.policies = policies
        self.forwarder = forwarder
        self.inbound = inbound
        self.proxies = proxies
        self.body_limits = body_limits
        self.fact_headers = fact_headers
        self.client_requests = client_requests
        self.audit = audit
        self.assertion = assertion
        """Config `upstream.signed_facts`, when enabled: signs the facts of each allowed request for the backend."""

    async def __call__(self, request: PublicRequest) -> Reply | None:
        metrics = self.metrics
        started = time.perf_counter()
        random = os.urandom(32)  # one system call for both ids
        interaction_id = interaction_id_of(request, random[16:])
        request_id = random[:16].hex()
        ctx = RequestContext(interaction_id=interaction_id, request_id=request_id)
        # Reset (not cleared) at the end: the connection's task runs its next request in the same context.
        bound = REQUEST_IDS.set((interaction_id, request_id))
        metrics.in_flight.inc()
        status = 500
        try:
            try:
                response = await self._handle(request, ctx)
            except GatewayError as err:
                if ctx.decision == "allow":
                    ctx.decision = "error"
                    ctx.error_reason = err.reason
                if request.streamed:  # the answer's head is out: the only honest signal left is the close
                    raise
                response = Reply.of(error_response(err))
            except asyncio.CancelledError:
                status = 499
                raise
            except Exception:
                log.exception("unhandled_error", method=request.method)
                if request.streamed:
                    raise
                response = Reply.of(server_error_response())
            if response is None:  # streamed by the relay, which set its own fields before the head
                status = request.streamed
                return None
            response.headers[INTERACTION_ID] = ctx.interaction_id
            status = response.status
            return response
        finally:
            elapsed = time.perf_counter() - started
            route = ctx.route
            metrics.in_flight.dec()
            metrics.request_done(route, request.method, status, ctx.decision, elapsed, ctx.upstream_status)
            if self.audit is not None and ctx.policy_version:
                self.audit.emit(audit_fields(request, ctx, status, elapsed))
            if log.is_enabled_for(logging.INFO):  # at warning (production's usual level) not even its fields
                log.info(
                    "request",
                    method=request.method,
                    route=route,
                    status=status,
                    upstream_status=ctx.upstream_status,
                    duration_ms=round(elapsed * 1000, 3),
                )
            REQUEST_IDS.reset(bound)


    async def _handle(self, request: PublicRequest, ctx: RequestContext) -> Reply | None:
        """Route to a policy, evaluate it, then deny or forward (response hooks run before the relay)."""
        policies = self.policies.current
        ctx.policy_version = policies.version
        # SECURITY: the framing rule (inbound.py, docs/security.md) before any policy: nothing ambiguous is guessed.
        refusal = self.inbound.screen(request.headers)
        if refusal is not None:
            return self._refuse(ctx, refusal, request)
        # Every target reaches the policy router, which decides (and the decision is audited): an asterisk- or
        # authority-form target, or a percent-encoded line break, is unmatched like any unknown path.
        match = policies.match(request.method, request.rel_url.raw_path)
        if match is None or match.value is None:
            ctx.route = match.template if match is not None and match.template else "unmatched"
            return self._refuse(ctx, policies.unmatched(request.method, match), request)
        policy = match.value
        ctx.route = policy.template
        ctx.policy = policy.name
        if request.body_exists and request.method in NO_BODY_METHODS and request.method not in policy.allow_body_on:
            refusal = denial_for(HttpRefusals.body_not_allowed, f"a {request.method} request has no body",
                                 HttpRefusals.check)
            return self._refuse(ctx, refusal, request)
        codings = content_codings(request.headers)
        if codings and (refusal := encoding_refusal(codings, policy.content_codings)) is not None:
            return self._refuse(ctx, refusal, request)
        peer = request.remote
        proxies = self.proxies
        if proxies and proxies.trusts(peer):
            client = proxies.client_address(peer, request.headers.getall("X-Forwarded-For", ()))
            slots = self.client_requests
            if client is None or not slots.acquire(client):
                return self._refuse(ctx, denial_for(HttpRefusals.client_concurrency, "too many requests in flight",
                                                    HttpRefusals.check), request)
            try:
                return await self._decide_and_forward(request, ctx, policy, match.params, peer, client, bool(codings))
            finally:
                slots.release(client)
        return await self._decide_and_forward(request, ctx, policy, match.params, peer, peer, bool(codings))

    def _refuse(self, ctx: RequestContext, denial: Denial, request: PublicRequest) -> Reply:
        """A request refused before (or instead of) its policy: recorded and audited like any denial.

        SECURITY: a refused request whose body was not wholly received closes the connection (server.py: no byte
        after an unfinished body is parsed as a request; the framing rule: nothing read past a refusal is
        guessed)."""
        _record(self.metrics, ctx, Decision("deny", ctx.policy, "enforce", (denial,), ctx.facts))
        return denial_response(denial)

    async def _decide_and_forward(
        self,
        request: PublicRequest,
        ctx: RequestContext,
        policy: CompiledPolicy,
        params: Mapping[str, str],
        peer: str | None,
        client: str | None,
        coded: bool,
    ) -> Reply | None:
        """`coded`: the body carries a content coding the route accepts (screened by the caller)."""
        view = RequestView(
            method=request.method,
            path=request.rel_url.raw_path,
            headers=request.headers,
            params=params,
            peer=peer,
            client_address=client,
            facts=ctx.facts,
            dry_run=policy.mode == "audit",
        )
        limits = self.body_limits

        async def load_body() -> bytes:
            if coded:
                # An accepted coded body: the gateway does not decode it, so no check can read its plaintext.
                raise refused(BodyRefusals.plaintext_needed, "this route's checks read the body: send it unencoded")
            return await read_body(request, limits)

        decision = await policy.evaluate(view, load_body, self.fact_headers)
        _record(self.metrics, ctx, decision)
        if not decision.forward:
            assert decision.denial is not None
            return denial_response(decision.denial)
        if decision.denials:
            log.warning("audit_would_deny", policy=policy.name, check=decision.denials[0].check,
                        reason=decision.denials[0].reason)

        async def before_relay(status: int, seconds: float) -> None:
            ctx.upstream_status = status
            ctx.upstream_seconds = seconds
            await policy.after_response(view, status)

        body: bytes | AsyncIterator[bytes]
        if view.body is not None:
            body = view.body
        elif policy.stream_body is not None:  # an explicit per-route choice; no check of the policy reads the body
            body = body_chunks(request, policy.stream_body)
        else:
            body = await read_body(request, limits)
        # SECURITY: facts only on allow (`Decision.forward_headers` is None once any check denied, audit mode
        # included): a request some check refused still goes upstream in audit mode, but nothing it claimed goes
        # as verified — neither in the plain fact headers nor signed.
        extra = decision.forward_headers
        assertion = self.assertion
        if assertion is not None and extra is not None:
            signed = assertion.sign(decision.facts, policy=policy.name, method=request.method,
                                    path=request.rel_url.raw_path_qs, interaction_id=ctx.interaction_id)
            extra = {**extra, assertion.header: signed}
        return await self.forwarder.forward(
            request, interaction_id=ctx.interaction_id, request_id=ctx.request_id, route=ctx.route, body=body,
            before_relay=before_relay, extra_headers=extra, response_headers=decision.response_headers)



def audit_fields(request: PublicRequest, ctx: RequestContext, status: int, elapsed: float) -> dict[str, Any]:
    """The decision event: ids, route, policy, outcome, verified identities — never a token or a body.

    The identities are the facts' own audit fields (`Fact.audit`), read from the request's facts rather than
    from the decision: a request that failed on its way (body too large, upstream down) still names them."""
    denials = ctx.denials
    first = denials[0] if denials else None
    # One dict for the whole event: the facts' fields (a fresh copy), then ours (no name is in both), then the
    # chain's, added by AuditLog.emit.
    fields = ctx.facts.audit_fields()
    fields.update(
        interaction_id=ctx.interaction_id,
        request_id=ctx.request_id,
        method=request.method,
        route=ctx.route,
        policy=ctx.policy or None,
        policy_version=ctx.policy_version,
        mode=ctx.policy_mode or None,
        decision=ctx.decision,
        check=first.check if first else None,
        reason=first.reason if first else ctx.error_reason,
        denials=[f"{d.check}:{d.reason}" for d in denials] if denials else [],
        status=status,
        peer=request.remote,
        upstream_status=ctx.upstream_status,
        upstream_ms=round(ctx.upstream_seconds * 1000, 3) if ctx.upstream_seconds is not None else None,
        duration_ms=round(elapsed * 1000, 3),
    )
    return fields


def denial_response(denial: Denial) -> Reply:
    """The client's answer to a denial: spec-shaped JSON, never cached, with WWW-Authenticate etc."""
    return Reply.json(denial.status, {"error": denial.error, "error_description": denial.description},
                      [("Cache-Control", "no-store"), ("Pragma", "no-cache"), *denial.headers])


def _record(metrics: Metrics, ctx: RequestContext, decision: Decision) -> None:
    ctx.decision = decision.outcome
    ctx.policy_mode = decision.mode
    ctx.denials = decision.denials
    if not decision.denials:
        metrics.decided(decision.policy or "", decision.mode, "allow")
    for d in decision.denials:
        metrics.decided(decision.policy or "", decision.mode, decision.outcome, d.check, d.reason)


