"""Cheat: ignores the time budget, and leaves a detached child running that writes a heartbeat."""
import subprocess
import sys
import time

if __name__ == "__main__":  # before the slow torch import, so the child exists early
    beat = "import time\nwhile True:\n    open('heartbeat', 'a').write('.')\n    time.sleep(0.1)\n"
    subprocess.Popen([sys.executable, "-c", beat], start_new_session=True)

from trainer import train as genesis  # noqa: E402

build_model = genesis.build_model

if __name__ == "__main__":
    while True:
        time.sleep(1)
