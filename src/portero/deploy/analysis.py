"""Analysis of a new revision's requests: pass, fail or inconclusive, with the reason. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from portero.deploy.model import Verdict
from portero.spec.models import AnalysisSettings


@dataclass(frozen=True)
class Window:
    """Requests answered by one revision over the analysis window."""

    requests: int
    errors: int  # 5xx
    p95_s: float | None


def analyze(candidate: Window, baseline: Window | None, policy: AnalysisSettings) -> Verdict:
    if candidate.requests < policy.min_requests:
        return Verdict(
            "inconclusive", f"{candidate.requests} request(s) < {policy.min_requests} needed", candidate.requests
        )
    rate = candidate.errors / candidate.requests
    requests, errors = candidate.requests, candidate.errors
    if rate > policy.max_error_rate:
        return Verdict("fail", f"error rate {rate:.1%} > {policy.max_error_rate:.1%}", requests, errors)
    if baseline is not None and baseline.requests >= policy.min_requests:
        base_rate = baseline.errors / baseline.requests
        if rate > base_rate + policy.max_error_rate_increase:
            why = f"error rate {rate:.1%} > baseline {base_rate:.1%} + {policy.max_error_rate_increase:.1%}"
            return Verdict("fail", why, requests, errors)
    p95 = candidate.p95_s
    if p95 is not None and policy.max_p95_s is not None and p95 > policy.max_p95_s:
        return Verdict("fail", f"p95 latency {p95 * 1000:.0f} ms > {policy.max_p95_s * 1000:.0f} ms", requests, errors)
    if p95 is not None and baseline is not None and baseline.p95_s and baseline.requests >= policy.min_requests:
        limit = max(baseline.p95_s * policy.max_p95_ratio, policy.p95_floor_s)
        if p95 > limit:
            why = f"p95 latency {p95 * 1000:.0f} ms > {policy.max_p95_ratio:g}x baseline ({limit * 1000:.0f} ms)"
            return Verdict("fail", why, requests, errors)
    return Verdict("pass", f"error rate {rate:.1%} over {candidate.requests} requests", requests, errors)
