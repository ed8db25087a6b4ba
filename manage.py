#!/usr/bin/env python
"""Django's command-line utility for the Berrys Portal."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berrys_portal.settings")
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except Exception as exc:
        # A missing, unreachable or unmigrated database is a set-up step, not a bug:
        # say which one in a line instead of a driver traceback (--traceback shows it).
        if "--traceback" in sys.argv:
            raise
        from berrys_portal.dbcheck import database_problem

        problem = database_problem(exc)
        if problem is None:
            raise
        sys.stderr.write(problem + "\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
