"""The one exception the component raises, for arguments it cannot deploy."""


class RunnerConfigError(ValueError):
    """An argument of WorkflowsRunner or ScheduledWorkflow is invalid; the message says what was expected."""

    def __init__(self, argument, expected, found):
        super().__init__(f"{argument}: expected {expected}, found {found!r}")
        self.argument = argument
        self.expected = expected
        self.found = found
