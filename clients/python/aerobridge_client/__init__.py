"""aerobridge-client: a client for aerobridge's session protocol v2 (and plain v1 bridges).

    import asyncio, aerobridge_client

    async def main():
        async with await aerobridge_client.connect(
            "ws://127.0.0.1:8765/", vars=["Aircraft.Altitude", "Controls.*"], hz=10
        ) as client:
            async for update in client:
                print(update.update_counter, client.state["Aircraft.Altitude"])

    asyncio.run(main())

``client.state`` is always the full rebuilt view; reconnects resume the session with its
subscriptions; ``client.stale`` says when data stopped; ``await client.set(name, value)``
returns the server's ack or raises :class:`ClientError` with the server's reason.
"""

from ._protocol import Update, Variable
from .client import Ack, Client, connect
from .errors import ClientError

__all__ = ["Ack", "Client", "ClientError", "Update", "Variable", "connect"]
__version__ = "0.1.0"
