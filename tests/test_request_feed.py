"""The request framing (csrc/parser.c's wc_request_feed) in process, without
a socket: tests/c/test_request_feed.c, a table of inputs and the requests
or the error each must give, fed whole, at every two-way split and byte by
byte.  Built here with gcc against the parser's files (the set `make fuzz`
builds from), under AddressSanitizer and UBSan when gcc has them."""

import os
import re
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SOURCES = ["tests/c/test_request_feed.c", "csrc/parser.c", "csrc/target.c", "csrc/buffer.c"]
CFLAGS = [
    "-std=c11", "-g", "-O1", "-D_GNU_SOURCE", "-DWC_CHECKS", "-Icsrc",
    "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
]


def clean_env():
    """The environment without a sanitizer preloaded by `make asan` or
    `make tsan` (a TSan runtime cannot host an ASan binary)."""
    env = dict(os.environ)
    for k in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"):
        env.pop(k, None)
    return env


def sanitizer_flags(env):
    libs = [
        subprocess.run(["gcc", "-print-file-name=" + lib], capture_output=True, text=True, env=env).stdout.strip()
        for lib in ("libasan.so", "libubsan.so")
    ]
    if all(os.path.isabs(p) and os.path.exists(p) for p in libs):
        return ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
    return []


def test_request_feed_cases(tmp_path):
    gcc = shutil.which("gcc")
    assert gcc, "gcc is required (the extension is built with it)"
    env = clean_env()
    pc = subprocess.run(["pkg-config", "--cflags", "libuv"], capture_output=True, text=True, env=env)
    assert pc.returncode == 0, pc.stderr
    exe = tmp_path / "test_request_feed"
    build = subprocess.run(
        [gcc, *CFLAGS, *pc.stdout.split(), *sanitizer_flags(env), *SOURCES, "-lhttp_parser", "-o", str(exe)],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=120,
    )
    assert build.returncode == 0, build.stderr
    spool = tmp_path / "spool"
    spool.mkdir()
    run = subprocess.run([str(exe), str(spool)], capture_output=True, text=True, env=env, timeout=120)
    lines = run.stdout.splitlines()
    failures = [ln for ln in lines if ln.startswith("FAIL ")]
    assert not failures and not run.stderr, "\n".join(failures) + run.stderr
    assert run.returncode == 0, run.stdout
    m = re.fullmatch(r"(\d+) passed, (\d+) failed", lines[-1])
    assert m, lines[-1]
    ok = [ln[3:] for ln in lines[:-1] if ln.startswith("ok ")]
    assert len(ok) == len(lines) - 1 == int(m.group(1)) and m.group(2) == "0"
    assert len(set(ok)) == len(ok), "case names must be unique"
    assert len(ok) >= 70
    assert os.listdir(spool) == [], "a spooled body left a file behind"
