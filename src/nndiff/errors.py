"""The one error type nndiff raises for problems a user can fix."""


class NndiffError(Exception):
    """A problem with the user's input or files: the message says what is wrong and how to fix it.

    The CLI prints it as one line and exits non-zero; other exceptions are bugs and keep their
    traceback.
    """
