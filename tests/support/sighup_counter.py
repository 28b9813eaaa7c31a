"""A stand-in for dnsmasq's pid file owner in tests: records every SIGHUP it receives.

Usage: sighup_counter.py PID_FILE COUNT_FILE. Appends one line to COUNT_FILE per SIGHUP and
writes its pid to PID_FILE (atomically) once the handler is installed. It names itself dnsmasq,
since the agent signals nothing else.
"""
import ctypes
import os
import signal
import sys

pid_file, count_file = sys.argv[1], sys.argv[2]


def on_hup(signum, frame):
    with open(count_file, "a") as f:
        f.write("hup\n")


# The agent signals only a process whose command name is dnsmasq (PR_SET_NAME is 15).
ctypes.CDLL(None, use_errno=True).prctl(15, b"dnsmasq", 0, 0, 0)
signal.signal(signal.SIGHUP, on_hup)
open(count_file, "a").close()
with open(pid_file + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pid_file + ".tmp", pid_file)
while True:
    signal.pause()
