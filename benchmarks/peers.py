"""The servers under test: their venvs, how each is installed, checked and
started.  Each WSGI server runs ``apps:app`` from its own venv with
``benchmarks/`` on ``sys.path``; nginx serves the same bytes as static files.
"""

import hashlib
import io
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile

from common import (BENCH, HOST, LOGS, ROOT, VENVS, WORK, log, one_line,
                    read_text, write_text)

ALL = ["waitress_c", "waitress", "bjoern", "fastwsgi", "gunicorn", "uwsgi",
       "nginx", "waitress_c-w2", "gunicorn-w2"]
QUICK = ["waitress_c", "waitress", "bjoern"]
# Servers that --servers may name but a full run leaves out: a variant of
# waitress_c, the TLS peers of the tls-* scenarios (granian speaks TLS
# itself; nginx-tls is nginx terminating TLS in front of waitress_c), and
# the HTTP/2 peers of the h2load scenarios (granian, gunicorn-h2).
EXTRA = ["waitress_c-metrics", "granian", "nginx-tls", "gunicorn-h2"]
THREADS = 4


def threads(scenario):
    """Worker threads for ``scenario``: 4, unless it parks more requests
    than that at once."""
    return scenario.threads or THREADS


def apt_install(package, probe):
    """Install a Debian package if ``probe`` (a command) is missing."""
    if shutil.which(probe) or (
        probe.startswith("dpkg:")
        and subprocess.call(["dpkg", "-s", probe[5:]],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL) == 0
    ):
        return None
    if os.geteuid() != 0:
        return "%s is missing: apt-get install %s" % (package, package)
    log("installing %s with apt-get" % package)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with open(os.path.join(LOGS, "apt-%s.log" % package), "wb") as out:
        for cmd in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", package]):
            if subprocess.call(cmd, stdout=out, stderr=out, env=env) != 0:
                return "apt-get install %s failed" % package
    return None


def source_digest(root):
    """A digest of the build inputs under ``root`` (names and contents)."""
    h = hashlib.sha256()
    for path in sorted(waitress_c_sources(root)):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:  # removed while we looked: someone is editing
            continue
        h.update(os.path.relpath(path, root).encode() + b"\0")
        h.update(data)
    return h.hexdigest()[:16]


def waitress_c_sources(root=ROOT):
    """The working-tree files a build of waitress_c reads."""
    paths = []
    for name in os.listdir(root):
        full = os.path.join(root, name)
        if os.path.isfile(full) and (
            name in ("setup.py", "pyproject.toml", "setup.cfg", "MANIFEST.in")
            or name.startswith(("README", "LICENSE", "CHANGES"))
        ):
            paths.append(full)
    for sub in ("csrc", "waitress_c"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, sub)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in filenames:
                if name.endswith((".so", ".o", ".pyc")) or name.startswith("."):
                    continue
                paths.append(os.path.join(dirpath, name))
    return paths


class Venv:
    """benchmarks/venvs/<name>: created once, reinstalled when its spec
    changes.  A failed install is remembered (with its reason) until the spec
    changes or --reinstall is given, so a peer that cannot build does not
    cost minutes on every run."""

    def __init__(self, name, creator=None, prefix=()):
        self.name = name
        # The interpreter that makes the venv (this one unless given), and
        # what every command in it is run under (the chroot of
        # tools/pythons.sh for its versions).
        self.creator = creator or sys.executable
        self.prefix = list(prefix)
        self.path = os.path.join(VENVS, name)
        self.python = os.path.join(self.path, "bin", "python")
        self.stamp = os.path.join(self.path, ".bench-installed")
        self.failed = os.path.join(self.path, ".bench-failed")
        self.log = os.path.join(LOGS, "install-%s.log" % name)

    def bin(self, name):
        return os.path.join(self.path, "bin", name)

    def cached(self, spec):
        """Whether ``ensure(spec, ...)`` would install nothing: ``spec`` is
        installed, or failed to install last time."""
        failed = read_text(self.failed)
        return read_text(self.stamp) == spec or bool(
            failed and failed.split("\n", 1)[0] == spec)

    def ensure(self, spec, install, reinstall=False):
        """Return None when ready, else the reason it is not."""
        if not reinstall:
            if read_text(self.stamp) == spec:
                return None
            failed = read_text(self.failed)
            if failed and failed.split("\n", 1)[0] == spec:
                return failed.split("\n", 1)[1] + " (cached; --reinstall)"
        log("setting up venv %s (%s)" % (self.name, one_line(spec, 60)))
        for stale in (self.stamp, self.failed):
            if os.path.exists(stale):
                os.unlink(stale)
        with open(self.log, "wb") as out:
            if not os.path.exists(self.python):
                rc = subprocess.call(
                    self.prefix + [self.creator, "-m", "venv", self.path],
                    stdout=out, stderr=out)
                if rc != 0:
                    return self.fail(spec, "python -m venv failed")
            for args in install:
                out.write(("\n$ pip %s\n" % " ".join(args)).encode())
                out.flush()
                rc = subprocess.call(
                    self.prefix + [self.python, "-m", "pip",
                                   "--disable-pip-version-check",
                                   "--no-input"] + args,
                    stdout=out, stderr=out, cwd=WORK,
                )
                if rc != 0:
                    return self.fail(spec, "pip %s failed: %s" % (
                        args[0], pip_error(self.log)))
        write_text(self.stamp, spec)
        return None

    def fail(self, spec, reason):
        write_text(self.failed, spec + "\n" + reason)
        return reason

    def version(self, dist):
        try:
            return subprocess.check_output(
                self.prefix + [self.python, "-c",
                 "import importlib.metadata as m, sys;"
                 "print(m.version(sys.argv[1]))", dist],
                stderr=subprocess.DEVNULL, cwd=WORK,
            ).decode().strip()
        except (OSError, subprocess.CalledProcessError):
            return "?"


def pip_error(path):
    """The most telling lines of a failed pip log."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [x.strip() for x in f]
    except OSError:
        return "see " + path
    keys = ("error:", "Error:", "ERROR:", "fatal error", "No such file")
    hits = [x for x in lines if any(k in x for k in keys)
            and "Running setup.py" not in x and "subprocess-exited" not in x]
    picked = hits[:2] if hits else lines[-2:]
    return one_line("; ".join(picked), 200) + " (log: %s)" % (
        os.path.relpath(path, ROOT))


def copy_waitress_c_tree():
    """Copy the build inputs to .work/src so pip never writes into the
    working tree that other people are building in."""
    dest = os.path.join(WORK, "src-waitress_c")
    if os.path.exists(dest):
        shutil.rmtree(dest)
    for path in waitress_c_sources():
        target = os.path.join(dest, os.path.relpath(path, ROOT))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            shutil.copy2(path, target)
        except FileNotFoundError:  # removed while we copied
            pass
    return dest


def waitress_c_install(src):
    """The pip steps that install waitress_c from the source tree `src`."""
    return [
        # What pyproject.toml's build-system asks for: older ones reject its
        # SPDX license string, and the venv's own is older.
        ["install", "-q", "setuptools>=77", "wheel"],
        ["uninstall", "-y", "-q", "waitress_c"],
        ["install", "-q", "--no-build-isolation", src],
    ]


# ------------------------------------------------------------------ servers

class Server:
    """How to install, check and start one server.

    After ``prepare()``, ``reason`` is None when the server can run, or says
    why not; ``command(port, scenario)`` is its argv and ``env()`` its
    environment.  ``data`` is the run's DataDir.
    """

    name = ""
    dist = ""          # the pip distribution whose version is reported
    how = ""           # one line for the report
    wsgi = True
    venv_name = None   # another server's venv (the same install)
    pinnable = True    # False: several processes, meaningless on one CPU
    threaded = True    # False: one thread runs the app (no parked requests)
    is_base = False    # waitress_c of another commit (--base): not a peer
    tls = False        # takes part in the tls-* scenarios (HTTPS)
    tls_only = False   # takes part in nothing else

    def __init__(self, data, reinstall=False):
        self.data = data
        self.reinstall = reinstall
        self.venv = Venv(self.venv_name or self.name)
        self.reason = None
        self.version = ""

    def pip_specs(self):
        return [self.dist]

    def prepare(self):
        spec = "packages: %s" % " ".join(self.pip_specs())
        install = [["install", "-q"] + self.pip_specs()]
        self.reason = self.venv.ensure(spec, install, self.reinstall)
        if self.reason is None:
            self.reason = self.check()
        if self.reason is None:
            self.version = self.venv.version(self.dist)

    def check(self):
        return None

    def env(self):
        env = dict(os.environ)
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(var, None)
        env["PYTHONPATH"] = BENCH
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["WC_BENCH_FILE"] = self.data.file
        return env

    def command(self, port, scenario):
        raise NotImplementedError

    def stop_signal(self):
        return signal.SIGTERM


class WaitressC(Server):
    name = "waitress_c"
    dist = "waitress_c"
    how = ("waitress-c-serve --threads=4 (release build of the working "
           "tree; --certfile/--keyfile in the tls-* scenarios)")
    tls = True
    full_handshakes = True  # --tls-session-cache=0
    h2 = True          # h2c with prior knowledge on the same port

    def prepare(self):
        digest = source_digest(ROOT)
        spec = "waitress_c working tree %s" % digest
        if not self.reinstall and read_text(self.venv.stamp) == spec:
            install = []
        else:
            # The stamp names what was built: the copy, which may differ from
            # the digest above if someone saved a file in between.
            src = copy_waitress_c_tree()
            digest = source_digest(src)
            spec = "waitress_c working tree %s" % digest
            install = waitress_c_install(src)
        self.reason = self.venv.ensure(spec, install, self.reinstall)
        if self.reason is None:
            self.reason = self.check()
        if self.reason is None:
            self.version = "%s (tree %s)" % (self.venv.version(self.dist),
                                             digest[:8])

    def check(self):
        probe = subprocess.run(
            self.venv.prefix + [self.venv.python, "-c",
             "import waitress_c, waitress_c._core; print(waitress_c.__file__)"],
            capture_output=True, cwd=WORK,
        )
        if probe.returncode != 0:
            err = probe.stderr.decode(errors="replace").strip().splitlines()
            return "import waitress_c._core failed: %s" % one_line(
                err[-1] if err else "?")
        if not probe.stdout.decode().startswith(self.venv.path):
            return "waitress_c imported from outside its venv: %s" % (
                probe.stdout.decode().strip())
        if not os.path.exists(self.venv.bin("waitress-c-serve")):
            return "no waitress-c-serve script in the venv"
        return None

    def command(self, port, scenario):
        argv = [self.venv.bin("waitress-c-serve"),
                "--listen=%s:%d" % (HOST, port),
                "--threads=%d" % threads(scenario)]
        if scenario.name == "idle10k":
            argv.append("--connection-limit=20000")
        elif scenario.conns >= 100:
            # The default limit (100, as waitress) would leave wrk's extra
            # connections unserved in the backlog: a tuning knob, raised
            # for both waitresses alike.
            argv.append("--connection-limit=%d" % (scenario.conns + 100))
        if scenario.tls:
            cert, key = self.data.tls_files()
            argv += ["--certfile=" + cert, "--keyfile=" + key]
            if not scenario.resume and self.knows("--tls-session-cache"):
                argv.append("--tls-session-cache=0")
        return argv + ["apps:app"]

    def knows(self, flag):
        """Whether this build's waitress-c-serve has `flag` (a base commit
        may be older than it: one without a session cache never resumed)."""
        known = getattr(self, "_flags", None)
        if known is None:
            out = subprocess.run([self.venv.bin("waitress-c-serve"), "--help"],
                                 capture_output=True, cwd=WORK)
            known = self._flags = out.stdout.decode(errors="replace")
        return flag in known


PYTHONS_SH = os.path.join(ROOT, "tools", "pythons.sh")


def chroot_versions():
    """The versions tools/pythons.sh provides in its chroot (3.14, 3.15)."""
    try:
        return subprocess.check_output([PYTHONS_SH, "versions"]).decode().split()
    except (OSError, subprocess.CalledProcessError):
        return []


def find_python(spec):
    """(interpreter, runs in the chroot) for ``--python``'s ``spec``: a
    path, or a version: the chroot's for 3.14 and 3.15 (``make pythons``),
    else pyenv's newest 3.NN.*, else python3.NN on PATH.  ValueError when
    there is none."""
    if os.sep in spec:
        if not os.access(spec, os.X_OK):
            raise ValueError("%s is not an executable" % spec)
        return spec, False
    if spec in chroot_versions():
        return "/usr/bin/python" + spec, True
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = []
    try:
        for name in os.listdir(os.path.join(root, "versions")):
            if name.startswith(spec + ".") and name[len(spec) + 1:].isdigit():
                found.append((int(name[len(spec) + 1:]), name))
    except OSError:
        pass
    for _, name in sorted(found, reverse=True):
        path = os.path.join(root, "versions", name, "bin", "python" + spec)
        if os.access(path, os.X_OK):
            return path, False
    path = shutil.which("python" + spec)
    if path:
        return path, False
    raise ValueError("no CPython %s here (pyenv install, or make pythons)"
                     % spec)


class WaitressCPython(WaitressC):
    """The working tree's waitress_c on another interpreter (``run.py
    --python``), as ``waitress_c-py<version>``, in a venv of its own made
    by that interpreter; run with the same arguments.  The chroot's
    versions run inside it (tools/pythons.sh run), on this machine's
    loopback and CPUs like the others; their process group then holds the
    chroot's wrappers as well (a shell or two, idle)."""

    is_variant = True  # waitress_c itself, not a peer

    def __init__(self, data, spec, reinstall=False):
        self.spec = spec
        self.python_path, self.in_chroot = find_python(spec)
        label = spec if os.sep not in spec else os.path.basename(spec)
        self.name = "waitress_c-py" + label.replace("python", "")
        self.venv_name = self.name
        self.how = ("waitress-c-serve --threads=4 (release build of the "
                    "working tree) on %s%s" % (
                        self.python_path,
                        ", in the sid chroot" if self.in_chroot else ""))
        WaitressC.__init__(self, data, reinstall)
        # In WORK, as the others: not in the repository, whose waitress_c/
        # would be imported instead of the venv's.
        prefix = [PYTHONS_SH, "run", "-C", WORK] if self.in_chroot else []
        self.venv = Venv(self.venv_name, self.python_path, prefix)

    def command(self, port, scenario):
        argv = WaitressC.command(self, port, scenario)
        if not self.in_chroot:
            return argv
        # tools/pythons.sh runs its command with a clean environment: the
        # apps' path goes in by hand.  The 10 MiB file is the chroot's own
        # copy (apps.py makes it in its /tmp: the same bytes).
        return self.venv.prefix + ["env", "PYTHONPATH=" + BENCH,
                                   "PYTHONDONTWRITEBYTECODE=1"] + argv


def resolve_revision(rev, root=ROOT):
    """(full sha, short sha) of the commit ``rev`` names in the repository
    at ``root``; ValueError when it names none."""
    def git(*args):
        return subprocess.check_output(["git", "-C", root] + list(args),
                                       stderr=subprocess.DEVNULL).decode()

    try:
        full = git("rev-parse", "--verify", "--quiet", "--end-of-options",
                   rev + "^{commit}").strip()
        short = git("rev-parse", "--short", full).strip()
    except (OSError, subprocess.CalledProcessError):
        raise ValueError("%r is not a commit of %s" % (rev, root)) from None
    return full, short


def base_name(short):
    """The name of the server built from commit ``short``."""
    return "waitress_c@" + short


def export_revision(sha, dest, root=ROOT):
    """``git archive sha`` unpacked into ``dest`` (made afresh): the whole
    tree of that commit, of which the build reads what a working tree's
    build reads."""
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.makedirs(dest)
    archive = subprocess.run(["git", "-C", root, "archive", "--format=tar",
                              sha], capture_output=True)
    if archive.returncode != 0:
        return "git archive %s failed: %s" % (sha[:12], one_line(
            archive.stderr.decode(errors="replace")))
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # before 3.11.4; git archive writes no links out of the tree
            tar.extractall(dest)
    return None


class WaitressCAt(WaitressC):
    """waitress_c built from a commit (``run.py --base REV``), installed as
    the working tree's is into a venv of its own, ``waitress_c-<sha>``; run
    with the same arguments (``WaitressC.command``), the harness's apps and
    clients from the working tree.  The venv is kept: a second run with
    the same commit does not rebuild."""

    is_base = True

    def __init__(self, data, rev, sha, short, reinstall=False):
        self.rev, self.sha, self.short = rev, sha, short
        self.name = base_name(short)
        self.venv_name = "waitress_c-" + short
        self.how = ("waitress-c-serve --threads=4 (release build of commit "
                    "%s, `%s`)" % (short, rev))
        WaitressC.__init__(self, data, reinstall)

    def prepare(self):
        spec = "waitress_c commit %s" % self.sha
        install = []
        if self.reinstall or not self.venv.cached(spec):
            src = os.path.join(WORK, "src-waitress_c-" + self.short)
            self.reason = export_revision(self.sha, src)
            if self.reason is not None:
                return
            install = waitress_c_install(src)
        self.reason = self.venv.ensure(spec, install, self.reinstall)
        if self.reason is None:
            self.reason = self.check()
        if self.reason is None:
            self.version = "%s (commit %s)" % (self.venv.version(self.dist),
                                               self.short)


class Waitress(Server):
    name = "waitress"
    dist = "waitress"
    how = "waitress-serve --threads=4"

    def command(self, port, scenario):
        argv = [self.venv.bin("waitress-serve"),
                "--listen=%s:%d" % (HOST, port),
                "--threads=%d" % threads(scenario)]
        if scenario.name == "idle10k":
            # select() cannot watch fds past 1024: waitress needs poll here.
            argv += ["--connection-limit=20000", "--asyncore-use-poll"]
        elif scenario.conns >= 100:
            argv += ["--connection-limit=%d" % (scenario.conns + 100),
                     "--asyncore-use-poll"]
        return argv + ["apps:app"]


class Bjoern(Server):
    name = "bjoern"
    dist = "bjoern"
    how = "bjoern.run (one thread, libev)"
    threaded = False

    def prepare(self):
        self.reason = apt_install("libev-dev", "dpkg:libev-dev")
        if self.reason is None:
            Server.prepare(self)

    def command(self, port, scenario):
        return [self.venv.python, os.path.join(BENCH, "launch.py"), "bjoern",
                str(port)]


class FastWSGI(Server):
    name = "fastwsgi"
    dist = "fastwsgi"
    how = "fastwsgi.run (one thread, libuv)"
    threaded = False

    def command(self, port, scenario):
        return [self.venv.python, os.path.join(BENCH, "launch.py"),
                "fastwsgi", str(port)]


class Gunicorn(Server):
    name = "gunicorn"
    dist = "gunicorn"
    how = "gunicorn --worker-class=gthread --threads=4 --workers=1"

    def command(self, port, scenario):
        argv = [self.venv.bin("gunicorn"), "--worker-class=gthread",
                "--workers=1", "--threads=%d" % threads(scenario),
                "--bind=%s:%d" % (HOST, port),
                "--log-level=warning", "--backlog=2048"]
        if scenario.name == "idle10k":
            argv.append("--worker-connections=20000")
        return argv + ["apps:app"]


class UWSGI(Server):
    name = "uwsgi"
    dist = "uwsgi"
    how = "uwsgi --http11-socket --threads=4 --processes=1"

    def command(self, port, scenario):
        return [self.venv.bin("uwsgi"),
                "--http11-socket=%s:%d" % (HOST, port),
                "--processes=1", "--threads=%d" % threads(scenario),
                "--pythonpath=" + BENCH,
                "--module=apps:app", "--disable-logging", "--die-on-term",
                "--listen=1024", "--need-app", "--lazy-apps"]

    def stop_signal(self):
        return signal.SIGINT


class Nginx(Server):
    """nginx serving the same bytes from files: the I/O reference.  In the
    tls-* scenarios it terminates TLS itself (no session reuse, as
    waitress_c): what TLS costs a C server on this machine, against which
    waitress_c's own TLS cost is judged."""

    name = "nginx"
    dist = "nginx"
    how = ("static files, 1 worker: the I/O reference, not a WSGI server "
           "(TLS with the same certificate in the tls-* scenarios)")
    wsgi = False
    tls = True
    full_handshakes = True  # ssl_session_cache off

    def prepare(self):
        self.reason = apt_install("nginx", "nginx")
        if self.reason is None:
            self.binary = shutil.which("nginx") or "/usr/sbin/nginx"
            out = subprocess.run([self.binary, "-v"], capture_output=True)
            self.version = out.stderr.decode().strip().split("/")[-1]

    def command(self, port, scenario):
        conf = self.data.nginx_conf(port, tls=scenario.tls,
                                    resume=scenario.resume)
        return [self.binary, "-p", self.data.dir, "-c", conf,
                "-e", os.path.join(self.data.dir, "error.log")]

    def stop_signal(self):
        return signal.SIGQUIT


class Granian(Server):
    """granian's WSGI interface: one worker process, its default runtime
    threads, 4 blocking threads for the app; TLS by its own options;
    HTTP/2 (h2c with prior knowledge) for the h2load scenarios, HTTP/1.1
    otherwise."""

    name = "granian"
    dist = "granian"
    how = ("granian --interface=wsgi --workers=1 --blocking-threads=4 "
           "(--ssl-certificate/--ssl-keyfile in the tls-* scenarios, "
           "--http 2 in the h2 ones, 1 otherwise)")
    threaded = False  # a fixed pool: kept out of longpoll100
    tls = True
    h2 = True

    def command(self, port, scenario):
        argv = [self.venv.bin("granian"), "--interface", "wsgi",
                "--http", "2" if is_h2(scenario) else "1",
                "--host", HOST, "--port", str(port), "--workers", "1",
                "--blocking-threads", str(threads(scenario)),
                "--backlog", "2048", "--no-access-log",
                "--log-level", "warning"]
        if scenario.tls:
            cert, key = self.data.tls_files()
            argv += ["--ssl-certificate", cert, "--ssl-keyfile", key]
        return argv + ["apps:app"]

    def stop_signal(self):
        return signal.SIGINT


class NginxTLS(Server):
    """nginx terminating TLS (1 worker) in front of the working tree's
    waitress_c (4 threads) on a unix socket, with upstream keep-alive: the
    usual deployment, both processes counted as the server (one process
    group, pinned to the same CPU).  A shell starts waitress_c, waits for
    its socket, then becomes nginx."""

    name = "nginx-tls"
    dist = "nginx"
    how = ("nginx 1 worker, TLS, proxy_pass to waitress-c-serve --threads=4 "
           "on a unix socket (keep-alive upstream)")
    venv_name = "waitress_c"
    tls = True
    tls_only = True
    full_handshakes = True  # ssl_session_cache off

    def prepare(self):
        self.reason = apt_install("nginx", "nginx")
        if self.reason is None:
            backend = WaitressC(self.data, self.reinstall)
            backend.prepare()
            self.reason = backend.reason and "waitress_c: " + backend.reason
        if self.reason is None:
            self.binary = shutil.which("nginx") or "/usr/sbin/nginx"
            out = subprocess.run([self.binary, "-v"], capture_output=True)
            self.version = "%s + waitress_c" % (
                out.stderr.decode().strip().split("/")[-1])

    def command(self, port, scenario):
        sock = os.path.join(self.data.dir, "backend-%d.sock" % port)
        conf = self.data.nginx_tls_conf(port, sock, scenario.resume)
        # 666: nginx's workers run as another user than its master.
        backend = [self.venv.bin("waitress-c-serve"), "--unix-socket=" + sock,
                   "--unix-socket-perms=666",
                   "--threads=%d" % threads(scenario),
                   "--connection-limit=%d" % (scenario.conns + 100),
                   "apps:app"]
        nginx = [self.binary, "-p", self.data.dir, "-c", conf,
                 "-e", os.path.join(self.data.dir, "error.log")]
        script = ('sock=$1; shift; rm -f "$sock"; "$@" & i=0; '
                  'while [ ! -S "$sock" ] && [ $i -lt 300 ]; do sleep 0.1; '
                  'i=$((i+1)); done; exec ' + " ".join(
                      shlex.quote(a) for a in nginx))
        return ["sh", "-c", script, "sh"] + [sock] + backend

    def stop_signal(self):
        return signal.SIGTERM  # nginx's fast stop; waitress_c's graceful one


class WaitressCWorkers(WaitressC):
    """Two worker processes under waitress_c's supervisor (unpinned only)."""

    name = "waitress_c-w2"
    venv_name = "waitress_c"
    how = ("waitress-c-serve --workers=2 --threads=4 (2 processes, "
           "shared listener)")
    pinnable = False

    def command(self, port, scenario):
        argv = WaitressC.command(self, port, scenario)
        return argv[:-1] + ["--workers=2", argv[-1]]


class WaitressCMetrics(WaitressC):
    """The working tree with Prometheus metrics on (what counting costs:
    compare with waitress_c in the same run)."""

    name = "waitress_c-metrics"
    venv_name = "waitress_c"
    is_variant = True  # waitress_c itself, not a peer
    how = "waitress-c-serve --threads=4 --metrics=127.0.0.1:0"

    def command(self, port, scenario):
        argv = WaitressC.command(self, port, scenario)
        return argv[:-1] + ["--metrics=%s:0" % HOST, argv[-1]]


class GunicornWorkers(Gunicorn):
    name = "gunicorn-w2"
    venv_name = "gunicorn"
    how = "gunicorn --worker-class=gthread --threads=4 --workers=2"
    pinnable = False

    def command(self, port, scenario):
        return [a.replace("--workers=1", "--workers=2")
                for a in Gunicorn.command(self, port, scenario)]


def is_h2(scenario):
    return scenario.kind == "h2load"


class GunicornH2(Gunicorn):
    """gunicorn's gthread worker with its HTTP/2 (the h2 library): h2c
    with prior knowledge from a trusted peer (127.0.0.1), HTTP/1.1 for
    the rest."""

    name = "gunicorn-h2"
    dist = "gunicorn"
    how = ("gunicorn --worker-class=gthread --threads=4 --workers=1 "
           "(--http-protocols=h2,h1 --http2-cleartext=prior-knowledge for "
           "h2 scenarios)")
    h2 = True

    def pip_specs(self):
        return ["gunicorn[http2]"]

    def command(self, port, scenario):
        argv = Gunicorn.command(self, port, scenario)
        if not is_h2(scenario):
            return argv     # prior knowledge answers HTTP/1.1 with 400
        return argv[:-1] + ["--http-protocols=h2,h1",
                            "--http2-cleartext=prior-knowledge",
                            "--forwarded-allow-ips=%s" % HOST, argv[-1]]


CLASSES = {c.name: c for c in (WaitressC, Waitress, Bjoern, FastWSGI,
                               Gunicorn, UWSGI, Nginx, WaitressCWorkers,
                               GunicornWorkers, WaitressCMetrics, Granian,
                               NginxTLS, GunicornH2)}


class DataDir:
    """A temp dir (world-readable, for nginx's workers) with the 10 MiB file,
    nginx's document root and its generated configs."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="waitress_c-bench-")
        os.chmod(self.dir, 0o755)
        self.www = os.path.join(self.dir, "www")
        os.mkdir(self.www)
        os.chmod(self.www, 0o755)
        # apps.py creates the 10 MiB file where WC_BENCH_FILE says; the
        # servers get the same variable and serve the same file.
        self.file = os.path.join(self.www, "file")
        os.environ["WC_BENCH_FILE"] = self.file
        if BENCH not in sys.path:
            sys.path.insert(0, BENCH)
        import apps  # the same bytes the WSGI apps send

        apps.data_file()
        for name, data in (("hello", apps.HELLO), ("1mib", apps.BIG)):
            with open(os.path.join(self.www, name), "wb") as f:
                f.write(data)
        for name in os.listdir(self.www):
            os.chmod(os.path.join(self.www, name), 0o644)

    def nginx_conf(self, port, tls=False, resume=True):
        path = os.path.join(self.dir, "nginx-%d.conf" % port)
        ssl = ""
        if tls:
            cert, key = self.tls_files()
            ssl = NGINX_SSL % {"cert": cert, "key": key,
                               "cache": nginx_session_cache(resume)}
        write_text(path, NGINX_CONF % {
            "what": "one worker, static files", "pid": "nginx.pid",
            "dir": self.dir, "port": port, "www": self.www, "host": HOST,
            "ssl": " ssl" if tls else "", "ssl_lines": ssl})
        return path

    def tls_files(self):
        """(certificate, key) for the tls-* scenarios: a self-signed P-256
        certificate for 127.0.0.1, made by openssl once per run (the key
        in PKCS#8, which granian requires)."""
        cert = os.path.join(self.dir, "tls-cert.pem")
        key = os.path.join(self.dir, "tls-key.pem")
        if not os.path.exists(cert):
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec",
                 "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", key, "-out", cert, "-days", "2",
                 "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1"],
                check=True, capture_output=True, timeout=60)
            for path in (cert, key):
                os.chmod(path, 0o644)  # nginx's workers, granian
        return cert, key

    def nginx_tls_conf(self, port, sock, resume=True):
        path = os.path.join(self.dir, "nginx-tls-%d.conf" % port)
        cert, key = self.tls_files()
        write_text(path, NGINX_TLS_CONF % {
            "what": "one worker terminating TLS in front of waitress_c on a "
                    "unix socket", "pid": "nginx-tls.pid",
            "dir": self.dir, "port": port, "host": HOST, "sock": sock,
            "cert": cert, "key": key,
            "cache": nginx_session_cache(resume)})
        return path

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# What both nginx configurations start with; %(what)s and %(pid)s differ.
NGINX_HEAD = """\
# generated by benchmarks/run.py: %(what)s, loopback only
worker_processes 1;
daemon off;
pid %(dir)s/%(pid)s;
error_log %(dir)s/error.log warn;
worker_rlimit_nofile 20000;
events {
    worker_connections 20000;
}
http {
    access_log off;
    client_body_temp_path %(dir)s/tmp-body;
    proxy_temp_path %(dir)s/tmp-proxy;
    fastcgi_temp_path %(dir)s/tmp-fastcgi;
    uwsgi_temp_path %(dir)s/tmp-uwsgi;
    scgi_temp_path %(dir)s/tmp-scgi;
"""


NGINX_CONF = NGINX_HEAD + """\
    default_type text/plain;
    sendfile on;
    tcp_nodelay on;
    open_file_cache max=16;
    open_file_cache_valid 300s;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {
        listen %(host)s:%(port)d%(ssl)s backlog=4096;
%(ssl_lines)s        root %(www)s;
        types { }
        # 13 bytes: one writev beats headers + sendfile (~1.8x here)
        location = /hello {
            sendfile off;
        }
    }
}
"""



def nginx_session_cache(resume):
    """As waitress_c: sessions resumed from a cache (no ticket key), or
    none (tls-full-handshakes)."""
    return "shared:SSL:1m" if resume else "off"


# The TLS lines of NGINX_CONF in the tls-* scenarios: as nginx-tls's.
NGINX_SSL = """\
        ssl_certificate %(cert)s;
        ssl_certificate_key %(key)s;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache %(cache)s;
        ssl_session_tickets off;
"""


NGINX_TLS_CONF = NGINX_HEAD + """\
    tcp_nodelay on;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    upstream waitress_c {
        server unix:%(sock)s;
        keepalive 128;
        keepalive_requests 100000000;
    }
    server {
        listen %(host)s:%(port)d ssl backlog=4096;
        ssl_certificate %(cert)s;
        ssl_certificate_key %(key)s;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache %(cache)s;
        ssl_session_tickets off;
        location / {
            proxy_pass http://waitress_c;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            # A 1 MiB answer held in memory, never in a temporary file.
            proxy_buffers 16 64k;
            proxy_busy_buffers_size 128k;
            proxy_max_temp_file_size 0;
        }
    }
}
"""
