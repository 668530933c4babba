"""Haldir: a governance layer for AI agents."""

from haldir.errors import (
    Conflict,
    HaldirError,
    IdempotencyKeyReused,
    InsufficientScope,
    InvalidAmount,
    InvalidApiKey,
    InvalidRequest,
    InvalidScope,
    NotFound,
    PayloadTooLarge,
    ScopeDenied,
    StoreUnavailable,
    Unauthenticated,
)

__version__ = "0.1.0"

__all__ = [
    "Conflict",
    "HaldirError",
    "IdempotencyKeyReused",
    "InsufficientScope",
    "InvalidAmount",
    "InvalidApiKey",
    "InvalidRequest",
    "InvalidScope",
    "NotFound",
    "PayloadTooLarge",
    "ScopeDenied",
    "StoreUnavailable",
    "Unauthenticated",
    "__version__",
]
