"""Nameko extensions of the mapping service."""
from nameko.timer import Timer


class ConfigTimer(Timer):
    """@config_timer("REFERENCE_POLL_SECONDS", 15): a nameko timer whose interval is read from the
    service config at setup (nameko's own takes a constant). Like nameko's, the next tick waits
    for the previous worker to finish."""

    def __init__(self, config_key, default, **kwargs):
        self.config_key, self.default = config_key, default
        super().__init__(interval=default, **kwargs)

    def setup(self):
        value = self.container.config.get(self.config_key, self.default)
        self.interval = float(self.default if value in (None, "") else value)
        super().setup()


config_timer = ConfigTimer.decorator
