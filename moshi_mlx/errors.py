"""The one error type for bad model input (files, configs, weights that do not fit): its
message is a complete sentence naming the file and the problem, so CLIs print it as one
line instead of a traceback. It lives at the package root because every layer raises it."""


class WeightsError(ValueError):
    pass
