"""Add the copyright notices of the libraries auditwheel bundled into a wheel.

``python tools/wheel_licenses.py WHEEL...`` reads the wheel's SBOM (written by
``auditwheel repair``; without one, dpkg is asked), which names the Debian
package each bundled library came from, and stores that package's
``/usr/share/doc/<package>/copyright`` as
``<dist-info>/licenses/bundled/<package>.copyright``, listed as a
License-File in METADATA.  The wheel is rewritten in place with a new
RECORD.  A bundled library with no Debian package, or a package without a
copyright file, stops the script: a wheel must not ship a binary without
its notice."""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile

DOC_DIR = "/usr/share/doc"


def record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "%s,sha256=%s,%d" % (name, digest.decode(), len(data))


def bundled_packages(files):
    """The Debian packages named by the wheel's auditwheel SBOM."""
    sboms = [n for n in files if "/sboms/" in n and n.endswith(".json")]
    if not sboms:
        return packages_by_dpkg(files)
    packages = []
    for name in sboms:
        for comp in json.loads(files[name]).get("components", []):
            purl = comp.get("purl", "")
            if purl.startswith("pkg:pypi/"):
                continue
            if not purl.startswith("pkg:deb/"):
                sys.exit("error: bundled %r is not from a Debian package: "
                         "no copyright file to ship with it" % purl)
            packages.append(comp["name"])
    return sorted(set(packages))


def copied_owners():
    """Libraries copied into the build chroot from another system, which
    its dpkg does not know: WHEEL_LIB_OWNERS names a file of lines
    "FILE PACKAGE" (tools/wheel.sh writes it, and copies the package's
    copyright file too)."""
    path = os.environ.get("WHEEL_LIB_OWNERS")
    if not path or not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return dict(line.split() for line in f if line.strip())


def packages_by_dpkg(files):
    """Without an SBOM (auditwheel before 6.5 writes none): the Debian
    package that owns each library auditwheel copied into ``*.libs/``,
    asked of dpkg by the library's original name (``libuv-1a2b3c4d.so.1.0.0``
    was ``libuv.so.1.0.0``).  Run where auditwheel ran."""
    libs = [n.split("/", 1)[1] for n in files
            if n.split("/")[0].endswith(".libs") and n.split("/")[1:] != [""]]
    if not libs:
        sys.exit("error: no bundled library and no auditwheel SBOM in the wheel "
                 "(run auditwheel repair first)")
    copied = copied_owners()
    packages = []
    for lib in libs:
        m = re.match(r"^(?P<stem>.+)-[0-9a-f]{8}(?P<ext>\.so.*)$", lib)
        if not m:
            sys.exit("error: %r is not a name auditwheel gives a bundled library" % lib)
        original = m["stem"] + m["ext"]
        if original in copied:
            packages.append(copied[original])
            continue
        out = subprocess.run(["dpkg", "-S", "*/" + original], capture_output=True, text=True)
        owners = {line.split(":")[0] for line in out.stdout.splitlines() if ": " in line}
        if out.returncode != 0 or len(owners) != 1:
            sys.exit("error: bundled %s: no single Debian package owns %s (%s)"
                     % (lib, original, out.stderr.strip() or sorted(owners)))
        packages.append(owners.pop())
    return sorted(set(packages))


def add_licenses(path):
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        files = {i.filename: zf.read(i) for i in infos}
    dist_info = {n.split("/")[0] for n in files if n.split("/")[0].endswith(".dist-info")}
    if len(dist_info) != 1:
        sys.exit("error: %s: expected one .dist-info directory, got %s" % (path, dist_info))
    dist_info = dist_info.pop()
    record_name = dist_info + "/RECORD"
    metadata_name = dist_info + "/METADATA"

    added = {}
    for pkg in bundled_packages(files):
        src = os.path.join(DOC_DIR, pkg, "copyright")
        if not os.path.isfile(src):
            sys.exit("error: %s has no copyright file for the bundled %s" % (src, pkg))
        with open(src, "rb") as f:
            added["bundled/%s.copyright" % pkg] = f.read()

    metadata = files[metadata_name].decode("utf-8")
    head, sep, body = metadata.partition("\n\n")
    lines = head.split("\n")
    for rel in sorted(added):
        entry = "License-File: " + rel
        if entry not in lines:
            lines.append(entry)
    files[metadata_name] = ("\n".join(lines) + sep + body).encode("utf-8")
    for rel, data in added.items():
        files[dist_info + "/licenses/" + rel] = data

    names = [i.filename for i in infos if i.filename != record_name]
    names += [dist_info + "/licenses/" + rel for rel in sorted(added)
              if dist_info + "/licenses/" + rel not in names]
    record = [record_line(n, files[n]) for n in names if not n.endswith("/")]
    record.append(record_name + ",,")
    files[record_name] = ("\n".join(record) + "\n").encode("utf-8")

    modes = {i.filename: i.external_attr for i in infos}
    dates = {i.filename: i.date_time for i in infos}
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".whl")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
            for name in names + [record_name]:
                info = zipfile.ZipInfo(name, date_time=dates.get(name, dates[metadata_name]))
                info.external_attr = modes.get(name, 0o100644 << 16)
                info.compress_type = zipfile.ZIP_DEFLATED
                out.writestr(info, files[name])
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    for rel in sorted(added):
        print("%s: added licenses/%s" % (os.path.basename(path), rel))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for wheel in sys.argv[1:]:
        add_licenses(wheel)
