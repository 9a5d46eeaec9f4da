"""tunneltest.sanitizers: sanitizer reports in a log."""

from .base import *  # noqa: F401,F403
from .processes import *  # noqa: F401,F403
from .helpers import *  # noqa: F401,F403

# The first line of every AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer
# report ("==PID==ERROR: AddressSanitizer: ...", "path:line:col: runtime error: ..."), and
# the SUMMARY line that ends one.
SANITIZER_REPORT = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:"
                              r"|SUMMARY: UndefinedBehaviorSanitizer|==ERROR")
_REPORT_LINES = 150


def sanitizer_reports(text):
    """The sanitizer reports in text (a process's stderr), each from its first line through
    its SUMMARY line (at most _REPORT_LINES lines), or [] if there is none. Cheap: every
    build's tunneld output is scanned, whatever the build."""
    lines = text.splitlines()
    reports, i = [], 0
    while i < len(lines):
        if not SANITIZER_REPORT.search(lines[i]):
            i += 1
            continue
        end = i + 1  # one past the report's last line: its SUMMARY, or before the next report
        while (end < len(lines) and end - i < _REPORT_LINES and not lines[end - 1].startswith("SUMMARY:")
               and not (SANITIZER_REPORT.search(lines[end]) and not lines[end].startswith("SUMMARY:"))):
            end += 1
        reports.append("\n".join(lines[i:end]))
        i = end
    return reports


def check_sanitizer_output(text, what="tunneld"):
    """AssertionError with the reports if text (what's stderr) holds a sanitizer report."""
    reports = sanitizer_reports(text)
    if reports:
        raise AssertionError(f"{what} printed {len(reports)} sanitizer report(s):\n" + "\n\n".join(reports))
