#!/usr/bin/env python3
"""A small TCP echo server for bench/run: echo_server.py HOST PORT.

Single-threaded (selectors), many connections at once; prints READY on stdout once it
listens, exits on SIGTERM/SIGINT or when stdin closes (so it never outlives bench/run).
"""
import os
import selectors
import signal
import socket
import sys


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(4096)
    lsock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, None)
    # stdin closing (bench/run died) ends the server too
    try:
        os.set_blocking(0, False)
        sel.register(0, selectors.EVENT_READ, "stdin")
    except (OSError, ValueError):
        pass
    print("READY", flush=True)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                try:
                    conn, _ = lsock.accept()
                except OSError:
                    continue
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, "conn")
            elif key.data == "stdin":
                try:
                    if os.read(0, 4096) == b"":
                        return
                except BlockingIOError:
                    pass
            else:
                conn = key.fileobj
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if data:
                    try:
                        conn.sendall(data)      # small payloads: never blocks for long
                        continue
                    except OSError:
                        pass
                sel.unregister(conn)
                conn.close()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
