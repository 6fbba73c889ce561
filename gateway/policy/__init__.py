"""The policy engine's public surface: what the HTTP side (and anything else outside the engine) may use.

Policies compile (`load_policies`) into a `PolicySet` of `CompiledPolicy`; a request, as a `RequestView`, gets a
`Decision` carrying its denials, its verified `Facts` and their projections (headers for the upstream, response
fields, decision-event fields). `PolicyHolder` is the one reference a reload (`PolicyReloader`) swaps. Nothing
outside `gateway.policy` and `gateway.checks` needs a check module.
"""

from __future__ import annotations

from ..checks.base import Denial, RequestView, denial_for
from ..checks.facts import FactHeaders, Facts
from ..checks.services import Services
from .assertion import FactAssertion, FactAssertionError
from .engine import BodyLimits, CompiledPolicy, Decision, PolicySet
from .loader import PolicyError, load_policies
from .reload import PolicyHolder, PolicyReloader

__all__ = [
    "BodyLimits",
    "CompiledPolicy",
    "Decision",
    "Denial",
    "FactAssertion",
    "FactAssertionError",
    "FactHeaders",
    "Facts",
    "PolicyError",
    "PolicyHolder",
    "PolicyReloader",
    "PolicySet",
    "RequestView",
    "Services",
    "denial_for",
    "load_policies",
]
