"""Regenerate the option reference in docs/configuration.rst from the
adjustments table (waitress_c.adjustments.OPTIONS).

    python docs/gen_options.py          # rewrite the generated block
    python docs/gen_options.py --check  # exit 1 if it is out of date

Only the text between the ``.. begin-options`` and ``.. end-options``
comments is generated; the rest of the page is written by hand.
"""

import os
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from waitress_c.adjustments import OPTIONS, STANDARD, TUNING  # noqa: E402
from waitress_c.config import env_name  # noqa: E402

PAGE = os.path.join(HERE, "configuration.rst")
BEGIN = ".. begin-options\n"
END = ".. end-options\n"


def _flag(opt):
    if opt.is_bool:
        return "``%s`` / ``--no-%s``" % (opt.flag, opt.flag[2:])
    flag = "``%s=%s``" % (opt.flag, opt.metavar)
    if opt.aliases:
        flag += " (also %s)" % ", ".join("``%s``" % a for a in opt.aliases)
    return flag


def _body(text):
    """Help paragraphs as reStructuredText: a paragraph followed by an
    indented example becomes a literal block introduced by ``::``."""
    paras = text.split("\n\n")
    out = []
    for i, para in enumerate(paras):
        if para.startswith("    "):
            out.append(para)
            continue
        # A lone "*" would start emphasis.
        para = " ".join(para.split()).replace("*", "\\*")
        if i + 1 < len(paras) and paras[i + 1].startswith("    "):
            para = para.rstrip(":") + "::"
        out.append(textwrap.fill(para, width=79, break_on_hyphens=False))
    return "\n\n".join(out)


def render():
    parts = []
    for section in (STANDARD, TUNING):
        parts.append(section + "\n" + "-" * len(section) + "\n")
        for opt in OPTIONS:
            if opt.section != section:
                continue
            title = "``%s``" % opt.name
            fields = [
                ":Command line: %s" % _flag(opt),
                ":Environment: ``%s``" % env_name(opt),
                ":Converter: ``%s``" % opt.convert.__name__,
                ":Default: %s" % opt.shown_default,
            ]
            if opt.legacy:
                fields.append(":Status: accepted for compatibility, no effect")
            parts.append(
                "%s\n%s\n\n%s\n\n%s\n"
                % (title, "~" * len(title), "\n".join(fields), _body(opt.help))
            )
    return "\n".join(parts)


def rewrite(text):
    start = text.index(BEGIN) + len(BEGIN)
    end = text.index(END)
    return text[:start] + "\n" + render() + "\n" + text[end:]


def main(argv):
    with open(PAGE) as f:
        current = f.read()
    wanted = rewrite(current)
    if "--check" in argv:
        if wanted != current:
            print("docs/configuration.rst is out of date: run docs/gen_options.py")
            return 1
        return 0
    with open(PAGE, "w") as f:
        f.write(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
