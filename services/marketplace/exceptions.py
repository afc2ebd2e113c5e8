"""Why a sync run stops before its end. Errors crossing RPC are in common/errors.py."""


class RunStopped(Exception):
    """The run must end now: the service is stopping, or the run is no longer ours (it was
    declared abandoned after missing its heartbeat). What was committed stays."""


class ThrottleBudgetExhausted(Exception):
    """Waiting for the vendor's rate limit would exceed the run's wait budget: the run ends
    `throttled` and the scheduler resumes it after `retry_after` seconds."""

    def __init__(self, retry_after: float, waited: float):
        super().__init__(f"the vendor asks to wait {retry_after:.0f}s more; this run already waited "
                         f"{waited:.0f}s of its budget")
        self.retry_after = retry_after
        self.waited = waited
