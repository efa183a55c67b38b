"""The one exception type a user should see: bad input, reported as one clear line."""


class UserError(Exception):
    """Bad input, config or environment. Launchers print it as one line, without a traceback."""
