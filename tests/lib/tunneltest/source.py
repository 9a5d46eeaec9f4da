"""tunneltest.source: the source tree as the packaging tests read it: its version, the
settings tunneld.conf(5) documents, and configurations whose /etc/tunneld/ files exist."""

from .base import *  # noqa: F401,F403


def read_utf8(path):
    """The text of a file of the source tree (UTF-8)."""
    with open(path, encoding="utf-8") as f:
        return f.read()


def project_version():
    """The version meson.build declares."""
    return re.search(r"version:\s*'([^']+)'", read_utf8(os.path.join(SOURCE_ROOT, "meson.build"))).group(1)


def documented_settings(text=None):
    """{setting: (section, the parenthesis after its name)} of every entry of
    tunneld.conf(5) (man/tunneld.conf.5.scd, or its text)."""
    if text is None:
        text = read_utf8(os.path.join(SOURCE_ROOT, "man", "tunneld.conf.5.scd"))
    found, section = {}, None
    for line in text.splitlines():
        if line.startswith("# "):
            section = line[2:].strip()
        m = re.match(r"^\*(\w+)\* \((.*)\)$", line)
        if m:
            found[m.group(1)] = (section, m.group(2))
    return found


def stated_default(paren):
    """The literal default an entry's parenthesis states ("default *60*"), or None (no
    literal: none, ssh's, a path the build fills in): a number as a float, a string
    unquoted, true and false as they are written."""
    m = re.search(r"default \*([^*]+)\*", paren)
    if not m or "@" in m.group(1):
        return None
    v = m.group(1).strip()
    if v.startswith('"'):
        return v.strip('"')
    if v in ("true", "false"):
        return v
    try:
        return float(v)
    except ValueError:
        return v


def localize_etc(text, directory):
    """text with each /etc/tunneld/FILE it names replaced by a file made under directory
    (a program, "#!/bin/sh" mode 0755, if its name says notify; else 0600), so that the
    tunnels that name them validate."""
    def make(m):
        path = os.path.join(directory, "etc-tunneld", m.group(1))
        program = "notify" in path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write("#!/bin/sh\n" if program else "# test\n")
            os.chmod(path, 0o755 if program else 0o600)
        return path
    return re.sub(r"/etc/tunneld/([\w.@/-]+)", make, text)
