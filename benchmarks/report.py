"""Medians over rounds, and the markdown report written to
benchmarks/results/."""

import os
import platform
import statistics
import subprocess
import sys
import time

from common import MIB, RESULTS, one_line
from scenarios import BY_NAME

LOAD_KEYS = ("connect", "read", "write", "status", "timeout")


# --------------------------------------------------------------- summaries

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs):
    """Medians over the rounds of one (pass, scenario, server)."""
    good = [r for r in runs if "error" not in r]
    s = {
        "rounds": len(runs),
        "good": len(good),
        "failures": [r["error"] for r in runs if "error" in r],
        "notes": sorted({n for r in runs for n in r.get("notes", ())}),
    }
    if not good:
        return s
    if "rps" in good[0]:
        rps = [r["rps"] for r in good]
        kinds = {}
        for r in good:
            for k, v in r["error_kinds"].items():
                kinds[k] = kinds.get(k, 0) + v
        probes = [r["probe_ms"] for r in good]
        s.update(
            rps=med(rps),
            spread=(max(rps) - min(rps)) / med(rps) if med(rps) else 0.0,
            p50=med([r["p50"] for r in good]),
            p99=med([r["p99"] for r in good]),
            errors=sum(r["errors"] for r in good),
            error_kinds=kinds,
            cpu_us=med([r["cpu_us"] for r in good]),
            rss=med([r["rss"] for r in good]),
            probe_ms=med(probes),
            probe_failed=sum(1 for p in probes if p is None),
        )
    else:
        # The harness's own measurements (idle10k, slowread1k, longpoll100)
        # are all figures: their medians, and the errors of every round.
        for key in good[0]:
            if key not in ("server", "notes"):
                s[key] = med([r[key] for r in good])
        s["errors"] = sum(r["errors"] for r in good)
    return s


# -------------------------------------------------------------- formatting

def fmt_num(v, digits=0):
    if v is None:
        return "-"
    return "{:,.{d}f}".format(v, d=digits)


def fmt_ms(v):
    if v is None:
        return "-"
    if v < 10:
        return "%.2f" % v
    return "%.1f" % v if v < 100 else "%.0f" % v


def fmt_mb(v):
    return "-" if v is None else "%.1f" % (v / MIB)


def fmt_ratio(a, b):
    if a is None or not b:
        return "-"
    return "%.2fx" % (a / b)


def fmt_bytes(v):
    if v is None:
        return "-"
    if abs(v) >= 10 * 1024:
        return "%.1f KB" % (v / 1024)
    return "%.0f B" % v


def fmt_probe(s):
    if s.get("probe_failed"):
        return "no answer (%d/%d)" % (s["probe_failed"], s["good"])
    return fmt_ms(s.get("probe_ms"))


def failure_text(s):
    text = s["failures"][0] if s["failures"] else "no result"
    return "fails: %s" % one_line(text, 110)


def row(cells):
    return "| " + " | ".join(cells) + " |"


# ------------------------------------------------------------------ report

class Report:
    """Renders one run.  ``results`` maps (pass, scenario, server) to a
    summary; ``servers`` are the prepared peers.Server objects."""

    def __init__(self, opts, servers, results, started, elapsed):
        self.opts = opts
        self.servers = servers
        self.results = results
        self.started = started
        self.elapsed = elapsed
        self.lines = []

    def add(self, line=""):
        self.lines.append(line)

    def get(self, pname, scenario, server):
        return self.results.get((pname, scenario, server))

    def render(self):
        self.header()
        first = self.opts.passes[0][0]
        self.against_base()
        self.targets(first)
        self.targets_11(first)
        self.targets_tls(first)
        for pname, scen_names in self.opts.passes:
            self.one_pass(pname, scen_names)
        return "\n".join(self.lines) + "\n"

    def header(self):
        o = self.opts
        day = time.strftime("%Y-%m-%d", time.localtime(self.started))
        self.add("# waitress_c benchmarks, %s, commit %s" % (day, o.commit))
        self.add()
        self.add("- machine: %s, %d CPUs, %s" % (
            cpu_model(), os.cpu_count(), memory_total()))
        self.add("- kernel: %s %s" % (platform.system(), platform.release()))
        self.add("- Python: %s (every venv is made from %s)" % (
            platform.python_version(), sys.executable))
        self.add("- commit: %s" % o.commit)
        base = self.base()
        if base is not None:
            self.add("- base: %s, waitress_c built from `%s` (%s), "
                     "interleaved with the working tree's in every round, "
                     "with the same settings" % (base.name, base.rev,
                                                 base.sha))
        self.add("- command: `%s`" % o.command)
        self.add("- load: wrk %s, %d s per run after %d s of warm-up, "
                 "%d round(s); servers interleaved within each round; "
                 "medians quoted; the whole run took %.0f s" % (
                     wrk_version(), o.duration, o.warmup, o.rounds,
                     self.elapsed))
        self.add("- pinned: server on CPU %d, wrk (one thread) on CPU %d, "
                 "with taskset; unpinned: no affinity, wrk with two threads" %
                 (o.server_cpu, o.client_cpu))
        self.add()
        self.add("| server | version | how it runs |")
        self.add("|---|---|---|")
        for srv in self.servers:
            version = srv.version if srv.reason is None else (
                "**unavailable**: %s" % srv.reason)
            self.add(row([srv.name, version, srv.how]))
        self.add()

    def applies(self, srv, sc):
        return BY_NAME[sc].admits(srv)

    def base(self):
        """The server built from ``--base``, or None."""
        for srv in self.servers:
            if getattr(srv, "is_base", False):
                return srv
        return None

    def peer_names(self):
        """The WSGI peers of waitress_c that ran: not waitress_c, nor its
        build from another commit, nor it on another interpreter."""
        return [s.name for s in self.servers if s.wsgi
                and s.name != "waitress_c"
                and not getattr(s, "is_base", False)
                and not getattr(s, "is_variant", False)]

    # ------------------------------------------------ against the base
    def against_base(self):
        """waitress_c / waitress_c@<sha>: one line per scenario and figure
        (req/s and CPU per request for wrk's scenarios, the headline figure
        of the harness's own), for each pass."""
        base = self.base()
        if base is None:
            return
        ratio = "waitress_c / %s" % base.name
        self.add("## waitress_c against %s (`%s`)" % (base.name, base.rev))
        self.add()
        self.add("The working tree over commit %s, from the same rounds: "
                 "above 1 its figure is larger (faster for req/s; costlier "
                 "for CPU and memory).  Judge a difference against the "
                 "spreads (req/s, max - min over median, tree / base), and "
                 "prefer CPU per request: it is steadier." % base.short)
        self.add()
        self.add(row(["pass", "scenario", "figure", "waitress_c", base.name,
                      ratio, "spread"]))
        self.add("|---" * 7 + "|")
        for pname, scen_names in self.opts.passes:
            for sc in scen_names:
                for cells in base_rows(self.get(pname, sc, "waitress_c"),
                                       self.get(pname, sc, base.name),
                                       BY_NAME[sc].kind):
                    self.add(row([pname, sc] + cells))
        self.add()

    # ---------------------------------------------------------- targets
    def targets(self, pname):
        """Issue 5's targets for waitress_c, from this run's medians."""
        if not any(s.name == "waitress_c" and s.reason is None
                   for s in self.servers):
            return
        checks = target_checks(lambda sc, name: self.get(pname, sc, name),
                               self.peer_names())
        if not checks:
            return
        self.target_table("waitress_c against the targets of issue 5 (%s)"
                          % pname, checks)

    def targets_11(self, first):
        """Issue 11's targets: the unpinned rows from the unpinned pass,
        the rest from ``first``."""
        if not any(s.name == "waitress_c" and s.reason is None
                   for s in self.servers):
            return
        checks = target_checks_11(self.get, first, self.peer_names())
        if not checks:
            return
        self.target_table("waitress_c against the targets of issue 11", checks)

    def targets_tls(self, first):
        """The TLS targets, from ``first``'s medians, when tls-hello-100
        ran."""
        checks = target_checks_tls(lambda sc, name: self.get(first, sc, name))
        if not checks:
            return
        self.target_table("waitress_c over TLS (%s)" % first, checks)

    def target_table(self, title, checks):
        """A section: one row per (what, ours, bound, met) of ``checks``."""
        self.add("## " + title)
        self.add()
        self.add("| target | waitress_c | bound | met |")
        self.add("|---|---|---|---|")
        for what, ours, bound, met in checks:
            self.add(row([what, ours, bound,
                          "-" if met is None else ("yes" if met else "**no**")]))
        self.add()

    # ------------------------------------------------------------ a pass
    def one_pass(self, pname, scen_names):
        o = self.opts
        if pname == "pinned":
            self.add("## Pinned: server on CPU %d, wrk on CPU %d" % (
                o.server_cpu, o.client_cpu))
        else:
            self.add("## Unpinned")
        self.add()
        load = [n for n in scen_names
                if BY_NAME[n].kind in ("load", "h2load")]
        if load:
            self.matrix(pname, load, "req/s (median)", "rps", 0)
            self.matrix(pname, load,
                        "server CPU microseconds per request (median)",
                        "cpu_us", 1)
        for sc in scen_names:
            self.add("### %s: %s" % (sc, BY_NAME[sc].what))
            self.add()
            kind = BY_NAME[sc].kind
            if kind == "idle":
                self.idle_table(pname)
            elif kind == "slowread":
                self.slowread_table(pname, sc)
            elif kind == "longpoll":
                self.longpoll_table(pname, sc)
            else:
                self.load_table(pname, sc)
            self.add()

    def matrix(self, pname, scen_names, title, key, digits):
        names = [s.name for s in self.servers]
        self.add("### " + title)
        self.add()
        self.add(row(["scenario"] + names))
        self.add("|---" * (len(names) + 1) + "|")
        for sc in scen_names:
            cells = [sc]
            for srv in self.servers:
                s = self.get(pname, sc, srv.name)
                if srv.reason is not None or not self.applies(srv, sc):
                    cells.append("n/a")
                elif s is None:
                    cells.append("-")
                elif s.get(key) is None:
                    cells.append("fails")
                else:
                    text = fmt_num(s[key], digits)
                    if s.get("errors"):
                        text += " (%s err)" % fmt_num(s["errors"])
                    cells.append(text)
            self.add(row(cells))
        self.add()

    def load_table(self, pname, sc):
        wr = self.get(pname, sc, "waitress") or {}
        bj = self.get(pname, sc, "bjoern") or {}
        self.add("| server | req/s | x waitress | x bjoern | spread | p50 ms "
                 "| p99 ms | new conn ms | errors | CPU us/req "
                 "| CPU x bjoern | peak RSS MB | notes |")
        self.add("|---" * 13 + "|")
        for srv in self.servers:
            if srv.reason is not None:
                self.add(row([srv.name, "unavailable"] + [""] * 11))
                continue
            if not self.applies(srv, sc):
                continue
            s = self.get(pname, sc, srv.name)
            if s is None:
                continue
            if s.get("rps") is None:
                self.add(row([srv.name, failure_text(s)] + [""] * 10
                             + ["; ".join(s["notes"])]))
                continue
            errors = fmt_num(s["errors"])
            if s["error_kinds"]:
                errors += " (%s)" % ", ".join(
                    "%s %s" % (k, fmt_num(v))
                    for k, v in sorted(s["error_kinds"].items()))
            notes = list(s["notes"])
            if s["good"] < s["rounds"]:
                notes.append("%d of %d rounds failed: %s" % (
                    s["rounds"] - s["good"], s["rounds"],
                    one_line(s["failures"][0], 80)))
            self.add(row([
                srv.name, fmt_num(s["rps"]),
                fmt_ratio(s["rps"], wr.get("rps")),
                fmt_ratio(s["rps"], bj.get("rps")),
                "%.0f%%" % (s["spread"] * 100),
                fmt_ms(s["p50"]), fmt_ms(s["p99"]), fmt_probe(s), errors,
                fmt_num(s["cpu_us"], 1),
                fmt_ratio(s["cpu_us"], bj.get("cpu_us")),
                fmt_mb(s["rss"]), "; ".join(notes),
            ]))

    def idle_table(self, pname):
        bj = self.get(pname, "idle10k", "bjoern") or {}
        self.add("| server | connections held | RSS per connection "
                 "| x bjoern | new request p50 ms | new request max ms "
                 "| errors | peak RSS MB |")
        self.add("|---" * 8 + "|")
        for srv in self.servers:
            if srv.reason is not None:
                self.add(row([srv.name, "unavailable"] + [""] * 6))
                continue
            s = self.get(pname, "idle10k", srv.name)
            if s is None:
                continue
            if s.get("opened") is None:
                self.add(row([srv.name, failure_text(s)] + [""] * 6))
                continue
            self.add(row([
                srv.name,
                "%s of %s (%s still open)" % (
                    fmt_num(s["opened"]), fmt_num(s["wanted"]),
                    fmt_num(s["still_open"])),
                fmt_bytes(s["rss_per_conn"]),
                fmt_ratio(s["rss_per_conn"], bj.get("rss_per_conn")),
                fmt_ms(s["new_p50"]), fmt_ms(s["new_max"]),
                fmt_num(s["errors"]), fmt_mb(s["rss"]),
            ]))

    def slowread_table(self, pname, sc):
        self.add("| server | connections | in the kernel MB | held by the "
                 "server MB | RSS growth MB | growth / held | quiet after s "
                 "| whole responses | read back s | errors | peak RSS MB "
                 "| notes |")
        self.add("|---" * 12 + "|")
        for srv in self.servers:
            s = self.own_row(pname, sc, srv, 12)
            if s is None:
                continue
            self.add(row([
                srv.name, "%s of %s" % (fmt_num(s["opened"]),
                                        fmt_num(s["wanted"])),
                fmt_mb(s["in_kernel"]), fmt_mb(s["queued"]),
                fmt_mb(s["rss_growth"]),
                fmt_ratio(s["rss_growth"], s["queued"]),
                fmt_num(s["quiet_s"], 1), fmt_num(s["whole"]),
                fmt_num(s["read_s"], 1), fmt_num(s["errors"]),
                fmt_mb(s["rss"]), "; ".join(s["notes"]),
            ]))

    def longpoll_table(self, pname, sc):
        self.add("| server | answered | server CPU % of a core | window s "
                 "| last answer s | errors | peak RSS MB | notes |")
        self.add("|---" * 8 + "|")
        for srv in self.servers:
            s = self.own_row(pname, sc, srv, 8)
            if s is None:
                continue
            self.add(row([
                srv.name, "%s of %s" % (fmt_num(s["answered"]),
                                        fmt_num(s["wanted"])),
                fmt_num(s["cpu_pct"], 2), fmt_num(s["window_s"], 1),
                fmt_num(s["last_s"], 1), fmt_num(s["errors"]),
                fmt_mb(s["rss"]), "; ".join(s["notes"]),
            ]))

    def own_row(self, pname, sc, srv, width):
        """The summary behind one server's row of a table of the harness's
        own measurements, or None when the row is written here already (or
        there is none)."""
        if srv.reason is not None:
            self.add(row([srv.name, "unavailable"] + [""] * (width - 2)))
            return None
        if not srv.threaded and BY_NAME[sc].threads:
            self.add(row([srv.name, "n/a: one thread"] + [""] * (width - 2)))
            return None
        s = self.get(pname, sc, srv.name)
        if s is None or not self.applies(srv, sc):
            return None
        if s["good"] == 0:
            self.add(row([srv.name, failure_text(s)] + [""] * (width - 3)
                         + ["; ".join(s["notes"])]))
            return None
        if s["good"] < s["rounds"]:
            s = dict(s, notes=s["notes"] + ["%d of %d rounds failed: %s" % (
                s["rounds"] - s["good"], s["rounds"],
                one_line(s["failures"][0], 80))])
        return s


# The figures compared with the base, by kind of scenario: (label, summary
# key, format).  The first is the headline.
BASE_FIGURES = {
    "load": [("req/s", "rps", fmt_num),
             ("CPU us/req", "cpu_us", lambda v: fmt_num(v, 1))],
    "idle": [("RSS per connection", "rss_per_conn", fmt_bytes),
             ("new request max ms", "new_max", fmt_ms)],
    "slowread": [("RSS growth MB", "rss_growth", fmt_mb)],
    "longpoll": [("server CPU % of a core", "cpu_pct",
                  lambda v: fmt_num(v, 2))],
}
BASE_FIGURES["h2load"] = BASE_FIGURES["load"]


def base_rows(tree, base, kind):
    """[figure, tree's, base's, ratio, spread] cells for one scenario of one
    pass, from the two summaries (either may be None: it did not run).  A
    figure missing on one side reads ``fails`` (the summary exists) or
    ``-``, and its ratio ``-``; so does the spread of fewer than two good
    rounds."""
    if tree is None and base is None:
        return []

    def cell(s, key, fmt):
        if s is None:
            return "-"
        v = s.get(key)
        return "fails" if v is None else fmt(v)

    def spread(s):
        # One round has no spread: "0%" would claim a steadiness not seen.
        v = None if s is None or s["good"] < 2 else s.get("spread")
        return "-" if v is None else "%.0f%%" % (v * 100)

    out = []
    for label, key, fmt in BASE_FIGURES[kind]:
        mine, theirs = figure(tree, key), figure(base, key)
        out.append([label, cell(tree, key, fmt), cell(base, key, fmt),
                    fmt_ratio(mine, theirs),
                    "%s / %s" % (spread(tree), spread(base))
                    if key == "rps" else ""])
    return out


def target_checks(get, peers):
    """[(what, ours, bound, met)] for the targets of issue 5 that this run
    measured.  ``get(scenario, server)`` returns a summary or None;
    ``peers`` are the WSGI peers that ran (for "best peer")."""
    out = []

    def value(sc, name, key):
        return figure(get(sc, name), key)

    def best_peer(sc):
        return best_of(get, sc, peers)

    def ge(what, sc, bound, label, key="rps", fmt=fmt_num):
        ours = value(sc, "waitress_c", key)
        if get(sc, "waitress_c") is None:
            return
        if ours is None:
            out.append((what, "fails", label, False))
            return
        met = None if bound is None else ours >= bound
        out.append((what, fmt(ours), label, met))

    bj = lambda sc, key="rps": value(sc, "bjoern", key)  # noqa: E731
    own_hello = value("hello-100", "waitress_c", "rps")

    def times(v, k):
        return None if v is None else v * k

    ge("hello-100 req/s >= bjoern", "hello-100", bj("hello-100"),
       fmt_num(bj("hello-100")))
    if get("hello-100", "waitress_c") is not None:
        ours = value("hello-100", "waitress_c", "cpu_us")
        out.append(("hello-100 server CPU per request <= 6 us",
                    fmt_num(ours, 1) + " us" if ours else "fails", "6.0 us",
                    None if ours is None else ours <= 6.0))
        p99, bp99 = value("hello-100", "waitress_c", "p99"), bj("hello-100",
                                                                "p99")
        out.append(("hello-100 p99 <= bjoern", fmt_ms(p99) + " ms",
                    fmt_ms(bp99) + " ms",
                    None if p99 is None or bp99 is None else p99 <= bp99))
    ge("pipeline16 >= 2x own hello-100", "pipeline16", times(own_hello, 2),
       fmt_num(times(own_hello, 2)))
    ge("hello-1 >= bjoern", "hello-1", bj("hello-1"), fmt_num(bj("hello-1")))
    ge("hello-1000 >= bjoern", "hello-1000", bj("hello-1000"),
       fmt_num(bj("hello-1000")))
    s = get("hello-1000", "waitress_c")
    if s is not None and s.get("errors") is not None:
        out.append(("hello-1000 errors = 0", fmt_num(s["errors"]), "0",
                    s["errors"] == 0))
    ge("close >= 1.2x bjoern", "close", times(bj("close"), 1.2),
       fmt_num(times(bj("close"), 1.2)))
    ge("chunked >= 0.8x own hello-100", "chunked", times(own_hello, 0.8),
       fmt_num(times(own_hello, 0.8)))
    for sc in ("1mib", "post64k", "file10m"):
        best, who = best_peer(sc)
        ge("%s >= best peer" % sc, sc, best,
           "%s (%s)" % (fmt_num(best), who) if who else "-")
    ge("sleep10ms >= 380 req/s", "sleep10ms", 380, "380")
    s = get("idle10k", "waitress_c")
    if s is not None:
        per = s.get("rss_per_conn")
        out.append(("idle10k RSS per connection <= 320 B", fmt_bytes(per),
                    "320 B", None if per is None else per <= 320))
        lat = s.get("new_max")
        out.append(("idle10k new request < 10 ms (worst of 11)",
                    fmt_ms(lat) + " ms" if lat is not None else "fails",
                    "10 ms", None if lat is None else lat < 10))
    return out


def figure(summary, key):
    return None if summary is None else summary.get(key)


def best_of(get, sc, peers):
    """(req/s, name) of the fastest of ``peers`` in ``sc``, or (None,
    None)."""
    vals = [(figure(get(sc, p), "rps"), p) for p in peers]
    vals = [v for v in vals if v[0] is not None]
    return max(vals) if vals else (None, None)


def target_checks_11(get, first, peers):
    """[(what, ours, bound, met)] for the targets of issue 11 that this run
    measured.  ``get(pass, scenario, server)`` returns a summary or None;
    the unpinned rows come from the unpinned pass, the others from
    ``first``; ``peers`` are the WSGI peers that ran (for "best peer")."""
    out = []

    def ours(pname, sc):
        return get(pname, sc, "waitress_c")

    def check(what, s, key, bound, label, met, fmt=fmt_num):
        """One row, if waitress_c ran the scenario: ``met(figure, bound)``
        judges it, and a missing bound leaves it unjudged."""
        if s is None:
            return
        v = figure(s, key)
        if v is None:
            out.append((what, "fails", label, False))
        else:
            out.append((what, fmt(v), label,
                        None if bound is None else met(v, bound)))

    def at_least(a, b):
        return a >= b

    def at_most(a, b):
        return a <= b

    def below(a, b):
        return a < b

    # dict.fromkeys: one row each when the only pass is the unpinned one
    for pname, sc in dict.fromkeys([("unpinned", "hello-100"),
                                    (first, "hello-1000"),
                                    ("unpinned", "hello-1000")]):
        bj = figure(get(pname, sc, "bjoern"), "rps")
        check("%s %s req/s >= bjoern" % (sc, pname), ours(pname, sc), "rps",
              bj, fmt_num(bj), at_least)
        if sc == "hello-1000":
            check("%s %s errors = 0" % (sc, pname), ours(pname, sc),
                  "errors", 0, "0", at_most)
    check("hello-100 %s server CPU per request <= 6 us" % first,
          ours(first, "hello-100"), "cpu_us", 6.0, "6.0 us", at_most,
          lambda v: fmt_num(v, 1) + " us")
    best, who = best_of(lambda sc, p: get(first, sc, p), "1mib-16", peers)
    check("1mib-16 >= best peer", ours(first, "1mib-16"), "rps", best,
          "%s (%s)" % (fmt_num(best), who) if who else "-", at_least)
    idle = ours(first, "idle10k")
    check("idle10k RSS per connection <= 320 B", idle, "rss_per_conn", 320,
          "320 B", at_most, fmt_bytes)
    check("idle10k new request < 10 ms (worst of 11)", idle, "new_max", 10,
          "10 ms", below, lambda v: fmt_ms(v) + " ms")
    slow = ours(first, "slowread1k")
    check("slowread1k errors = 0 (every response whole)", slow, "errors", 0,
          "0", at_most)
    check("slowread1k RSS growth <= 2x the bytes the server holds", slow,
          "growth_ratio", 2.0, "2.00", at_most,
          lambda v: "%.2f (%s MB for %s MB)" % (
              v, fmt_mb(slow["rss_growth"]), fmt_mb(slow["queued"])))
    check("longpoll100 server CPU < 1% of a core, 100 parked",
          ours(first, "longpoll100"), "cpu_pct", 1.0, "1.00 %", below,
          lambda v: "%.2f %%" % v)
    return out


def target_checks_tls(get):
    """[(what, ours, bound, met)]: keep-alive TLS within 15 % of plain HTTP
    (tls-hello-100 against hello-100, both waitress_c's) and ahead of
    granian; the handshake and 1 MiB rows against granian and nginx-tls.
    ``get(scenario, server)`` returns a summary or None."""
    out = []
    if get("tls-hello-100", "waitress_c") is None:
        return out

    def rps(sc, name):
        return figure(get(sc, name), "rps")

    ours = rps("tls-hello-100", "waitress_c")
    plain = rps("hello-100", "waitress_c")
    if ours is None:
        out.append(("tls-hello-100 req/s", "fails", "-", False))
        return out
    if plain is not None:
        out.append(("tls-hello-100 req/s >= 0.85 x hello-100",
                    "%s (%.2f x)" % (fmt_num(ours), ours / plain),
                    fmt_num(0.85 * plain), ours >= 0.85 * plain))
    # The same ratio for nginx serving the bytes from a file, with its own
    # TLS: what TLS costs a C server on this machine and this OpenSSL.
    ng_tls, ng_plain = rps("tls-hello-100", "nginx"), rps("hello-100", "nginx")
    if ng_tls is not None and ng_plain is not None:
        out.append(("reference: nginx (static) tls-hello-100 / hello-100",
                    "%.2f x" % (ng_tls / ng_plain), "-", None))

    def cpu(sc, name):
        return figure(get(sc, name), "cpu_us")

    added = {}
    for name in ("waitress_c", "nginx", "granian"):
        c_tls, c_plain = cpu("tls-hello-100", name), cpu("hello-100", name)
        if c_tls is not None and c_plain is not None:
            added[name] = c_tls - c_plain
    if "waitress_c" in added:
        others = ", ".join("%s %.1f us" % (k, v) for k, v in added.items()
                           if k != "waitress_c")
        out.append(("server CPU TLS adds to a request (tls-hello-100 - "
                    "hello-100)", "%.1f us" % added["waitress_c"],
                    others or "-", None))
    for sc in ("tls-hello-100", "tls-handshakes", "tls-full-handshakes",
               "tls-1mib"):
        mine = rps(sc, "waitress_c")
        for peer in ("granian", "nginx-tls"):
            theirs = rps(sc, peer)
            if mine is None or theirs is None:
                continue
            judged = sc == "tls-hello-100" and peer == "granian"
            out.append(("%s req/s %s %s" % (sc, ">" if judged else "vs", peer),
                        "%s (%.2f x)" % (fmt_num(mine), mine / theirs),
                        fmt_num(theirs), mine > theirs if judged else None))
    return out


# ---------------------------------------------------------------- machine

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def memory_total():
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        return "%.0f GiB RAM" % (kb / 1024 / 1024)
    except (OSError, ValueError, IndexError):
        return "? RAM"


def wrk_version():
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True)
    except OSError:
        return "?"
    words = (out.stdout + out.stderr).decode(errors="replace").split()
    return words[1] if len(words) > 1 else "?"


# ------------------------------------------------------------ reading back

def parse_cell(text):
    """A req/s matrix cell as written by ``Report.matrix``: a number
    (``"14,551"``, ``"812 (3 err)"``), ``"fails"``, or None for ``n/a``
    and ``-`` (the server did not take part or did not run)."""
    text = text.strip()
    if text in ("n/a", "-", ""):
        return None
    if text.startswith("fails"):
        return "fails"
    try:
        return float(text.split()[0].replace(",", ""))
    except ValueError:
        return None


def parse_results(text):
    """Read back a report written by ``Report.render``: its header facts
    and, for each pass, the req/s matrix.

    Returns ``{"title", "commit", "machine", "python", "passes"}``, where
    ``passes`` maps ``"pinned"``/``"unpinned"`` to ``(servers, rows)``:
    the server names in column order and ``[(scenario, [cell...])]`` with
    cells as ``parse_cell`` gives them.
    """
    out = {"title": "", "commit": "?", "machine": "?", "python": "?",
           "passes": {}}
    pname = None
    in_rps = False
    table = None
    for line in text.splitlines():
        if line.startswith("# "):
            out["title"] = line[2:].strip()
        elif line.startswith("- commit: "):
            out["commit"] = line.split(":", 1)[1].strip()
        elif line.startswith("- machine: "):
            out["machine"] = line.split(":", 1)[1].strip()
        elif line.startswith("- Python: "):
            out["python"] = line.split(":", 1)[1].split("(")[0].strip()
        elif line.startswith("## "):
            head = line[3:].lower()
            pname = ("unpinned" if head.startswith("unpinned") else
                     "pinned" if head.startswith("pinned") else None)
            in_rps = False
        elif line.startswith("### "):
            in_rps = pname is not None and line[4:].startswith("req/s")
            table = None
        elif in_rps and line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if table is None:
                table = (cells[1:], [])
                out["passes"][pname] = table
            elif not set(cells[0]) <= set("-"):
                table[1].append((cells[0], [parse_cell(c) for c in cells[1:]]))
    return out


def newest_results(directory=None):
    """The newest report of a full run in ``benchmarks/results`` (quick and
    partial runs, and runs against a ``--base``, are left out): the one
    committed last, and a file with uncommitted changes before all of them;
    None if there is none."""
    directory = directory or RESULTS
    paths = [os.path.join(directory, n) for n in os.listdir(directory)
             if n.endswith(".md") and "-quick" not in n
             and "-partial" not in n and "-vs-" not in n]

    def when(path):
        try:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--", path], cwd=directory,
                capture_output=True, text=True, timeout=30)
            if dirty.returncode == 0 and not dirty.stdout.strip():
                out = subprocess.run(
                    ["git", "log", "-1", "--format=%ct", "--", path],
                    cwd=directory, capture_output=True, text=True,
                    timeout=30)
                if out.returncode == 0 and out.stdout.strip():
                    return (0, int(out.stdout.strip()), path)
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
        return (1, os.path.getmtime(path), path)

    return max(paths, key=when) if paths else None


# The colours of the chart: waitress_c stands out, the two peers every
# ratio is quoted against come next, the other servers stay grey.
CHART_COLOURS = {"waitress_c": "#c0392b", "waitress": "#2e6da4",
                 "bjoern": "#e69f00"}
CHART_OTHER = "#a5a5a5"


def short_rps(v):
    if v >= 100000:
        return "%.0fk" % (v / 1000)
    if v >= 10000:
        return "%.1fk" % (v / 1000)
    return "{:,.0f}".format(v)


def write_chart(results_path, out_path, pname="pinned", columns=3):
    """Draw the req/s matrix of one pass of a results file as a PNG: one
    panel per scenario, one bar per server, each panel on its own scale,
    and waitress_c's ratios to waitress and bjoern in the panel's title.
    Returns the number of panels drawn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(results_path) as f:
        res = parse_results(f.read())
    if pname not in res["passes"]:
        raise ValueError("%s has no req/s table for the %s pass"
                         % (results_path, pname))
    servers, rows = res["passes"][pname]
    rows = [(sc, cells) for sc, cells in rows
            if any(isinstance(c, float) for c in cells)]
    if not rows:
        raise ValueError("%s: no req/s figures in the %s pass"
                         % (results_path, pname))
    nrows = (len(rows) + columns - 1) // columns
    fig, axes = plt.subplots(nrows, columns, squeeze=False,
                             figsize=(3.6 * columns, 0.28 * len(servers)
                                      * nrows + 0.9 * nrows + 1.2))
    index = {name: i for i, name in enumerate(servers)}

    def ratio(cells, peer):
        ours = cells[index["waitress_c"]] if "waitress_c" in index else None
        theirs = cells[index[peer]] if peer in index else None
        if isinstance(ours, float) and isinstance(theirs, float) and theirs:
            return "%.2fx %s" % (ours / theirs, peer)
        if isinstance(ours, float) and theirs == "fails":
            return "%s fails" % peer
        return None

    ys = list(range(len(servers)))[::-1]      # first server on top
    for k, (sc, cells) in enumerate(rows):
        ax = axes[k // columns][k % columns]
        numbers = [c if isinstance(c, float) else 0.0 for c in cells]
        top = max(numbers) or 1.0
        ax.barh(ys, numbers, height=0.7,
                color=[CHART_COLOURS.get(s, CHART_OTHER) for s in servers])
        for y, c in zip(ys, cells):
            if isinstance(c, float):
                text = short_rps(c)
            else:
                text = "fails" if c == "fails" else "n/a"
            ax.text((c if isinstance(c, float) else 0.0) + top * 0.02, y,
                    text, va="center", fontsize=8,
                    color="black" if isinstance(c, float) else "#777777")
        ax.set_xlim(0, top * 1.3)
        ax.set_yticks(ys)
        ax.set_yticklabels(servers if k % columns == 0 else [], fontsize=9)
        ax.set_xticks([])       # every bar carries its figure
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ratios = [r for r in (ratio(cells, "waitress"),
                              ratio(cells, "bjoern")) if r]
        title = sc if not ratios else "%s\nwaitress_c: %s" % (
            sc, ", ".join(ratios))
        ax.set_title(title, fontsize=9, loc="left")
    for k in range(len(rows), nrows * columns):
        axes[k // columns][k % columns].axis("off")
    where = ("server on one CPU, wrk on the other" if pname == "pinned"
             else "unpinned")
    fig.suptitle("Requests per second (median, longer is better; each panel "
                 "has its own scale)\n%s; commit %s, %s, Python %s"
                 % (where, res["commit"], res["machine"], res["python"]),
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return len(rows)


def main(argv):
    import argparse

    ap = argparse.ArgumentParser(
        prog="report.py",
        description="Draw the req/s of a results file as a bar chart.")
    ap.add_argument("--chart", metavar="PNG", required=True,
                    help="where to write the chart")
    ap.add_argument("--results", metavar="MD",
                    help="the results file (default: the newest full run "
                         "in benchmarks/results)")
    ap.add_argument("--pass", dest="pname", default="pinned",
                    choices=("pinned", "unpinned"))
    opts = ap.parse_args(argv)
    path = opts.results or newest_results()
    if path is None:
        ap.error("no results file in %s" % RESULTS)
    n = write_chart(path, opts.chart, opts.pname)
    print("%s: %d scenarios from %s" % (opts.chart, n,
                                        os.path.relpath(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
