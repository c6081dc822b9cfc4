"""Make the unrepaired wheel of one CPython version from the wheel the host
built and an extension compiled elsewhere (tools/wheel.sh: in the old
Debian chroot, against that version's headers).

    wheel_pack.py TEMPLATE.whl CORE.so TAG OUTDIR

TEMPLATE is any wheel of this source tree (``python -m build``): its
Python files and metadata are the same for every version, since only the
extension differs.  The new wheel has CORE.so as ``waitress_c/<its name>``
in place of the template's extension, ``TAG`` (``cp314``) in its name and
in the WHEEL file, a fresh RECORD, and mode 0644 on every file (an
extension needs no execute bit to be imported)."""

import base64
import hashlib
import os
import re
import sys
import zipfile


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "%s,sha256=%s,%d" % (name, digest.decode(), len(data))


def pack(template: str, core: str, tag: str, outdir: str) -> str:
    base = os.path.basename(template)
    m = re.match(r"^(?P<dist>[^-]+-[^-]+)-cp\d+-cp\d+-(?P<plat>linux_\w+)\.whl$", base)
    if not m:
        raise SystemExit("wheel_pack: not a CPython wheel name: %s" % base)
    out = os.path.join(outdir, "%s-%s-%s-%s.whl" % (m["dist"], tag, tag, m["plat"]))
    with open(core, "rb") as f:
        core_data = f.read()
    core_name = "waitress_c/" + os.path.basename(core)
    entries = []
    record_name = None
    with zipfile.ZipFile(template) as zin:
        for info in zin.infolist():
            name = info.filename
            if name.endswith(".dist-info/RECORD"):
                record_name = name
            elif re.match(r"^waitress_c/_core\..*\.so$", name):
                continue
            else:
                data = zin.read(name)
                if name.endswith(".dist-info/WHEEL"):
                    text = data.decode()
                    text = re.sub(r"(?m)^Tag: cp\d+-cp\d+-", "Tag: %s-%s-" % (tag, tag), text)
                    data = text.encode()
                entries.append((name, data))
    if record_name is None:
        raise SystemExit("wheel_pack: no RECORD in %s" % template)
    entries.insert(0, (core_name, core_data))
    lines = [record_line(n, d) for n, d in entries] + [record_name + ",,"]
    entries.append((record_name, ("\n".join(lines) + "\n").encode()))
    os.makedirs(outdir, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o100644 << 16)
            info.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(info, data)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    print(pack(*sys.argv[1:]))
