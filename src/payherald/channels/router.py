"""Which channel really sends a message.

Live/test separation: a test-mode event goes to the console unless its recipient is on
the test allowlist, whatever channel the rule names. With no provider configured at all (a
developer's machine), the console stands in for every channel; once one is configured,
a channel that is not is skipped in a rule's fallback chain instead, so that no message is
recorded as sent when it only went to a terminal.
"""

from __future__ import annotations

from collections.abc import Mapping

from payherald.channels.base import Channel

__all__ = ["ChannelRouter"]


class ChannelRouter:
    def __init__(
        self,
        *,
        channels: Mapping[str, Channel],
        console: Channel,
        test_allowlist: frozenset[str] = frozenset(),
    ) -> None:
        self._channels = dict(channels)
        self._console = console
        self._allowlist = test_allowlist

    def available(self, channel: str, *, livemode: bool) -> bool:
        """Whether ``channel`` can carry a message at all right now."""
        return not livemode or not self._channels or channel in self._channels

    def route(self, channel: str, *, livemode: bool, to: str) -> Channel:
        if not livemode and to not in self._allowlist:
            return self._console
        return self._channels.get(channel, self._console)

    @property
    def console_only(self) -> bool:
        """Whether no provider is configured: the console stands in for every channel."""
        return not self._channels

    def prints_only(self, carrier: Channel) -> bool:
        """Whether ``carrier`` (as ``route`` chose it) only prints, reaching nobody."""
        return carrier is self._console

    def by_name(self, name: str) -> Channel:
        if name == self._console.name:
            return self._console
        return self._channels.get(name, self._console)
