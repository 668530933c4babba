"""Use cases over the store ports."""

from haldir.governor.base import DEFAULT_TENANT
from haldir.governor.governor import Governor
from haldir.governor.keys import CreatedKey
from haldir.governor.sessions import DEFAULT_TTL, PermissionCheck

__all__ = ["DEFAULT_TENANT", "DEFAULT_TTL", "CreatedKey", "Governor", "PermissionCheck"]
