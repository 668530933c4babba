"""Use cases over the store ports: one service per capability, held by name in `Governor`."""

from haldir.governor.fields import DEFAULT_TENANT
from haldir.governor.governor import Governor
from haldir.governor.keys import CreatedKey
from haldir.governor.sessions import DEFAULT_TTL, PermissionCheck

__all__ = ["DEFAULT_TENANT", "DEFAULT_TTL", "CreatedKey", "Governor", "PermissionCheck"]
