"""Errors a user can act on: the message names the file and the problem, and the CLI prints it
without a traceback and exits non-zero."""


class DeoccludeError(Exception):
    """Base of the errors the CLI reports as `deocclude <command>: error: <message>`."""
