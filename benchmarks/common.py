"""Paths and small helpers shared by the harness modules (not by the apps)."""

import os
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
VENVS = os.path.join(BENCH, "venvs")
WORK = os.path.join(BENCH, ".work")
LOGS = os.path.join(WORK, "logs")
RESULTS = os.path.join(BENCH, "results")
LUA = os.path.join(BENCH, "wrk", "bench.lua")
HOST = "127.0.0.1"
MIB = 1024 * 1024


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def one_line(text, limit=160):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tail(path, lines=6):
    """The last lines of a log file, joined on one line."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return " | ".join(x.strip() for x in text.strip().splitlines()[-lines:])


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)
