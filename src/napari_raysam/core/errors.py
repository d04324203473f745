"""The one exception family for problems a user can fix.

Every message names the problem and the fix. Widgets show it in the dock, the CLI prints it as
one line with exit code 2; neither shows a traceback for these.
"""


class RaysamError(Exception):
    """A problem the user can fix; the message says what and how."""
