"""Per-authority request rate limits: one token bucket per authority, sized by its role.

Only authenticated requests reach a bucket (the key is the authority id the signature
proved), so the number of buckets is bounded by the signed directory. Pure and
synchronous: the caller passes the time (monotonic seconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class RateLimit(BaseModel):
    """``per_second`` requests sustained, with bursts of up to ``burst``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    per_second: float = Field(gt=0)
    burst: int = Field(ge=1)


DEFAULT_RATE_LIMITS: dict[str, RateLimit] = {
    "default": RateLimit(per_second=100.0, burst=500),
}


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, limits: Mapping[str, RateLimit]) -> None:
        self._limits = dict(limits)
        self._default = self._limits.get("default", DEFAULT_RATE_LIMITS["default"])
        self._buckets: dict[str, _Bucket] = {}

    def limit_for(self, role: str) -> RateLimit:
        return self._limits.get(role, self._default)

    def take(self, authority: str, role: str, now: float) -> float:
        """Spend one token; return 0 when allowed, else the seconds until one is available."""
        limit = self.limit_for(role)
        bucket = self._buckets.get(authority)
        if bucket is None:
            bucket = self._buckets[authority] = _Bucket(float(limit.burst), now)
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(limit.burst), bucket.tokens + elapsed * limit.per_second)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / limit.per_second
