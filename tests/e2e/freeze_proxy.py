#!/usr/bin/env python3
"""Plain TCP forwarder for the end-to-end replicas scenario: 127.0.0.1:LISTEN_PORT → HOST:PORT.

One replica's apiserver traffic goes through it; the test then freezes it with SIGSTOP, so nothing is
delivered in either direction while every connection stays open: a black hole, like a network partition
that drops packets. Usage: freeze_proxy.py LISTEN_PORT HOST PORT
"""
import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def forward(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, host: str, port: int) -> None:
    try:
        server_r, server_w = await asyncio.open_connection(host, port)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))


async def main(listen: int, host: str, port: int) -> None:
    server = await asyncio.start_server(lambda r, w: forward(r, w, host, port), "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
