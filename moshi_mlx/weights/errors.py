"""The one error type for bad weight/config input: its message is a complete sentence that
names the file and the problem, so CLIs print it as one line instead of a traceback."""


class WeightsError(ValueError):
    pass
