"""The one exception the client raises, with a ``code`` to branch on."""

from __future__ import annotations

from typing import Any, Mapping, Optional


class ClientError(Exception):
    """Something the client could not do, with a stable ``code``:

    - the server's reason tokens, as it sent them: ``unknown_variable``, ``read_only``,
      ``out_of_range``, ``not_a_number``, ``unauthorized``, ``rate_limited``,
      ``too_many_subscriptions``, ``bad_request``, … (``message`` is the server's text);
    - the client's own: ``bad_url``, ``connect_failed``, ``handshake_failed``,
      ``disconnected`` (the connection ended before the reply; a ``set`` may or may not have
      been applied), ``timeout``, ``closed`` (the client was closed), ``protocol`` (the server
      said something this client does not understand), ``not_v2`` (a plain v1 bridge cannot do
      that).
    """

    def __init__(self, code: str, message: str, details: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = dict(details or {})
