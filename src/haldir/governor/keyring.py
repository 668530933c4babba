"""The master keys a server holds, found by their check values."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from haldir.core.vault import MasterKey


class MasterKeyring:
    """Master keys by check value, newest first. `reload` reads their source again: a key file that
    `haldir vault rotate-key` extended while this server was running."""

    def __init__(
        self,
        keys: Sequence[MasterKey],
        *,
        source: str,
        reload: Callable[[], Sequence[MasterKey]] | None = None,
    ) -> None:
        if not keys:
            raise ValueError("a keyring holds at least one master key")
        self.source = source
        self._reload = reload
        self._keys = tuple(keys)
        self._by_check = {key.check_value: key for key in keys}

    @property
    def newest(self) -> MasterKey:
        return self._keys[0]

    @property
    def keys(self) -> tuple[MasterKey, ...]:
        return self._keys

    def find(self, check_value: str) -> MasterKey | None:
        """The held key with `check_value`, reading the source again once when it is not held."""
        key = self._by_check.get(check_value)
        if key is None and self._reload is not None:
            self._keys = tuple(self._reload())
            self._by_check = {key.check_value: key for key in self._keys}
            key = self._by_check.get(check_value)
        return key
