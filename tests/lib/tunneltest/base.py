"""tunneltest.base: paths of what is tested, and the settings of the harness."""

import atexit
import ctypes
import math
import os
import random
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.abspath(os.environ.get("TUNNELD_SOURCE_ROOT") or os.path.join(HERE, "..", "..", ".."))
TUNNELD = os.path.abspath(os.environ.get("TUNNELD") or os.path.join(SOURCE_ROOT, "build", "daemon", "tunneld"))
# tests/fake-ssh.c, built with tunneld (tests/meson.build sets the path)
FAKE_SSH = os.path.abspath(os.environ.get("FAKE_SSH") or os.path.join(os.path.dirname(TUNNELD), "..", "tests",
                                                                       "fake-ssh"))
SSHD = os.environ.get("SSHD", "/usr/sbin/sshd")
SSH = shutil.which("ssh") or "/usr/bin/ssh"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"

# How long a tunnel may take to come up: ssh's connect and key exchange on a loaded 2-core
# machine (a test file whose tunnels take longer, through jump hosts or by the thousand,
# sets its own).
UP_TIMEOUT = 20
# A test that runs longer than this fails with TestTimeout (and its cleanups still run).
TEST_TIMEOUT = float(os.environ.get("TUNNELTEST_TIMEOUT", "60"))
LOG_TAIL_LINES = 60
# meson's b_sanitize of the build under test (tests/meson.build sets it): "none" or e.g.
# "address,undefined". In that build a tunneld still running when its test ends must exit 0
# on SIGTERM: that exit is where LeakSanitizer reports.
SANITIZE = os.environ.get("TUNNELD_SANITIZE", "none")
SANITIZED = SANITIZE not in ("", "none")
