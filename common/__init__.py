"""What every IDSync service shares: config, database, events, outbox, metrics, logging, vendor client base."""
import warnings

# nameko 2.14 is built on eventlet; its deprecation notice says nothing we can act on here
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
