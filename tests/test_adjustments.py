"""Adjustments: converters, defaults, every option, every construction error,
the deprecation warnings and listen parsing (reference sections 1 and 3.20).

Where waitress is the reference, the test also builds waitress's own
Adjustments (installed from PyPI as a test dependency) and compares.
"""

import socket
import warnings

import pytest
import waitress.adjustments as wa

from waitress_c import adjustments as adjmod
from waitress_c.adjustments import (
    OPTIONS,
    OPTION_MAP,
    Adjustments,
    as_socket_list,
    asbool,
    aslist,
    asoctal,
    asset,
    slash_fixed_str,
    str_iftruthy,
)

INET, INET6 = socket.AF_INET, socket.AF_INET6
STREAM, TCP = socket.SOCK_STREAM, socket.IPPROTO_TCP


def make(**kw):
    """Construct without letting a DeprecationWarning escape."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return Adjustments(**kw)


def make_waitress(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return wa.Adjustments(**kw)


# -- the table ---------------------------------------------------------------


WAITRESS_OPTIONS = [o for o in OPTIONS if not o.extra]


def test_table_has_the_34_waitress_adjustments_in_order():
    names = [o.name for o in WAITRESS_OPTIONS]
    assert names == [n for n, _ in wa.Adjustments._params]
    assert len(WAITRESS_OPTIONS) == 34


def test_extra_options_come_after_waitress_ones():
    extra = [i for i, o in enumerate(OPTIONS) if o.extra]
    assert extra == list(range(34, len(OPTIONS)))


@pytest.mark.parametrize("opt", WAITRESS_OPTIONS, ids=lambda o: o.name)
def test_converter_is_the_one_waitress_uses(opt):
    assert opt.convert.__name__ == wa.Adjustments._param_map[opt.name].__name__


def test_class_annotations_name_every_option():
    assert set(Adjustments.__annotations__) - {"socket_options"} == {
        o.name for o in OPTIONS
    }


@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: o.name)
def test_every_option_has_help_and_a_shown_default(opt):
    assert opt.help.strip() and opt.shown_default.strip()
    assert opt.section in (adjmod.STANDARD, adjmod.TUNING)
    assert (opt.metavar is None) == opt.is_bool


def test_legacy_options_are_marked():
    legacy = {o.name for o in OPTIONS if o.legacy}
    assert legacy == {
        "send_bytes", "asyncore_loop_timeout", "asyncore_use_poll", "cleanup_interval"
    }
    for opt in OPTIONS:
        if opt.legacy:
            assert "no effect" in opt.help or "ignored" in opt.help


# -- converters --------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["t", "true", "y", "yes", "on", "1", " TRUE ", "On", "Y", 1, True]
)
def test_asbool_true(value):
    assert asbool(value) is True


@pytest.mark.parametrize(
    "value", ["f", "false", "no", "off", "0", "", "garbage", "2", None, 0, False]
)
def test_asbool_false(value):
    assert asbool(value) is False


def test_aslist_splits_lines_then_blanks():
    assert aslist("a b\n  c\n\n\td  \n") == ["a", "b", "c", "d"]


def test_aslist_iterable_items_are_split_on_blanks():
    assert aslist(["a b", "c", ""]) == ["a", "b", "c"]


def test_aslist_does_not_split_commas():
    assert aslist("a,b, c") == ["a,b,", "c"]


def test_asset():
    assert asset("x y\nx") == {"x", "y"}


@pytest.mark.parametrize("value", ["600", "0600", "0o600"])
def test_asoctal(value):
    assert asoctal(value) == 0o600


def test_asoctal_refuses_an_int_like_waitress():
    with pytest.raises(TypeError):
        asoctal(0o600)
    with pytest.raises(TypeError):
        wa.asoctal(0o600)


def test_asoctal_refuses_non_octal():
    with pytest.raises(ValueError):
        asoctal("9")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("", ""),
        ("   ", ""),
        ("foo", "/foo"),
        ("/foo/", "/foo"),
        ("//foo//", "/foo"),
        (" /a/b/ ", "/a/b"),
        ("/", "/"),
    ],
)
def test_slash_fixed_str(value, expected):
    assert slash_fixed_str(value) == expected
    assert wa.slash_fixed_str(value) == expected


@pytest.mark.parametrize(
    "value, expected", [("", None), (None, None), (0, None), ("x", "x"), (5, "5")]
)
def test_str_iftruthy(value, expected):
    assert str_iftruthy(value) == expected


def test_as_socket_list_drops_non_sockets():
    with socket.socket() as sock:
        assert as_socket_list([sock, "x", 3, None]) == [sock]
    assert as_socket_list("abc") == []


# -- defaults ----------------------------------------------------------------

DEFAULTS = {
    "host": "0.0.0.0",
    "port": 8080,
    "ipv4": True,
    "ipv6": True,
    "listen": [(INET, STREAM, TCP, ("0.0.0.0", 8080))],
    "threads": 4,
    "trusted_proxy": None,
    "trusted_proxy_count": 1,
    "trusted_proxy_headers": set(),
    "log_untrusted_proxy_headers": False,
    "clear_untrusted_proxy_headers": True,
    "url_scheme": "http",
    "url_prefix": "",
    "backlog": 1024,
    "recv_bytes": 8192,
    "send_bytes": 1,
    "outbuf_overflow": 1048576,
    "outbuf_high_watermark": 16777216,
    "inbuf_overflow": 524288,
    "connection_limit": 100,
    "cleanup_interval": 30,
    "channel_timeout": 120,
    "log_socket_errors": True,
    "max_request_header_size": 262144,
    "max_request_body_size": 1073741824,
    "expose_tracebacks": False,
    "ident": "waitress_c",
    "asyncore_loop_timeout": 1,
    "asyncore_use_poll": False,
    "unix_socket": None,
    "unix_socket_perms": 0o600,
    "sockets": [],
    "channel_request_lookahead": 0,
    "server_name": "waitress.invalid",
    "shutdown_timeout": 30.0,
    "workers": 1,
    "max_requests": 0,
    "max_requests_jitter": 0,
    "boot_timeout": 60.0,
    "timeout": 0.0,
    "access_log": False,
    "access_log_format": '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
    "pidfile": None,
    "log_level": None,
    "log_config": None,
    "error_logfile": None,
    "access_logfile": None,
    "metrics": None,
    "certfile": None,
    "keyfile": None,
    "keyfile_password_file": None,
    "keyfile_password_env": None,
    "ca_certs": None,
    "cert_reqs": "none",
    "ciphers": None,
    "tls_min_version": "1.2",
    "tls_session_cache": 4096,
    "tls_session_timeout": 300,
    "insecure_listen": [],
    "sni_certs": [],
    "http2": True,
    "h2_max_concurrent_streams": 100,
    "h2_initial_window_size": 1048576,
    "h2_max_frame_size": 16384,
    "h2_max_header_list_size": 262144,
}


def test_defaults_cover_every_option():
    assert set(DEFAULTS) == {o.name for o in OPTIONS}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_default(name):
    assert getattr(make(), name) == DEFAULTS[name]


@pytest.mark.parametrize(
    "name", sorted(set(DEFAULTS) - {"ident"} - {o.name for o in OPTIONS if o.extra})
)
def test_default_is_waitress_default(name):
    assert getattr(make(), name) == getattr(make_waitress(), name)


def test_ident_default_is_ours():
    assert make().ident == "waitress_c"
    assert make_waitress().ident == "waitress"


def test_socket_options_default_and_not_an_adjustment():
    assert Adjustments.socket_options == [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    with pytest.raises(ValueError, match="Unknown adjustment 'socket_options'"):
        Adjustments(socket_options=[])


def test_mutable_defaults_are_not_shared():
    a, b = make(), make()
    a.trusted_proxy_headers.add("x")
    a.sockets.append("x")
    assert b.trusted_proxy_headers == set() and b.sockets == []
    assert Adjustments.trusted_proxy_headers == set()


# -- each adjustment set from a string (ini file / command line) -------------

# (name, string value, converted value); listen, host and port have their own
# tests below, sockets cannot come from a string.
FROM_STRINGS = [
    ("ipv4", "false", False),
    ("http2", "off", False),
    ("h2_max_concurrent_streams", "32", 32),
    ("tls_session_cache", "0", 0),
    ("tls_session_timeout", "600", 600),
    ("h2_initial_window_size", "65535", 65535),
    ("h2_max_frame_size", "32768", 32768),
    ("h2_max_header_list_size", "8192", 8192),
    ("ipv6", "off", False),
    ("threads", "8", 8),
    ("trusted_proxy", "10.0.0.1", "10.0.0.1"),
    ("trusted_proxy_count", "2", 2),
    (
        "trusted_proxy_headers",
        "X-Forwarded-For x-forwarded-proto",
        {"x-forwarded-for", "x-forwarded-proto"},
    ),
    ("log_untrusted_proxy_headers", "yes", True),
    ("clear_untrusted_proxy_headers", "no", False),
    ("url_scheme", "https", "https"),
    ("url_prefix", "//app//", "/app"),
    ("backlog", "64", 64),
    ("recv_bytes", "16384", 16384),
    ("send_bytes", "9000", 9000),
    ("outbuf_overflow", "2048", 2048),
    ("outbuf_high_watermark", "4096", 4096),
    ("inbuf_overflow", "1024", 1024),
    ("connection_limit", "10", 10),
    ("cleanup_interval", "5", 5),
    ("channel_timeout", "7", 7),
    ("log_socket_errors", "0", False),
    ("max_request_header_size", "1000", 1000),
    ("max_request_body_size", "2000", 2000),
    ("expose_tracebacks", "true", True),
    ("ident", "myserver", "myserver"),
    ("asyncore_loop_timeout", "5", 5),
    ("asyncore_use_poll", "true", True),
    ("unix_socket", "/tmp/x.sock", "/tmp/x.sock"),
    ("unix_socket_perms", "660", 0o660),
    ("channel_request_lookahead", "3", 3),
    ("server_name", "example.org", "example.org"),
    ("shutdown_timeout", "2.5", 2.5),
    ("workers", "4", 4),
    ("max_requests", "1000", 1000),
    ("max_requests_jitter", "50", 50),
    ("boot_timeout", "7.5", 7.5),
    ("timeout", "120", 120.0),
    ("access_log", "yes", True),
    ("access_log_format", "%(h)s %(s)s %(D)s", "%(h)s %(s)s %(D)s"),
    ("pidfile", "/tmp/wc.pid", "/tmp/wc.pid"),
    ("log_level", "WARNING", "warning"),
    ("log_config", "/tmp/wc-logging.json", "/tmp/wc-logging.json"),
    ("error_logfile", "/tmp/wc-error.log", "/tmp/wc-error.log"),
    ("access_logfile", "-", "-"),
    ("metrics", "127.0.0.1:9100", "127.0.0.1:9100"),
]

NEEDS_PROXY = {"trusted_proxy_count", "trusted_proxy_headers"}


def with_context(name, value):
    kw = {name: value}
    if name in NEEDS_PROXY:
        kw["trusted_proxy"] = "10.0.0.1"
    if name in ("ipv4", "ipv6"):
        # the default listen, 0.0.0.0:8080, needs IPv4
        kw["listen"] = "*:9000"
    return kw


# Read from strings with real certificates in tests/test_tls.py and
# tests/test_tls_sni.py.
TLS_OPTIONS = {
    "certfile", "keyfile", "keyfile_password_file", "keyfile_password_env",
    "ca_certs", "cert_reqs", "ciphers", "tls_min_version", "insecure_listen",
    "sni_certs",
}


def test_from_strings_covers_every_option():
    covered = {name for name, _, _ in FROM_STRINGS} | TLS_OPTIONS
    assert covered | {"host", "port", "listen", "sockets"} == {
        o.name for o in OPTIONS
    }


@pytest.mark.parametrize("name, value, expected", FROM_STRINGS)
def test_option_from_string(name, value, expected):
    assert getattr(make(**with_context(name, value)), name) == expected


@pytest.mark.parametrize(
    "name, value, expected",
    [t for t in FROM_STRINGS if not OPTION_MAP[t[0]].extra],
)
def test_option_from_string_matches_waitress(name, value, expected):
    kw = with_context(name, value)
    assert getattr(make(**kw), name) == getattr(make_waitress(**kw), name)


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_shutdown_timeout_must_be_a_duration(value):
    with pytest.raises(ValueError, match="shutdown_timeout"):
        make(shutdown_timeout=value)


@pytest.mark.parametrize(
    "value, expected",
    [("debug", "debug"), ("Info", "info"), (" WARNING ", "warning"),
     ("error", "error"), ("CRITICAL", "critical"), ("", None), (None, None)],
)
def test_log_level_any_case(value, expected):
    assert adjmod.aslevel(value) == expected


@pytest.mark.parametrize("value", ["loud", "warn", "10", "fatal"])
def test_log_level_refused(value):
    with pytest.raises(ValueError, match="invalid log level"):
        make(log_level=value)


def test_pidfile_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert make(pidfile="wc.pid").pidfile == str(tmp_path / "wc.pid")
    assert make(pidfile="").pidfile is None


def test_pidfile_directory_must_exist(tmp_path):
    path = tmp_path / "missing" / "wc.pid"
    with pytest.raises(ValueError, match="pidfile .* does not exist"):
        make(pidfile=str(path))


def test_ident_empty_means_none():
    assert make(ident="").ident is None


def test_trusted_proxy_empty_means_none():
    assert make(trusted_proxy="").trusted_proxy is None


def test_int_option_refuses_garbage():
    with pytest.raises(ValueError):
        Adjustments(threads="many")


def test_unknown_adjustment():
    with pytest.raises(ValueError) as info:
        Adjustments(nope=1)
    assert str(info.value) == "Unknown adjustment 'nope'"


# -- legacy and deprecated ---------------------------------------------------


def test_send_bytes_warns():
    message = "^send_bytes will be removed in a future release$"
    with pytest.warns(DeprecationWarning, match=message):
        adj = Adjustments(send_bytes="9000")
    assert adj.send_bytes == 9000


@pytest.mark.parametrize(
    "kw", [{"asyncore_loop_timeout": "3"}, {"asyncore_use_poll": "true"}]
)
def test_asyncore_names_accepted_silently(kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Adjustments(**kw)


def test_trusted_proxy_alone_trusts_x_forwarded_proto_with_a_warning():
    with pytest.warns(DeprecationWarning) as record:
        adj = Adjustments(trusted_proxy="127.0.0.1")
    message = str(record[0].message)
    assert message == (
        "No proxy headers were marked as trusted, but trusted_proxy was set. "
        "Implicitly trusting X-Forwarded-Proto for backwards compatibility. "
        "This will be removed in future versions of waitress."
    )
    assert adj.trusted_proxy_headers == {"x-forwarded-proto"}
    assert adj.trusted_proxy_count == 1


def test_no_warning_when_headers_are_given():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adj = Adjustments(trusted_proxy="*", trusted_proxy_headers="forwarded")
    assert adj.trusted_proxy_headers == {"forwarded"}


# -- construction errors (section 1.3) -----------------------------------------

LISTEN_SET = "host or port may not be set if listen is set."
SOCKETS_SET = "host or port may not be set if sockets is set."
UNIX_HOST = "unix_socket may not be set if host or port is set"

ERRORS = [
    ({"listen": "127.0.0.1:1", "host": "h"}, LISTEN_SET),
    ({"listen": "127.0.0.1:1", "port": "1"}, LISTEN_SET),
    (
        {"listen": "127.0.0.1:1", "sockets": []},
        "socket may not be set if listen is set.",
    ),
    ({"sockets": [], "host": "h"}, SOCKETS_SET),
    ({"sockets": [], "port": "1"}, SOCKETS_SET),
    (
        {"sockets": [], "unix_socket": "/x"},
        "unix_socket may not be set if sockets is set",
    ),
    ({"unix_socket": "/x", "host": "h"}, UNIX_HOST),
    ({"unix_socket": "/x", "port": "1"}, UNIX_HOST),
    (
        {"unix_socket": "/x", "listen": "127.0.0.1:1"},
        "unix_socket may not be set if listen is set",
    ),
    ({"listen": "127.0.0.1:notaport"}, "Invalid host/port specified."),
    ({"listen": "127.0.0.1:-1"}, "Invalid host/port specified."),
    ({"listen": "::1"}, "Invalid host/port specified."),
    ({"host": "::1:"}, "Invalid host/port specified."),
    (
        {"trusted_proxy_count": "2"},
        "trusted_proxy_count has no meaning without setting trusted_proxy",
    ),
    (
        {"trusted_proxy_headers": "x-forwarded-for"},
        "trusted_proxy_headers has no meaning without setting trusted_proxy",
    ),
    (
        {"trusted_proxy": "*", "trusted_proxy_headers": "forwarded x-forwarded-for"},
        "The Forwarded proxy header and the X-Forwarded-{By,Host,Proto,Port,For} "
        "headers are mutually exclusive. Can't trust both!",
    ),
]


@pytest.mark.parametrize("kw, message", ERRORS)
def test_construction_error(kw, message):
    with pytest.raises(ValueError) as info:
        make(**kw)
    assert str(info.value) == message


@pytest.mark.parametrize("kw, message", ERRORS)
def test_construction_error_matches_waitress(kw, message):
    with pytest.raises(ValueError) as info:
        make_waitress(**kw)
    assert str(info.value) == message


def test_unknown_trusted_proxy_header():
    with pytest.raises(ValueError) as info:
        make(trusted_proxy="*", trusted_proxy_headers="x-forwarded-for x-evil a-bad")
    assert str(info.value) == (
        "Received unknown trusted_proxy_headers value (a-bad, x-evil) expected "
        "one of forwarded, x-forwarded-by, x-forwarded-for, x-forwarded-host, "
        "x-forwarded-port, x-forwarded-proto"
    )


def test_every_trustable_header_is_accepted():
    headers = " ".join(h for h in adjmod.TRUSTABLE_PROXY_HEADERS if h != "forwarded")
    adj = make(trusted_proxy="*", trusted_proxy_headers=headers)
    assert adj.trusted_proxy_headers == set(adjmod.TRUSTABLE_PROXY_HEADERS) - {
        "forwarded"
    }
    assert wa.KNOWN_PROXY_HEADERS == set(adjmod.TRUSTABLE_PROXY_HEADERS)


def test_ipv4_disabled_without_ipv6(monkeypatch):
    monkeypatch.setattr(socket, "has_ipv6", False)
    with pytest.raises(ValueError) as info:
        make(ipv4=False)
    assert str(info.value) == (
        "IPv4 is disabled but IPv6 is not available. Cowardly refusing to start."
    )


# -- sockets= ------------------------------------------------------------------


@pytest.fixture
def tcp_sock():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        yield sock


@pytest.fixture
def unix_sock():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        yield sock


def test_sockets_tcp(tcp_sock):
    adj = make(sockets=[tcp_sock, "not a socket"])
    assert adj.sockets == [tcp_sock]


def test_sockets_unix(unix_sock):
    assert make(sockets=[unix_sock]).sockets == [unix_sock]


def test_sockets_tcp6():
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        assert make(sockets=[sock]).sockets == [sock]


def test_sockets_mixed(tcp_sock, unix_sock):
    with pytest.raises(ValueError) as info:
        make(sockets=[tcp_sock, unix_sock])
    assert str(info.value) == "Internet and UNIX sockets may not be mixed."


@pytest.mark.parametrize(
    "family, kind",
    [(socket.AF_INET, socket.SOCK_DGRAM), (socket.AF_UNIX, socket.SOCK_DGRAM)],
)
def test_sockets_not_stream(family, kind):
    with socket.socket(family, kind) as sock:
        with pytest.raises(ValueError) as info:
            make(sockets=[sock])
    assert str(info.value) == "Only Internet or UNIX stream sockets may be used."


def test_sockets_from_a_string_is_empty():
    assert make(sockets="fd:3").sockets == []


# -- listen (section 3.20) ---------------------------------------------------

LISTEN_CASES = [
    ("127.0.0.1", [(INET, STREAM, TCP, ("127.0.0.1", 8080))]),
    ("127.0.0.1:9000", [(INET, STREAM, TCP, ("127.0.0.1", 9000))]),
    ("[::1]:9000", [(INET6, STREAM, TCP, ("::1", 9000, 0, 0))]),
    ("[::1]", [(INET6, STREAM, TCP, ("::1", 8080, 0, 0))]),
    (
        "*:9000",
        [
            (INET, STREAM, TCP, ("0.0.0.0", 9000)),
            (INET6, STREAM, TCP, ("::", 9000, 0, 0)),
        ],
    ),
    (
        "*:http",
        [
            (INET, STREAM, TCP, ("0.0.0.0", 80)),
            (INET6, STREAM, TCP, ("::", 80, 0, 0)),
        ],
    ),
    (
        "127.0.0.1:9000 [::1]:9000",
        [
            (INET, STREAM, TCP, ("127.0.0.1", 9000)),
            (INET6, STREAM, TCP, ("::1", 9000, 0, 0)),
        ],
    ),
    ("127.0.0.1:9000\n127.0.0.1:9000", [(INET, STREAM, TCP, ("127.0.0.1", 9000))]),
    (
        "127.0.0.1:0 127.0.0.1:0",
        [
            (INET, STREAM, TCP, ("127.0.0.1", 0)),
            (INET, STREAM, TCP, ("127.0.0.1", 0)),
        ],
    ),
    (["127.0.0.1:1", "127.0.0.1:2"], [
        (INET, STREAM, TCP, ("127.0.0.1", 1)),
        (INET, STREAM, TCP, ("127.0.0.1", 2)),
    ]),
]


@pytest.mark.parametrize("listen, expected", LISTEN_CASES)
def test_listen(listen, expected):
    assert make(listen=listen).listen == expected


@pytest.mark.parametrize("listen, expected", LISTEN_CASES)
def test_listen_matches_waitress(listen, expected):
    assert make_waitress(listen=listen).listen == expected


# A name is resolved by the system: "localhost" is 127.0.0.1 and ::1 on most
# machines (and 127.0.0.1 only where the hosts file says so), so these tests
# use a resolver they control, answering as glibc does with both lines in
# /etc/hosts: ::1 first, and only the family asked for.
LOCALHOST = {
    INET6: (INET6, STREAM, TCP, "", ("::1", 9000, 0, 0)),
    INET: (INET, STREAM, TCP, "", ("127.0.0.1", 9000)),
}


@pytest.fixture
def localhost_v4_v6(monkeypatch):
    real = socket.getaddrinfo

    def resolve(host, port, family=0, type=0, proto=0, flags=0):
        if host != "localhost":
            return real(host, port, family, type, proto, flags)
        return [
            info[:4] + ((info[4][0], int(port)) + info[4][2:],)
            for fam, info in LOCALHOST.items()
            if family in (socket.AF_UNSPEC, fam)
        ]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


@pytest.mark.parametrize("maker", [make, make_waitress])
@pytest.mark.parametrize(
    "kw, expected",
    [
        ({}, [
            (INET6, STREAM, TCP, ("::1", 9000, 0, 0)),
            (INET, STREAM, TCP, ("127.0.0.1", 9000)),
        ]),
        ({"ipv6": False}, [(INET, STREAM, TCP, ("127.0.0.1", 9000))]),
        ({"ipv4": False}, [(INET6, STREAM, TCP, ("::1", 9000, 0, 0))]),
    ],
)
def test_listen_on_a_name_with_two_addresses(localhost_v4_v6, maker, kw, expected):
    # one socket per address, as waitress: a client that tries ::1 first
    # (as most do for "localhost") finds the server there too
    assert maker(listen="localhost:9000", **kw).listen == expected


@pytest.mark.parametrize(
    "kw, expected",
    [
        ({"ipv6": False}, [(INET, STREAM, TCP, ("0.0.0.0", 9000))]),
        ({"ipv4": False}, [(INET6, STREAM, TCP, ("::", 9000, 0, 0))]),
        ({"ipv4": "false", "ipv6": "false"}, [
            (INET, STREAM, TCP, ("0.0.0.0", 9000)),
            (INET6, STREAM, TCP, ("::", 9000, 0, 0)),
        ]),
    ],
)
def test_listen_ipv4_ipv6_switches(kw, expected):
    assert make(listen="*:9000", **kw).listen == expected
    assert make_waitress(listen="*:9000", **kw).listen == expected


def test_ipv6_off_excludes_v6_literal():
    with pytest.raises(ValueError, match="Invalid host/port specified."):
        make(listen="[::1]:9000", ipv6=False)


def test_listen_default_port_follows_port_option():
    # without a port in the entry, the port option's value is used
    assert make(listen="127.0.0.1").listen[0][3] == ("127.0.0.1", 8080)


@pytest.mark.parametrize(
    "kw, sockaddr",
    [
        ({"port": "9000"}, ("0.0.0.0", 9000)),
        ({"host": "127.0.0.1"}, ("127.0.0.1", 8080)),
        ({"host": "127.0.0.1", "port": 9001}, ("127.0.0.1", 9001)),
        ({"host": "0.0.0.0", "port": 8080}, ("0.0.0.0", 8080)),
        ({"host": "::1", "port": 9002}, ("::1", 9002, 0, 0)),
    ],
)
def test_host_and_port_rewrite_listen(kw, sockaddr):
    adj = make(**kw)
    assert [entry[3] for entry in adj.listen] == [sockaddr]
    assert make_waitress(**kw).listen == adj.listen


def test_host_and_port_attributes():
    adj = make(host="127.0.0.1", port="9000")
    assert (adj.host, adj.port) == ("127.0.0.1", 9000)


def test_port_refuses_service_names():
    with pytest.raises(ValueError):
        make(port="http")


def test_listen_zone_index_ignored_in_duplicates(monkeypatch):
    infos = [
        (INET6, STREAM, TCP, "", ("fe80::1%eth0", 9000, 0, 2)),
        (INET6, STREAM, TCP, "", ("fe80::1%en1", 9000, 0, 3)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a: infos)
    assert make(listen="[fe80::1]:9000").listen == [
        (INET6, STREAM, TCP, ("fe80::1%eth0", 9000, 0, 2))
    ]


def test_getaddrinfo_called_as_waitress_does(monkeypatch):
    calls = []

    def fake(*args):
        calls.append(args)
        return [(INET, STREAM, TCP, "", ("1.2.3.4", 80))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    make(listen="*:http example.com:81 [::1]:82", ipv6=False)
    assert calls == [
        (None, "http", INET, STREAM, TCP, socket.AI_PASSIVE),
        ("example.com", "81", INET, STREAM, TCP, socket.AI_PASSIVE),
        ("::1", "82", INET, STREAM, TCP, socket.AI_PASSIVE),
    ]


@pytest.mark.parametrize(
    "entry, expected",
    [
        ("h:1", ("h", "1")),
        ("h", ("h", "8080")),
        ("*:1", (None, "1")),
        ("*", (None, "8080")),
        ("[::1]:1", ("::1", "1")),
        ("[::1]", ("::1", "8080")),
        ("a:b:c", ("a:b", "c")),
    ],
)
def test_split_listen_entry(entry, expected):
    assert adjmod.split_listen_entry(entry, 8080) == expected


# -- docs ------------------------------------------------------------------------


def test_docs_option_reference_is_up_to_date():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "docs" / "gen_options.py"
    spec = importlib.util.spec_from_file_location("gen_options", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.main(["--check"]) == 0
    page = path.with_name("configuration.rst").read_text()
    for opt in OPTIONS:
        assert "\n``%s``\n" % opt.name in page
